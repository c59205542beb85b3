"""The training config (pretrain and anneal): typed sections, validated before anything is allocated."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from megatron_infi.config.core import ConfigError
from megatron_infi.config.inputs import InputCheck
from megatron_infi.config.sections import CheckpointConfig, LoggingConfig
from megatron_infi.config.vision import VisionConfig, expand_vision_preset

# ----------------------------------------------------------------------------- model architectures
# The architectures and their presets are defined in megatron_infi.models (one module each), which
# registers them here when it is imported: the config layer may not import the models
# (tests/test_layering.py), yet it expands `model.preset` and checks `model.arch` at load time.
_ARCHITECTURES: dict[str, dict[str, dict]] = {}


def register_architecture(arch: str, presets: dict[str, dict]) -> None:
    """Make `arch` a valid `model.arch` and its presets valid `model.preset`s."""
    for name in presets:
        owner = next((a for a, p in _ARCHITECTURES.items() if name in p and a != arch), None)
        if owner is not None:
            raise ValueError(f"preset {name!r} of architecture {arch!r} is already defined by {owner!r}")
    _ARCHITECTURES[arch] = {name: {**copy.deepcopy(fields), "arch": arch} for name, fields in presets.items()}


def _registered() -> dict[str, dict[str, dict]]:
    if not _ARCHITECTURES:
        raise RuntimeError(
            "no model architecture is registered: import megatron_infi.models before loading a model config"
        )
    return _ARCHITECTURES


def model_presets() -> dict[str, dict]:
    """Every preset name -> its ModelConfig fields (with `arch`)."""
    return {name: fields for presets in _registered().values() for name, fields in presets.items()}


def _unknown_preset(name: str) -> str:
    return f"unknown preset {name!r} (known: {', '.join(sorted(model_presets()))})"


@dataclass
class RopeScalingConfig:
    type: Literal["none", "llama3"] = "none"
    factor: float = 1.0
    original_max_position_embeddings: int = 8192

    def validate(self) -> None:
        if not self.factor > 0:
            raise ConfigError("factor", f"must be > 0, got {self.factor}")


@dataclass
class ModelConfig:
    preset: str = "tiny"
    # A registered architecture (megatron_infi/models/<arch>.py); the preset sets it.
    arch: str = "llama"
    num_layers: int = 4
    hidden_size: int = 128
    ffn_hidden_size: int = 384
    num_attention_heads: int = 8
    num_query_groups: int = 4
    # Width of one attention head. Unset: hidden_size / num_attention_heads (filled in on load);
    # Qwen3 sets its own, so heads x head_dim may differ from hidden_size.
    head_dim: int | None = None
    vocab_size: int = 128256
    max_position_embeddings: int = 4096
    rope_theta: float = 500000.0
    rope_scaling: RopeScalingConfig = field(default_factory=RopeScalingConfig)
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02
    # Megatron pads the embedding to a multiple of this x TP so vocab shards are equal and aligned.
    make_vocab_size_divisible_by: int = 128
    # Which fused ops implement norms / SwiGLU / RoPE / cross-entropy: auto picks the fastest
    # available on the device; CPU always uses the torch references.
    kernels: Literal["auto", "te", "triton", "torch"] = "auto"
    attention: Literal["auto", "te", "flash", "sdpa"] = "auto"
    recompute: Literal["none", "selective", "full"] = "none"

    def __post_init__(self) -> None:
        heads = self.num_attention_heads
        if self.head_dim is None and heads > 0 and self.hidden_size > 0 and self.hidden_size % heads == 0:
            self.head_dim = self.hidden_size // heads

    def validate(self) -> None:
        if self.preset not in model_presets():
            raise ConfigError("preset", _unknown_preset(self.preset))
        if self.arch not in _registered():
            raise ConfigError(
                "arch", f"unknown architecture {self.arch!r} (known: {', '.join(sorted(_registered()))})"
            )
        sizes = (
            "num_layers",
            "hidden_size",
            "ffn_hidden_size",
            "num_attention_heads",
            "num_query_groups",
            "vocab_size",
            "max_position_embeddings",
            "make_vocab_size_divisible_by",
        )
        for name in sizes:
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")
        for name in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(name, f"must be a finite number > 0, got {value}")
        if self.head_dim is None:  # left unset only when hidden_size does not split over the heads
            raise ConfigError(
                "hidden_size",
                f"{self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads} "
                "(set model.head_dim to size the heads independently)",
            )
        if self.head_dim <= 0 or self.head_dim % 2:
            raise ConfigError(
                "head_dim", f"must be positive and even (RoPE rotates pairs of channels), got {self.head_dim}"
            )
        if self.num_attention_heads % self.num_query_groups:
            raise ConfigError(
                "num_query_groups",
                f"{self.num_query_groups} does not divide num_attention_heads={self.num_attention_heads}",
            )


@dataclass
class ParallelConfig:
    tensor: int = 1
    pipeline: int = 1
    # Microbatches are interleaved over this many model chunks per pipeline rank (1 = plain 1F1B).
    virtual_pipeline: int = 1
    sequence_parallel: bool = False
    distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    # Parameters per DDP communication bucket when overlapping; null: megatron-core's default,
    # max(40M, 1M x data-parallel size).
    ddp_bucket_size: int | None = None

    def validate(self) -> None:
        for name in ("tensor", "pipeline", "virtual_pipeline"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be >= 1")
        if self.ddp_bucket_size is not None and self.ddp_bucket_size < 1:
            raise ConfigError("ddp_bucket_size", f"must be >= 1 or null, got {self.ddp_bucket_size}")
        if self.overlap_param_gather and not self.distributed_optimizer:
            raise ConfigError("overlap_param_gather", "needs parallel.distributed_optimizer=true")


@dataclass
class BlendEntry:
    """One dataset of the mix: an indexed-dataset prefix (`<prefix>.bin/.idx`) or a domain name
    resolved inside `data.dir` (as written by the data pipeline), with a sampling weight."""

    prefix: str | None = None
    domain: str | None = None
    weight: float = 1.0

    def validate(self) -> None:
        if (self.prefix is None) == (self.domain is None):
            raise ConfigError("prefix", "give exactly one of prefix or domain")
        if self.weight <= 0:
            raise ConfigError("weight", f"must be > 0, got {self.weight}")


@dataclass
class DataConfig:
    tokenizer: str = ""
    dir: str | None = None
    blend: list[BlendEntry] = field(default_factory=list)
    # train/valid/test proportions over each dataset's documents, megatron-style.
    split: str = "98,2,0"
    seq_length: int = 256
    # Built-index cache (GPTDataset's .npy sample/shuffle indices); default <run_dir>/cache/datasets.
    cache_dir: str | None = None
    num_workers: int = 0
    eod_mask_loss: bool = False
    # Random tokens instead of files (megatron-core's MockGPTDataset): throughput benchmarks only.
    mock: bool = False
    # VL models (a `vision:` section): JSONL files of LLaVA-style conversation records instead of a blend.
    conversations: list[str] = field(default_factory=list)
    # Preflight of the .bin/.idx files: fast = index structure against the .bin size, token counts and
    # the max token id recorded in manifest.json (token scan where there is no manifest); full = also
    # scan every token and compare the manifest's content checksums; off = existence only.
    verify: Literal["fast", "full", "off"] = "fast"

    def prefixes(self) -> list[tuple[str, str]]:
        """(field, prefix) of each blend entry, a domain resolved inside `dir`."""
        return [
            (f"blend[{i}].prefix", entry.prefix)
            if entry.prefix is not None
            else (f"blend[{i}].domain", str(Path(self.dir or "") / entry.domain))
            for i, entry in enumerate(self.blend)
        ]

    def check_inputs(self, check: InputCheck, prefix: str = "") -> None:
        """The files the config names exist (cheap: no file is opened). A missing one raises, or in a
        dry run is noted (an earlier recipe stage writes it); a half-present one always raises."""
        if self.mock:
            return
        tokenizer_present = check.present(
            f"{prefix}tokenizer", self.tokenizer, "tokenizer_dir", what="tokenizer dir"
        )
        if tokenizer_present and not (Path(self.tokenizer) / "tokenizer.json").is_file():
            raise ConfigError(
                f"{prefix}tokenizer", f"{self.tokenizer} is not an HF tokenizer dir (no tokenizer.json)"
            )
        dir_present = self.dir is None or check.present(
            f"{prefix}dir", self.dir, "indexed_data", what="directory"
        )
        for (name, dataset), entry in zip(self.prefixes(), self.blend, strict=True):
            if entry.prefix is None and not dir_present:
                continue  # noted once, as the dir
            files = [Path(f"{dataset}.bin"), Path(f"{dataset}.idx")]
            if not any(f.exists() for f in files):
                check.absent(f"{prefix}{name}", f"{dataset}.bin/.idx", "indexed dataset", "indexed_data")
            elif not all(f.is_file() for f in files):
                raise ConfigError(
                    f"{prefix}{name}", f"no indexed dataset at {dataset}.bin/.idx (one is missing)"
                )
        for i, path in enumerate(self.conversations):
            check.present(f"{prefix}conversations[{i}]", path, "vl_data")

    def validate(self) -> None:
        if self.num_workers < 0:
            raise ConfigError("num_workers", f"must be >= 0, got {self.num_workers}")
        if self.mock:
            return
        if not self.tokenizer:
            raise ConfigError("tokenizer", "is required (an HF tokenizer dir)")
        if not self.blend and not self.conversations:
            raise ConfigError("blend", "is empty: give at least one {prefix|domain, weight}")
        if any(entry.domain for entry in self.blend) and not self.dir:
            raise ConfigError("dir", "is required when a blend entry names a domain")
        try:
            parts = [float(x) for x in self.split.split(",")]
        except ValueError:
            raise ConfigError("split", f"must be comma-separated numbers, got {self.split!r}") from None
        if len(parts) != 3 or parts[0] <= 0 or any(p < 0 for p in parts):
            raise ConfigError("split", f"needs three proportions with train > 0, got {self.split!r}")
        if self.seq_length < 2:
            raise ConfigError("seq_length", "must be >= 2")


@dataclass
class OptimizerConfig:
    lr: float = 3e-4
    min_lr: float = 3e-5
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    # The AdamW kernel: fused (one pass per step) or torch (torch's default, multi-tensor on GPU);
    # auto: fused on GPU, torch on CPU. Resolved at start-up and recorded in <run_dir>/config.yaml.
    impl: Literal["auto", "torch", "fused"] = "auto"

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError("lr", "must be > 0")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError("min_lr", f"must be in [0, lr={self.lr}], got {self.min_lr}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if self.adam_eps <= 0:
            raise ConfigError("adam_eps", f"must be > 0, got {self.adam_eps}")
        for name in ("weight_decay", "clip_grad"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")


@dataclass
class LRScheduleConfig:
    """The learning rate over iterations (megatron-core's OptimizerParamScheduler); post-training's
    `schedule:` is TRL's epochs and batch instead (posttrain.common.EpochScheduleConfig)."""

    # cosine / linear decay to min_lr after warmup; wsd = warmup, stable at lr, then decay over
    # the last `wsd_decay_iters`; constant = lr after warmup.
    style: Literal["cosine", "linear", "wsd", "constant"] = "cosine"
    warmup_iters: int = 0
    # Iterations over which lr decays (default: train.train_iters).
    decay_iters: int | None = None
    wsd_decay_iters: int = 0
    wsd_decay_style: Literal["linear", "cosine", "exponential", "minus_sqrt"] = "linear"

    def validate(self) -> None:
        if self.warmup_iters < 0:
            raise ConfigError("warmup_iters", "must be >= 0")
        if self.decay_iters is not None and self.decay_iters < 1:
            raise ConfigError(
                "decay_iters", f"must be >= 1 (or null for train.train_iters), got {self.decay_iters}"
            )
        if self.wsd_decay_iters < 0:
            raise ConfigError("wsd_decay_iters", "must be >= 0")
        if self.style == "wsd" and self.wsd_decay_iters <= 0:
            raise ConfigError("wsd_decay_iters", "must be > 0 for style=wsd")


@dataclass
class PretrainCheckpointConfig(CheckpointConfig):
    # Weights to start from when the run dir has no checkpoint yet (continued pretraining from a
    # converted HF model, or annealing from a pretraining run): a checkpoint root dir.
    load: str | None = None
    load_iteration: int | None = None
    # For `load`: carry the optimizer state over (true) or start it fresh (false).
    load_optimizer: bool = False

    def validate(self) -> None:
        super().validate()
        if self.load_iteration is not None and self.load_iteration < 0:
            raise ConfigError("load_iteration", f"must be >= 0, got {self.load_iteration}")

    def check_inputs(self, check: InputCheck, prefix: str = "") -> None:
        if self.load is not None:
            check.present(f"{prefix}load", self.load, "checkpoint", what="checkpoint dir")


@dataclass
class PretrainLoggingConfig(LoggingConfig):
    # Peak dense bf16 FLOP/s of one device, for MFU (H100 SXM: 989 TF/s).
    peak_flops: float = 989e12

    def validate(self) -> None:
        if self.log_interval < 1:
            raise ConfigError("log_interval", f"must be >= 1, got {self.log_interval}")
        if self.peak_flops <= 0:
            raise ConfigError("peak_flops", f"must be > 0, got {self.peak_flops}")


@dataclass
class TrainLoopConfig:
    train_iters: int = 100
    global_batch_size: int = 8
    micro_batch_size: int = 2
    eval_interval: int = 0  # 0: no periodic validation
    eval_iters: int = 2
    # Validation loss before the first update (logged at iteration 0), on the same windows as the
    # first periodic validation. For continued pretraining: compare it with the HF model's loss on
    # those windows (`infi convert step0-loss`) to see that conversion kept the model's quality.
    eval_at_start: bool = False
    # Save and exit once the iteration is a multiple of this (0: never); the next launch resumes.
    # For wall-clock-limited jobs: schedule, data order and results are those of one long run.
    exit_interval: int = 0
    seed: int = 1234
    # auto: bf16 (fp32 main params) on GPU, fp32 on CPU.
    precision: Literal["auto", "bf16", "fp32"] = "auto"

    def validate(self) -> None:
        if self.train_iters < 0:
            raise ConfigError("train_iters", "must be >= 0")
        for name in ("global_batch_size", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("eval_interval", "exit_interval", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        if (self.eval_interval or self.eval_at_start) and self.eval_iters < 1:
            raise ConfigError(
                "eval_iters",
                f"must be >= 1 when eval_interval or eval_at_start is set, got {self.eval_iters}",
            )
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(
                "global_batch_size",
                f"{self.global_batch_size} is not a multiple of micro_batch_size={self.micro_batch_size}",
            )


@dataclass
class TrainConfig:
    stage: Literal["pretrain", "anneal", "vl-align", "vl-render", "vl-instruct"] = "pretrain"
    run_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    checkpoint: PretrainCheckpointConfig = field(default_factory=PretrainCheckpointConfig)
    logging: PretrainLoggingConfig = field(default_factory=PretrainLoggingConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    # A VL model (megatron_infi/models/llava.py) when set; the text model when null.
    vision: VisionConfig | None = None

    @staticmethod
    def preprocess(data: dict) -> dict:
        """Expand `model.preset` into its fields; fields given next to it win."""
        data = copy.deepcopy(data)
        model = data.get("model") or {}
        name = model.get("preset", ModelConfig.preset)
        presets = model_presets()
        if not isinstance(name, str) or name not in presets:
            raise ConfigError("model.preset", _unknown_preset(name))
        merged = copy.deepcopy(presets[name])
        for key, value in model.items():
            if key == "rope_scaling" and isinstance(value, dict):
                merged["rope_scaling"] = {**merged.get("rope_scaling", {}), **value}
            else:
                merged[key] = value
        merged["preset"] = name
        data["model"] = merged
        return expand_vision_preset(data)

    def validate(self) -> None:
        m, p = self.model, self.parallel
        if m.num_attention_heads % p.tensor:
            raise ConfigError(
                "parallel.tensor",
                f"{p.tensor} does not divide model.num_attention_heads={m.num_attention_heads}",
            )
        if m.num_query_groups % p.tensor:
            raise ConfigError(
                "parallel.tensor", f"{p.tensor} does not divide model.num_query_groups={m.num_query_groups}"
            )
        padded = -(-m.vocab_size // m.make_vocab_size_divisible_by) * m.make_vocab_size_divisible_by
        if padded % p.tensor:
            raise ConfigError(
                "parallel.tensor",
                f"{p.tensor} does not divide the padded vocab {padded} "
                f"(model.vocab_size rounded up to model.make_vocab_size_divisible_by)",
            )
        if m.ffn_hidden_size % p.tensor:
            raise ConfigError(
                "parallel.tensor", f"{p.tensor} does not divide model.ffn_hidden_size={m.ffn_hidden_size}"
            )
        if m.num_layers % (p.pipeline * p.virtual_pipeline):
            raise ConfigError(
                "parallel.pipeline",
                f"pipeline={p.pipeline} x virtual_pipeline={p.virtual_pipeline} does not divide "
                f"model.num_layers={m.num_layers}",
            )
        if self.vision is not None and (p.pipeline > 1 or p.sequence_parallel):
            raise ConfigError(
                "parallel", "VL models run with tensor parallelism only (pipeline=1, no sequence_parallel)"
            )
        if self.vision is not None and not self.data.mock and not self.data.conversations:
            raise ConfigError(
                "data.conversations", "a VL model trains on conversation JSONL files: give at least one"
            )
        if p.sequence_parallel and p.tensor == 1:
            raise ConfigError("parallel.sequence_parallel", "needs parallel.tensor > 1")
        if self.stage == "anneal" and not self.checkpoint.load:
            raise ConfigError(
                "checkpoint.load", "stage=anneal needs the pretraining checkpoint to start from"
            )
        if self.data.seq_length > m.max_position_embeddings:
            raise ConfigError(
                "data.seq_length",
                f"{self.data.seq_length} exceeds model.max_position_embeddings={m.max_position_embeddings}",
            )

    def check_inputs(self, dry_run: bool = False) -> InputCheck:
        """Every input path the config names exists (no file is read): before any process group, and in
        `--dry-run`, which notes the inputs an earlier stage will write instead of failing."""
        check = InputCheck(dry_run)
        self.data.check_inputs(check, "data.")
        self.checkpoint.check_inputs(check, "checkpoint.")
        return check

    def validate_world(self, world_size: int) -> int:
        """Check the layout against the launched world; returns the data-parallel size."""
        p, t = self.parallel, self.train
        model_parallel = p.tensor * p.pipeline
        if world_size % model_parallel:
            raise ConfigError(
                "parallel",
                f"world size {world_size} is not a multiple of tensor x pipeline = {model_parallel}",
            )
        dp = world_size // model_parallel
        if t.global_batch_size % (t.micro_batch_size * dp):
            raise ConfigError(
                "train.global_batch_size",
                f"{t.global_batch_size} is not a multiple of micro_batch_size x data_parallel = "
                f"{t.micro_batch_size} x {dp}",
            )
        if p.pipeline > 1 and t.global_batch_size // (t.micro_batch_size * dp) < p.pipeline:
            raise ConfigError(
                "train.global_batch_size",
                f"gives {t.global_batch_size // (t.micro_batch_size * dp)} microbatches per step, fewer "
                f"than parallel.pipeline={p.pipeline}: the pipeline would idle",
            )
        return dp
