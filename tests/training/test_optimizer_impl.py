"""`optimizer.impl`: the trainer resolves it per device, records the resolved choice in the run's
config.yaml, puts it on megatron-core's torch AdamW (also after a checkpoint saved with the other
choice is loaded), and the fused kernel trains the same as torch's default."""

from __future__ import annotations

import pytest
import torch
import yaml

from megatron_infi.config.core import ConfigError
from megatron_infi.training.optim import inner_torch_optimizers, resolve_adam_impl
from tests.training.launch import base_config, setup_in_process

# CPU-side checks: on CPU `auto` is torch's default AdamW.
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-side check")


def test_resolution_per_device():
    assert resolve_adam_impl("auto", "cuda") == "fused"
    assert resolve_adam_impl("auto", "cpu") == "torch"
    assert resolve_adam_impl("fused", "cpu") == "fused"  # torch has a fused CPU AdamW
    assert resolve_adam_impl("torch", "cuda") == "torch"
    with pytest.raises(ConfigError) as err:
        resolve_adam_impl("fused", "meta")
    assert err.value.field == "optimizer.impl"


def _groups_fused(trainer) -> set:
    return {bool(g.get("fused")) for o in inner_torch_optimizers(trainer.optimizer) for g in o.param_groups}


def _train(tmp_path, boolq_corpus, name: str, impl: str, steps: int = 2, **sections):
    tokenizer, prefix = boolq_corpus
    cfg = base_config(
        tmp_path / name,
        tokenizer,
        prefix,
        train={"train_iters": steps},
        optimizer={"lr": 2e-3, "min_lr": 2e-4, "impl": impl},
        **sections,
    )
    trainer = setup_in_process(cfg)
    recorded = yaml.safe_load((tmp_path / name / "config.yaml").read_text())["optimizer"]["impl"]
    return trainer, recorded


def test_fused_adamw_trains_like_torch_and_is_recorded(tmp_path, boolq_corpus):
    parallel = {"distributed_optimizer": True}  # fp32 main-param shards, as on the GPU
    losses, params = {}, {}
    for impl, expected in (("auto", "torch"), ("fused", "fused")):
        trainer, recorded = _train(tmp_path, boolq_corpus, impl, impl, parallel=parallel)
        assert recorded == expected
        assert _groups_fused(trainer) == {expected == "fused"}
        losses[impl] = trainer.run()
        params[impl] = [p.detach().clone() for m in trainer.model for p in m.parameters()]
    assert losses["auto"][0] == losses["fused"][0]  # same weights and batch before any update
    torch.testing.assert_close(losses["fused"], losses["auto"], rtol=1e-5, atol=0)
    for a, b in zip(params["fused"], params["auto"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_resume_applies_the_configured_impl(tmp_path, boolq_corpus):
    """A checkpoint's optimizer param groups carry the kernel choice they were saved with."""
    trainer, _ = _train(tmp_path, boolq_corpus, "run", "torch", steps=1)
    trainer.run()
    resumed, recorded = _train(tmp_path, boolq_corpus, "run", "fused", steps=2)
    assert resumed.state.iteration == 1 and recorded == "fused"
    assert _groups_fused(resumed) == {True}
    assert len(resumed.run()) == 1
