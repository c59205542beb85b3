"""What to generate with (GenerationConfig) and how to sample (SamplingParams): both plain dataclasses
that stage configs embed and `megatron_infi.config` loads from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from megatron_infi.config.core import ConfigError


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 512
    n: int = 1  # completions per prompt
    seed: int = 0  # sample i of a prompt uses seed + i where the backend allows per-request seeds
    stop: list[str] = field(default_factory=list)  # cut before the first stop string

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def validate(self) -> None:
        if self.temperature < 0:
            raise ConfigError("temperature", f"must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        if self.n < 1:
            raise ConfigError("n", f"must be >= 1, got {self.n}")
        if any(not s for s in self.stop):
            raise ConfigError("stop", "stop strings must not be empty")

    def key(self) -> dict:
        """The parts that decide one sample's text (n does not: sample i is the same for any n > i)."""
        fields = {"max_new_tokens": self.max_new_tokens, "stop": list(self.stop)}
        if not self.greedy:
            fields.update(temperature=self.temperature, top_p=self.top_p, seed=self.seed)
        return fields


@dataclass
class GenerationConfig:
    # auto: openai when base_url is set, else vllm when it imports and CUDA is up, else hf
    backend: Literal["auto", "hf", "vllm", "openai"] = "auto"
    model: str = ""  # an HF model dir (hf / vllm), or the served model name (openai)
    base_url: str | None = None  # OpenAI-compatible endpoint, e.g. http://localhost:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # env var holding the key (none needed for a local vllm serve)
    batch_size: int = 16  # prompts per forward (hf), per request wave (openai), per cache flush
    max_retries: int = 3  # openai: retries after a 5xx / 429 / connection error
    cache_dir: str | None = None  # resumable generation cache; None = no cache
    dtype: str = "auto"  # auto: bf16 on a GPU that has it, else fp32
    tensor_parallel_size: int = 1  # vllm
    gpu_memory_utilization: float = 0.85  # vllm
    request_timeout_s: float = 600.0  # openai: one request

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.max_retries < 0:
            raise ConfigError("max_retries", f"must be >= 0, got {self.max_retries}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError("dtype", f"must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.tensor_parallel_size < 1:
            raise ConfigError("tensor_parallel_size", f"must be >= 1, got {self.tensor_parallel_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(
                "gpu_memory_utilization", f"must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("base_url", "the openai backend needs base_url (e.g. http://localhost:8000/v1)")
        if not self.model:
            raise ConfigError("model", "is empty: give an HF model dir, or the served model name for openai")

    @property
    def loads_model_dir(self) -> bool:
        """Whether `model` is a local HF dir (hf / vllm) rather than a served model's name (openai)."""
        return self.backend in ("hf", "vllm") or (self.backend == "auto" and not self.base_url)

    def check_model_dir(self) -> None:
        """The model dir exists (checked when the backend is built, not at config load: in a recipe the
        model may be an earlier stage's output)."""
        if self.loads_model_dir and not (Path(self.model) / "config.json").is_file():
            raise ConfigError(
                "model", f"{self.model} is not an HF model dir (no config.json); nothing is downloaded"
            )
