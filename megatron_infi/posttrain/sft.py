"""Supervised fine-tuning (TRL's SFTTrainer) of an HF model dir, as a curriculum of phases.

Each phase (InfiAlign: foundational, then advanced) has its own data and schedule and starts from the
previous phase's exported weights. Loss is on assistant tokens only, sequences are packed, training
checkpoints every `checkpoint.save_interval` steps and resumes from the last complete checkpoint; a
phase whose export and summary exist is not run again.

Prompts follow the config's prompt contract (`prompt:`, the same section the SFT-data, DPO-pairs and
eval configs carry): records prepared under it are used as they are, raw records get its system prompt
and the instruction of their task (meta.task) now, and the export records it in prompt_contract.json.

input:
  model: an HF model dir (config.json, safetensors, tokenizer), e.g. `infi convert to-hf`'s output
  phases[*].data: JSONL, one conversation per line (OpenAI chat format), ending with the assistant
  turn that is trained on; `meta` is optional (meta.task picks the contract's instruction for a raw
  record, meta.prompt_contract marks a prepared one); bad lines are skipped and counted:
    {"messages": [{"role": "user", "content": "What is 2+3?"},
                  {"role": "assistant", "content": "2+3=5. \\\\boxed{5}"}], "meta": {"source": "x"}}
  (`infi data sft-select` writes phase1.jsonl / phase2.jsonl in this format)

output (under output_dir):
  <phase>/model/                      HF export of the phase: the next phase's, DPO's and eval's input
                                      (with prompt_contract.json)
  <phase>/checkpoints/checkpoint-N/   Trainer checkpoints (weights, optimizer, RNG, data position)
  <phase>/summary.json                losses, steps, weights fingerprints, skipped records
  <phase>/tensorboard/                TensorBoard events; wandb (offline) under cache/wandb
  sft_summary.json, loss.png, resolved_config.yaml

example config: launch/configs/posttrain/demo_sft.yaml (toy), infialign_sft.yaml, infir_sft.yaml
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from megatron_infi.config.core import ConfigError, dump_yaml, parse_stage_config
from megatron_infi.config.inputs import InputCheck
from megatron_infi.config.prompt import CONTRACT_FILE, PromptContract, RecordTally
from megatron_infi.config.sections import CheckpointConfig, LoggingConfig
from megatron_infi.errors import command
from megatron_infi.generation.preflight import check_tokenizer
from megatron_infi.logs import quiet_logs
from megatron_infi.posttrain import common
from megatron_infi.posttrain.chat import check_template_files, fit_model_to_template, prepare_chat_template
from megatron_infi.posttrain.data import read_sft_records, to_dataset
from megatron_infi.posttrain.preemption import preemption_callback
from megatron_infi.utils import SkipCounter, atomic_write_text, set_run_caches

PHASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
VALIDATE_RECORDS = 64  # usable records an input check reads per file


@dataclass
class SFTPhaseConfig:
    name: str = "phase1"
    data: list[str] = field(default_factory=list)  # SFT record files (JSONL / JSON / Parquet)
    eval_data: list[str] = field(default_factory=list)
    schedule: common.EpochScheduleConfig = field(default_factory=common.EpochScheduleConfig)
    optim: common.OptimConfig = field(default_factory=common.OptimConfig)

    def validate(self) -> None:
        if not PHASE_NAME.match(self.name):
            raise ConfigError("name", f"must be a plain directory name, got {self.name!r}")
        if not self.data:
            raise ConfigError("data", "list at least one SFT record file")


@dataclass
class SFTStageConfig:
    model: str = ""  # HF model dir to start from
    output_dir: str = ""
    prompt: PromptContract = field(default_factory=PromptContract)  # system prompt, instructions, template
    max_length: int = 4096
    packing: bool = True
    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] = "bfd"
    assistant_only_loss: bool = True
    phases: list[SFTPhaseConfig] = field(default_factory=lambda: [SFTPhaseConfig()])
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    runtime: common.RuntimeConfig = field(default_factory=common.RuntimeConfig)

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model", "set the HF model dir to fine-tune")
        if not self.output_dir:
            raise ConfigError("output_dir", "set where checkpoints and the exported model go")
        if self.max_length < 16:
            raise ConfigError("max_length", f"must be >= 16, got {self.max_length}")
        if not self.phases:
            raise ConfigError("phases", "list at least one phase")
        names = [phase.name for phase in self.phases]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ConfigError("phases", f"phase name {duplicate!r} is used twice")

    def check_inputs(self, dry_run: bool = False) -> InputCheck:
        """Before any weights load: the model's tokenizer loads and the chat template works for
        training, and every phase's data holds usable records. A dry run notes what does not exist yet."""
        check = InputCheck(dry_run)
        if check.present("model", self.model, "hf_model", model_dir=True):
            check_template_files(self.model, self.prompt.chat_template, self.assistant_only_loss)
            tokenizer = check_tokenizer(self.model, "model")
            prepare_chat_template(tokenizer, self.prompt.chat_template, self.assistant_only_loss)
        for i, phase in enumerate(self.phases):
            for key in ("data", "eval_data"):
                for j, path in enumerate(getattr(phase, key)):
                    if check.present(f"phases[{i}].{key}[{j}]", path, "sft_data"):
                        read_sft_records([path], SkipCounter(), limit=VALIDATE_RECORDS)
        return check


