"""Fused ops for the model, each a Triton kernel (forward and backward) beside its torch reference:

- `rmsnorm`: RMSNorm, and the megatron-core norm module (sequence-parallel aware).
- `swiglu`: silu(gate) * up over the fc1 output, and the MLP that uses it.
- `rope`: rotary embedding on q and k (llama3 frequencies), and the self-attention that uses it.
- `cross_entropy`: the output layer + cross-entropy without materialised logits (vocab-parallel);
  `output_layer`: the GPTModel that computes its training loss with it.
- `wgrad`: weight-gradient GEMMs accumulating into megatron-core's fp32 main_grad without apex.
- `attention`: core attention backends (Transformer Engine, flash-attn, torch SDPA).
- `selfcheck`: `python -m kernels.selfcheck` checks the kernels on this machine.

Kernels run compiled on CUDA tensors and in Triton's interpreter on CPU tensors (`_triton`).
Which modules a model uses is chosen in `megatron_infi/models/spec.py` (`model.kernels`).
"""
