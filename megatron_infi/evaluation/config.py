"""`infi eval` config: which models, which benchmarks, how to sample, where results go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from megatron_infi.config.core import ConfigError
from megatron_infi.config.prompt import PromptContract
from megatron_infi.evaluation.benchmarks import BENCHMARKS
from megatron_infi.generation import GenerationConfig, SamplingParams


@dataclass
class ModelSpec:
    name: str  # row label in the table
    path: str  # HF model dir; for an OpenAI-compatible server, the served model name
    mode: Literal["chat", "fewshot"] = "chat"  # zero-shot chat (instruct) or few-shot text (base)
    base_url: str | None = None  # evaluate through a running server (`vllm serve`) instead of loading

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError("name", f"must be a non-empty name without '/', got {self.name!r}")


@dataclass
class BenchmarkSpec:
    name: str  # one of BENCHMARKS
    path: str | None = None  # the local file (required for the file-only benchmarks)
    # few-shot exemplars: a separate split in the same format (GSM8K / MATH: train, MMLU: dev, MBPP:
    # prompt); never the scored file. Required in few-shot mode unless the benchmark ships its own.
    fewshot_path: str | None = None
    label: str | None = None  # column header; default: the benchmark's usual name
    limit: int | None = None  # evaluate the first N problems
    num_fewshot: int | None = None  # few-shot mode: shots (default per benchmark)
    samples: int | None = None  # chat mode: samples per problem (default: eval's chat_sampling.n)
    max_new_tokens: int | None = None  # override the mode's sampling.max_new_tokens
    options: dict[str, Any] = field(default_factory=dict)  # loader options (gsm_symbolic: size, seed; ...)

    def validate(self) -> None:
        if self.name not in BENCHMARKS:
            raise ConfigError(
                "name", f"unknown benchmark {self.name!r} (known: {', '.join(sorted(BENCHMARKS))})"
            )
        info = BENCHMARKS[self.name]
        if info.needs_path and not self.path:
            raise ConfigError(
                "path", f"{self.name} reads a local file: give its path (format: evaluation/README.md)"
            )
        if self.fewshot_path and self.path and Path(self.fewshot_path).resolve() == Path(self.path).resolve():
            raise ConfigError("fewshot_path", "is the scored file: exemplars must come from another split")
        for key in ("limit", "samples", "max_new_tokens"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(key, f"must be >= 1, got {value}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ConfigError("num_fewshot", f"must be >= 0, got {self.num_fewshot}")

    def shots(self) -> int:
        """Exemplars per few-shot prompt: `num_fewshot`, else the benchmark's usual number."""
        return self.num_fewshot if self.num_fewshot is not None else BENCHMARKS[self.name].fewshot

    @property
    def key(self) -> str:
        """File-name-safe identity of this benchmark entry (a name can appear twice with other files)."""
        return self.label.replace(" ", "_").replace("/", "_") if self.label else self.name

    @property
    def title(self) -> str:
        return self.label or BENCHMARKS[self.name].label


@dataclass
class BackendOptions:
    """Generation settings shared by all models (the model itself comes from each ModelSpec)."""

    backend: Literal["auto", "hf", "vllm", "openai"] = "auto"
    batch_size: int = 16
    dtype: str = "auto"
    max_retries: int = 3
    api_key_env: str = "OPENAI_API_KEY"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85

    def validate(self) -> None:
        # the same checks GenerationConfig makes, on a stand-in model, so errors come before any loading
        self.for_model(ModelSpec(name="probe", path="probe", base_url="http://probe"), None).validate()

    def for_model(self, model: ModelSpec, cache_dir: str | None) -> GenerationConfig:
        return GenerationConfig(
            backend="openai" if model.base_url else self.backend,
            model=model.path,
            base_url=model.base_url,
            api_key_env=self.api_key_env,
            batch_size=self.batch_size,
            max_retries=self.max_retries,
            cache_dir=cache_dir,
            dtype=self.dtype,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
        )


def _default_chat_sampling() -> SamplingParams:
    # InfiAlign reports accuracy averaged over samples at temperature 0.6, top-p 0.95
    return SamplingParams(temperature=0.6, top_p=0.95, n=4, max_new_tokens=2048)


def _default_fewshot_sampling() -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=512)


@dataclass
class EvalConfig:
    output_dir: str = "runs/eval"
    models: list[ModelSpec] = field(default_factory=list)
    benchmarks: list[BenchmarkSpec] = field(default_factory=list)
    generation: BackendOptions = field(default_factory=BackendOptions)
    prompt: PromptContract = field(default_factory=PromptContract)  # how chat-mode prompts are built
    chat_sampling: SamplingParams = field(default_factory=_default_chat_sampling)
    fewshot_sampling: SamplingParams = field(default_factory=_default_fewshot_sampling)
    pass_k: list[int] = field(default_factory=lambda: [1])  # pass@k columns (k <= samples)
    cache: bool = True  # keep a generation cache in output_dir/cache (resume inside a benchmark)
    code_timeout_s: float = 10.0  # CPU seconds per program (the sandbox derives a wall-clock cap)
    code_memory_mb: int = 1024
    code_unsafe_no_sandbox: bool = False  # run code without the bwrap sandbox (only where it cannot)
    code_workers: int = 0  # parallel sandboxes; 0 = two per CPU core

    def validate(self) -> None:
        if not self.models:
            raise ConfigError("models", "no models to evaluate")
        if not self.benchmarks:
            raise ConfigError("benchmarks", "no benchmarks to run")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError("models", f"model names must be unique, got {names}")
        keys = [b.key for b in self.benchmarks]
        if len(set(keys)) != len(keys):
            raise ConfigError("benchmarks", f"two entries share a name; give one a label (got {keys})")
        image_benchmarks = [b.key for b in self.benchmarks if BENCHMARKS[b.name].kind == "vqa"]
        fewshot = [m.name for m in self.models if m.mode == "fewshot"]
        if image_benchmarks and fewshot:
            raise ConfigError(
                "models",
                f"{', '.join(fewshot)}: questions about images ({', '.join(image_benchmarks)}) are asked "
                "in chat mode only",
            )
        if any(m.mode == "fewshot" for m in self.models):
            for i, bench in enumerate(self.benchmarks):
                info = BENCHMARKS[bench.name]
                if (
                    bench.shots()
                    and info.uses_exemplars
                    and not bench.fewshot_path
                    and info.exemplars is None
                ):
                    raise ConfigError(
                        f"benchmarks[{i}].fewshot_path",
                        f"{bench.name} in few-shot mode needs {bench.shots()} exemplars from a separate split "
                        "(train / dev, never the scored file): give its file, or num_fewshot: 0",
                    )
        if any(k < 1 for k in self.pass_k):
            raise ConfigError("pass_k", f"k must be >= 1, got {self.pass_k}")
        if self.code_timeout_s <= 0:
            raise ConfigError("code_timeout_s", f"must be > 0, got {self.code_timeout_s}")
        if self.code_memory_mb < 64:
            raise ConfigError("code_memory_mb", f"must be >= 64, got {self.code_memory_mb}")
        if self.code_workers < 0:
            raise ConfigError("code_workers", f"must be >= 0, got {self.code_workers}")
