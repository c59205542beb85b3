"""InfiR-VL through the shared trainer: TP=2 gives TP=1's losses, a resumed run is the same run,
the language model starts from a text checkpoint, and the HF LLaVA export has the same logits."""

from __future__ import annotations

import json

import pytest

from tests.training.launch import base_config, losses, run_train

STEPS = 3


@pytest.fixture(scope="module")
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


@pytest.mark.dist
def test_tp2_matches_tp1(tmp_path, llama3_tokenizer_dir, conversations):
    init = vl_config(tmp_path / "init", llama3_tokenizer_dir, conversations, train={"train_iters": 0})
    run_train(init)
    start = {"load": str(tmp_path / "init" / "checkpoints")}
    single = vl_config(
        tmp_path / "tp1", llama3_tokenizer_dir, conversations, train={"train_iters": STEPS}, checkpoint=start
    )
    run_train(single)
    double = vl_config(
        tmp_path / "tp2",
        llama3_tokenizer_dir,
        conversations,
        train={"train_iters": STEPS},
        checkpoint=start,
        parallel={"tensor": 2},
    )
    run_train(double, nproc=2)
    expected, got = losses(tmp_path / "tp1"), losses(tmp_path / "tp2")
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in expected:
        assert abs(got[step] - expected[step]) <= 1e-5, (step, got[step], expected[step])
    assert got[STEPS] < got[1]


def test_resume_is_exact_and_the_export_matches(tmp_path, llama3_tokenizer_dir, conversations, boolq_corpus):
    """One process: a text checkpoint -> a VL run whose language model starts from it (projector and
    ViT training, LM frozen), 4 steps straight vs 2 + resume 2; then the HF LLaVA export of the
    result has the checkpoint's logits and gives the ViT back unchanged."""
    import torch

    from megatron_infi.checkpoints_tools.llava import export
    from megatron_infi.checkpoints_tools.llava_verify import verify
    from megatron_infi.checkpoints_tools.mcore_io import McoreCheckpoint
    from megatron_infi.training.distributed import shutdown

    tokenizer, prefix = boolq_corpus
    text = base_config(tmp_path / "text", tokenizer, prefix, train={"train_iters": 1})
    run_train(text)
    vision = {"language_model_load": str(tmp_path / "text" / "checkpoints"), "freeze_language_model": True}
    full = vl_config(tmp_path / "full", tokenizer, conversations, train={"train_iters": 4}, vision=vision)
    run_train(full)
    parts = vl_config(
        tmp_path / "parts",
        tokenizer,
        conversations,
        train={"train_iters": 4, "exit_interval": 2},
        vision=vision,
    )
    run_train(parts)
    assert sorted(losses(tmp_path / "parts")) == [1, 2]
    run_train(parts)  # resumes at 2 and finishes
    assert losses(tmp_path / "parts") == losses(tmp_path / "full")

    text_ckpt = McoreCheckpoint(tmp_path / "text" / "checkpoints")
    vl_ckpt = McoreCheckpoint(tmp_path / "full" / "checkpoints")
    key = "embedding.word_embeddings.weight"
    assert torch.equal(
        text_ckpt.read_global([key])[key],
        vl_ckpt.read_global(["language_model." + key])["language_model." + key],
    )
    shutdown()

    hf_dir = export(tmp_path / "full" / "checkpoints", tmp_path / "hf")
    shutdown()
    report = verify(tmp_path / "full" / "checkpoints", hf_dir)
    shutdown()
    assert report["passed"], report
    assert report["max_abs_diff"] <= 1e-3
