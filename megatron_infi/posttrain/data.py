"""Reading the two post-training data contracts into `datasets.Dataset`s, skipping bad records.

- SFT: `{"messages": [{"role", "content"}, ...], "meta": {...}}` (OpenAI chat format), as
  `infi data sft-select` / `sft-synthesize` write it.
- Preference: TRL's conversational format `{"prompt": [messages], "chosen": [assistant message],
  "rejected": [assistant message]}`, as `infi dpo-pairs` writes it.
Files are JSONL (.jsonl, .jsonl.gz), JSON or Parquet (megatron_infi.utils.iter_rows).

A record that does not fit is skipped and counted by reason with its file:line (never a crash);
a file that yields no usable record at all is an error that names the file. With a `RecordTally`
the prompts are put under the stage's prompt contract: records whose meta names the contract they
were prepared under stay as they are (another contract warns), raw ones are rendered now.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from megatron_infi.config.prompt import RecordTally
from megatron_infi.errors import DataError
from megatron_infi.utils import SkipCounter, read_rows

ROLES = ("system", "user", "assistant")


def clean_messages(value: Any) -> list[dict[str, str]] | str:
    """The messages reduced to role + content, or a skip reason."""
    if not isinstance(value, list) or not value:
        return "messages-not-a-list"
    cleaned = []
    for message in value:
        if not isinstance(message, dict):
            return "message-not-an-object"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return "unknown-role"
        if not isinstance(content, str) or not content.strip():
            return "empty-content"
        cleaned.append({"role": role, "content": content})
    return cleaned


def _check_files(paths: list[str | Path]) -> list[Path]:
    files = [Path(p) for p in paths]
    for path in files:
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
    return files


def read_sft_records(
    paths: list[str | Path],
    skipped: SkipCounter,
    prompts: RecordTally | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Conversations that end with an assistant turn; `meta` is dropped (its schema varies by source).
    `limit`: stop after that many usable records per file (an input check)."""
    records = []
    for path in _check_files(paths):
        before = len(records)
        for where, obj in read_rows(path, skipped):
            messages = clean_messages(obj.get("messages"))
            if isinstance(messages, str):
                skipped.skip(messages, where)
            elif messages[-1]["role"] != "assistant":
                skipped.skip("no-final-assistant-turn", where)
            else:
                if prompts is not None:
                    messages = prompts.prepare(messages, obj.get("meta"), where)
                records.append({"messages": messages})
                if limit is not None and len(records) - before >= limit:
                    break
        if len(records) == before:
            raise DataError(f"{path}: no usable SFT record (skipped: {skipped.counts})")
    return records


def read_preference_records(
    paths: list[str | Path],
    skipped: SkipCounter,
    prompts: RecordTally | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    records = []
    for path in _check_files(paths):
        before = len(records)
        for where, obj in read_rows(path, skipped):
            prompt = clean_messages(obj.get("prompt"))
            chosen = clean_messages(obj.get("chosen"))
            rejected = clean_messages(obj.get("rejected"))
            reason = next((r for r in (prompt, chosen, rejected) if isinstance(r, str)), None)
            if reason is not None:
                skipped.skip(reason, where)
            elif prompt[-1]["role"] == "assistant":
                skipped.skip("prompt-ends-with-assistant", where)
            elif any(m["role"] != "assistant" for m in chosen + rejected):
                skipped.skip("completion-not-assistant", where)
            elif chosen == rejected:
                skipped.skip("chosen-equals-rejected", where)
            else:
                if prompts is not None:
                    prompt = prompts.prepare(prompt, obj.get("meta"), where)
                records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
                if limit is not None and len(records) - before >= limit:
                    break
        if len(records) == before:
            raise DataError(f"{path}: no usable preference record (skipped: {skipped.counts})")
    return records


def split_held_out(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held_out): a seeded shuffle, at least one record on each side when fraction > 0."""
    if fraction <= 0:
        return records, []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_held = min(len(records) - 1, max(1, round(fraction * len(records))))
    held = set(order[:n_held])
    return [r for i, r in enumerate(records) if i not in held], [
        r for i, r in enumerate(records) if i in held
    ]


def to_dataset(records: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list(records)
