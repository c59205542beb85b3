"""TP / PP / DP (distributed optimizer) / TPxPP give the same per-step losses as one rank, from the
same initial weights and batches."""

import pytest

from megatron_infi.checkpoints_tools.mcore_io import McoreCheckpoint, single_process_group
from tests.training.launch import base_config, losses, run_train

pytestmark = [pytest.mark.dist]
STEPS = 3


@pytest.fixture(scope="module")
def reference(tmp_path_factory, boolq_corpus):
    """An initial checkpoint (iteration 0) and the single-rank losses trained from it."""
    tokenizer, prefix = boolq_corpus
    root = tmp_path_factory.mktemp("parity")
    init = base_config(root / "init", tokenizer, prefix, train={"train_iters": 0})
    run_train(init)
    single = base_config(
        root / "tp1",
        tokenizer,
        prefix,
        train={"train_iters": STEPS},
        checkpoint={"load": str(root / "init" / "checkpoints")},
    )
    run_train(single)
    return root, losses(root / "tp1")


@pytest.mark.parametrize(
    "name,nproc,parallel",
    [
        ("tp2", 2, {"tensor": 2}),
        ("pp2", 2, {"pipeline": 2}),
        ("dp2_distopt", 2, {"distributed_optimizer": True}),
        ("tp2pp2", 4, {"tensor": 2, "pipeline": 2}),
    ],
)
def test_layout_matches_single_rank(reference, boolq_corpus, name, nproc, parallel):
    root, expected = reference
    tokenizer, prefix = boolq_corpus
    cfg = base_config(
        root / name,
        tokenizer,
        prefix,
        train={"train_iters": STEPS},
        parallel=parallel,
        checkpoint={"load": str(root / "init" / "checkpoints")},
    )
    run_train(cfg, nproc=nproc)
    got = losses(root / name)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in expected:
        assert abs(got[step] - expected[step]) <= 1e-5, (name, step, got[step], expected[step])
    # The steps actually trained: the loss moved.
    assert got[STEPS] < got[1]


def test_qk_norm_architecture_matches_single_rank_at_tp2(tmp_path, boolq_corpus):
    """Qwen3's q/k norms (one weight shared by all heads, which TP splits) with a head_dim of its own:
    TP=2 needs their gradients summed over the tensor-parallel ranks to train like one rank."""
    tokenizer, prefix = boolq_corpus
    qwen3 = {"arch": "qwen3", "head_dim": 24}

    def config(name: str, **sections) -> dict:
        cfg = base_config(tmp_path / name, tokenizer, prefix, **sections)
        cfg["model"].update(qwen3)
        return cfg

    run_train(config("init", train={"train_iters": 0}))
    init = {"load": str(tmp_path / "init" / "checkpoints")}
    run_train(config("tp1", train={"train_iters": STEPS}, checkpoint=init))
    run_train(config("tp2", train={"train_iters": STEPS}, checkpoint=init, parallel={"tensor": 2}), nproc=2)
    expected, got = losses(tmp_path / "tp1"), losses(tmp_path / "tp2")
    assert sorted(got) == sorted(expected) == list(range(1, STEPS + 1))
    for step in expected:
        assert abs(got[step] - expected[step]) <= 1e-5, (step, got[step], expected[step])
    assert got[STEPS] < got[1]
    # Three steps barely move the loss; the trained norm weights show a missing gradient sum
    # directly (Adam moves each by ~lr per step: 4e-3 here, 7e-3 apart without the sum).
    single_process_group()
    keys = [f"decoder.layers.self_attention.{n}_layernorm.weight" for n in "qk"]
    start, tp1, tp2 = (
        McoreCheckpoint(tmp_path / n / "checkpoints").read_global(keys) for n in ("init", "tp1", "tp2")
    )
    for key in keys:
        assert (tp1[key] - start[key]).abs().max() > 1e-3, key
        assert (tp2[key] - tp1[key]).abs().max() <= 1e-4, key
