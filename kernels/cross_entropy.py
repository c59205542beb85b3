"""Fused output layer + cross-entropy that never materialises the tokens x vocab logits.

Only the counted tokens (label != ignore_index: the trainer turns loss_mask == 0 into that) enter
the GEMMs, processed in chunks. For each chunk: logits = h @ W^T (cuBLAS, [n, V_local]), one pass
for the row statistics (max, sum of exp, target logit; fp32), one tiny all-gather across the
tensor-parallel ranks that hold the other vocabulary shards, then (when gradients are needed) the
logits buffer is overwritten in place with softmax - one_hot and immediately consumed by the two
gradient GEMMs (dH = dlogits @ W, dW += dlogits^T @ h, accumulated in fp32; under megatron-core
DDP backward adds dW into the fp32 main_grad, never rounding it to bf16). Peak extra memory is
one chunk of logits plus an fp32 weight gradient, instead of the full [tokens, vocab] logits (and
their fp32 copies) that the unfused path keeps alive until backward.

Computing the gradients during forward (Liger's trick) assumes they will be scaled by the same
upstream gradient on every counted token, which is what a (masked) mean loss gives. Backward checks
that: rows whose upstream gradient differs from the common value are recomputed exactly from the
saved log-sum-exp, so any upstream gradient gives the exact result; a uniform one costs nothing.

Two implementations of the row statistics / gradient passes share the chunking and the
collectives: `triton` (GPU) and `torch` (the CPU path, and the reference).
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import triton.language as tl

from megatron_infi.kernels._triton import device_kernel, next_power_of_2

IGNORE_INDEX = -100
# Logits of one chunk: ~512 MiB keeps the GEMMs large (and the fp32 dW read-modify-writes few)
# while bounding the extra memory.
CHUNK_BYTES = 512 * 2**20
BLOCK_V = 4096


def cross_entropy_reference(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The definition, unfused and in fp32: per-token loss, 0 where labels == ignore_index."""
    logits = hidden.float() @ weight.float().t()
    return torch.nn.functional.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")


# --- row statistics and gradient: Triton -------------------------------------------------------


