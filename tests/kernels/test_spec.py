"""The selection point: which backend runs where, and that the backends are the same model — the
Triton modules, their torch references and megatron-core's stock local spec give the same loss and
gradients from the same weights, with the same checkpoint keys."""

from __future__ import annotations

import pytest
import torch

from megatron_infi.config.core import ConfigError, from_dict
from megatron_infi.config.schema import ParallelConfig, TrainConfig
from megatron_infi.models.spec import check_supported, resolve_backend
from tests.kernels._util import assert_close_rel

VOCAB = 1000

# CPU-side checks (fp32, Triton interpreter); on a GPU the same is covered by test_model_gpu.py.
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-side check")


def _cfg(**model) -> TrainConfig:
    base = {
        "preset": "tiny",
        "vocab_size": VOCAB,
        "num_layers": 2,
        "hidden_size": 64,
        "ffn_hidden_size": 128,
        "num_attention_heads": 4,
        "num_query_groups": 2,
    }
    return from_dict(TrainConfig, TrainConfig.preprocess({"model": {**base, **model}}))


def test_auto_is_torch_on_cpu():
    assert not torch.cuda.is_available()
    assert resolve_backend(_cfg().model) == "torch"


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError) as err:
        resolve_backend(_cfg(kernels="triton").model)
    assert err.value.field == "model.kernels"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend(_cfg(kernels="triton").model) == "triton"


def test_unavailable_backends_name_the_field():
    with pytest.raises(ConfigError) as err:
        resolve_backend(_cfg(kernels="te").model)
    assert err.value.field == "model.kernels"
    with pytest.raises(ConfigError) as err:
        check_supported(_cfg(attention="flash").model, ParallelConfig())
    assert err.value.field == "model.attention"


TE_FUSIONS = ("apply_rope_fusion", "bias_activation_fusion", "cross_entropy_loss_fusion")


@pytest.mark.parametrize("kernels", ["te", "triton", "torch"])
def test_fusions_follow_the_backend(monkeypatch, kernels):
    """kernels=te runs with Transformer Engine's / megatron-core's fusions and the fused wgrad
    accumulation; the local backends fuse those ops in kernels/ (TE is not installed here: its
    presence, a GPU and its fused RoPE are stood in for, the selection is what is tested)."""
    import megatron.core.models.common.embeddings.rope_utils as rope_utils
    from megatron.core.tensor_parallel import layers

    from megatron_infi.models import spec
    from megatron_infi.models.gpt import transformer_config

    monkeypatch.setattr(spec, "transformer_engine_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(layers, "_grad_accum_fusion_available", True)  # as patches.apply() on a GPU
    monkeypatch.setattr(rope_utils, "fused_apply_rotary_pos_emb", lambda *a, **k: None)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    cfg = _cfg(kernels=kernels)
    config = transformer_config(cfg.model, cfg.parallel, torch.bfloat16)
    te = kernels == "te"
    assert {name: getattr(config, name) for name in TE_FUSIONS} == dict.fromkeys(TE_FUSIONS, te)
    assert config.cross_entropy_fusion_impl == "native"  # TE's own CE has known stability issues
    assert config.gradient_accumulation_fusion is (kernels in ("te", "triton"))


def test_sequence_parallel_is_accepted_with_our_norm():
    check_supported(_cfg().model, ParallelConfig(tensor=2, sequence_parallel=True))


def _stock_megatron_model(cfg: TrainConfig):
    """megatron-core's own local layer (torch norm, unfused MLP / RoPE, logits + vocab-parallel CE),
    with its torch norm over each head's q and k where the architecture has q/k norms."""
    import functools

    from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
    from megatron.core.models.gpt import GPTModel
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.identity_op import IdentityOp
    from megatron.core.transformer.mlp import MLP, MLPSubmodules
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.torch_norm import WrappedTorchNorm
    from megatron.core.transformer.transformer_block import TransformerBlock, TransformerBlockSubmodules
    from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

    from megatron_infi.kernels.attention import SDPAttention
    from megatron_infi.models import architecture
    from megatron_infi.models.gpt import padded_vocab_size, transformer_config

    qk_norm = WrappedTorchNorm if architecture(cfg.model.arch).qk_norm else IdentityOp

    layer = ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=WrappedTorchNorm,
            self_attention=ModuleSpec(
                module=SelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=ColumnParallelLinear,
                    core_attention=SDPAttention,
                    linear_proj=RowParallelLinear,
                    q_layernorm=qk_norm,
                    k_layernorm=qk_norm,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=WrappedTorchNorm,
            mlp=functools.partial(
                MLP.as_mlp_submodule,
                submodules=MLPSubmodules(linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear),
            ),
            mlp_bda=get_bias_dropout_add,
        ),
    )
    m = cfg.model
    config = transformer_config(m, cfg.parallel, torch.float32)
    block = ModuleSpec(
        module=TransformerBlock,
        submodules=TransformerBlockSubmodules(
            layer_specs=[layer] * m.num_layers, layer_norm=WrappedTorchNorm
        ),
    )
    return GPTModel(
        config=config,
        transformer_layer_spec=block,
        vocab_size=padded_vocab_size(m.vocab_size, m.make_vocab_size_divisible_by),
        max_sequence_length=m.max_position_embeddings,
        share_embeddings_and_output_weights=True,
        position_embedding_type="rope",
        rotary_base=int(m.rope_theta),
        rope_scaling=True,
        rope_scaling_factor=m.rope_scaling.factor,
    )


