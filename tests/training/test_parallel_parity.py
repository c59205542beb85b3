"""TP / PP / DP (distributed optimizer) / TPxPP give the same per-step losses as one rank, from the
same initial weights and batches."""

import pytest

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