@device_kernel
def _ce_stats_kernel(LOGITS, LABELS, M, S, T, stride_l, n_cols, BLOCK: tl.constexpr):
    """Per row: max, sum(exp(x - max)), and the logit at the local label (0 when not local)."""
    row = tl.program_id(0).to(tl.int64)
    ptr = LOGITS + row * stride_l
    m = float("-inf")
    s = 0.0
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(ptr + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    label = tl.load(LABELS + row)
    target = tl.load(ptr + label, mask=label >= 0, other=0.0).to(tl.float32)
    tl.store(M + row, m)
    tl.store(S + row, s)
    tl.store(T + row, target)


@device_kernel
def _ce_grad_kernel(LOGITS, LABELS, LSE, stride_l, n_cols, BLOCK: tl.constexpr):
    """In place: logits -> softmax - one_hot(label) (label -1: on another vocabulary shard)."""
    row = tl.program_id(0).to(tl.int64)
    ptr = LOGITS + row * stride_l
    lse = tl.load(LSE + row)
    label = tl.load(LABELS + row)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(ptr + cols, mask=mask, other=0.0).to(tl.float32)
        p = tl.exp(x - lse)
        p = tl.where(cols == label, p - 1.0, p)
        tl.store(ptr + cols, p.to(LOGITS.dtype.element_ty), mask=mask)


def _stats_triton(logits, labels_local):
    n, v = logits.shape
    m, s, t = (torch.empty(n, dtype=torch.float32, device=logits.device) for _ in range(3))
    block = min(BLOCK_V, next_power_of_2(v))
    _ce_stats_kernel[(n,)](logits, labels_local, m, s, t, logits.stride(0), v, BLOCK=block, num_warps=8)
    return m, s, t


def _grad_triton(logits, labels_local, lse):
    n, v = logits.shape
    block = min(BLOCK_V, next_power_of_2(v))
    _ce_grad_kernel[(n,)](logits, labels_local, lse, logits.stride(0), v, BLOCK=block, num_warps=8)


# --- row statistics and gradient: torch ---------------------------------------------------------


def _stats_torch(logits, labels_local):
    x = logits.float()
    m = x.max(dim=-1).values
    s = torch.exp(x - m[:, None]).sum(dim=-1)
    local = labels_local >= 0
    t = torch.where(local, x.gather(1, labels_local.clamp(min=0)[:, None]).squeeze(1), 0.0)
    return m, s, t


def _grad_torch(logits, labels_local, lse):
    p = torch.exp(logits.float() - lse[:, None])
    rows = torch.nonzero(labels_local >= 0).squeeze(1)
    p[rows, labels_local[rows]] -= 1.0
    logits.copy_(p)


IMPLS = {"triton": (_stats_triton, _grad_triton), "torch": (_stats_torch, _grad_torch)}


# --- fp32 accumulation of the weight gradient ---------------------------------------------------


@functools.cache
def mixed_addmm_supported(device_type: str, dtype: torch.dtype) -> bool:
    """Whether this torch has `addmm(out_dtype=float32, out=acc)` for `dtype` inputs on the device
    (fp32 accumulation inside the GEMM epilogue); checked once on a tiny problem."""
    try:
        a = torch.randn(8, 16, device=device_type).to(dtype)
        b = torch.randn(16, 8, device=device_type).to(dtype)
        acc = torch.ones(8, 8, device=device_type)
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
        return torch.allclose(acc, 1 + a.float() @ b.float(), atol=1e-2, rtol=1e-2)
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc (fp32) += a @ b, with the products summed in fp32 whatever the inputs' dtype."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    elif mixed_addmm_supported(a.device.type, a.dtype):
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        # No mixed-precision GEMM here (CPU, older torch): upcast rather than round a @ b to a.dtype.
        acc.addmm_(a.float(), b.float())


def _fp32_main_grad(weight: torch.Tensor) -> torch.Tensor | None:
    """megatron-core DDP's fp32 gradient buffer view for `weight`, when there is one."""
    main_grad = getattr(weight, "main_grad", None)
    return main_grad if main_grad is not None and main_grad.dtype == torch.float32 else None


def _grad_returned_beside_main_grad(weight: torch.Tensor) -> torch.Tensor | None:
    """What backward returns for a weight whose gradient went straight into main_grad, following
    megatron-core's gradient-accumulation-fusion protocol (tensor_parallel/layers.py): DDP's hook
    must still fire on the main backward thread, so an unused placeholder gradient flows to the
    parameter and `grad_added_to_main_grad` tells the hook not to add it. A weight shared with the
    embedding on this stage (`zero_out_wgrad`) gets None instead: the embedding's own gradient
    reaches the parameter and fires the hook, which adds exactly that gradient.
    """
    if not hasattr(weight, "grad_added_to_main_grad"):
        return None
    weight.grad_added_to_main_grad = True
    if getattr(weight, "zero_out_wgrad", False):
        return None
    return torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)


# --- the autograd function ----------------------------------------------------------------------


def _combine_across_shards(m, s, t, group):
    """Log-sum-exp and target logit over all vocabulary shards from each shard's statistics."""
    if group is None or dist.get_world_size(group) == 1:
        return m + torch.log(s), t
    stats = torch.stack((m, s, t))
    world = dist.get_world_size(group)
    gathered = torch.empty((world * 3, stats.shape[1]), dtype=stats.dtype, device=stats.device)
    dist.all_gather_into_tensor(gathered, stats, group=group)
    ms, ss, ts = gathered.view(world, 3, -1).unbind(1)
    m_all = ms.max(dim=0).values
    s_all = (ss * torch.exp(ms - m_all)).sum(dim=0)
    return m_all + torch.log(s_all), ts.sum(dim=0)


