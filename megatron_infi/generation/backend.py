"""The generation interface every stage uses (eval, SFT-data synthesis, DPO pairs), and its selection.

A backend turns inputs (a text prompt, or a chat conversation rendered with the model's chat
template) into completions. The base class owns what is the same for every backend: n samples per
input (one generation when greedy, since all would be equal), the resumable cache, batching in
`batch_size` chunks and the progress bar. Backends implement `_complete`: one completion per
(input, sample index).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from megatron_infi.errors import RunError
from megatron_infi.generation.cache import GenerationCache, cache_key
from megatron_infi.generation.params import GenerationConfig, SamplingParams

Conversation = list[dict[str, str]]


class GenerationError(RunError):
    pass


def cut_at_stop(text: str, stop: list[str]) -> str:
    """Text before the first stop string (as vLLM and OpenAI servers return it)."""
    cut = len(text)
    for s in stop:
        pos = text.find(s)
        if pos != -1:
            cut = min(cut, pos)
    return text[:cut]


def sample_seed(seed: int, sample_index: int) -> int:
    return seed + sample_index


def model_dir_fingerprint(path: str | Path) -> str:
    """Identity of an HF model dir for the cache: its path plus size and mtime of the files that
    decide its outputs, so re-exporting a model to the same dir invalidates old generations."""
    path = Path(path).resolve()
    parts = [str(path)]
    for file in sorted(path.iterdir()):
        if file.is_file() and (file.suffix in (".safetensors", ".bin", ".json", ".model", ".jinja")):
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return f"{path}@{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:16]}"


class GenerationBackend(ABC):
    name = "base"

    def __init__(self, cfg: GenerationConfig):
        self.cfg = cfg
        self.cache: GenerationCache | None = None
        self.show_progress = True

    @property
    @abstractmethod
    def model_id(self) -> str:
        """What identifies the model's outputs (cache key part)."""

    @abstractmethod
    def _complete(
        self, kind: str, items: list[Any], sample_indices: list[int], params: SamplingParams
    ) -> list[str]:
        """One completion per item; kind is "text" (items are str) or "chat" (items are conversations)."""

    def enable_cache(self, cache_dir: str | Path) -> None:
        self.cache = GenerationCache(cache_dir, self.model_id)

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[str]]:
        """`params.n` completions of each raw text prompt (few-shot / base-model use)."""
        return self._run("text", list(prompts), params)

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[list[str]]:
        """`params.n` replies to each conversation, rendered with the model's chat template."""
        return self._run("chat", [list(c) for c in conversations], params)

    def _run(self, kind: str, items: list[Any], params: SamplingParams) -> list[list[str]]:
        params.validate()
        distinct = 1 if params.greedy else params.n
        sampling = params.key()
        jobs = [(i, s) for i in range(len(items)) for s in range(distinct)]
        keys = {job: cache_key(self.model_id, kind, items[job[0]], sampling, job[1]) for job in jobs}
        texts: dict[tuple[int, int], str] = {}
        if self.cache is not None:
            for job in jobs:
                hit = self.cache.get(keys[job])
                if hit is not None:
                    texts[job] = hit
        todo = [job for job in jobs if job not in texts]
        # Similar lengths together: less padding in a batch.
        todo.sort(key=lambda job: len(json.dumps(items[job[0]])))
        size = self.cfg.batch_size
        bar = tqdm(
            total=len(todo),
            desc=f"generate ({self.name})",
            unit="sample",
            disable=None if self.show_progress and todo else True,  # None: only on a terminal
        )
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            outs = self._complete(kind, [items[i] for i, _ in chunk], [s for _, s in chunk], params)
            if len(outs) != len(chunk):
                raise GenerationError(
                    f"{self.name} returned {len(outs)} completions for {len(chunk)} requests"
                )
            outs = [cut_at_stop(o, params.stop) for o in outs]
            texts.update(zip(chunk, outs, strict=True))
            if self.cache is not None:
                self.cache.put_many([(keys[job], text) for job, text in zip(chunk, outs, strict=True)])
            bar.update(len(chunk))
        bar.close()
        return [[texts[(i, s % distinct)] for s in range(params.n)] for i in range(len(items))]

    def close(self) -> None:  # noqa: B027 - optional hook; backends without a model hold nothing
        """Release the model (GPU memory) where the backend holds one."""


def select_backend(cfg: GenerationConfig) -> str:
    """The concrete backend for cfg.backend ("auto" resolves here: the one device-specific choice)."""
    if cfg.backend != "auto":
        return cfg.backend
    if cfg.base_url:
        return "openai"
    if importlib.util.find_spec("vllm") is not None:
        import torch

        if torch.cuda.is_available():
            return "vllm"
    return "hf"


def build_backend(cfg: GenerationConfig) -> GenerationBackend:
    cfg.validate()
    cfg.check_model_dir()
    kind = select_backend(cfg)
    if kind == "hf":
        from megatron_infi.generation.hf import HFBackend

        backend: GenerationBackend = HFBackend(cfg)
    elif kind == "vllm":
        from megatron_infi.generation.vllm_engine import VLLMBackend

        backend = VLLMBackend(cfg)
    else:
        from megatron_infi.generation.openai_http import OpenAIBackend

        backend = OpenAIBackend(cfg)
    if cfg.cache_dir:
        backend.enable_cache(cfg.cache_dir)
    return backend
