"""The HF mappings as data: fused layouts, config derivation and the errors for what cannot convert."""

from __future__ import annotations

import pytest
import torch

from megatron_infi.checkpoints_tools.from_hf import build_train_config, model_config_from_fields
from megatron_infi.config.core import ConfigError
from megatron_infi.config.schema import model_presets
from megatron_infi.models import ARCHITECTURES, architecture, for_hf_config
from megatron_infi.models.hf_mapping import ConversionError, fuse_qkv, pad_vocab, split_qkv, to_hf, to_mcore
from tests.checkpoints_tools.tiny_hf import ARCHS, hf_config


def test_fused_qkv_is_grouped_per_query_group_and_splits_back():
    # 6 query heads over 2 groups (3 per group), head_dim 2, hidden 4: label every row by its origin.
    groups, heads, head_dim, hidden = 2, 6, 2, 4
    q = torch.arange(heads * head_dim).repeat_interleave(hidden).view(heads * head_dim, hidden).float()
    k = 100 + torch.arange(groups * head_dim).repeat_interleave(hidden).view(-1, hidden).float()
    v = 200 + torch.arange(groups * head_dim).repeat_interleave(hidden).view(-1, hidden).float()
    fused = fuse_qkv(q, k, v, groups)
    rows = fused[:, 0].tolist()
    # Group 0: q heads 0-2 (rows 0-5), k head 0, v head 0; then group 1.
    assert rows[:10] == [0, 1, 2, 3, 4, 5, 100, 101, 200, 201]
    assert rows[10:] == [6, 7, 8, 9, 10, 11, 102, 103, 202, 203]
    for a, b in zip(split_qkv(fused, heads, groups, head_dim), (q, k, v), strict=True):
        assert torch.equal(a, b)
    bias = [t[:, 0] for t in (q, k, v)]
    for a, b in zip(split_qkv(fuse_qkv(*bias, groups), heads, groups, head_dim), bias, strict=True):
        assert torch.equal(a, b)


def test_vocab_padding_is_zero_rows_and_is_stripped_on_export():
    weight = torch.randn(1000, 8)
    padded = pad_vocab(weight, 1024)
    assert padded.shape == (1024, 8) and torch.equal(padded[:1000], weight) and not padded[1000:].any()
    rule = next(r for r in architecture("llama").hf.rules if r.mcore == "embedding.word_embeddings.weight")

    class Model:
        vocab_size = 1000

    assert torch.equal(to_hf(rule, to_mcore(rule, [weight], Model, 1024), Model)[0], weight)


def test_every_registered_architecture_has_fixtures():
    assert ARCHS.keys() == ARCHITECTURES.keys()
    for name, arch in ARCHITECTURES.items():
        assert arch.presets and all(model_presets()[p]["arch"] == name for p in arch.presets)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_mapping_covers_transformers_own_tensor_names(arch):
    from megatron_infi.checkpoints_tools.hf_io import expected_hf_tensors

    for tied in (True, False):
        config = hf_config(arch, tie_word_embeddings=tied)
        found = for_hf_config(config)
        assert found.name == arch
        fields = found.hf.model_fields_from_hf(config)
        cfg, _ = build_train_config(fields, None, 2, 2, None)
        names = {
            n
            for rule in found.hf.active_rules(cfg.model)
            for layer in (range(cfg.model.num_layers) if rule.per_layer else [None])
            for n in rule.hf_names(layer)
        }
        assert names == expected_hf_tensors(config).keys(), (arch, tied)