def chunk_rows(n_rows: int, vocab_local: int, element_size: int) -> int:
    rows = max(1, CHUNK_BYTES // max(1, vocab_local * element_size))
    if rows >= 128:
        rows -= rows % 128
    return min(n_rows, rows)


def _weight_grad(ctx, hidden, weight, labels_local, lse, d_weight, g):
    """The weight gradient from the sum precomputed in forward, scaled by the common upstream
    gradient, with the rows whose upstream gradient differs recomputed exactly.

    Under megatron-core DDP it goes straight into the fp32 main_grad, as megatron-core's fused
    wgrad GEMMs do: no rounding to the weight's dtype, no bf16 sum with the embedding's gradient.
    """
    common = g[torch.argmax(g.abs())] if g.numel() else g.new_zeros(())
    differ = torch.nonzero(g != common).squeeze(1)
    main_grad = _fp32_main_grad(weight)
    if main_grad is None and differ.numel() == 0:
        out = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
        return torch.mul(d_weight, common, out=out)
    acc = d_weight * common if main_grad is None else main_grad.addcmul_(d_weight, common)
    for a in range(0, differ.numel(), ctx.chunk):
        idx = differ[a : a + ctx.chunk]
        h = hidden[idx]
        p = torch.exp((h @ weight.t()).float() - lse[idx, None])
        hit = torch.nonzero(labels_local[idx] >= 0).squeeze(1)
        p[hit, labels_local[idx][hit]] -= 1.0
        correction = (p * (g[idx] - common)[:, None]).to(hidden.dtype)
        _accumulate(acc, correction.t(), h)
    return acc.to(weight.dtype) if main_grad is None else _grad_returned_beside_main_grad(weight)


class _LinearCrossEntropy(torch.autograd.Function):
    """Only the counted rows (label != ignore_index) enter the GEMMs: masked tokens cost nothing.
    Tensor-parallel ranks hold the same labels, so they select the same rows and chunks."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, group, vocab_start, ignore_index, impl, chunk, grad_enabled):
        stats_fn, grad_fn = IMPLS[impl]
        n, vocab_local = hidden.shape[0], weight.shape[0]
        valid = labels != ignore_index
        rows = None if bool(valid.all()) else torch.nonzero(valid).squeeze(1)
        if rows is not None:
            hidden, labels = hidden.index_select(0, rows), labels.index_select(0, rows)
        n_valid = hidden.shape[0]
        local = labels - vocab_start
        labels_local = torch.where((local >= 0) & (local < vocab_local), local, -1)
        # needs_input_grad follows requires_grad even under no_grad: evaluation would pay for gradients
        need_dh, need_dw = grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1]
        loss = torch.empty(n_valid, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n_valid, dtype=torch.float32, device=hidden.device)
        d_hidden = torch.empty_like(hidden) if need_dh else None
        d_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_dw else None
        chunk = chunk or max(1, chunk_rows(n_valid, vocab_local, hidden.element_size()))
        for a in range(0, n_valid, chunk):
            b = min(n_valid, a + chunk)
            h = hidden[a:b]
            logits = h @ weight.t()
            m, s, t = stats_fn(logits, labels_local[a:b])
            lse[a:b], target = _combine_across_shards(m, s, t, group)
            loss[a:b] = lse[a:b] - target
            if need_dh or need_dw:
                grad_fn(logits, labels_local[a:b], lse[a:b])
                if need_dh:
                    torch.mm(logits, weight, out=d_hidden[a:b])
                if need_dw:
                    _accumulate(d_weight, logits.t(), h)
        ctx.save_for_backward(hidden, weight, labels_local, rows, lse, d_hidden, d_weight)
        ctx.chunk, ctx.n = chunk, n
        if rows is None:
            return loss
        return torch.zeros(n, dtype=torch.float32, device=loss.device).index_copy_(0, rows, loss)

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, labels_local, rows, lse, d_hidden, d_weight = ctx.saved_tensors
        g = grad_loss.float() if rows is None else grad_loss.float().index_select(0, rows)
        grad_hidden = grad_weight = None
        if d_hidden is not None:
            grad_hidden = d_hidden * g[:, None].to(d_hidden.dtype)
            if rows is not None:
                full = torch.zeros((ctx.n, hidden.shape[1]), dtype=hidden.dtype, device=hidden.device)
                grad_hidden = full.index_copy_(0, rows, grad_hidden)
        if d_weight is not None:
            grad_weight = _weight_grad(ctx, hidden, weight, labels_local, lse, d_weight, g)
        return grad_hidden, grad_weight, None, None, None, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    vocab_start: int = 0,
    ignore_index: int = IGNORE_INDEX,
    impl: str = "triton",
    chunk: int | None = None,
) -> torch.Tensor:
    """Per-token cross-entropy (fp32, 0 where ignored) of `hidden @ weight.T` against `labels`.

    hidden [N, H] is the full (TP-replicated) input; weight [V_local, H] is this rank's vocabulary
    shard starting at global id `vocab_start`; `group` is the tensor-parallel group holding the
    other shards (None: the whole vocabulary is local). Gradients flow to hidden and weight.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown cross-entropy impl {impl!r} (expected one of {sorted(IMPLS)})")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"need hidden [N, H] and weight [V, H], got {tuple(hidden.shape)}, {tuple(weight.shape)}"
        )
    if labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match hidden {tuple(hidden.shape)}")
    if hidden.stride(-1) != 1:
        hidden = hidden.contiguous()
    return _LinearCrossEntropy.apply(
        hidden, weight, labels, group, vocab_start, ignore_index, impl, chunk, torch.is_grad_enabled()
    )