def _is_main_rank() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def phase_is_done(phase_dir: Path) -> bool:
    return (phase_dir / "model" / "config.json").is_file() and (phase_dir / "summary.json").is_file()


@dataclass
class PhaseTrainer:
    """An SFTTrainer ready to train one phase, with what the phase summary needs to know."""

    trainer: Any
    phase_dir: Path
    init_from: Path
    template: str
    prompts: dict[str, int]
    train_records: int
    eval_records: int
    skipped: SkipCounter
    fingerprints: dict[str, Any]
    preemption: Any


def build_phase_trainer(cfg: SFTStageConfig, index: int, init_from: Path, extra_callbacks=()) -> PhaseTrainer:
    """Read the phase's data, load `init_from` with its training chat template, build TRL's SFTTrainer."""
    from trl import SFTConfig, SFTTrainer

    phase = cfg.phases[index]
    phase_dir = Path(cfg.output_dir) / phase.name
    skipped = SkipCounter()
    prompts = RecordTally(cfg.prompt, "sft")
    train_records = read_sft_records(phase.data, skipped, prompts)
    eval_records = read_sft_records(phase.eval_data, skipped, prompts) if phase.eval_data else []
    print(f"[sft] phase {phase.name}: prompt contract {cfg.prompt.digest}: {prompts.counts}", flush=True)

    args = SFTConfig(
        **common.trainer_arguments(
            output_dir=phase_dir / "checkpoints",
            schedule=phase.schedule,
            optim=phase.optim,
            checkpoint=cfg.checkpoint,
            logging=cfg.logging,
            runtime=cfg.runtime,
            run_name=f"sft-{phase.name}",
            field_prefix=f"phases[{index}].schedule",
            has_eval=bool(eval_records),
        ),
        max_length=cfg.max_length,
        packing=cfg.packing,
        packing_strategy=cfg.packing_strategy,
        assistant_only_loss=cfg.assistant_only_loss,
        shuffle_dataset=True,
    )
    tokenizer = common.load_tokenizer(init_from)
    template = prepare_chat_template(tokenizer, cfg.prompt.chat_template, cfg.assistant_only_loss)
    model = common.load_causal_lm(init_from, cfg.runtime)
    fit_model_to_template(tokenizer, model)
    fingerprints: dict[str, Any] = {}
    preemption = preemption_callback()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(train_records),
        eval_dataset=to_dataset(eval_records) if eval_records else None,
        processing_class=tokenizer,
        callbacks=[common.fingerprint_callback(fingerprints), preemption, *extra_callbacks],
    )
    common.set_tensorboard_dir(trainer, phase_dir / "tensorboard")
    return PhaseTrainer(
        trainer,
        phase_dir,
        init_from,
        template,
        prompts.counts,
        len(train_records),
        len(eval_records),
        skipped,
        fingerprints,
        preemption,
    )


