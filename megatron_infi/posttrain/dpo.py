"""Direct preference optimisation (TRL's DPOTrainer) of an HF model dir, normally the SFT export.

The reference is the frozen starting model (or `ref_model`), kept in memory or, with
`reference: precomputed`, replaced by log-probs computed once before training. The held-out pairs
(`eval_data`, or `eval_fraction` of `data`) are scored before and after training, so the summary
states how far the chosen-vs-rejected reward margin moved.

Prompts follow the config's prompt contract (`prompt:`) as in `infi sft`: pairs from `infi dpo-pairs`
carry the contract they were rendered under (another one warns), raw pairs are rendered now, and the
export records the contract in model/prompt_contract.json.

input:
  model: an HF model dir, e.g. `infi sft`'s <output_dir>/<last phase>/model
  data: JSONL of preference pairs, TRL's conversational format (what `infi dpo-pairs` writes as
  pairs.jsonl); the prompt ends with a user turn, chosen / rejected are assistant turns:
    {"prompt": [{"role": "user", "content": "What is 2+3?"}],
     "chosen": [{"role": "assistant", "content": "2+3=5. \\\\boxed{5}"}],
     "rejected": [{"role": "assistant", "content": "2+3=6. \\\\boxed{6}"}]}

output (under output_dir):
  model/                       HF export of the trained policy (with prompt_contract.json): eval's input
  checkpoints/checkpoint-N/    Trainer checkpoints (resume)
  summary.json                 held-out reward margins before / after, losses, skipped records
  log_history.json, tensorboard/, dpo.png, resolved_config.yaml

example config: launch/configs/posttrain/demo_dpo.yaml (toy), infialign_dpo.yaml
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from megatron_infi.config.core import ConfigError, dump_yaml, parse_stage_config
from megatron_infi.config.inputs import InputCheck
from megatron_infi.config.prompt import CONTRACT_FILE, PromptContract, RecordTally, check_model_contract
from megatron_infi.config.sections import CheckpointConfig, LoggingConfig
from megatron_infi.errors import command
from megatron_infi.generation.preflight import check_tokenizer
from megatron_infi.logs import quiet_logs
from megatron_infi.posttrain import common
from megatron_infi.posttrain.chat import check_template_files, fit_model_to_template, prepare_chat_template
from megatron_infi.posttrain.data import read_preference_records, split_held_out, to_dataset
from megatron_infi.posttrain.preemption import preemption_callback
from megatron_infi.utils import SkipCounter, atomic_write_json, atomic_write_text, set_run_caches

LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip
EVAL_KEYS = (
    "eval_loss",
    "eval_rewards/margins",
    "eval_rewards/accuracies",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
)


VALIDATE_RECORDS = 64  # usable records an input check reads per file


def _dpo_optim() -> common.OptimConfig:
    return common.OptimConfig(lr=5e-7, warmup_ratio=0.1)


@dataclass
class DPOStageConfig:
    model: str = ""  # HF dir of the policy's starting point (the SFT model)
    ref_model: str | None = None  # frozen reference; null: the starting model itself
    output_dir: str = ""
    data: list[str] = field(default_factory=list)  # preference JSONL (TRL conversational format)
    eval_data: list[str] = field(default_factory=list)
    eval_fraction: float = 0.05  # held-out share of `data` when eval_data is empty
    prompt: PromptContract = field(default_factory=PromptContract)  # system prompt, instructions, template
    beta: float = 0.1
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    loss_weights: list[float] | None = None
    reference: Literal["model", "precomputed"] = "model"
    max_length: int = 4096
    schedule: common.EpochScheduleConfig = field(default_factory=common.EpochScheduleConfig)
    optim: common.OptimConfig = field(default_factory=_dpo_optim)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    runtime: common.RuntimeConfig = field(default_factory=common.RuntimeConfig)

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model", "set the HF model dir to start from (the SFT model)")
        if not self.output_dir:
            raise ConfigError("output_dir", "set where checkpoints and the exported model go")
        if not self.data:
            raise ConfigError("data", "list at least one preference JSONL file")
        if self.beta <= 0:
            raise ConfigError("beta", f"must be > 0, got {self.beta}")
        unknown = [t for t in self.loss_type if t not in LOSS_TYPES]
        if not self.loss_type or unknown:
            raise ConfigError("loss_type", f"unknown {unknown or 'empty list'}; known: {list(LOSS_TYPES)}")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ConfigError("loss_weights", f"needs one weight per loss_type ({len(self.loss_type)})")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError("eval_fraction", f"must be in [0, 1), got {self.eval_fraction}")
        if self.max_length < 16:
            raise ConfigError("max_length", f"must be >= 16, got {self.max_length}")

    def check_inputs(self, dry_run: bool = False) -> InputCheck:
        """Before any weights load: tokenizer and chat template of the model, the preference files'
        records; a model trained under another prompt contract warns. A dry run notes what does not
        exist yet."""
        check = InputCheck(dry_run)
        if check.present("model", self.model, "sft_model", model_dir=True):
            check_template_files(self.model, self.prompt.chat_template, need_generation_markers=False)
            prepare_chat_template(check_tokenizer(self.model, "model"), self.prompt.chat_template, False)
            check_model_contract(self.model, self.prompt, "dpo")
        if self.ref_model:
            check.present("ref_model", self.ref_model, "sft_model", model_dir=True)
        for key in ("data", "eval_data"):
            for j, path in enumerate(getattr(self, key)):
                if check.present(f"{key}[{j}]", path, "pairs"):
                    read_preference_records([path], SkipCounter(), limit=VALIDATE_RECORDS)
        return check


def _eval_metrics(trainer, dataset) -> dict[str, float]:
    if dataset is None:
        return {}
    metrics = trainer.evaluate()
    return {key: float(metrics[key]) for key in EVAL_KEYS if key in metrics}


def run_dpo(cfg: DPOStageConfig, extra_callbacks=()) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    out = Path(cfg.output_dir)
    cfg.check_inputs()
    if (out / "model" / "config.json").is_file() and (out / "summary.json").is_file():
        print(f"[dpo] already exported at {out / 'model'}, skipping", flush=True)
        return json.loads((out / "summary.json").read_text())
    set_run_caches(out)
    skipped = SkipCounter()
    prompts = RecordTally(cfg.prompt, "dpo")
    records = read_preference_records(cfg.data, skipped, prompts)
    if cfg.eval_data:
        train_records, held_out = records, read_preference_records(cfg.eval_data, skipped, prompts)
    else:
        train_records, held_out = split_held_out(records, cfg.eval_fraction, cfg.runtime.seed)

    args = DPOConfig(
        **common.trainer_arguments(
            output_dir=out / "checkpoints",
            schedule=cfg.schedule,
            optim=cfg.optim,
            checkpoint=cfg.checkpoint,
            logging=cfg.logging,
            runtime=cfg.runtime,
            run_name="dpo",
            field_prefix="schedule",
            has_eval=bool(held_out),
        ),
        beta=cfg.beta,
        loss_type=list(cfg.loss_type),
        loss_weights=cfg.loss_weights,
        max_length=cfg.max_length,
        precompute_ref_log_probs=cfg.reference == "precomputed",
    )
    tokenizer = common.load_tokenizer(cfg.model)
    template = prepare_chat_template(tokenizer, cfg.prompt.chat_template, need_generation_markers=False)
    model = common.load_causal_lm(cfg.model, cfg.runtime)
    rows = model.get_input_embeddings().weight.shape[0]
    fit_model_to_template(tokenizer, model)
    ref_model = None
    if cfg.reference == "model":
        if cfg.ref_model is None and model.get_input_embeddings().weight.shape[0] != rows:
            ref_model = copy.deepcopy(
                model
            )  # ChatML tokens were just added: the reference must match exactly
        else:
            ref_model = common.load_causal_lm(cfg.ref_model or cfg.model, cfg.runtime)

    preemption = preemption_callback()
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=to_dataset(train_records),
        eval_dataset=to_dataset(held_out) if held_out else None,
        processing_class=tokenizer,
        callbacks=[preemption, *extra_callbacks],
    )
    common.set_tensorboard_dir(trainer, out / "tensorboard")
    if trainer.accelerator.is_main_process:
        atomic_write_text(out / "resolved_config.yaml", dump_yaml(cfg))
        print(
            f"[dpo] {len(train_records)} training pairs, {len(held_out)} held out; "
            f"prompt contract {cfg.prompt.digest}: {prompts.counts}",
            flush=True,
        )
    resume = common.last_complete_checkpoint(out / "checkpoints") if cfg.checkpoint.resume else None
    before = _eval_metrics(trainer, trainer.eval_dataset)
    started = time.time()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    preemption.check(trainer.state, "dpo")
    wall = time.time() - started
    after = _eval_metrics(trainer, trainer.eval_dataset)
    model_dir = common.save_hf_dir(trainer, out / "model")
    common.write_json_main(trainer, model_dir / CONTRACT_FILE, cfg.prompt.to_dict())  # read by eval
    common.finish_wandb()

    history = trainer.state.log_history
    summary = {
        "model_dir": str(model_dir),
        "init_from": cfg.model,
        "reference": cfg.ref_model or cfg.model,
        "reference_mode": cfg.reference,
        "resumed_from": str(resume) if resume else None,
        "chat_template": template,
        "prompt_contract": cfg.prompt.to_dict(),
        "prompts": prompts.counts,
        "train_pairs": len(train_records),
        "held_out_pairs": len(held_out),
        "skipped": {"counts": skipped.counts, "examples": skipped.examples},
        "global_steps": trainer.state.global_step,
        "beta": cfg.beta,
        "loss_type": cfg.loss_type,
        "held_out_before": before,
        "held_out_after": after,
        "losses": common.losses(history),
        "train_margins": common.losses(history, "rewards/margins"),
        "wall_s": round(wall, 2),
    }
    if trainer.accelerator.is_main_process:
        atomic_write_json(out / "log_history.json", history)
        atomic_write_json(out / "summary.json", summary)
        common.plot_curves(
            {"loss": summary["losses"], "reward margin (train)": summary["train_margins"]},
            out / "dpo.png",
            "DPO",
            "value",
            sequential=False,
        )
    return summary


@command("infi dpo")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    cfg, dry_run = parse_stage_config(DPOStageConfig, "infi dpo", __doc__, argv)
    if dry_run:
        cfg.check_inputs(dry_run=True).print_notes("dpo")
        return 0
    summary = run_dpo(cfg)
    before = summary["held_out_before"].get("eval_rewards/margins")
    after = summary["held_out_after"].get("eval_rewards/margins")
    print(f"[dpo] model: {summary['model_dir']}  held-out reward margin: {before} -> {after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
