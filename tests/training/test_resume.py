"""Save at step k, stop, resume: the following losses equal an uninterrupted run's exactly, for the
plain and the distributed optimizer; resuming under a different TP layout continues the same run."""

import shutil

import pytest
import yaml

from tests.training.launch import base_config, losses, run_train

pytestmark = [pytest.mark.dist]
TOTAL, STOP = 6, 3


def _runs(root, corpus, name, nproc, parallel):
    tokenizer, prefix = corpus
    train = {"train_iters": TOTAL}
    full = base_config(root / f"{name}_full", tokenizer, prefix, train=train, parallel=parallel)
    run_train(full, nproc=nproc)
    cut = base_config(
        root / f"{name}_cut", tokenizer, prefix, parallel=parallel, train={**train, "exit_interval": STOP}
    )
    run_train(cut, nproc=nproc)
    assert sorted(losses(root / f"{name}_cut")) == list(range(1, STOP + 1))
    return losses(root / f"{name}_full"), cut


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("resume")


@pytest.mark.parametrize(
    "name,nproc,parallel", [("plain", 1, {}), ("distopt", 2, {"distributed_optimizer": True})]
)
def test_resume_is_exact(root, boolq_corpus, name, nproc, parallel):
    expected, cut = _runs(root, boolq_corpus, name, nproc, parallel)
    shutil.copytree(root / f"{name}_cut" / "checkpoints", root / f"{name}_at{STOP}" / "checkpoints")
    # Same config, same run dir: the second launch resumes from latest and finishes the run.
    run_train({**cut, "train": {**cut["train"], "exit_interval": 0}}, nproc=nproc)
    got = losses(root / f"{name}_cut")
    for step in range(STOP + 1, TOTAL + 1):
        assert got[step] == expected[step], (name, step, got[step], expected[step])


@pytest.mark.parametrize("name", ["plain", "distopt"])
def test_resume_with_other_layout(root, name):
    """The checkpoint of the test above, resumed at TP=2 (DP=1): the same run within fp32 noise."""
    saved = root / f"{name}_at{STOP}"
    if not (saved / "checkpoints").exists():
        pytest.skip("needs test_resume_is_exact's checkpoint")
    dst = root / f"{name}_tp2"
    shutil.copytree(saved / "checkpoints", dst / "checkpoints")
    cfg = yaml.safe_load((root / f"{name}_cut" / "input.yaml").read_text())
    cfg["run_dir"] = str(dst)
    cfg["parallel"] = {**cfg.get("parallel", {}), "tensor": 2}
    cfg["train"]["exit_interval"] = 0
    run_train(cfg, nproc=2)
    expected, got = losses(root / f"{name}_full"), losses(dst)
    assert sorted(got) == list(range(STOP + 1, TOTAL + 1))
    for step in got:
        assert abs(got[step] - expected[step]) <= 1e-5, (name, step, got[step], expected[step])
