"""Any OpenAI-compatible HTTP endpoint (`vllm serve`, SGLang, a hosted API): /completions for text
prompts, /chat/completions for conversations.

One request per (input, sample index), `batch_size` of them in flight at once, each with seed + index.
A 5xx, a 429 or a connection error is retried with exponential backoff up to `max_retries` times;
any other error stops the run with the URL, status and the server's message.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from megatron_infi.generation.backend import GenerationBackend, GenerationError, sample_seed
from megatron_infi.generation.params import GenerationConfig, SamplingParams

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


class OpenAIBackend(GenerationBackend):
    name = "openai"

    def __init__(self, cfg: GenerationConfig):
        super().__init__(cfg)
        import httpx

        headers = {}
        key = os.environ.get(cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.base_url = (cfg.base_url or "").rstrip("/")
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=cfg.request_timeout_s)
        self.retries_done = 0

    @property
    def model_id(self) -> str:
        return f"{self.base_url}#{self.cfg.model}"

    def _post(self, path: str, body: dict) -> dict:
        import httpx

        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self.retries_done += 1
                time.sleep(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))
            try:
                response = self.client.post(path, json=body)
            except httpx.TransportError as err:
                last = f"connection error: {err}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                continue
            if response.status_code != 200:
                raise GenerationError(
                    f"{self.base_url}{path}: HTTP {response.status_code}: {response.text[:500]}"
                )
            try:
                return response.json()
            except ValueError:
                raise GenerationError(
                    f"{self.base_url}{path}: response is not JSON: {response.text[:300]}"
                ) from None
        raise GenerationError(f"{self.base_url}{path}: gave up after {self.cfg.max_retries} retries ({last})")

    def _one(self, kind: str, item: Any, sample_index: int, params: SamplingParams) -> str:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": 1,
            "seed": sample_seed(params.seed, sample_index),
        }
        if params.stop:
            body["stop"] = list(params.stop)
        path = "/chat/completions" if kind == "chat" else "/completions"
        body["messages" if kind == "chat" else "prompt"] = item
        reply = self._post(path, body)
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] if kind == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise GenerationError(
                f"{self.base_url}{path}: unexpected response shape: {str(reply)[:300]}"
            ) from None
        return text or ""

    def _complete(
        self, kind: str, items: list[Any], sample_indices: list[int], params: SamplingParams
    ) -> list[str]:
        with ThreadPoolExecutor(max_workers=min(len(items), self.cfg.batch_size)) as pool:
            return list(
                pool.map(
                    lambda pair: self._one(kind, pair[0], pair[1], params),
                    zip(items, sample_indices, strict=True),
                )
            )

    def close(self) -> None:
        self.client.close()