# Llama, and Qwen3's q/k norms with a head_dim of its own (4 heads x 24 over a 64-wide residual).
ARCH_FIELDS = {"llama": {}, "qwen3": {"arch": "qwen3", "head_dim": 24}}


@pytest.fixture(scope="module", params=sorted(ARCH_FIELDS))
def models(request):
    import os

    from megatron_infi.models.gpt import build_model
    from megatron_infi.training.distributed import init_model_parallel

    arch = ARCH_FIELDS[request.param]
    init_model_parallel(1, 1, seed=3)
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        built = {name: build_model(_cfg(kernels=name, **arch))[0][0] for name in ("torch", "triton")}
    finally:
        del os.environ["TRITON_INTERPRET"]
    built["megatron"] = _stock_megatron_model(_cfg(**arch))
    weights = built["torch"].state_dict()
    for name in ("triton", "megatron"):
        built[name].load_state_dict(weights, strict=True)
    return built


def test_backends_share_parameters_and_checkpoint_keys(models):
    names = {k: [n for n, _ in m.named_parameters()] for k, m in models.items()}
    assert names["torch"] == names["triton"] == names["megatron"]
    keys = {
        k: sorted(getattr(t, "key", name) for name, t in m.sharded_state_dict().items())
        for k, m in models.items()
        if k != "megatron"
    }
    assert keys["torch"] == keys["triton"]
    # Checkpoints use Transformer Engine's names for the pre-norms, whatever the backend.
    assert "decoder.layers.self_attention.linear_qkv.layer_norm_weight" in keys["triton"]
    qk_norms = {k for k in keys["triton"] if "q_layernorm" in k or "k_layernorm" in k}
    assert len(qk_norms) == (2 if models["torch"].config.qk_layernorm else 0)


def test_backends_give_the_same_loss_and_gradients(models):
    gen = torch.Generator().manual_seed(0)
    b, s = 2, 24
    tokens = torch.randint(0, VOCAB, (b, s), generator=gen)
    labels = torch.randint(0, VOCAB, (b, s), generator=gen)
    position_ids = torch.arange(s)[None].expand(b, s)
    loss_mask = (torch.rand(b, s, generator=gen) > 0.2).float()  # a masked mean: non-uniform grads
    results = {}
    for name, model in models.items():
        model.zero_grad()
        loss = model(tokens, position_ids, None, labels=labels)
        ((loss * loss_mask).sum() / loss_mask.sum()).backward()
        results[name] = loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}
    ref_loss, ref_grads = results["megatron"]
    for name in ("torch", "triton"):
        loss, grads = results[name]
        assert loss.shape == (b, s)
        assert_close_rel(loss, ref_loss, 1e-5, f"{name} loss")
        for param, grad in grads.items():
            assert_close_rel(grad, ref_grads[param], 2e-5, f"{name} {param}")


def test_selfcheck_writes_its_report(tmp_path):
    from megatron_infi.kernels.selfcheck import run_selfcheck

    report = run_selfcheck(tmp_path)
    saved = __import__("json").loads((tmp_path / "kernels_selfcheck.json").read_text())
    assert saved["ops"].keys() == report["ops"].keys()
    assert len(report["ops"]) == 8 and all(r["ok"] for r in report["ops"].values()), report
