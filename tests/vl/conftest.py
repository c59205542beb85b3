"""Shared VL fixtures: caption conversations over real images, and one small trained VL run (its
language model started from a text checkpoint) with its HF LLaVA export, built once per session
for the resume, export and eval tests."""

from __future__ import annotations

import json

import pytest

from tests.training.launch import base_config, train_in_process


@pytest.fixture(autouse=True, scope="session")
def _megatron_patches(megatron_patches):
    return megatron_patches


@pytest.fixture(scope="session")
def conversations(tmp_path_factory):
    """Caption conversations over 40 real handwritten digits and the packaged photos."""
    from megatron_infi.data_processing.vision.packaged import write_sources

    root = tmp_path_factory.mktemp("vl_data")
    pairs = write_sources(root, digits=40, resized_copies=0)
    out = root / "align.jsonl"
    rows = []
    for line in pairs.read_text().splitlines():
        record = json.loads(line)
        rows.append(
            {
                "id": record["id"],
                "image": str((root / record["image"]).resolve()),
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe the image briefly."},
                    {"from": "gpt", "value": record["text"]},
                ],
            }
        )
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def vl_config(run_dir, tokenizer, conversations, **sections) -> dict:
    cfg = base_config(run_dir, tokenizer, "unused", **sections)
    cfg["data"] = {
        "tokenizer": str(tokenizer),
        "conversations": [str(conversations)],
        "seq_length": 48,
        "split": "90,10,0",
    }
    cfg["stage"] = "vl-align"
    vision = {"preset": "tiny-vit", "freeze_vision_model": False}
    vision.update(sections.get("vision", {}))
    cfg["vision"] = vision
    return cfg


@pytest.fixture(scope="session")
def trained_vl(tmp_path_factory, boolq_corpus, conversations):
    """A 1-step text run, then 4 VL steps whose language model starts (frozen) from it while the
    ViT and projector train, then the HF LLaVA export: {"root", "tokenizer", "vision", "hf"}."""
    from megatron_infi.checkpoints_tools.llava import export
    from megatron_infi.training.distributed import shutdown

    root = tmp_path_factory.mktemp("vl_run")
    tokenizer, prefix = boolq_corpus
    train_in_process(base_config(root / "text", tokenizer, prefix, train={"train_iters": 1}))
    shutdown()
    vision = {"language_model_load": str(root / "text" / "checkpoints"), "freeze_language_model": True}
    train_in_process(
        vl_config(root / "full", tokenizer, conversations, train={"train_iters": 4}, vision=vision)
    )
    shutdown()
    hf_dir = export(root / "full" / "checkpoints", root / "hf")
    shutdown()
    return {"root": root, "tokenizer": tokenizer, "vision": vision, "hf": hf_dir}
