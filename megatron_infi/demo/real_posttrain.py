"""Post-training that moves the real SmolLM2-135M-Instruct, InfiR / InfiAlign in miniature, on a task
it can learn in minutes on a CPU: two-term integer arithmetic with exact answers (reasoning-gym).

    task data       held-out problems (evaluated, never trained on) and a training pool from the same
                    generator, decontaminated against the held-out set with the n-gram step
    synthesis       the model is its own teacher: n answers per training problem, math-verify keeps
                    the correct ones (InfiR's rejection sampling, `infi data sft-synthesize`)
    selection       InfiAlign's pipeline over them (`infi data sft-select`): decontamination check,
                    diversity, quality re-verification, two-phase curriculum
    SFT             two phases (`infi sft`)
    DPO pairs, DPO  the SFT model's own wrong answers vs its verified ones (`infi dpo-pairs`, `infi dpo`)
    eval            base / CPT / SFT / DPO on the held-out problems, accuracy with a 95% interval

Every stage sees one prompt, `task_messages(problem)`: the track's prompt contract (the `prompt:`
section all its configs carry) rendered on the problem, exactly what `infi eval` sends in chat mode.
Training on other prompts than the evaluated ones costs a model most of its score (issue 19: 3.3%
vs 50.0%).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from megatron_infi.config.core import from_dict, load_yaml
from megatron_infi.config.prompt import PromptContract
from megatron_infi.demo import CONFIGS, demo_config, fast_precision, generation_dtype, override, posttrain
from megatron_infi.evaluation.benchmarks import load_benchmark
from megatron_infi.evaluation.problems import Problem
from megatron_infi.evaluation.prompts import chat_messages
from megatron_infi.utils import atomic_write_json, atomic_write_text

BENCHMARK = "arithmetic"
# reasoning-gym seeds item i with seed + i: seed ranges far apart give unrelated draws; what the
# small numbers still share with the held-out set, decontamination removes.
HELD_OUT = {"seed": 0, "size": 300}
TRAIN_SEED = 1_000_000
CHAT_TEMPLATE = CONFIGS / "posttrain" / "smollm2_chat_template.jinja"


# Every stage's config carries the same `prompt:` section (tests/posttrain/test_prompt_contract.py);
# its template path is made absolute so that the demo runs from any directory.
PROMPT_VALUES = {"prompt.chat_template": str(CHAT_TEMPLATE)}


def contract() -> PromptContract:
    """The track's prompt contract, as every stage resolves it."""
    section = load_yaml(CONFIGS / "eval" / "demo_real.yaml")["prompt"]
    return from_dict(PromptContract, {**section, "chat_template": str(CHAT_TEMPLATE)})


def task_messages(problem: Problem) -> list[dict[str, str]]:
    """The one prompt of this track: evaluation's zero-shot chat prompt under the track's contract."""
    return chat_messages(problem, contract())


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def decontaminate(problems: list[Problem], held_out_file: Path, ngram: int) -> tuple[list[Problem], int]:
    """Training problems whose prompt shares an n-gram with a held-out item are dropped (the
    selection stage's own n-gram index, applied before any generation is spent on them)."""
    from megatron_infi.data_processing.decontamination.ngram import NGramIndex, load_benchmark_items

    index = NGramIndex(n=ngram).add_all(load_benchmark_items(held_out_file))
    clean = [p for p in problems if not index.is_contaminated(task_messages(p)[-1]["content"])]
    return clean, len(problems) - len(clean)


