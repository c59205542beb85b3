"""Under torchrun on CPU (gloo): a conversion loads into the trainer's model at TP=2 x PP=2, is
saved back from that layout and exports bit-identically; the Megatron model's logits at TP=2
match transformers' in fp32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_infi.checkpoints_tools import from_hf, to_hf
from tests.checkpoints_tools.tiny_hf import ARCHS, assert_bit_identical, write_tiny_hf
from tests.processes import run_tree

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.dist


def torchrun(nproc: int, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    proc = run_tree(cmd, cwd=REPO, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{arch: (HF dir, checkpoint root converted for TP=2 x PP=2)}."""
    root = tmp_path_factory.mktemp("parallel")
    out = {}
    for seed, arch in enumerate(sorted(ARCHS)):
        hf = write_tiny_hf(root / f"hf_{arch}", arch, seed=seed, max_shard_size="300KB")
        from_hf.convert(hf, root / f"mcore_{arch}", tp=2, pp=2)
        out[arch] = (hf, root / f"mcore_{arch}")
    return out


def test_tp2_pp2_round_trip_is_bit_identical(converted, tmp_path):
    pairs = [f"{ckpt}:{tmp_path / f'resaved_{arch}'}" for arch, (_, ckpt) in converted.items()]
    torchrun(4, [str(REPO / "tests/checkpoints_tools/reshard.py"), "2", "2", *pairs])
    for arch, (hf, _) in converted.items():
        resaved = tmp_path / f"resaved_{arch}"
        run = json.loads((resaved / "iter_0000005" / "run.json").read_text())
        assert run["parallel"]["tensor"] == 2 and run["parallel"]["pipeline"] == 2
        # Four ranks each wrote their own shard.
        assert len(list((resaved / "iter_0000005").glob("__*_0.distcp"))) == 4
        out = to_hf.export(resaved, tmp_path / f"hf_{arch}")
        assert assert_bit_identical(hf, out) > 0


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_torchrun_tp2_logits_match_transformers(converted, tmp_path, arch):
    hf, ckpt = converted[arch]
    report_path = tmp_path / "report.json"
    args = ["-m", "megatron_infi.checkpoints_tools.verify", "--load", str(ckpt), "--hf", str(hf), "--tp", "2"]
    proc = torchrun(2, [*args, "--dtype", "fp32", "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert "verify PASSED" in proc.stdout
    assert report["tp"] == 2 and report["dtype"] == "float32" and report["positions"] == 4 * 64
    assert report["max_abs_diff"] <= 1e-4, report
    assert report["top1_agreement"] == 1.0 and abs(report["mean_kl"]) <= 1e-6
