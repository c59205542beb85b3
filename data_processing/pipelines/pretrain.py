"""InfiR pretraining data pipeline: sources -> five stages -> `<domain>.bin/.idx` + manifest.json.

The run is a chain of datatrove executors (local processes or SLURM job arrays with dependencies):

    filter           read sources, stage 1 (heuristics), stage 2 (recall)   -> work/filtered/*.jsonl.gz
    minhash_*        stage 3, datatrove's MinHash signatures / buckets / clusters, over all sources
    score            MinHash filter, stage 4 (quality), stage 5 (decontamination), tokenization
    finalize         merge shards per domain, manifest.json, decontamination_report.json, report.md + PNG

Every executor keeps datatrove's per-task completion markers under `logs/<executor>/`, so re-running
the same command skips what finished and redoes only interrupted tasks; `--clean` deletes what a
previous run left (logs/, work/, quarantine/, outputs; nothing else) and starts over.
`output_dir/.infi.lock` (megatron_infi.locks) keeps a second run out while one is running. Each source's documents are followed
through the steps (source_checks): a step dropping more than half of a source is a warning, and a
source left with none fails the run unless it has `allow_empty: true`.

input:
  sources[*]: a file or a dir of files (`glob` narrows it) with a `domain` each: JSONL (.jsonl,
  .jsonl.gz), parquet, or an HF dataset saved with `save_to_disk` (`format: hf_disk`); one document
  per record, the text under `text_field` (default "text"), an id under `id_field` (default "id"):
    {"id": "doc-1", "text": "The Pythagorean theorem states that ..."}
  tokenize.tokenizer: an HF tokenizer dir or tokenizer.json; recall / quality models from
  `infi data train-recall` / `infi data train-quality`; decontamination benchmark files (JSONL)

output (under output_dir):
  <domain>.bin, <domain>.idx    Megatron indexed datasets, one EOD token after each document:
                                `megatron_infi.train`'s data.blend (`data.dir` + `domain`)
  manifest.json                 tokenizer (+ sha256), documents, tokens, per-stage kept / dropped
                                counts, per-source flow, warnings
  report.md, funnel.png, decontamination_report.json
  quarantine/                   unreadable records with file:line and reason
  logs/<stage>/, work/          datatrove completion markers and intermediates (resume)

example config: launch/configs/data/demo.yaml (toy), infir_pretrain.yaml (paper scale, SLURM)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from megatron_infi.config.core import ConfigError, from_dict, parse_stage_config, to_dict
from megatron_infi.data_processing.executor import make_executor
from megatron_infi.data_processing.pipelines.config import PretrainDataConfig
from megatron_infi.data_processing.pipelines.layout import RunLayout
from megatron_infi.data_processing.pipelines.source_checks import check_sources
from megatron_infi.errors import RunError, command
from megatron_infi.locks import DirLock
from megatron_infi.logs import quiet_logs
from megatron_infi.utils import atomic_write_text, set_run_caches

# keys that may change between a run and its resumption (they do not change what a task computes)
_RESUMABLE_KEYS = ("workers", "kind", "slurm")
_RESUMABLE_SOURCE_KEYS = ("allow_empty",)


@dataclass
class Stage:
    name: str
    pipeline: list
    tasks: int
    # pipeline-stage label -> positions of its steps in `pipeline` (for the manifest's drop reasons)
    step_groups: dict[str, list[int]] = field(default_factory=dict)


def _resolved_tokenizer(cfg: PretrainDataConfig) -> tuple[str, str]:
    from tokenizers import Tokenizer

    from megatron_infi.data_processing.steps.tokenize import find_eod_token

    path = str(cfg.tokenize.tokenizer_json().resolve())
    eod = cfg.tokenize.eod_token or find_eod_token(Tokenizer.from_file(path))
    return path, eod


def _reader(source, layout: RunLayout, ingest):
    from megatron_infi.data_processing.steps.sources import (
        METADATA_FIELDS,
        HFDiskSource,
        JsonlSource,
        ParquetSource,
        exact_glob,
    )

    common = dict(
        source_name=source.name,
        domain=source.domain,
        quarantine_dir=str(layout.quarantine),
        text_key=source.text_field,
        id_key=source.id_field,
        min_chars=ingest.min_chars,
        max_chars=ingest.max_chars,
        metadata_fields={**{name: name for name in METADATA_FIELDS}, **source.metadata_fields},
        language=source.language,
        render=source.render,
    )
    path = Path(source.path)
    if source.format == "hf_disk":
        return HFDiskSource(str(path), **common)
    cls = JsonlSource if source.format == "jsonl" else ParquetSource
    if path.is_file():  # a single file: its folder, this name only
        return cls(str(path.parent), glob_pattern=exact_glob(path.name), recursive=False, **common)
    return cls(str(path), glob_pattern=source.glob, **common)


def _heuristic_steps(cfg: PretrainDataConfig) -> list:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    from megatron_infi import assets
    from megatron_infi.data_processing.steps.heuristics import (
        CodeRulesFilter,
        LocalLanguageFilter,
        ScopedFilter,
    )

    h = cfg.heuristic
    math = h.math_aware
    steps = []
    if h.language_id.enabled:
        lid = LocalLanguageFilter(
            h.language_id.model_path or str(assets.langid_model()),
            h.language_id.languages,
            h.language_id.threshold,
        )
        # LaTeX-heavy pages are identified on their prose: formulas are not a language
        steps.append(
            ScopedFilter(lid, h.language_id.domains, None, math.min_math_fraction, strip_math=math.enabled)
        )
    for key, cls in (
        ("gopher_repetition", GopherRepetitionFilter),
        ("gopher_quality", GopherQualityFilter),
        ("c4", C4QualityFilter),
        ("fineweb", FineWebQualityFilter),
    ):
        kwargs = getattr(h, key)
        if kwargs is None:
            continue
        variant = cls(**{**kwargs, **getattr(math, key)}) if math.enabled else None
        steps.append(ScopedFilter(cls(**kwargs), h.text_domains, variant, math.min_math_fraction))
    if h.code.enabled:
        c = h.code
        steps.append(
            CodeRulesFilter(
                c.allowed_languages,
                c.max_line_length,
                c.max_mean_line_length,
                c.min_alnum_fraction,
                c.autogenerated_markers,
                c.marker_lines,
            )
        )
    return steps


def _quality_steps(cfg: PretrainDataConfig) -> list:
    from megatron_infi.data_processing.steps.quality import CodeQualityFilter, EmbeddingScoreFilter

    q = cfg.quality
    steps = []
    for key, scorer in (("edu_score", q.edu), ("math_score", q.math)):
        if scorer.enabled:
            steps.append(
                EmbeddingScoreFilter(
                    scorer.model_path, key, scorer.domains, scorer.threshold, scorer.batch_size
                )
            )
    if q.code.enabled:
        steps.append(
            CodeQualityFilter(
                q.code.domains, q.code.min_comment_ratio, q.code.max_comment_ratio, q.code.threshold
            )
        )
    return steps


class _StageBuilder:
    """Appends steps, with a funnel counter after each pipeline stage."""

    def __init__(self, layout: RunLayout, tokenizer_path: str | None):
        self.layout = layout
        self.tokenizer_path = tokenizer_path
        self.pipeline: list = []
        self.groups: dict[str, list[int]] = {}

    def add(self, label: str, steps: list) -> None:
        from megatron_infi.data_processing.steps.funnel import DropsBySource, FunnelCounter

        for step in steps:  # filters: count drops per source (readers count their own quarantine)
            if hasattr(step, "exclusion_writer") and step.exclusion_writer is None:
                step.exclusion_writer = DropsBySource(
                    step, "minhash_duplicate" if label == "dedup" else "unspecified"
                )
        start = len(self.pipeline)
        self.pipeline.extend(steps)
        self.groups[label] = list(range(start, len(self.pipeline)))
        self.pipeline.append(FunnelCounter(label, str(self.layout.funnel / label), self.tokenizer_path))


def build_stages(cfg: PretrainDataConfig) -> list[Stage]:
    from datatrove.pipeline.dedup import MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    from megatron_infi.data_processing.pipelines.finalize import FinalizeRun
    from megatron_infi.data_processing.steps.decontaminate import DecontaminationFilter
    from megatron_infi.data_processing.steps.sources import StageOutputReader
    from megatron_infi.data_processing.steps.tokenize import DomainMegatronTokenizer

    layout = RunLayout(cfg.output_dir)
    tasks = cfg.executor.tasks
    tokenizer_path, eod = _resolved_tokenizer(cfg)
    count_with = tokenizer_path if cfg.report.count_tokens else None

    first = _StageBuilder(layout, count_with)
    first.add("input", [_reader(s, layout, cfg.ingest) for s in cfg.sources])
    if cfg.heuristic.enabled:
        first.add("heuristic", _heuristic_steps(cfg))
    if cfg.recall.enabled:
        from megatron_infi.data_processing.steps.recall import RecallFilter

        first.add("recall", [RecallFilter(cfg.recall.model_path, cfg.recall.thresholds, cfg.recall.domains)])
    first.pipeline.append(JsonlWriter(str(layout.filtered), output_filename="${rank}.jsonl.gz"))
    stages = [Stage("filter", first.pipeline, tasks, first.groups)]

    def filtered_reader():
        return StageOutputReader(str(layout.filtered), glob_pattern="*.jsonl.gz")

    second = _StageBuilder(layout, count_with)
    second.pipeline.append(filtered_reader())
    if cfg.dedup.enabled:
        d = cfg.dedup
        # datatrove 0.10.1 hands str to xxhash, which xxhash 4 rejects: its sha1 shingle hash works with both
        mh = MinhashConfig(
            n_grams=d.n_grams,
            num_buckets=d.num_buckets,
            hashes_per_bucket=d.hashes_per_bucket,
            seed=d.seed,
            hash_config=HashConfig(precision=64, hash_fc="sha1"),
        )
        sigs, buckets, clusters = (str(layout.minhash / x) for x in ("signatures", "buckets", "clusters"))
        stages += [
            Stage("minhash_signatures", [filtered_reader(), MinhashDedupSignature(sigs, config=mh)], tasks),
            Stage(
                "minhash_buckets",
                [MinhashDedupBuckets(sigs, buckets, config=mh)],
                d.num_buckets * d.workers_per_bucket,
            ),
            Stage("minhash_clusters", [MinhashDedupCluster(buckets, clusters, config=mh)], 1),
        ]
        second.add("dedup", [MinhashDedupFilter(clusters)])
    if cfg.quality.enabled:
        second.add("quality", _quality_steps(cfg))
    if cfg.decontamination.enabled:
        benches = [to_dict(b) for b in cfg.decontamination.benchmarks]
        second.add(
            "decontamination",
            [DecontaminationFilter(benches, cfg.decontamination.n, str(layout.decontamination))],
        )
    second.pipeline += [
        JsonlWriter(str(layout.final), output_filename="${domain}/${rank}.jsonl.gz"),
        DomainMegatronTokenizer(
            str(layout.tokens),
            tokenizer_name_or_path=tokenizer_path,
            eos_token=eod,
            batch_size=cfg.tokenize.batch_size,
        ),
    ]
    stages.append(Stage("score", second.pipeline, tasks, second.groups))
    stage_groups = {s.name: s.step_groups for s in stages if s.step_groups}
    stages.append(
        Stage(
            "finalize",
            [
                FinalizeRun(
                    str(layout.root),
                    to_dict(cfg),
                    tokenizer_path,
                    Path(cfg.tokenize.tokenizer).is_dir(),
                    eod,
                    stage_groups,
                )
            ],
            1,
        )
    )
    return stages


def make_executors(cfg: PretrainDataConfig, stages: list[Stage]) -> list:
    """One datatrove executor per stage, each depending on the previous one."""
    layout = RunLayout(cfg.output_dir)
    executors: list = []
    for stage in stages:
        executors.append(
            make_executor(
                cfg.executor,
                stage.pipeline,
                stage.tasks,
                layout.logs / stage.name,
                stage.name,
                depends=executors[-1] if executors else None,
                slurm_logs_folder=layout.logs / "slurm" / stage.name,
            )
        )
    return executors


def describe(cfg: PretrainDataConfig, stages: list[Stage]) -> str:
    lines = [f"# executor: {cfg.executor.kind}, output_dir: {Path(cfg.output_dir).resolve()}", "# stages:"]
    for stage in stages:
        lines.append(f"#   {stage.name} (tasks={stage.tasks})")
        lines += [f"#     - {step}" for step in stage.pipeline]
    return "\n".join(lines)


def _resume_relevant(config: dict) -> dict:
    # through the dataclass, so that a config saved before a field existed gets its default
    config = to_dict(from_dict(PretrainDataConfig, config))
    return {
        **config,
        "executor": {k: v for k, v in config["executor"].items() if k not in _RESUMABLE_KEYS},
        "sources": [
            {k: v for k, v in s.items() if k not in _RESUMABLE_SOURCE_KEYS} for s in config["sources"]
        ],
    }


def _check_resume(cfg: PretrainDataConfig, root: Path) -> None:
    """A rerun into the same output_dir must use the same config, or resumed shards would not match."""
    saved = root / "config.yaml"
    current = to_dict(cfg)
    if saved.is_file():
        previous = yaml.safe_load(saved.read_text())
        if _resume_relevant(previous) != _resume_relevant(current):
            changed = sorted(k for k in current if previous.get(k) != current.get(k))
            raise ConfigError(
                "output_dir",
                f"{root} holds a run made with a different config (changed: {', '.join(changed)}); "
                "use a new output_dir, or --clean to delete that run",
            )
    else:
        atomic_write_text(saved, yaml.safe_dump(current, sort_keys=False))


def run(cfg: PretrainDataConfig, clean: bool = False) -> Path:
    """Run (or resume) the pipeline; with the SLURM executor, submit the job chain and return.

    The output_dir is locked for the whole local run (for SLURM: while submitting). `clean` first
    removes what a previous run left there. A local run fails if a source ends with no documents."""
    cfg.check_inputs()
    root = Path(cfg.output_dir).resolve()
    with DirLock(root, what="data output_dir"):
        if clean:
            removed = RunLayout(root).clean()
            _echo(f"cleaned {root}: removed {len(removed)} entries of the previous run")
        set_run_caches(root)
        _check_resume(cfg, root)
        stages = build_stages(cfg)
        executors = make_executors(cfg, stages)
        if cfg.executor.kind == "slurm":
            executors[-1].run()  # launches the dependency chain
            return root
        for stage, executor in zip(stages, executors, strict=True):
            executor.run()
            incomplete = executor.get_incomplete_ranks()
            if incomplete:
                raise RunError(
                    f"stage {stage.name}: tasks {incomplete} did not complete; see {root}/logs/{stage.name}"
                )
    manifest = json.loads((root / "manifest.json").read_text())
    check_sources(manifest, {s.name: s.allow_empty for s in cfg.sources}, _echo)
    return root


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@command("infi data pretrain")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    # --clean is this stage's own flag (described in the help text above), read before the config
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--clean", action="store_true")
    flags, argv = extra.parse_known_args(sys.argv[1:] if argv is None else argv)
    cfg, dry_run = parse_stage_config(PretrainDataConfig, "infi data pretrain", __doc__, argv)
    if dry_run:
        inputs = cfg.check_inputs(dry_run=True)
        if inputs.notes:  # the stage plan needs the tokenizer (its end-of-document token)
            print("# stages: listed once every input exists", file=sys.stderr)
        else:
            print(describe(cfg, build_stages(cfg)))
        inputs.print_notes("data pretrain")
        return 0
    root = run(cfg, clean=flags.clean)
    print(
        f"done: {root}/manifest.json" if cfg.executor.kind == "local" else f"submitted: logs in {root}/logs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
