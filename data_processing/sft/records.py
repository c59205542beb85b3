"""The canonical SFT record every step reads and writes: `{"messages": [...], "meta": {...}}`.

`messages` is the OpenAI chat format (roles system / user / assistant, string content); `meta` holds
what selection needs and records what it decided:

- id: stable content hash (source + messages), so reruns and shards agree on identities
- source: where it came from (file stem or the input's `source`)
- task: "math" (verifiable final answer), "code" (tests to run) or "open" (neither)
- domain: a label (Algebra, Geometry, ...) or None until labelled
- answer / tests / entry_point: references for verification
- scores and decisions added by the steps (language, response_tokens, cluster, ...)
- prompt_contract: the prompt contract the written prompts were rendered under (final outputs only)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from megatron_infi.config.prompt import PromptContract, kind_of_record
from megatron_infi.errors import DataError

ROLES = ("system", "user", "assistant")
TASKS = ("math", "code", "open")


class RecordError(DataError):
    """A record that cannot become a canonical SFT sample: a short reason (counted) and a detail."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def record_id(source: str, messages: list[dict[str, str]]) -> str:
    payload = json.dumps([source, [[m["role"], m["content"]] for m in messages]], ensure_ascii=False)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def make_record(messages: list[dict[str, str]], meta: dict[str, Any]) -> dict[str, Any]:
    """Validate roles and content, fill meta defaults and the id."""
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RecordError("message-not-object", f"message {i}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise RecordError("unknown-role", f"message {i}: {role!r}")
        if not isinstance(content, str):
            raise RecordError("content-not-string", f"message {i}")
        clean.append({"role": role, "content": content})
    if not any(m["role"] == "user" and m["content"].strip() for m in clean):
        raise RecordError("no-user-message")
    meta = dict(meta)
    meta.setdefault("source", "unknown")
    meta.setdefault("task", infer_task(meta))
    meta.setdefault("domain", None)
    meta.setdefault("answer", None)
    if meta["task"] not in TASKS:
        raise RecordError("unknown-task", repr(meta["task"]))
    meta["id"] = meta.get("id") or record_id(meta["source"], clean)
    return {"messages": clean, "meta": meta}


def infer_task(meta: dict[str, Any]) -> str:
    if meta.get("tests"):
        return "code"
    if meta.get("answer") not in (None, ""):
        return "math"
    return "open"


def prompt_text(record: dict[str, Any]) -> str:
    """The user turns (what a benchmark question would leak into)."""
    return "\n\n".join(m["content"] for m in record["messages"] if m["role"] == "user")


def last_prompt(record: dict[str, Any]) -> str:
    users = [m["content"] for m in record["messages"] if m["role"] == "user"]
    return users[-1] if users else ""


def response_text(record: dict[str, Any]) -> str:
    """The final assistant turn ('' when the record has no response yet)."""
    messages = record["messages"]
    return messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else ""


def full_text(record: dict[str, Any]) -> str:
    return "\n\n".join(m["content"] for m in record["messages"])


def has_response(record: dict[str, Any]) -> bool:
    return bool(response_text(record).strip())


def with_response(record: dict[str, Any], response: str) -> dict[str, Any]:
    """A copy whose final assistant turn is `response` (appended when there is none)."""
    messages = [dict(m) for m in record["messages"]]
    if messages and messages[-1]["role"] == "assistant":
        messages[-1]["content"] = response
    else:
        messages.append({"role": "assistant", "content": response})
    return {"messages": messages, "meta": dict(record["meta"])}


def under_contract(record: dict[str, Any], contract: PromptContract) -> dict[str, Any]:
    """The record with its prompt rendered under the prompt contract (system prompt, the instruction of
    its task) and the contract in meta.prompt_contract, as `infi sft` expects prepared records."""
    meta = {**record["meta"], "prompt_contract": contract.to_dict()}
    return {"messages": contract.apply(record["messages"], kind_of_record(record["meta"])), "meta": meta}


def conversation_prefix(record: dict[str, Any]) -> list[dict[str, str]]:
    """Messages up to (not including) the final assistant turn: what a model is asked to answer."""
    messages = record["messages"]
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return [dict(m) for m in messages]
