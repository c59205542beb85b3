"""Train the stage-2 recall classifier: seed positives per domain against random negatives.

One multi-label fastText model (one-vs-all: an independent sigmoid per domain) is written in fastText's
`.bin` format, with `<model>.metrics.json` beside it: precision / recall / F1 per domain on a held-out
split, measured by loading the saved file with the installed fastText.

input:
  seeds.<domain>: JSONL files of texts that belong to the domain (the label), e.g. seeds.math;
  negatives: JSONL files of random text; one text per record under `text_field` (default "text"):
    {"text": "Let x be a real number such that x^2 = 4. Then x = 2 or x = -2."}

output:
  <output>                  the fastText model (.bin): `infi data pretrain`'s recall.model_path
  <output>.metrics.json     held-out precision / recall / F1 per domain, skipped records

example config: launch/configs/data/demo_recall.yaml
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from megatron_infi.config.core import ConfigError, parse_stage_config, to_dict
from megatron_infi.data_processing.fasttext_train import FastTextArgs, one_line, train_supervised
from megatron_infi.errors import DataError, command
from megatron_infi.logs import quiet_logs
from megatron_infi.utils import SkipCounter, atomic_write_json, read_jsonl

NEGATIVE_LABEL = "other"


@dataclass
class TextFile:
    path: str = ""
    text_field: str = "text"

    def validate(self) -> None:
        if not Path(self.path).is_file():
            raise ConfigError("path", f"file not found: {self.path}")


@dataclass
class TrainRecallConfig:
    output: str = ""  # the model file (.bin); metrics go to <output>.metrics.json
    seeds: dict[str, list[TextFile]] = field(default_factory=dict)  # domain label -> seed files
    negatives: list[TextFile] = field(default_factory=list)
    max_per_label: int = 20_000
    negatives_per_positive: float = 1.0
    heldout_fraction: float = 0.2
    threshold: float = 0.5  # for the reported precision / recall
    seed: int = 0
    fasttext: FastTextArgs = field(default_factory=FastTextArgs)

    def validate(self) -> None:
        if not self.output:
            raise ConfigError("output", "is required")
        if not self.seeds:
            raise ConfigError("seeds", "give at least one domain with seed files")
        if NEGATIVE_LABEL in self.seeds:
            raise ConfigError(f"seeds.{NEGATIVE_LABEL}", "is reserved for the negatives")
        for label, files in self.seeds.items():
            if not files:
                raise ConfigError(f"seeds.{label}", "list at least one file")
            for i, item in enumerate(files):
                try:
                    item.validate()
                except ConfigError as err:
                    raise err.under(f"seeds.{label}[{i}]") from None
        if not self.negatives:
            raise ConfigError("negatives", "list at least one file of random (negative) text")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError("heldout_fraction", f"must be in (0, 1), got {self.heldout_fraction}")


def read_texts(files: list[TextFile], skipped: SkipCounter) -> list[str]:
    texts = []
    for item in files:
        for record in read_jsonl(item.path, skipped):
            text = record.get(item.text_field)
            if isinstance(text, str) and one_line(text):
                texts.append(text)
            else:
                skipped.skip("missing-text", item.path)
    return texts


def split(rows: list, fraction: float, rng: random.Random) -> tuple[list, list]:
    rows = rows[:]
    rng.shuffle(rows)
    cut = max(1, int(round(len(rows) * fraction)))
    return rows[cut:], rows[:cut]


def evaluate(model_path: Path, rows: list[tuple[str, str]], labels: list[str], threshold: float) -> dict:
    """Per-label precision / recall / F1 of the saved model (loaded by the installed fastText)."""
    from fasttext.FastText import _FastText

    model = _FastText(str(model_path))
    scores = []
    for text, _ in rows:
        names, probs = model.predict(one_line(text), k=-1)
        scores.append({n.removeprefix("__label__"): float(p) for n, p in zip(names, probs, strict=True)})
    report = {}
    for label in labels:
        tp = sum(
            1 for (_, truth), s in zip(rows, scores, strict=True) if truth == label and s[label] >= threshold
        )
        fp = sum(
            1 for (_, truth), s in zip(rows, scores, strict=True) if truth != label and s[label] >= threshold
        )
        fn = sum(
            1 for (_, truth), s in zip(rows, scores, strict=True) if truth == label and s[label] < threshold
        )
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[label] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": tp + fn,
        }
    return report


def train(cfg: TrainRecallConfig) -> dict:
    rng = random.Random(cfg.seed)
    skipped = SkipCounter()
    train_rows: list[tuple[str, str]] = []
    test_rows: list[tuple[str, str]] = []
    positives = 0
    for label, files in cfg.seeds.items():
        texts = read_texts(files, skipped)
        rng.shuffle(texts)
        texts = texts[: cfg.max_per_label]
        if len(texts) < 2:
            raise DataError(f"seeds.{label}: need at least 2 usable seed texts, found {len(texts)}")
        positives += len(texts)
        tr, te = split([(t, label) for t in texts], cfg.heldout_fraction, rng)
        train_rows += tr
        test_rows += te
    negatives = read_texts(cfg.negatives, skipped)
    rng.shuffle(negatives)
    negatives = negatives[: max(2, int(positives * cfg.negatives_per_positive))]
    tr, te = split([(t, NEGATIVE_LABEL) for t in negatives], cfg.heldout_fraction, rng)
    train_rows += tr
    test_rows += te
    model = train_supervised(
        [t for t, _ in train_rows], [[lab] for _, lab in train_rows], cfg.fasttext, progress=True
    )
    out = Path(cfg.output)
    model.save(out)
    metrics = {
        "model": str(out),
        "labels": model.labels,
        "threshold": cfg.threshold,
        "train_examples": len(train_rows),
        "heldout_examples": len(test_rows),
        "heldout": evaluate(out, test_rows, list(cfg.seeds), cfg.threshold),
        "skipped_records": skipped.counts,
        "config": to_dict(cfg),
    }
    atomic_write_json(out.with_name(out.name + ".metrics.json"), metrics)
    return metrics


@command("infi data train-recall")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    cfg, dry_run = parse_stage_config(TrainRecallConfig, "infi data train-recall", __doc__, argv)
    if dry_run:
        return 0
    metrics = train(cfg)
    for label, row in metrics["heldout"].items():
        print(
            f"{label:>10}: precision {row['precision']:.3f}  recall {row['recall']:.3f}  (n={row['support']})"
        )
    print(f"wrote {cfg.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
