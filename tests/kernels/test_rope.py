"""RoPE: the Triton kernel on megatron's q/k layouts (a fresh query tensor, a key view into the fused
QKV output) against the fp32 definition; the definition and the llama3 frequencies against
megatron-core's and transformers' implementations."""

from __future__ import annotations

import pytest
import torch

from megatron_infi.kernels.rope import llama3_inv_freq, rope_angles, rope_reference, rope_triton
from tests.kernels._util import DTYPES, TOL, assert_close_rel, device


def _qkv(s, b, heads, groups, d, dtype, dev, gen):
    """Split q, k, v the way megatron-core's SelfAttention does from its fused QKV output."""
    per_group = heads // groups
    mixed = torch.randn(s, b, groups, (per_group + 2) * d, generator=gen).to(dev, dtype).requires_grad_()
    q, k, v = torch.split(mixed, [per_group * d, d, d], dim=3)
    return mixed, q.reshape(s, b, heads, d), k, v


def _check(s, b, heads, groups, d, dtype, dev, seed=0):
    gen = torch.Generator().manual_seed(seed)
    angles = rope_angles(llama3_inv_freq(d, 500000.0), s + 3).to(dev)
    mixed, q, k, _ = _qkv(s, b, heads, groups, d, dtype, dev, gen)
    dq = torch.randn(s, b, heads, d, generator=gen).to(dev, dtype)
    dk = torch.randn(s, b, groups, d, generator=gen).to(dev, dtype)
    q_ref = rope_reference(q.detach().float(), angles)
    k_ref = rope_reference(k.detach().float(), angles)
    q_ptr, q_is_view = q.data_ptr(), q._base is not None
    q_out, k_out = rope_triton(q, k, angles)
    # GQA: megatron's query reshape copies, so q is rotated in place; with one head per group it
    # stays a view of the QKV output, which autograd forbids modifying in place.
    assert q_is_view == (heads == groups)
    assert (q_out.data_ptr() == q_ptr) == (not q_is_view)
    assert k_out.data_ptr() != k.data_ptr()
    assert_close_rel(q_out, q_ref, TOL[dtype], "q")
    assert_close_rel(k_out, k_ref, TOL[dtype], "k")
    ((q_out.float() * dq.float()).sum() + (k_out.float() * dk.float()).sum()).backward()

    mixed32 = mixed.detach().float().requires_grad_()
    _, q32, k32, _ = _qkv_from(mixed32, heads, groups, d)
    (
        (rope_reference(q32, angles) * dq.float()).sum() + (rope_reference(k32, angles) * dk.float()).sum()
    ).backward()
    assert_close_rel(mixed.grad, mixed32.grad, TOL[dtype], "d(qkv)")


def _qkv_from(mixed, heads, groups, d):
    s, b = mixed.shape[:2]
    q, k, v = torch.split(mixed, [heads // groups * d, d, d], dim=3)
    return mixed, q.reshape(s, b, heads, d), k, v


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("s,b,heads,groups,d", [(7, 2, 4, 2, 64), (5, 1, 6, 3, 16), (3, 3, 2, 2, 8)])
def test_triton_matches_reference(s, b, heads, groups, d, dtype):
    _check(s, b, heads, groups, d, dtype, torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_matches_reference_gpu(dtype):
    _check(4096, 2, 32, 8, 64, dtype, device())
    _check(1024, 1, 28, 4, 128, dtype, device())


def test_reference_is_megatron_rotation():
    from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_bshd

    gen = torch.Generator().manual_seed(1)
    t = torch.randn(9, 2, 4, 32, generator=gen)
    angles = rope_angles(llama3_inv_freq(32, 10000.0, factor=8.0), 9)
    torch.testing.assert_close(rope_reference(t, angles), _apply_rotary_pos_emb_bshd(t, angles))


def test_llama3_frequencies_match_megatron_and_transformers():
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    ours = llama3_inv_freq(64, 500000.0, factor=32.0)
    mcore = RotaryEmbedding(
        kv_channels=64, rotary_percent=1.0, rotary_base=500000, rope_scaling=True, rope_scaling_factor=32.0,
        use_cpu_initialization=True,
    )  # fmt: skip
    torch.testing.assert_close(ours, mcore.inv_freq.cpu(), rtol=1e-6, atol=0)
    hf_config = LlamaConfig(
        hidden_size=2048,
        num_attention_heads=32,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    hf_inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_config, "cpu")
    torch.testing.assert_close(ours, hf_inv_freq.float(), rtol=1e-6, atol=0)
    # the scaling did something: the longest wavelengths are divided by the factor
    plain = 1.0 / (500000.0 ** (torch.arange(0, 64, 2).float() / 64))
    assert torch.allclose(ours[-1], plain[-1] / 32) and torch.allclose(ours[0], plain[0])


def test_rejects_partial_rotary_and_short_angle_table():
    q, k = torch.randn(4, 1, 2, 8), torch.randn(4, 1, 2, 8)
    with pytest.raises(ValueError, match="head_dim"):
        rope_triton(q, k, torch.zeros(4, 1, 1, 4))
    with pytest.raises(ValueError, match="positions"):
        rope_triton(q, k, torch.zeros(2, 1, 1, 8))
