"""datatrove PipelineSteps for image-text data. A Document's `text` is the caption (or the rendered
text), `metadata["image"]` the absolute image path, `metadata["kind"]` caption | render | conversation.

Bad input never stops a run: a malformed record or a bad image is counted (`quarantined_<reason>`
in the step's stats) and written with its file, line and reason to
`<quarantine_dir>/<source>/<rank>.jsonl` (the same quarantine the text pipeline writes).
"""

from __future__ import annotations

import json
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from megatron_infi.data.images import BadImage, ImageLimits, dhash, hamming, open_checked
from megatron_infi.data_processing.steps.sources import Quarantine

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ImageTextReader(PipelineStep):
    """(image, text) records from JSONL files (`{"image": path, "text": caption}` or
    `{"image": path, "conversations": [{"from": "human"|"gpt", "value": ...}]}`, image paths relative
    to the file) and from image folders (each image captioned by the `.txt` file of the same stem).
    Files are split over ranks."""

    name = "🖼 image-text reader"
    type = "📖 - READER"

    def __init__(
        self, jsonl_files=(), image_dirs=(), quarantine_dir: str = "quarantine", source: str = "images"
    ):
        super().__init__()
        self.jsonl_files = [str(p) for p in jsonl_files]
        self.image_dirs = [str(p) for p in image_dirs]
        self.quarantine = Quarantine(quarantine_dir, source)

    def _skip(self, reason: str, file: str, line, raw) -> None:
        self.stat_update(f"quarantined_{reason}")
        self.quarantine.add(reason, file, line, raw)

    def _from_jsonl(self, path: Path) -> DocumentsPipeline:
        for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                self._skip("malformed_json", str(path), number, raw)
                continue
            image = record.get("image") if isinstance(record, dict) else None
            if not isinstance(image, str) or not image:
                self._skip("missing_image_field", str(path), number, raw)
                continue
            text, conversations = record.get("text"), record.get("conversations")
            if conversations is not None:
                if not _valid_conversation(conversations):
                    self._skip("bad_conversations", str(path), number, raw)
                    continue
                kind, text = "conversation", ""
            elif isinstance(text, str) and text.strip():
                kind = "caption"
            else:
                self._skip("missing_text", str(path), number, raw)
                continue
            metadata = {
                "image": str((path.parent / image).resolve()),
                "kind": kind,
                "file": str(path),
                "line": number,
            }
            if conversations is not None:
                metadata["conversations"] = conversations
            yield Document(
                text=text.strip(), id=str(record.get("id", f"{path.stem}:{number}")), metadata=metadata
            )

    def _from_folder(self, folder: Path) -> DocumentsPipeline:
        for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            caption = image.with_suffix(".txt")
            text = caption.read_text(encoding="utf-8", errors="replace").strip() if caption.is_file() else ""
            if not text:
                self._skip("missing_caption", str(image), 0, str(caption))
                continue
            metadata = {"image": str(image.resolve()), "kind": "caption", "file": str(image), "line": 0}
            yield Document(text=text, id=str(image.relative_to(folder)), metadata=metadata)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        self.quarantine.start(rank)
        sources = [(self._from_jsonl, Path(p)) for p in self.jsonl_files]
        sources += [(self._from_folder, Path(p)) for p in self.image_dirs]
        try:
            for index, (read, path) in enumerate(sources):
                if index % world_size != rank:
                    continue
                if not path.exists():
                    self._skip("missing_source", str(path), 0, "")
                    continue
                for document in read(path):
                    self.stat_update("documents")
                    yield document
        finally:
            self.quarantine.close()


def _valid_conversation(turns) -> bool:
    return (
        isinstance(turns, list)
        and len(turns) >= 2
        and all(
            isinstance(t, dict) and t.get("from") in ("human", "gpt") and isinstance(t.get("value"), str)
            for t in turns
        )
        and sum(t["value"].count("<image>") for t in turns) == 1
    )


class ImageValidator(PipelineStep):
    """Opens every image (`images.open_checked`): unreadable, truncated, non-image, huge, tiny or
    unconvertible files are quarantined with the reason; kept documents gain width and height."""

    name = "🖼 image validator"
    type = "🔻 - FILTER"

    def __init__(
        self, limits: ImageLimits = ImageLimits(), quarantine_dir: str = "quarantine", source: str = "images"
    ):
        super().__init__()
        self.limits = limits
        self.quarantine = Quarantine(quarantine_dir, f"{source}_images")

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.quarantine.start(rank)
        try:
            for document in data:
                path = document.metadata["image"]
                try:
                    image = open_checked(path, self.limits)
                except BadImage as err:
                    self.stat_update(f"quarantined_{err.reason}")
                    self.quarantine.add(err.reason, path, document.metadata.get("line", 0), err.detail)
                    continue
                document.metadata["width"], document.metadata["height"] = image.size
                self.stat_update("kept")
                yield document
        finally:
            self.quarantine.close()


