"""A checkpoint the Foundation trainer wrote at TP=2 (two gloo ranks, distributed optimizer state
in it) exports to HF with its tokenizer and verifies; the export converts back into a checkpoint
the trainer starts from with exactly those weights."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from megatron_infi.checkpoints_tools import from_hf, to_hf
from megatron_infi.checkpoints_tools.verify import verify
from megatron_infi.models.hf_mapping import fuse_qkv
from tests.training.launch import base_config, run_train

pytestmark = [pytest.mark.dist, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, boolq_corpus):
    tokenizer, prefix = boolq_corpus
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    cfg = base_config(
        run_dir,
        tokenizer,
        prefix,
        parallel={"tensor": 2, "distributed_optimizer": True},
        train={"train_iters": 2, "global_batch_size": 4, "micro_batch_size": 2},
    )
    run_train(cfg, nproc=2)
    return run_dir / "checkpoints", tokenizer


def test_trained_tp2_checkpoint_exports_verifies_and_converts_back(trained, tmp_path, boolq_corpus):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from megatron_infi.config.core import from_dict, validate_tree
    from megatron_infi.config.schema import TrainConfig
    from megatron_infi.training.trainer import Trainer

    ckpt, tokenizer = trained
    run = json.loads((ckpt / "iter_0000002" / "run.json").read_text())
    assert run["parallel"]["tensor"] == 2 and run["distributed_optimizer"]

    hf = to_hf.export(ckpt, tmp_path / "hf")
    report = verify(ckpt, hf)
    assert report["passed"] and report["tokens"] == "BoolQ dev passages", report
    assert report["max_abs_diff"] <= 1e-4 and report["top1_agreement"] == 1.0
    # The tokenizer the checkpoint recorded travels with the model, chat template included.
    tok = AutoTokenizer.from_pretrained(hf)
    assert len(tok) == 128256 and "{% generation %}" in tok.chat_template
    generation = json.loads((hf / "generation_config.json").read_text())
    assert tok.convert_tokens_to_ids("<|eot_id|>") in generation["eos_token_id"]

    back = tmp_path / "mcore"
    from_hf.convert(hf, back, tp=2)
    model_section = yaml.safe_load((back / "model.yaml").read_text())["model"]
    assert model_section == {
        "preset": "tiny",
        "hidden_size": 64,
        "ffn_hidden_size": 128,
        "num_attention_heads": 4,
        "num_query_groups": 2,
    }
    _, prefix = boolq_corpus
    cfg = base_config(
        tmp_path / "continue",
        tokenizer,
        prefix,
        model=model_section,
        checkpoint={"load": str(back), "save_interval": 0},
    )
    config = from_dict(TrainConfig, TrainConfig.preprocess(cfg))
    validate_tree(config)
    trainer = Trainer(config).setup()
    params = dict(trainer.model[0].module.named_parameters())
    weights = load_file(hf / "model.safetensors")
    embedding = params["embedding.word_embeddings.weight"]
    assert torch.equal(embedding[:128256], weights["model.embed_tokens.weight"])
    assert not embedding[128256:].any()
    qkv = [weights[f"model.layers.3.self_attn.{p}_proj.weight"] for p in "qkv"]
    assert torch.equal(params["decoder.layers.3.self_attention.linear_qkv.weight"], fuse_qkv(*qkv, groups=2))