def run_phase(cfg: SFTStageConfig, index: int, init_from: Path, extra_callbacks=()) -> dict[str, Any]:
    """Train one phase from the HF dir `init_from`; export `<phase>/model`; return the phase summary."""
    built = build_phase_trainer(cfg, index, init_from, extra_callbacks)
    trainer, phase_dir, phase = built.trainer, built.phase_dir, cfg.phases[index]
    resume = common.last_complete_checkpoint(phase_dir / "checkpoints") if cfg.checkpoint.resume else None
    started = time.time()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    built.preemption.check(trainer.state, f"sft phase {phase.name}")
    model_dir = common.save_hf_dir(trainer, phase_dir / "model")
    common.write_json_main(trainer, model_dir / CONTRACT_FILE, cfg.prompt.to_dict())  # read by eval
    common.finish_wandb()

    history = trainer.state.log_history
    loss_points = common.losses(history)
    summary = {
        "phase": phase.name,
        "init_from": str(init_from),
        "model_dir": str(model_dir),
        "resumed_from": str(resume) if resume else None,
        "chat_template": built.template,
        "prompt_contract": cfg.prompt.to_dict(),
        "prompts": built.prompts,
        "train_records": built.train_records,
        "eval_records": built.eval_records,
        "skipped": {"counts": built.skipped.counts, "examples": built.skipped.examples},
        "global_steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "learning_rate": phase.optim.lr,
        "losses": loss_points,
        "first_loss": loss_points[0][1] if loss_points else None,
        "last_loss": loss_points[-1][1] if loss_points else None,
        "eval_losses": common.losses(history, "eval_loss"),
        "start_weights_sha256": built.fingerprints.get("start_weights_sha256"),
        "end_weights_sha256": built.fingerprints.get("end_weights_sha256"),
        "wall_s": round(time.time() - started, 2),
    }
    common.write_json_main(trainer, phase_dir / "log_history.json", history)
    common.write_json_main(trainer, phase_dir / "summary.json", summary)
    return summary


def run_sft(cfg: SFTStageConfig, extra_callbacks=()) -> dict[str, Any]:
    """Run every phase in order (skipping finished ones); returns the run summary."""
    import json

    out = Path(cfg.output_dir)
    cfg.check_inputs()
    set_run_caches(out)
    if _is_main_rank():
        atomic_write_text(out / "resolved_config.yaml", dump_yaml(cfg))
    init_from = Path(cfg.model)
    phases = []
    for index, phase in enumerate(cfg.phases):
        phase_dir = out / phase.name
        if phase_is_done(phase_dir):
            print(
                f"[sft] phase {phase.name}: already exported at {phase_dir / 'model'}, skipping", flush=True
            )
            summary = json.loads((phase_dir / "summary.json").read_text())
        else:
            print(f"[sft] phase {phase.name}: training from {init_from}", flush=True)
            summary = run_phase(cfg, index, init_from, extra_callbacks)
        phases.append(summary)
        init_from = phase_dir / "model"
    result = {"final_model": str(init_from), "phases": phases}
    if _is_main_rank():
        from megatron_infi.utils import atomic_write_json

        atomic_write_json(out / "sft_summary.json", result)
        common.plot_curves(
            {p["phase"]: [tuple(x) for x in p["losses"]] for p in phases},
            out / "loss.png",
            "SFT loss",
            "loss",
        )
    return result


@command("infi sft")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    cfg, dry_run = parse_stage_config(SFTStageConfig, "infi sft", __doc__, argv)
    if dry_run:
        cfg.check_inputs(dry_run=True).print_notes("sft")
        return 0
    result = run_sft(cfg)
    print(f"[sft] final model: {result['final_model']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