def write_task_data(
    out_dir: str | Path, train_size: int, pair_problems: int, ngram: int = 3
) -> dict[str, Any]:
    """held_out.jsonl (the benchmark file decontamination reads), seeds.jsonl (synthesis input, qa
    format) and pair_problems.jsonl (`infi dpo-pairs` problems, with a worked one-line solution that
    dpo-pairs verifies before using it as `chosen`); disjoint training sets."""
    out = Path(out_dir)
    held_out, _ = load_benchmark(BENCHMARK, None, HELD_OUT)
    held_out_file = _jsonl(
        out / "held_out.jsonl",
        [{"id": p.id, "question": p.question, "answer": p.answers[0]} for p in held_out],
    )
    pool, duplicates = load_benchmark(BENCHMARK, None, {"seed": TRAIN_SEED, "size": train_size})
    clean, contaminated = decontaminate(pool, held_out_file, ngram)
    pairs, seeds = clean[:pair_problems], clean[pair_problems:]
    seeds_file = _jsonl(
        out / "seeds.jsonl",
        [{"id": p.id, "question": task_messages(p)[-1]["content"], "answer": p.answers[0]} for p in seeds],
    )
    pairs_file = _jsonl(
        out / "pair_problems.jsonl",
        [
            {
                "id": p.id,
                "domain": "math",
                "messages": task_messages(p),
                "answer": p.answers[0],
                "solution": p.solution,
            }
            for p in pairs
        ],
    )
    stats = {
        "held_out": len(held_out),
        "train_drawn": train_size,
        "train_duplicates": sum(duplicates.counts.values()),
        "train_contaminated": contaminated,
        "synthesis_seeds": len(seeds),
        "pair_problems": len(pairs),
    }
    atomic_write_json(out / "task_data.json", stats)
    return {"held_out": held_out_file, "seeds": seeds_file, "pair_problems": pairs_file, "stats": stats}


def synthesize(model_dir: str | Path, seeds: Path, out_dir: str | Path) -> Path:
    """Self-teacher rejection sampling; returns synthesized.jsonl."""
    from megatron_infi.data_processing.sft.config import SynthesizeConfig
    from megatron_infi.data_processing.sft.synthesize import run_synthesize

    cfg = demo_config(
        SynthesizeConfig,
        "sft_data/demo_real_synthesize.yaml",
        {
            "output_dir": str(out_dir),
            "inputs.0.path": str(seeds),
            "llm.model": str(model_dir),
            "llm.dtype": generation_dtype(),
            "tokenizer": str(model_dir),
            **PROMPT_VALUES,
        },
    )
    run_synthesize(cfg)
    return Path(out_dir) / "synthesized.jsonl"


def select(synthesized: Path, held_out: Path, model_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    from megatron_infi.data_processing.sft.config import SelectConfig
    from megatron_infi.data_processing.sft.select import run_select

    out = Path(out_dir)
    cfg = demo_config(
        SelectConfig,
        "sft_data/demo_real_select.yaml",
        {
            "output_dir": str(out),
            "inputs.0.path": str(synthesized),
            "decontamination.benchmarks": [str(held_out)],
            "difficulty.tokenizer": str(model_dir),
            **PROMPT_VALUES,
        },
    )
    report = run_select(cfg)
    return {
        "phase1": out / "phase1.jsonl",
        "phase2": out / "phase2.jsonl",
        "report": report,
        "stats": out / "selection_stats.json",
    }


def sft(model_dir: str | Path, phase1: Path, phase2: Path, out_dir: str | Path) -> dict[str, Any]:
    values = {**PROMPT_VALUES, "runtime.precision": fast_precision()}
    return posttrain.demo_sft(model_dir, out_dir, phase1, phase2, "posttrain/demo_real_sft.yaml", values)


def dpo_pairs(model_dir: str | Path, problems: Path, out_dir: str | Path) -> dict[str, Any]:
    values = {**PROMPT_VALUES, "generation.dtype": generation_dtype()}
    return posttrain.demo_dpo_pairs(
        model_dir, problems, out_dir, "posttrain/demo_real_dpo_pairs.yaml", values
    )


def dpo(model_dir: str | Path, pairs: Path, out_dir: str | Path) -> dict[str, Any]:
    values = {**PROMPT_VALUES, "runtime.precision": fast_precision()}
    return posttrain.demo_dpo(model_dir, pairs, out_dir, "posttrain/demo_real_dpo.yaml", values)


def evaluate(models: dict[str, str | Path], out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """{stage: {"acc", "ci95", "n"}} (percent) on the held-out problems; writes the eval reports."""
    from megatron_infi.evaluation.run import evaluate_models

    results = evaluate_models(
        [{"name": name, "path": str(path), "mode": "chat"} for name, path in models.items()],
        out_dir,
        CONFIGS / "eval" / "demo_real.yaml",
        [f"generation.dtype={generation_dtype()}", *(override(k, v) for k, v in PROMPT_VALUES.items())],
    )
    table = {}
    for name in models:
        summary = results["scores"][name][BENCHMARK]
        table[name] = {"acc": summary["avg@1"], "ci95": summary["ci95"], "n": summary["problems"]}
    return table
