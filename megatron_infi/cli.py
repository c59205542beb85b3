"""`infi <stage> ...`: one console script that dispatches to each stage's own entry module.

Every stage is also runnable as `python -m <module>`; this table is the only place that maps the
user-facing command names to modules, so adding a stage is one line.
"""

from __future__ import annotations

import importlib
import sys

from megatron_infi.logs import quiet_logs

# command words -> (module with a `main(argv)` function, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("train",): ("megatron_infi.train", "pretrain / anneal on megatron-core (run under torchrun)"),
    ("demo",): ("megatron_infi.demo.run", "the whole pipeline at toy scale on CPU"),
    ("data", "pretrain"): (
        "megatron_infi.data_processing.pipelines.pretrain",
        "5-stage pretraining data pipeline",
    ),
    ("data", "train-recall"): (
        "megatron_infi.data_processing.pipelines.train_recall",
        "train fastText recall classifiers",
    ),
    ("data", "train-quality"): (
        "megatron_infi.data_processing.pipelines.train_quality",
        "train the stage-4 quality scorers",
    ),
    ("data", "vl"): ("megatron_infi.data_processing.vision.pipeline", "InfiR-VL image-text data pipeline"),
    ("data", "sft-select"): ("megatron_infi.data_processing.sft.select", "InfiAlign SFT data selection"),
    ("data", "sft-synthesize"): ("megatron_infi.data_processing.sft.synthesize", "InfiR SFT data synthesis"),
    ("data", "dpo-problems"): (
        "megatron_infi.data_processing.sft.dpo_problems",
        "InfiAlign DPO problem set from SFT data",
    ),
    ("assets", "smollm2"): ("megatron_infi.assets", "build the real SmolLM2-135M-Instruct HF dir (cached)"),
    ("convert", "from-hf"): (
        "megatron_infi.checkpoints_tools.from_hf",
        "Hugging Face -> megatron-core checkpoint",
    ),
    ("convert", "to-hf"): (
        "megatron_infi.checkpoints_tools.to_hf",
        "megatron-core checkpoint -> Hugging Face",
    ),
    ("convert", "verify"): (
        "megatron_infi.checkpoints_tools.verify",
        "logit parity of a checkpoint and an HF dir",
    ),
    ("convert", "step0-loss"): (
        "megatron_infi.checkpoints_tools.step0",
        "a run's step-0 validation loss vs the HF model's on the same windows",
    ),
    ("convert", "vl-to-hf"): (
        "megatron_infi.checkpoints_tools.llava",
        "VL checkpoint -> Hugging Face LLaVA",
    ),
    ("convert", "vl-verify"): (
        "megatron_infi.checkpoints_tools.llava_verify",
        "logit parity of a VL checkpoint and its HF LLaVA",
    ),
    ("sft",): ("megatron_infi.posttrain.sft", "two-phase SFT curriculum with TRL"),
    ("dpo-pairs",): ("megatron_infi.posttrain.dpo_pairs", "DPO pairs from the SFT model's errors"),
    ("dpo",): ("megatron_infi.posttrain.dpo", "DPO with TRL"),
    ("eval",): ("megatron_infi.evaluation.run", "benchmarks -> results.json / results.md"),
    ("recipe", "run"): ("megatron_infi.recipes", "a paper's stages in order (launch/recipes/*.yaml)"),
}


def _usage(group: str | None = None) -> str:
    """The command list: all of them, or one group's (`infi data`, `infi convert`, ...)."""
    prefix = f"infi {group}" if group else "infi"
    lines = [f"usage: {prefix} <command> [args]  (each command takes --help)", "", "commands:"]
    for words, (_, help_text) in COMMANDS.items():
        if group is None or words[0] == group:
            name = " ".join(words if group is None else words[1:])
            lines.append(f"  {name:<22} {help_text}")
    return "\n".join(lines)


GROUPS = {words[0] for words in COMMANDS if len(words) > 1}
HELP = ("-h", "--help")


def resolve(argv: list[str]) -> tuple[str, list[str]] | None:
    """Longest command-word match -> (module, remaining argv)."""
    for n in (2, 1):
        words = tuple(argv[:n])
        if words in COMMANDS:
            return COMMANDS[words][0], argv[n:]
    return None


def main(argv: list[str] | None = None) -> int:
    """`--help` prints the command list (or a group's) and exits 0; a missing or unknown command
    prints it on stderr and exits 2, like any usage error."""
    quiet_logs()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in HELP:
        print(_usage())
        return 0
    found = resolve(argv)
    if found is not None:
        module_name, rest = found
        return int(importlib.import_module(module_name).main(rest) or 0)
    group = argv[0] if argv and argv[0] in GROUPS else None
    if group and argv[1:2] and argv[1] in HELP:
        print(_usage(group))
        return 0
    words = argv[1:2] if group else argv[:1]
    problem = f"unknown command {words[0]!r}" if words else "a command is missing"
    print(f"{'infi ' + group if group else 'infi'}: {problem}\n\n{_usage(group)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
