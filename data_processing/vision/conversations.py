"""The training-record format of every VL stage: LLaVA-style conversations with an `<image>` placeholder.

    {"id": ..., "image": "/abs/path.png",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is written in the image?"},
                       {"from": "gpt", "value": "..."}]}

One image per record, one `<image>` in its human turns. The trainer replaces the placeholder by the
image's vision tokens and computes the loss on the `gpt` turns only. Records per stage:
- align (stage 1): a caption pair as "describe the image" -> caption;
- render (stage 2): a rendered-text image as "what is written" -> the visible text;
- instruct (stage 3): questions about either (which digit, the first line, the word count, ...),
  plus any conversations the sources already carry.

A seeded fraction of the pairs (`held_out`, by record id) goes to no training stage: their questions
become the toy benchmarks (`eval` stage, the `vqa` format of megatron_infi/evaluation):
    {"id": ..., "image": "/abs/path.png", "question": ..., "answer": ..., "task": "vqa" | "ocr"}
- vqa: which digit a handwritten digit is;
- ocr: the first word of a rendered text.
Both questions are asked in stage-3 records too, so a trained model has seen the task, not the item.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

IMAGE_PLACEHOLDER = "<image>"
CAPTION_PROMPT = "Describe the image briefly."
OCR_PROMPT = "What is written in the image?"
DIGIT_QUESTION = "Which digit is written in the image? Answer with the digit."
FIRST_WORD_QUESTION = "What is the first word in the image?"
STAGES = ("align", "render", "instruct", "eval")


def held_out(record_id: str, fraction: float, seed: int) -> bool:
    """Whether a pair is kept out of training for the benchmarks: a hash of (seed, id), so every
    stage and every rerun agrees without shared state."""
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") < fraction * 2**64


def conversation(image: str, question: str, answer: str, record_id: str) -> dict:
    return {
        "id": record_id,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def align_record(document) -> dict:
    return conversation(document.metadata["image"], CAPTION_PROMPT, document.text, document.id)


def render_record(document) -> dict:
    return conversation(document.metadata["image"], OCR_PROMPT, document.text, document.id)


def instruct_records(document, rng: random.Random) -> list[dict]:
    """Question-answer turns derived from a caption or rendered text (answers follow from the pair)."""
    image, text, kind = document.metadata["image"], document.text, document.metadata.get("kind")
    if kind == "conversation":
        return [{"id": document.id, "image": image, "conversations": document.metadata["conversations"]}]
    if kind == "render":
        lines = [line for line in text.splitlines() if line.strip()]
        qa = [
            ("Read the first line of the text in the image.", lines[0].strip()),
            ("How many lines of text does the image show?", str(len(lines))),
            (FIRST_WORD_QUESTION, text.split()[0]),
        ]
    else:
        qa = [("What does the image show?", text)]
        digit = _digit(text)
        if digit is not None:
            qa.append((DIGIT_QUESTION, digit))
    question, answer = rng.choice(qa)
    return [conversation(image, question, answer, f"{document.id}:qa")]


def _digit(caption: str) -> str | None:
    words = caption.split()
    return words[-1] if words[:3] == ["a", "handwritten", "digit"] else None


def eval_record(document) -> dict | None:
    """The benchmark item of a held-out pair (None for pairs no toy benchmark asks about)."""
    image, text, kind = document.metadata["image"], document.text, document.metadata.get("kind")
    if kind == "render":
        task, question, answer = "ocr", FIRST_WORD_QUESTION, text.split()[0]
    elif kind == "caption" and _digit(text) is not None:
        task, question, answer = "vqa", DIGIT_QUESTION, _digit(text)
    else:
        return None
    return {"id": document.id, "image": image, "question": question, "answer": answer, "task": task}


class ConversationWriter(PipelineStep):
    """Writes each document as the record of `stage` (align | render | instruct | eval) to
    `<output_dir>/<stage>/<file_prefix><rank>.jsonl` (atomically: a temp file renamed when the task
    ends). The training stages skip the `held_out` pairs; `eval` writes only those."""

    name = "🖼 conversation writer"
    type = "💽 - WRITER"

    def __init__(
        self, output_dir: str, stage: str, seed: int = 0, file_prefix: str = "", holdout: float = 0.0
    ):
        super().__init__()
        self.file_prefix = file_prefix
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
        self.output_dir = output_dir
        self.stage = stage
        self.seed = seed
        self.holdout = holdout

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        folder = Path(self.output_dir) / self.stage
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{self.file_prefix}{rank:05d}.jsonl"
        tmp = folder / f".{final.name}.tmp"
        rng = random.Random(self.seed + rank)
        with open(tmp, "w", encoding="utf-8") as handle:
            for document in data:
                if held_out(document.id, self.holdout, self.seed) != (self.stage == "eval"):
                    records = []
                elif self.stage == "eval":
                    records = [r for r in [eval_record(document)] if r is not None]
                elif self.stage == "align":
                    records = [align_record(document)] if document.metadata.get("kind") == "caption" else []
                elif self.stage == "render":
                    records = [render_record(document)] if document.metadata.get("kind") == "render" else []
                else:
                    records = instruct_records(document, rng)
                for record in records:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    self.stat_update("records")
                yield document
        tmp.replace(final)
