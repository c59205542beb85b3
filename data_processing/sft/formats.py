"""Readers for the common SFT formats, all turned into the canonical record (records.py).

Formats (`auto` picks one per record from its keys):
- messages: OpenAI chat, `{"messages": [{"role", "content"}, ...]}`
- sharegpt: `{"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]}`
- alpaca: `{"instruction", "input", "output"}`
- qa: `{"question"|"problem"|"prompt", "solution"|"response"|"cot"|"canonical_solution",
  "answer", "tests"|"test", "entry_point"}` (GSM8K-style `#### X` endings become `\\boxed{X}`;
  a code solution without a fence is fenced; a record without a solution keeps only the question
  and is marked `needs_cot` for teacher generation)

Files: .jsonl, .jsonl.gz, .json (a list of objects) and .parquet. Malformed lines and records that
cannot be converted are skipped and counted (reason + file:line), never fatal.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from megatron_infi.data_processing.sft.records import RecordError, infer_task, make_record
from megatron_infi.utils import SkipCounter, is_record_file, iter_rows

FORMATS = ("auto", "messages", "sharegpt", "alpaca", "qa")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
}
QUESTION_KEYS = ("question", "problem", "prompt", "query")
SOLUTION_KEYS = ("solution", "response", "cot", "output", "canonical_solution", "completion")
# Keys copied into meta when present at the top level of an input record.
META_KEYS = ("id", "domain", "answer", "tests", "entry_point", "finish_reason", "difficulty", "language")
GSM_ANSWER = re.compile(r"\n?####\s*(.+?)\s*$")


def detect_format(obj: dict[str, Any]) -> str:
    if isinstance(obj.get("messages"), list):
        return "messages"
    conversations = obj.get("conversations")
    if isinstance(conversations, list):
        first = conversations[0] if conversations else {}
        return "sharegpt" if isinstance(first, dict) and "from" in first else "messages"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if any(key in obj for key in QUESTION_KEYS):
        return "qa"
    raise RecordError("unrecognised-format", f"keys: {', '.join(sorted(obj)[:8])}")


def _common_meta(obj: dict[str, Any]) -> dict[str, Any]:
    raw = obj.get("meta")
    meta = dict(raw) if isinstance(raw, dict) else {}
    for key in META_KEYS:
        if key in obj and key not in meta:
            meta[key] = obj[key]
    if "test" in obj and "tests" not in meta:
        meta["tests"] = obj["test"]
    if meta.get("answer") is not None:
        meta["answer"] = str(meta["answer"])
    return meta


def _from_messages(obj: dict[str, Any]) -> list[dict[str, str]]:
    messages = obj.get("messages", obj.get("conversations"))
    if not messages:
        raise RecordError("empty-messages")
    # Roles are normalised leniently ("human" / "gpt" / "model" are common in messages-style files).
    return [
        {
            "role": SHAREGPT_ROLES.get(str(m.get("role", "")).lower(), m.get("role")),
            "content": m.get("content"),
        }
        if isinstance(m, dict)
        else m
        for m in messages
    ]


def _from_sharegpt(obj: dict[str, Any]) -> list[dict[str, str]]:
    turns = obj.get("conversations") or []
    if not turns:
        raise RecordError("empty-messages")
    messages = []
    if isinstance(obj.get("system"), str) and obj["system"].strip():
        messages.append({"role": "system", "content": obj["system"]})
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RecordError("message-not-object", f"turn {i}")
        role = SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise RecordError("unknown-role", f"turn {i}: {turn.get('from')!r}")
        messages.append({"role": role, "content": turn.get("value")})
    return messages


def _from_alpaca(obj: dict[str, Any]) -> list[dict[str, str]]:
    instruction, extra = obj.get("instruction"), obj.get("input") or ""
    if not isinstance(instruction, str) or not isinstance(extra, str):
        raise RecordError("content-not-string", "instruction/input")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "system", "content": obj["system"]}] if obj.get("system") else []
    messages.append({"role": "user", "content": prompt})
    if obj.get("output"):
        messages.append({"role": "assistant", "content": obj["output"]})
    return messages


def standardize_solution(solution: str, task: str) -> str:
    """GSM8K's `#### X` final line -> `The final answer is \\boxed{X}.`; unfenced code -> fenced."""
    match = GSM_ANSWER.search(solution)
    if match and "\\boxed" not in solution:
        solution = (
            solution[: match.start()].rstrip() + f"\n\nThe final answer is $\\boxed{{{match.group(1)}}}$."
        )
    if task == "code" and "```" not in solution:
        solution = f"```python\n{solution.strip(chr(10))}\n```"
    return solution


