"""The mappings as data: fused layouts, config derivation and the errors for what cannot convert."""

from __future__ import annotations

import pytest
import torch

from megatron_infi.checkpoints_tools.from_hf import build_train_config, model_config_from_fields
from megatron_infi.checkpoints_tools.mappings import MAPPINGS, ConversionError, for_arch, for_hf_config
from megatron_infi.checkpoints_tools.mappings.base import fuse_qkv, pad_vocab, split_qkv, to_hf, to_mcore
from megatron_infi.config.presets import PRESETS
from tests.checkpoints_tools.tiny_hf import hf_config


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
    model = MAPPINGS["llama"]
    rule = next(r for r in model.rules if r.mcore == "embedding.word_embeddings.weight")

    class Model:
        vocab_size = 1000

    assert torch.equal(to_hf(rule, to_mcore(rule, [weight], Model, 1024), Model)[0], weight)


def test_every_mapping_covers_transformers_own_tensor_names():
    from megatron_infi.checkpoints_tools.hf_io import expected_hf_tensors

    for arch in ("llama", "qwen2"):
        config = hf_config(arch)
        mapping = for_hf_config(config)
        fields = mapping.model_fields_from_hf(config)
        cfg, _ = build_train_config(fields, None, 2, 2, None)
        names = {
            n
            for rule in mapping.active_rules(cfg.model)
            for layer in (range(cfg.model.num_layers) if rule.per_layer else [None])
            for n in rule.hf_names(layer)
        }
        assert names == expected_hf_tensors(config).keys(), arch


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
    ],
)
def test_real_model_configs_resolve_to_their_preset_exactly(arch, preset, hf_fields):
    fields = for_arch(arch).model_fields_from_hf(hf_config(arch, **hf_fields))
    assert model_config_from_fields(fields) == (preset, {})
    assert model_config_from_fields(fields, preset) == (preset, {})


def test_a_derived_model_is_its_presets_plus_overrides():
    fields = for_arch("qwen2").model_fields_from_hf(hf_config("qwen2"))
    name, overrides = model_config_from_fields(fields)
    assert name == "qwen2.5-7b" and PRESETS[name]["arch"] == "qwen2"
    assert overrides["num_attention_heads"] == 6 and overrides["num_query_groups"] == 2
    assert "qkv_bias" not in overrides and "tie_embeddings" not in overrides


def test_mismatched_preset_names_the_differing_fields():
    fields = for_arch("llama").model_fields_from_hf(hf_config("llama"))
    with pytest.raises(
        ConversionError, match=r"--preset llama3.2-1b does not match config.json: .*hidden_size"
    ):
        model_config_from_fields(fields, "llama3.2-1b")


def test_unsupported_architectures_and_variants_fail_clearly():
    from transformers import GPT2Config, MistralConfig

    with pytest.raises(
        ConversionError, match=r"unsupported architecture model_type='gpt2'.*LlamaForCausalLM"
    ):
        for_hf_config(GPT2Config())
    with pytest.raises(ConversionError, match="model_type='mistral'"):
        for_hf_config(MistralConfig())
    with pytest.raises(ConversionError, match="model.arch='mamba' has no HF mapping"):
        for_arch("mamba")
    llama = for_arch("llama")
    yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
    with pytest.raises(ConversionError, match=r"rope_parameters.rope_type: 'yarn' is not supported"):
        llama.model_fields_from_hf(hf_config("llama", rope_parameters=yarn))
    with pytest.raises(ConversionError, match="attention_bias"):
        llama.model_fields_from_hf(hf_config("llama", attention_bias=True))
    with pytest.raises(ConversionError, match="hidden_act"):
        llama.model_fields_from_hf(hf_config("llama", hidden_act="gelu"))
    with pytest.raises(ConversionError, match="use_sliding_window"):
        for_arch("qwen2").model_fields_from_hf(hf_config("qwen2", use_sliding_window=True))