class ImageDedup(PipelineStep):
    """Near-duplicate images (difference hash of hash_size^2 bits within `max_distance` bits of one
    already kept) are
    dropped; the first occurrence stays. The index lives in this task's memory: with several tasks,
    duplicates are found within a task only (run dedup with tasks=1, or shard by hash upstream)."""

    name = "🖼 image near-dedup"
    type = "🫂 - DEDUP"

    def __init__(self, max_distance: int = 12, hash_size: int = 16):
        super().__init__()
        self.max_distance = max_distance
        self.hash_size = hash_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        kept: list[int] = []
        for document in data:
            digest = dhash(open_checked(document.metadata["image"]), self.hash_size)
            if any(hamming(digest, other) <= self.max_distance for other in kept):
                self.stat_update("dropped_near_duplicate")
                continue
            kept.append(digest)
            document.metadata["dhash"] = f"{digest:x}"
            self.stat_update("kept")
            yield document


class ImageTextSimilarityFilter(PipelineStep):
    """Keeps caption pairs whose image-text similarity is >= `threshold` (the score is stored in
    `metadata["similarity"]`); other kinds pass unscored. Dropped pairs are logged with their score
    to `<quarantine_dir>/<source>_similarity/<rank>.jsonl`, so the histogram covers every pair."""

    name = "🖼 image-text similarity"
    type = "🔻 - FILTER"

    def __init__(
        self,
        model_dir: str,
        threshold: float,
        batch_size: int = 32,
        quarantine_dir: str = "quarantine",
        source: str = "images",
    ):
        super().__init__()
        self.model_dir = model_dir
        self.threshold = threshold
        self.batch_size = batch_size
        self.quarantine = Quarantine(quarantine_dir, f"{source}_similarity")

    def _flush(self, scorer, batch: list[Document]) -> DocumentsPipeline:
        images = [open_checked(d.metadata["image"]) for d in batch]
        scores = scorer.score(images, [d.text for d in batch])
        for document, score in zip(batch, scores, strict=True):
            document.metadata["similarity"] = round(float(score), 5)
            if score >= self.threshold:
                self.stat_update("kept")
                yield document
            else:
                self.stat_update("dropped_low_similarity")
                self.quarantine.add(
                    "low_similarity",
                    document.metadata["image"],
                    document.metadata.get("line", 0),
                    f"{float(score):.4f} {document.text}",
                )

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from megatron_infi.data_processing.vision.similarity import HFDualEncoderScorer

        scorer = HFDualEncoderScorer(self.model_dir)
        self.quarantine.start(rank)
        batch: list[Document] = []
        try:
            for document in data:
                if document.metadata.get("kind") != "caption":
                    yield document
                    continue
                batch.append(document)
                if len(batch) == self.batch_size:
                    yield from self._flush(scorer, batch)
                    batch = []
            if batch:
                yield from self._flush(scorer, batch)
        finally:
            self.quarantine.close()


class TextRenderer(PipelineStep):
    """Text documents in, (rendered image, visible text) documents out: each document's text is drawn
    with `render.render_text` into `<images_dir>/<id>.png`; documents that render to no text are
    dropped. Code (metadata `domain` == code, or `style_for_code`) is set in the monospaced face."""

    name = "🖼 text renderer"
    type = "🔢 - TOKENIZER"

    def __init__(self, images_dir: str, style=None, min_chars: int = 20):
        super().__init__()
        from megatron_infi.data_processing.vision.render import RenderStyle

        self.images_dir = images_dir
        self.style = style or RenderStyle()
        self.min_chars = min_chars

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import dataclasses
        import hashlib

        from megatron_infi.data_processing.vision.render import render_text

        folder = Path(self.images_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for document in data:
            code = document.metadata.get("domain") == "code"
            style = dataclasses.replace(self.style, family="mono") if code else self.style
            image, visible = render_text(document.text, style)
            if len(visible) < self.min_chars:
                self.stat_update("dropped_too_short")
                continue
            name = hashlib.sha1(f"{document.id}".encode()).hexdigest()[:16]
            path = folder / f"{name}.png"
            image.save(path)
            self.stat_update("rendered")
            yield Document(
                text=visible,
                id=f"render:{document.id}",
                metadata={"image": str(path.resolve()), "kind": "render", "font": style.family},
            )
