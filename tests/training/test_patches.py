"""Process-wide patches are applied in one visible place (megatron_infi/training/patches.py), by the
entry points, never as a side effect; each megatron-core patch refuses an untested version."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from megatron_infi import cli
from megatron_infi.config.core import from_dict
from megatron_infi.config.schema import TrainConfig
from megatron_infi.training import patches

PACKAGE = Path(__file__).resolve().parents[2] / "megatron_infi"


@pytest.mark.parametrize("patch", patches.PATCHES, ids=lambda p: p.name)
def test_each_patch_refuses_an_untested_megatron_core(patch):
    patches.check_version(patch, "0.19.9")
    with pytest.raises(patches.UnsupportedVersionError) as info:
        patches.check_version(patch, "0.20.0")
    assert "megatron-core 0.20.0 is installed" in str(info.value) and repr(patch.name) in str(info.value)


def test_the_installed_megatron_core_is_a_tested_one():
    assert patches.megatron_core_version() in patches.MEGATRON_CORE_TESTED


def test_an_entry_point_on_an_untested_version_fails_with_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(patches, "_applied", None)
    monkeypatch.setattr(patches, "megatron_core_version", lambda: "0.20.0")
    code = cli.main(["convert", "to-hf", "--load", str(tmp_path), "--out", str(tmp_path / "hf")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("infi convert to-hf: error: megatron-core 0.20.0 is installed, but patch")


def test_megatron_core_does_not_start_unpatched(monkeypatch):
    from megatron_infi.training.distributed import init_process_group

    monkeypatch.setattr(patches, "_applied", None)
    with pytest.raises(RuntimeError, match=r"patches.apply\(\)"):
        init_process_group()


def test_the_wgrad_predicate_patches_nothing(monkeypatch):
    """Asking whether the fused wgrad GEMM is on reads megatron-core's state; installing it is
    patches.apply()'s job (it used to install it as a side effect of the question)."""
    from megatron.core.tensor_parallel import layers

    from megatron_infi.kernels import wgrad
    from megatron_infi.models import spec

    def install(*args, **kwargs):
        raise AssertionError("the predicate installed the wgrad GEMM")

    monkeypatch.setattr(wgrad, "install", install)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(spec, "resolve_backend", lambda model: "triton")
    model = from_dict(TrainConfig, TrainConfig.preprocess({"model": {"preset": "tiny"}})).model
    for available in (False, True):
        monkeypatch.setattr(layers, "_grad_accum_fusion_available", available)
        assert spec.gradient_accumulation_fusion(model) is available


def test_the_optimizer_fix_wraps_once():
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    patches.apply()
    patched = DistributedOptimizer._set_main_param_and_optimizer_states
    patches._install_distopt_step()
    assert DistributedOptimizer._set_main_param_and_optimizer_states is patched
    assert patched.infi_patched and not getattr(patched.__wrapped__, "infi_patched", False)


def test_patches_are_applied_in_patches_py_only():
    """No module but patches.py installs a process-wide patch (the links to kernels/ etc. are followed)."""
    installers = re.compile(r"cpu_adapter\.apply\(|wgrad\.install\(|_skip_missing_step\(")
    offenders = []
    for root, _, files in os.walk(PACKAGE, followlinks=True):
        for name in files:
            path = Path(root) / name
            if name.endswith(".py") and path.name != "patches.py":
                offenders += [f"{path}: {m.group(0)}" for m in installers.finditer(path.read_text())]
    assert not offenders, offenders
