"""Weight-gradient GEMMs that accumulate straight into megatron-core's fp32 `main_grad`.

With `gradient_accumulation_fusion`, megatron-core's linear layers hand the wgrad GEMM the fp32
main_grad buffer to accumulate into, instead of writing a bf16 weight gradient that the DDP hook
then reads and adds into main_grad (per micro-batch: ~2 bytes written + 10 bytes read/written per
linear parameter, and the bf16 rounding of each micro-batch's gradient). megatron-core gets that
GEMM from apex's `fused_weight_gradient_mlp_cuda` extension, which is hard to install; torch's
`addmm(..., out_dtype=torch.float32)` (bf16 inputs, fp32 accumulate in the GEMM epilogue) does the
same job. `install()` puts this stand-in where megatron-core looks for the extension.
"""

from __future__ import annotations

import torch

from megatron_infi.kernels.cross_entropy import mixed_addmm_supported


class TorchWgradAccumulation:
    """The two entry points of apex's `fused_weight_gradient_mlp_cuda` megatron-core calls."""

    @staticmethod
    def wgrad_gemm_accum_fp32(total_input: torch.Tensor, grad_output: torch.Tensor, main_grad: torch.Tensor):
        x = total_input.reshape(-1, total_input.shape[-1])
        g = grad_output.reshape(-1, grad_output.shape[-1])
        if x.dtype == torch.float32:
            main_grad.addmm_(g.t(), x)
        else:
            torch.addmm(main_grad, g.t(), x, out_dtype=torch.float32, out=main_grad)

    @staticmethod
    def wgrad_gemm_accum_fp16(total_input: torch.Tensor, grad_output: torch.Tensor, main_grad: torch.Tensor):
        x = total_input.reshape(-1, total_input.shape[-1])
        g = grad_output.reshape(-1, grad_output.shape[-1])
        main_grad.addmm_(g.t(), x)


def install(require_mixed_gemm: bool = True) -> bool:
    """Make megatron-core's `gradient_accumulation_fusion` usable; returns whether it is.

    Keeps apex's extension when it is installed. Otherwise installs the torch stand-in, provided
    this torch can accumulate bf16 GEMMs into fp32 on the GPU (`require_mixed_gemm=False` skips that
    check: fp32 models on CPU, for tests).
    """
    from megatron.core.tensor_parallel import layers

    if layers._grad_accum_fusion_available and not isinstance(
        getattr(layers, "fused_weight_gradient_mlp_cuda", None), type
    ):
        return True  # apex's extension
    if require_mixed_gemm and not (
        torch.cuda.is_available() and mixed_addmm_supported("cuda", torch.bfloat16)
    ):
        return False
    layers.fused_weight_gradient_mlp_cuda = TorchWgradAccumulation
    layers._grad_accum_fusion_available = True
    return True
