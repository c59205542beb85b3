"""The torch stand-in for apex's fused wgrad accumulation, inside megatron-core's linear layers and
DDP: accumulating two micro-batches' weight gradients straight into main_grad gives the same
gradients as megatron-core's unfused path (a weight .grad added into main_grad by the DDP hook)."""

from __future__ import annotations

import pytest
import torch

from megatron_infi.config.core import from_dict
from megatron_infi.config.schema import TrainConfig
from megatron_infi.kernels import wgrad

# CPU-side checks (fp32, Triton interpreter); on a GPU the same is covered by test_model_gpu.py.
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-side check")


def _grads(fused: bool, monkeypatch) -> dict[str, torch.Tensor]:
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    import megatron_infi.models.gpt as gpt

    monkeypatch.setattr(gpt, "gradient_accumulation_fusion", lambda model: fused)
    model = {
        "preset": "tiny", "vocab_size": 512, "num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 128,
        "num_attention_heads": 4, "num_query_groups": 2, "kernels": "torch",
    }  # fmt: skip
    cfg = from_dict(TrainConfig, TrainConfig.preprocess({"model": model}))
    torch.manual_seed(5)
    model_parallel_cuda_manual_seed(5)
    (chunk,), tconfig = gpt.build_model(cfg)
    assert tconfig.gradient_accumulation_fusion is fused
    ddp = DistributedDataParallel(
        config=tconfig, ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True), module=chunk
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):  # two micro-batches accumulate
        tokens = torch.randint(0, 512, (2, 16), generator=gen)
        labels = torch.randint(0, 512, (2, 16), generator=gen)
        ddp(tokens, torch.arange(16)[None].expand(2, 16), None, labels=labels).sum().backward()
    return {name: p.main_grad.clone() for name, p in ddp.module.named_parameters()}


def test_fused_wgrad_accumulation_matches_unfused(monkeypatch):
    from megatron.core.tensor_parallel import layers

    from megatron_infi.training.distributed import init_model_parallel

    init_model_parallel(1, 1, seed=5)
    unfused = _grads(False, monkeypatch)
    monkeypatch.setattr(layers, "_grad_accum_fusion_available", layers._grad_accum_fusion_available)
    monkeypatch.setattr(layers, "fused_weight_gradient_mlp_cuda", None, raising=False)
    assert wgrad.install(require_mixed_gemm=False)
    assert layers.fused_weight_gradient_mlp_cuda is wgrad.TorchWgradAccumulation
    calls = []
    original = wgrad.TorchWgradAccumulation.wgrad_gemm_accum_fp32

    def counted(total_input, grad_output, main_grad):
        calls.append(main_grad.shape)
        return original(total_input, grad_output, main_grad)

    monkeypatch.setattr(wgrad.TorchWgradAccumulation, "wgrad_gemm_accum_fp32", staticmethod(counted))
    fused = _grads(True, monkeypatch)
    assert len(calls) == 2 * 8  # 2 micro-batches x (qkv, proj, fc1, fc2) x 2 layers
    assert unfused.keys() == fused.keys()
    for name in fused:
        torch.testing.assert_close(fused[name], unfused[name], rtol=1e-5, atol=1e-6, msg=name)
