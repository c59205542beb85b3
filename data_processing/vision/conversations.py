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
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

IMAGE_PLACEHOLDER = "<image>"
CAPTION_PROMPT = "Describe the image briefly."
OCR_PROMPT = "What is written in the image?"


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
            ("What is the first word in the image?", text.split()[0]),
        ]
    else:
        qa = [("What does the image show?", text)]
        words = text.split()
        if words[:3] == ["a", "handwritten", "digit"]:
            qa.append(("Which digit is written in the image? Answer with the digit.", words[-1]))
    question, answer = rng.choice(qa)
    return [conversation(image, question, answer, f"{document.id}:qa")]


class ConversationWriter(PipelineStep):
    """Writes each document as the record of `stage` (align | render | instruct) to
    `<output_dir>/<stage>/<file_prefix><rank>.jsonl` (atomically: a temp file renamed when the task ends)."""

    name = "🖼 conversation writer"
    type = "💽 - WRITER"

    def __init__(self, output_dir: str, stage: str, seed: int = 0, file_prefix: str = ""):
        super().__init__()
        self.file_prefix = file_prefix
        if stage not in ("align", "render", "instruct"):
            raise ValueError(f"stage {stage!r} is not align, render or instruct")
        self.output_dir = output_dir
        self.stage = stage
        self.seed = seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        folder = Path(self.output_dir) / self.stage
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{self.file_prefix}{rank:05d}.jsonl"
        tmp = folder / f".{final.name}.tmp"
        rng = random.Random(self.seed + rank)
        with open(tmp, "w", encoding="utf-8") as handle:
            for document in data:
                if self.stage == "align":
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