@pytest.mark.parametrize(
    ("arch", "preset", "hf_fields"),
    [
        (
            "llama",
            "llama3.2-1b",
            dict(
                vocab_size=128256,
                hidden_size=2048,
                intermediate_size=8192,
                num_hidden_layers=16,
                num_attention_heads=32,
                num_key_value_heads=8,
                max_position_embeddings=131072,
                rms_norm_eps=1e-5,
                tie_word_embeddings=True,
            ),
        ),
        (
            "qwen2",
            "qwen2.5-7b",
            dict(
                vocab_size=152064,
                hidden_size=3584,
                intermediate_size=18944,
                num_hidden_layers=28,
                num_attention_heads=28,
                num_key_value_heads=4,
                max_position_embeddings=131072,
                rms_norm_eps=1e-6,
                tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            ),
        ),
        (
            "qwen3",
            "qwen3-0.6b",
            dict(
                vocab_size=151936,
                hidden_size=1024,
                intermediate_size=3072,
                num_hidden_layers=28,
                num_attention_heads=16,
                num_key_value_heads=8,
                head_dim=128,
                max_position_embeddings=40960,
                rms_norm_eps=1e-6,
                tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            ),
        ),
        (
            "qwen3",
            "qwen3-8b",
            dict(
                vocab_size=151936,
                hidden_size=4096,
                intermediate_size=12288,
                num_hidden_layers=36,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=128,
                max_position_embeddings=40960,
                rms_norm_eps=1e-6,
                tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            ),
        ),
        (
            "mistral",
            "mistral-7b-v0.3",
            dict(
                vocab_size=32768,
                hidden_size=4096,
                intermediate_size=14336,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=None,
                max_position_embeddings=32768,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                sliding_window=None,
            ),
        ),
    ],
)
def test_real_model_configs_resolve_to_their_preset_exactly(arch, preset, hf_fields):
    fields = architecture(arch).hf.model_fields_from_hf(hf_config(arch, **hf_fields))
    assert model_config_from_fields(fields) == (preset, {})
    assert model_config_from_fields(fields, preset) == (preset, {})


def test_a_derived_model_is_its_presets_plus_overrides():
    fields = architecture("qwen2").hf.model_fields_from_hf(hf_config("qwen2"))
    name, overrides = model_config_from_fields(fields)
    assert name == "qwen2.5-7b" and model_presets()[name]["arch"] == "qwen2"
    assert overrides["num_attention_heads"] == 6 and overrides["num_query_groups"] == 2
    assert "tie_embeddings" not in overrides and "arch" not in overrides
    # Qwen3's head_dim is its own (32 here, not 96 / 6); the closest preset carries 128.
    fields = architecture("qwen3").hf.model_fields_from_hf(hf_config("qwen3"))
    name, overrides = model_config_from_fields(fields)
    assert name == "qwen3-0.6b" and overrides["head_dim"] == 32 and overrides["hidden_size"] == 96


def test_mismatched_preset_names_the_differing_fields():
    fields = architecture("llama").hf.model_fields_from_hf(hf_config("llama"))
    with pytest.raises(
        ConversionError, match=r"--preset llama3.2-1b does not match config.json: .*hidden_size"
    ):
        model_config_from_fields(fields, "llama3.2-1b")


def test_unsupported_architectures_and_variants_fail_clearly():
    from transformers import GemmaConfig, GPT2Config, MistralConfig

    with pytest.raises(
        ConversionError, match=r"unsupported architecture model_type='gpt2'.*LlamaForCausalLM"
    ):
        for_hf_config(GPT2Config())
    with pytest.raises(ConversionError, match="model_type='gemma'.*MistralForCausalLM"):
        for_hf_config(GemmaConfig())
    with pytest.raises(ConfigError, match="model.arch: unknown architecture 'mamba'"):
        architecture("mamba")
    llama = architecture("llama").hf
    yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
    with pytest.raises(ConversionError, match=r"rope_parameters.rope_type: 'yarn' is not supported"):
        llama.model_fields_from_hf(hf_config("llama", rope_parameters=yarn))
    with pytest.raises(ConversionError, match="attention_bias"):
        llama.model_fields_from_hf(hf_config("llama", attention_bias=True))
    with pytest.raises(ConversionError, match="hidden_act"):
        llama.model_fields_from_hf(hf_config("llama", hidden_act="gelu"))
    for arch in ("qwen2", "qwen3"):
        with pytest.raises(ConversionError, match="config.json: use_sliding_window: True"):
            architecture(arch).hf.model_fields_from_hf(hf_config(arch, use_sliding_window=True))
    with pytest.raises(ConversionError, match="attention_bias"):
        architecture("qwen3").hf.model_fields_from_hf(hf_config("qwen3", attention_bias=True))
    # Mistral v0.1 / v0.2 (transformers' default config too) attend through a 4096-token window.
    v01 = MistralConfig()
    assert v01.sliding_window == 4096
    with pytest.raises(
        ConversionError, match="config.json: sliding_window: 4096: sliding-window attention is not supported"
    ):
        architecture("mistral").hf.model_fields_from_hf(v01)
