"""InfiR-VL through the shared trainer: TP=2 gives TP=1's losses, a resumed run is the same run,
the language model starts from a text checkpoint, and the HF LLaVA export has the same logits."""

from __future__ import annotations

import pytest

from tests.training.launch import losses, run_train, train_in_process
from tests.vl.conftest import vl_config

STEPS = 3


@pytest.mark.dist
def test_tp2_matches_tp1(tmp_path, llama3_tokenizer_dir, conversations):
    init = vl_config(tmp_path / "init", llama3_tokenizer_dir, conversations, train={"train_iters": 0})
    run_train(init)
    start = {"load": str(tmp_path / "init" / "checkpoints")}
    single = vl_config(
        tmp_path / "tp1", llama3_tokenizer_dir, conversations, train={"train_iters": STEPS}, checkpoint=start
    )
    run_train(single)
    double = vl_config(
        tmp_path / "tp2",
        llama3_tokenizer_dir,
        conversations,
        train={"train_iters": STEPS},
        checkpoint=start,
        parallel={"tensor": 2},
    )
    run_train(double, nproc=2)
    expected, got = losses(tmp_path / "tp1"), losses(tmp_path / "tp2")
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in expected:
        assert abs(got[step] - expected[step]) <= 1e-5, (step, got[step], expected[step])
    assert got[STEPS] < got[1]


def test_resume_is_exact_and_starts_from_the_text_checkpoint(tmp_path, trained_vl, conversations):
    """4 steps straight (the fixture's run) vs 2 + resume 2 from the same text checkpoint: the same
    losses; the language model is the text checkpoint's, frozen."""
    import torch

    from megatron_infi.checkpoints_tools.mcore_io import McoreCheckpoint, single_process_group
    from megatron_infi.training.distributed import shutdown

    root, tokenizer = trained_vl["root"], trained_vl["tokenizer"]
    parts = vl_config(
        tmp_path / "parts",
        tokenizer,
        conversations,
        train={"train_iters": 4, "exit_interval": 2},
        vision=trained_vl["vision"],
    )
    train_in_process(parts)
    shutdown()
    assert sorted(losses(tmp_path / "parts")) == [1, 2]
    train_in_process(parts)  # resumes at 2 and finishes
    shutdown()
    assert losses(tmp_path / "parts") == losses(root / "full")

    single_process_group()
    text_ckpt = McoreCheckpoint(root / "text" / "checkpoints")
    vl_ckpt = McoreCheckpoint(root / "full" / "checkpoints")
    key = "embedding.word_embeddings.weight"
    try:
        assert torch.equal(
            text_ckpt.read_global([key])[key],
            vl_ckpt.read_global(["language_model." + key])["language_model." + key],
        )
    finally:
        shutdown()


def test_hf_export_has_the_checkpoints_logits(trained_vl):
    from megatron_infi.checkpoints_tools.llava_verify import verify
    from megatron_infi.training.distributed import shutdown

    try:
        report = verify(trained_vl["root"] / "full" / "checkpoints", trained_vl["hf"])
    finally:
        shutdown()
    assert report["passed"], report
    assert report["max_abs_diff"] <= 1e-3


@pytest.mark.parametrize(
    "parallel", [{"pipeline": 2}, {"tensor": 2, "sequence_parallel": True}], ids=["pp2", "sp"]
)
def test_pipeline_and_sequence_parallel_are_refused_at_config_time(tmp_path, parallel):
    """LLaVAModel runs with TP (and DP) only: the config names the field before anything is built."""
    import megatron_infi.models  # noqa: F401  (registers the architectures the config names)
    from megatron_infi.config.core import ConfigError, from_dict, validate_tree
    from megatron_infi.config.schema import TrainConfig

    cfg = vl_config(tmp_path, tmp_path / "tok", tmp_path / "c.jsonl", parallel=parallel)
    cfg["model"]["num_layers"] = 2
    with pytest.raises(ConfigError, match="tensor parallelism only") as info:
        validate_tree(from_dict(TrainConfig, TrainConfig.preprocess(cfg)))
    assert info.value.field == "parallel"
