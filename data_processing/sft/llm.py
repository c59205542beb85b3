"""LLM calls of selection and synthesis, all through the shared generation backend
(megatron_infi.generation: vllm / openai-compatible / hf), which batches, retries and caches.

Any object with the backend's `chat(conversations, params) -> list[list[str]]` works here; tests use
a tiny random HF Llama through the `hf` backend, or a scripted class where answers must be controlled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tqdm.auto import tqdm

from megatron_infi.data_processing.sft import prompts
from megatron_infi.data_processing.sft.config import LLMTask
from megatron_infi.data_processing.sft.records import conversation_prefix, last_prompt

CHUNK = 64  # conversations per backend call: progress granularity; the backend batches inside


class ChatBackend(Protocol):
    def chat(self, conversations: list[list[dict]], params: Any) -> list[list[str]]: ...


def build_llm(llm: dict[str, Any]) -> ChatBackend:
    """A backend from GenerationConfig fields (steps pass them as JSON so the pipeline pickles)."""
    from megatron_infi.config.core import from_dict
    from megatron_infi.generation import GenerationConfig, build_backend

    return build_backend(from_dict(GenerationConfig, dict(llm)))


def sampling(task: LLMTask, seed: int = 0, n: int = 1):
    from megatron_infi.generation import SamplingParams

    return SamplingParams(
        temperature=task.temperature, top_p=task.top_p, max_new_tokens=task.max_new_tokens, n=n, seed=seed
    )


def chat(
    backend: ChatBackend,
    conversations: Sequence[list[dict]],
    task: LLMTask,
    seed: int = 0,
    n: int = 1,
    desc: str = "llm",
) -> list[list[str]]:
    """n completions per conversation, in chunks so that long runs show progress."""
    params = sampling(task, seed, n)
    out: list[list[str]] = []
    with tqdm(
        total=len(conversations),
        desc=desc,
        unit="conv",
        disable=True if len(conversations) <= CHUNK else None,
    ) as bar:
        for start in range(0, len(conversations), CHUNK):
            chunk = list(conversations[start : start + CHUNK])
            replies = backend.chat(chunk, params)
            if len(replies) != len(chunk):
                raise RuntimeError(f"backend returned {len(replies)} results for {len(chunk)} conversations")
            out.extend(replies)
            bar.update(len(chunk))
    return out


def user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def generate_cot(backend: ChatBackend, records: list[dict], task: LLMTask, seed: int = 0) -> list[str]:
    """A teacher's step-by-step solution for each record that has a question but no response."""
    conversations = []
    for record in records:
        meta = record["meta"]
        prefix = conversation_prefix(record)
        prefix[-1] = {
            "role": "user",
            "content": prompts.cot_prompt(prefix[-1]["content"], meta["task"], meta.get("answer")),
        }
        conversations.append([{"role": "system", "content": prompts.COT_SYSTEM}, *prefix])
    return [replies[0] if replies else "" for replies in chat(backend, conversations, task, seed, desc="cot")]


def label_domains(
    backend: ChatBackend, records: list[dict], domains: list[str], task: LLMTask, seed: int = 0
) -> list[str | None]:
    """The LLM's domain label for each record (None when the reply names no known domain)."""
    conversations = [user(prompts.label_prompt(last_prompt(r), domains)) for r in records]
    replies = chat(backend, conversations, task, seed, desc="labels")
    return [prompts.parse_label(r[0] if r else "", domains) for r in replies]


def correct(
    backend: ChatBackend, records: list[dict], whys: list[str], task: LLMTask, seed: int = 0
) -> list[str]:
    """One new attempt per record, shown its failed attempt and why it failed."""
    conversations = []
    for record, why in zip(records, whys, strict=True):
        prefix = conversation_prefix(record)
        attempt = record["messages"][-1]["content"] if record["messages"][-1]["role"] == "assistant" else ""
        prefix[-1] = {
            "role": "user",
            "content": prompts.correction_prompt(prefix[-1]["content"], attempt, record["meta"]["task"], why),
        }
        conversations.append(prefix)
    return [
        replies[0] if replies else ""
        for replies in chat(backend, conversations, task, seed, desc="corrections")
    ]


def quality_scores(
    backend: ChatBackend, records: list[dict], task: LLMTask, seed: int = 0
) -> list[float | None]:
    from megatron_infi.data_processing.sft.records import response_text

    conversations = [user(prompts.score_prompt(last_prompt(r), response_text(r))) for r in records]
    replies = chat(backend, conversations, task, seed, desc="scores")
    return [prompts.parse_score(r[0] if r else "") for r in replies]
