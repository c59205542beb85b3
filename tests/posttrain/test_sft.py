"""`infi sft`: loss falls, only assistant tokens carry labels, phase 2 starts from phase 1's weights,
an interrupted phase resumes from its last checkpoint, and the export is a loadable HF dir."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from megatron_infi.config.core import load_config
from megatron_infi.config.prompt import CONTRACT_FILE
from megatron_infi.posttrain import common
from megatron_infi.posttrain.sft import SFTStageConfig, build_phase_trainer, run_sft

TINY_SCHEDULE = "{max_steps: %d, global_batch_size: 2, micro_batch_size: 2}"


def sft_config(
    model_dir: Path, out: Path, phases: list[tuple[str, Path, int]], *extra: str
) -> SFTStageConfig:
    phase_yaml = ", ".join(
        f"{{name: {name}, data: [{data}], schedule: {TINY_SCHEDULE % steps}, optim: {{lr: 0.01, warmup_ratio: 0.0}}}}"
        for name, data, steps in phases
    )
    return load_config(
        SFTStageConfig,
        None,
        [
            f"model={model_dir}",
            f"output_dir={out}",
            "max_length=128",
            f"phases=[{phase_yaml}]",
            "checkpoint.save_interval=2",
            "logging.log_interval=1",
            "logging.tensorboard=true",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def two_phase_run(tmp_path_factory, tiny_model_dir, sft_data):
    out = tmp_path_factory.mktemp("sft") / "run"
    phases = [("foundational", sft_data["phase1"], 3), ("advanced", sft_data["phase2"], 2)]
    cfg = sft_config(tiny_model_dir, out, phases, "logging.wandb=true")
    with pytest.MonkeyPatch.context() as env:
        # set_run_caches keeps caches an earlier run set: start from none so wandb writes under `out`.
        for key in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_MODE"):
            env.delenv(key, raising=False)
        return cfg, run_sft(cfg)


def test_loss_falls(two_phase_run):
    _, result = two_phase_run
    first, second = result["phases"]
    assert [step for step, _ in first["losses"]] == [1, 2, 3]
    assert first["last_loss"] < first["first_loss"] - 0.2
    assert second["last_loss"] < first["first_loss"]


def test_phase2_starts_from_phase1_weights(two_phase_run):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import hash_module

    cfg, result = two_phase_run
    first, second = result["phases"]
    assert first["start_weights_sha256"] != first["end_weights_sha256"]
    assert second["init_from"] == first["model_dir"]
    assert second["start_weights_sha256"] == first["end_weights_sha256"]
    assert second["end_weights_sha256"] != second["start_weights_sha256"]
    # The export holds exactly the weights training ended with.
    exported = AutoModelForCausalLM.from_pretrained(first["model_dir"], dtype="float32")
    assert hash_module(exported) == first["end_weights_sha256"]


def test_export_and_run_artifacts(two_phase_run):
    from transformers import AutoTokenizer, GenerationConfig

    cfg, result = two_phase_run
    out = Path(cfg.output_dir)
    final = Path(result["final_model"])
    assert final == out / "advanced" / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (final / name).is_file(), name
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert "{% generation %}" in tokenizer.chat_template
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert eot in GenerationConfig.from_pretrained(final).eos_token_id  # generation stops at end of turn
    assert json.loads((out / "sft_summary.json").read_text())["final_model"] == str(final)
    # the prompt contract the model was trained under, which eval compares with its own
    assert json.loads((final / CONTRACT_FILE).read_text()) == cfg.prompt.to_dict()
    assert [p["prompts"]["rendered"] for p in result["phases"]] == [24, 24]  # raw records: rendered by sft
    assert (out / "loss.png").stat().st_size > 0
    assert list((out / "foundational" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(list((out / "cache" / "wandb").rglob("offline-run-*/run-*.wandb"))) == 2  # one run per phase
    assert not list(out.rglob("*.partial"))


def test_rerun_skips_finished_phases(two_phase_run):
    cfg, result = two_phase_run
    model_file = Path(result["final_model"]) / "model.safetensors"
    before = model_file.stat().st_mtime_ns
    again = run_sft(cfg)
    assert again["phases"] == json.loads(json.dumps(result["phases"]))
    assert model_file.stat().st_mtime_ns == before


def _labelled_text(tokenizer, input_ids, labels) -> str:
    return tokenizer.decode([tok for tok, lab in zip(input_ids, labels, strict=True) if lab != -100])


def test_only_assistant_tokens_carry_labels(tmp_path, tiny_model_dir, sft_data):
    cfg = sft_config(
        tiny_model_dir, tmp_path / "run", [("p", sft_data["phase2"], 1)], "packing=false", "max_length=4096"
    )
    built = build_phase_trainer(cfg, 0, Path(cfg.model))
    tokenizer = built.trainer.processing_class
    records = [json.loads(line) for line in Path(sft_data["phase2"]).read_text().splitlines()]
    dataset = built.trainer.train_dataset
    assert len(dataset) == len(records)
    by_assistant = {r["messages"][-1]["content"].strip() + "<|eot_id|>" for r in records}
    for example in dataset:
        labelled = _labelled_text(tokenizer, example["input_ids"], example["labels"])
        assert labelled in by_assistant  # exactly the assistant turn + its end-of-turn token, nothing else


def test_packed_batches_keep_the_assistant_mask(tmp_path, tiny_model_dir, sft_data):
    cfg = sft_config(tiny_model_dir, tmp_path / "run", [("p", sft_data["phase1"], 1)], "max_length=512")
    trainer = build_phase_trainer(cfg, 0, Path(cfg.model)).trainer
    batch = next(iter(trainer.get_train_dataloader()))
    tokenizer = trainer.processing_class
    assert "position_ids" in batch and batch["input_ids"].shape[0] == 1  # padding-free packed row
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) >= 2  # several conversations share the row
    labelled = _labelled_text(tokenizer, batch["input_ids"][0].tolist(), batch["labels"][0].tolist())
    questions = [
        json.loads(line)["messages"][0]["content"]
        for line in Path(sft_data["phase1"]).read_text().splitlines()
    ]
    assert labelled.count("<|eot_id|>") == len(starts)  # each conversation's end-of-turn is trained
    assert not any(q[:40] in labelled for q in questions)
    assert "\\boxed{" in labelled


def test_chatml_when_the_model_has_no_template(tmp_path, tiny_model_dir, sft_data):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))

    cfg = sft_config(
        bare, tmp_path / "run", [("p", sft_data["phase2"], 1)], "packing=false", "max_length=4096"
    )
    built = build_phase_trainer(cfg, 0, bare)
    tokenizer, model = built.trainer.processing_class, built.trainer.model
    assert built.template == "chatml"
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == 128256 + 2
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in model.generation_config.eos_token_id
    records = [json.loads(line) for line in Path(sft_data["phase2"]).read_text().splitlines()]
    by_assistant = {r["messages"][-1]["content"] + "<|im_end|>" for r in records}
    for example in built.trainer.train_dataset:
        assert tokenizer.decode(example["input_ids"]).startswith("<|im_start|>user\n")
        assert _labelled_text(tokenizer, example["input_ids"], example["labels"]) in by_assistant


class _Crash(RuntimeError):
    pass


def _crash_at(step: int):
    from transformers import TrainerCallback

    class CrashAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise _Crash(f"simulated crash after step {step}")

    return CrashAt()


def test_interrupted_run_resumes_from_last_checkpoint(tmp_path, tiny_model_dir, sft_data):
    phases = [("p", sft_data["phase1"], 3)]
    reference = run_sft(sft_config(tiny_model_dir, tmp_path / "straight", phases))["phases"][0]

    cfg = sft_config(tiny_model_dir, tmp_path / "crashed", phases)
    with pytest.raises(_Crash):
        run_sft(cfg, extra_callbacks=[_crash_at(3)])
    checkpoints = tmp_path / "crashed" / "p" / "checkpoints"
    assert common.last_complete_checkpoint(checkpoints).name == "checkpoint-2"
    assert not (tmp_path / "crashed" / "p" / "model").exists()

    resumed = run_sft(cfg)["phases"][0]
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert resumed["global_steps"] == 3
    assert [s for s, _ in resumed["losses"]] == [s for s, _ in reference["losses"]] == [1, 2, 3]
    assert [v for _, v in resumed["losses"]] == pytest.approx([v for _, v in reference["losses"]], rel=1e-5)
    assert resumed["end_weights_sha256"] == reference["end_weights_sha256"]


def test_partial_checkpoint_is_not_resumed(tmp_path):
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-6").mkdir()  # crashed while saving: no trainer_state.json yet
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text('{"global_st')  # torn write
    assert common.last_complete_checkpoint(tmp_path).name == "checkpoint-4"
    assert common.last_complete_checkpoint(tmp_path / "missing") is None


def _signal_at(step: int):
    import os
    import signal

    from transformers import TrainerCallback

    class SignalAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGUSR1)  # what SLURM's --signal=B:USR1 forwards

    return SignalAt()


def test_preemption_signal_checkpoints_stops_and_resumes(tmp_path, tiny_model_dir, sft_data):
    import signal

    from megatron_infi.posttrain.preemption import Preempted

    cfg = sft_config(tiny_model_dir, tmp_path / "run", [("p", sft_data["phase1"], 5)])
    handler = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(Preempted, match="step 3 of 5"):
        run_sft(cfg, extra_callbacks=[_signal_at(2)])
    assert signal.getsignal(signal.SIGUSR1) is handler
    # Step 3 is not a save_interval=2 step: the checkpoint is the signal's, and nothing was exported.
    checkpoints = tmp_path / "run" / "p" / "checkpoints"
    assert common.last_complete_checkpoint(checkpoints).name == "checkpoint-3"
    assert not (tmp_path / "run" / "p" / "model").exists()

    resumed = run_sft(cfg)["phases"][0]
    assert resumed["resumed_from"].endswith("checkpoint-3")
    assert resumed["global_steps"] == 5 and [s for s, _ in resumed["losses"]] == [1, 2, 3, 4, 5]