def _from_qa(obj: dict[str, Any], meta: dict[str, Any]) -> list[dict[str, str]]:
    question = next((obj[k] for k in QUESTION_KEYS if isinstance(obj.get(k), str) and obj[k].strip()), None)
    if question is None:
        raise RecordError("no-question")
    solution = next((obj[k] for k in SOLUTION_KEYS if isinstance(obj.get(k), str) and obj[k].strip()), None)
    messages = [{"role": "user", "content": question}]
    if solution is None:
        meta["needs_cot"] = True
        return messages
    if "canonical_solution" in obj and solution is obj["canonical_solution"]:
        # HumanEval-style: the solution completes the prompt, so the response repeats the signature.
        solution = question + solution
        meta.setdefault("task", "code")
    task = meta.get("task") or infer_task(meta)
    messages.append({"role": "assistant", "content": standardize_solution(solution, task)})
    return messages


def to_canonical(
    obj: dict[str, Any],
    fmt: str = "auto",
    source: str = "unknown",
    task: str = "auto",
    domain: str | None = None,
    fields: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One input object -> a canonical record; raises RecordError(reason) when it cannot."""
    if fields:
        obj = dict(obj)
        for canonical, original in fields.items():
            if original in obj:
                obj[canonical] = obj.pop(original)
    fmt = detect_format(obj) if fmt == "auto" else fmt
    meta = _common_meta(obj)
    meta.setdefault("source", source)
    if task != "auto":
        meta["task"] = task
    if domain and not meta.get("domain"):
        meta["domain"] = domain
    if fmt == "messages":
        messages = _from_messages(obj)
    elif fmt == "sharegpt":
        messages = _from_sharegpt(obj)
    elif fmt == "alpaca":
        messages = _from_alpaca(obj)
    elif fmt == "qa":
        messages = _from_qa(obj, meta)
    else:
        raise RecordError("unknown-format", repr(fmt))
    return make_record(messages, meta)


def expand_paths(pattern: str) -> list[Path]:
    """A file, a directory (its supported files) or a glob, sorted; empty when nothing matches."""
    path = Path(pattern)
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and is_record_file(p)]
    else:
        found = (
            [Path(p) for p in glob.glob(pattern, recursive=True)]
            if any(c in pattern for c in "*?[")
            else [path]
        )
    return sorted(p for p in found if p.is_file())


def read_records(
    path: str | Path,
    skipped: SkipCounter,
    fmt: str = "auto",
    source: str | None = None,
    task: str = "auto",
    domain: str | None = None,
    fields: dict[str, str] | None = None,
    keep=lambda index: True,
) -> Iterator[dict[str, Any]]:
    """Canonical records of one file; unconvertible rows are counted as `bad-record: <reason>`."""
    path = Path(path)
    source = source or path.name.split(".")[0]
    for where, obj, bad in iter_rows(path, keep):
        if obj is None:
            skipped.skip(bad, where)
            continue
        try:
            yield to_canonical(obj, fmt, source, task, domain, fields)
        except RecordError as err:
            skipped.skip(f"bad-record: {err.reason}", f"{where} ({err.detail})" if err.detail else where)
