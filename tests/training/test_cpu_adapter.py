"""The CPU adapter redirects megatron-core's CUDA assumptions on CPU and is inert where CUDA exists."""

import pytest
import torch

from megatron_infi.training import cpu_adapter


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")
def test_cuda_assumptions_run_on_cpu():
    assert cpu_adapter.apply() is True
    assert torch.zeros(2, device="cuda").device.type == "cpu"
    assert torch.empty(3, device=torch.cuda.current_device()).device.type == "cpu"
    weight = torch.nn.Parameter(torch.ones(2))
    assert weight.type() == "torch.cuda.FloatTensor"  # megatron-core's fp32 param assertion
    assert weight.type(torch.float64).dtype == torch.float64  # conversions are untouched
    with torch.device("meta"):  # the device context still reaches the wrapped factories
        assert torch.empty(2).device.type == "meta" and torch.arange(3).device.type == "meta"
    torch.cuda.synchronize()
    torch.cuda.current_stream().wait_stream(torch.cuda.Stream())
    # The model-parallel RNG tracker forks the CPU generator: inside fork, a different stream;
    # outside, the default stream continues where it was.
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker, model_parallel_cuda_manual_seed

    from megatron_infi.training.distributed import init_model_parallel

    init_model_parallel(1, 1, seed=5)
    model_parallel_cuda_manual_seed(5)
    before = torch.get_rng_state()
    with get_cuda_rng_tracker().fork():
        inside = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before)
    assert not torch.equal(inside, torch.rand(4))


@pytest.mark.gpu
def test_inert_with_cuda():
    current_device = torch.cuda.current_device
    assert cpu_adapter.apply() is False
    assert torch.cuda.current_device is current_device and not cpu_adapter.is_applied()
    assert torch.zeros(1, device="cuda").is_cuda
