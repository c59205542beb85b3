"""The model's output layer + loss on the fused linear cross-entropy (kernels/cross_entropy.py):
a megatron-core GPTModel `output_processor` and the GPTModel subclass that installs it."""

from __future__ import annotations

import functools

import torch
from megatron.core.models.gpt import GPTModel

from megatron_infi.kernels.cross_entropy import IGNORE_INDEX, IMPLS, linear_cross_entropy


def run_forward_pre_hooks(module: torch.nn.Module, args: tuple) -> None:
    """Run `module`'s forward pre-hooks (and the global ones) as calling it would.

    The fused loss reads the output layer's weight without calling the layer, but megatron-core's
    DDP waits for a parameter's all-gather (distributed optimizer + overlap_param_gather) in a
    forward pre-hook of the module that owns it: skipping the hooks trains on a weight whose gather
    is still in flight, and leaves the handle pending until DDP asserts on the next step. Hooks
    that would replace the inputs cannot be honoured here and are refused.
    """
    from torch.nn.modules.module import _global_forward_pre_hooks

    with_kwargs = module._forward_pre_hooks_with_kwargs
    for hook_id, hook in (*_global_forward_pre_hooks.items(), *module._forward_pre_hooks.items()):
        result = hook(module, args, {}) if hook_id in with_kwargs else hook(module, args)
        if result is not None:
            raise NotImplementedError(
                f"a forward pre-hook of {type(module).__name__} replaces its inputs, which the fused "
                "output loss cannot apply"
            )


def fused_output_loss(
    *,
    hidden_states,
    output_layer,
    output_weight,
    labels,
    loss_mask=None,
    config=None,
    impl="triton",
    **_unused,
) -> torch.Tensor:
    """A GPTModel `output_processor`: per-token loss [b, s] from the decoder's [s, b, h] output,
    with the output layer's tensor / sequence parallelism and without materialised logits.

    Tokens with loss_mask == 0 get loss 0 and no gradient (the loss function zeroes them anyway)
    and stay out of the logits GEMMs; the upstream gradient of the others stays uniform, which
    keeps backward free of recomputation.
    """
    from megatron.core.tensor_parallel.mappings import (
        copy_to_tensor_model_parallel_region,
        gather_from_sequence_parallel_region,
    )
    from megatron.core.utils import get_pg_rank, get_pg_size

    if config is not None and getattr(config, "use_mup", False):
        raise NotImplementedError("the fused output loss does not apply MuP logit scaling")
    run_forward_pre_hooks(output_layer, (hidden_states,))
    weight = output_weight if output_weight is not None else output_layer.weight
    group = output_layer.tp_group
    if output_layer.sequence_parallel:
        hidden = gather_from_sequence_parallel_region(
            hidden_states, tensor_parallel_output_grad=True, group=group
        )
    else:
        hidden = copy_to_tensor_model_parallel_region(hidden_states, group=group)
    s, b, h = hidden.shape
    flat_labels = labels.transpose(0, 1).reshape(-1)
    if loss_mask is not None:
        flat_labels = torch.where(loss_mask.transpose(0, 1).reshape(-1) != 0, flat_labels, IGNORE_INDEX)
    tp_size = get_pg_size(group)
    loss = linear_cross_entropy(
        hidden.reshape(s * b, h),
        weight,
        flat_labels,
        group=group if tp_size > 1 else None,
        vocab_start=get_pg_rank(group) * weight.shape[0],
        impl=impl,
    )
    return loss.view(s, b).transpose(0, 1).contiguous()


class FusedLossGPTModel(GPTModel):
    """megatron-core's GPTModel whose training loss (a forward with labels) goes through
    `fused_output_loss`; parameters, checkpoints and every other path are GPTModel's."""

    def __init__(self, *args, cross_entropy_impl: str = "triton", **kwargs):
        super().__init__(*args, **kwargs)
        if cross_entropy_impl not in IMPLS:
            raise ValueError(f"unknown cross-entropy impl {cross_entropy_impl!r}")
        self.cross_entropy_impl = cross_entropy_impl

    def forward(
        self, input_ids, position_ids, attention_mask, decoder_input=None, labels=None, *args, **kwargs
    ):
        if labels is not None and kwargs.get("output_processor") is None:
            kwargs["output_processor"] = functools.partial(fused_output_loss, impl=self.cross_entropy_impl)
        return super().forward(
            input_ids, position_ids, attention_mask, decoder_input, labels, *args, **kwargs
        )
