"""The whole pretraining data pipeline on real text (demo corpus, small size): five stages, Megatron
output read back with megatron-core, injected defects caught, artifacts self-describing, and a run
killed mid-stage resumes to the same bytes."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_infi.data.tokenizer import load_tokenizer
from megatron_infi.utils import xxh3_file

REPO = Path(__file__).resolve().parents[2]


def _jsonl_gz(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.rglob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            rows += [json.loads(line) for line in handle]
    return rows


def _final_docs(root: Path, domain: str) -> list[dict]:
    return _jsonl_gz(root / "work/final" / domain)


def test_manifest_contract(small_run, llama3_tokenizer_dir):
    _, manifest_path = small_run
    root = manifest_path.parent
    manifest = json.loads(manifest_path.read_text())
    tok = load_tokenizer(llama3_tokenizer_dir)
    assert manifest["tokenizer"]["sha256"] == tok.sha256
    assert (
        load_tokenizer(manifest["tokenizer"]["path"]).sha256 == tok.sha256
    )  # what the trainer's data.tokenizer takes
    assert manifest["tokenizer"]["vocab_size"] == tok.vocab_size == 128256
    assert manifest["tokenizer"]["eod_id"] == tok.eod_id
    assert manifest["dtype"] == "int32"  # vocab > 65,500
    assert manifest["versions"]["datatrove"] == "0.10.1"
    assert set(manifest["domains"]) == {"web", "encyclopedia", "math", "code"}
    assert manifest["documents"] == sum(d["documents"] for d in manifest["domains"].values())
    assert list(manifest["funnel"]) == ["input", "heuristic", "recall", "dedup", "quality", "decontamination"]
    for stage in ("input", "heuristic", "recall", "dedup", "quality", "decontamination"):
        assert manifest["stages"][stage], stage
    for domain, info in manifest["domains"].items():
        assert manifest["funnel"]["decontamination"][domain]["documents"] == info["documents"]
        assert (root / info["bin"]).is_file() and (root / info["idx"]).is_file()
        # What the trainer's preflight compares (megatron_infi.data.indexed), recorded from the files.
        tokens = IndexedDataset(str(root / info["prefix"]))
        assert info["max_token_id"] == max(int(tokens[i].max()) for i in range(len(tokens))) < tok.vocab_size
        assert info["bin_bytes"] == (root / info["bin"]).stat().st_size == info["tokens"] * 4
        assert info["idx_bytes"] == (root / info["idx"]).stat().st_size
        assert info["checksum"] == {
            "algorithm": "xxh3_64",
            "bin": xxh3_file(root / info["bin"]),
            "idx": xxh3_file(root / info["idx"]),
        }
    assert manifest["config"]["dedup"]["num_buckets"] == 14 and len(manifest["sources"]) == 6
    assert (root / "report.md").read_text().startswith("# Pretraining data run")
    assert (root / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_indexed_dataset_decodes_to_exactly_the_surviving_documents(small_run, llama3_tokenizer_dir):
    _, manifest_path = small_run
    root = manifest_path.parent
    manifest = json.loads(manifest_path.read_text())
    tok = load_tokenizer(llama3_tokenizer_dir)
    for domain, info in manifest["domains"].items():
        docs = _final_docs(root, domain)
        dataset = IndexedDataset(str(root / info["prefix"]))
        assert len(dataset) == len(docs) == info["documents"] > 0
        assert int(dataset.sequence_lengths.sum()) == info["tokens"]
        for i, doc in enumerate(docs):
            ids = dataset[i]
            assert ids[-1] == tok.eod_id and tok.eod_id not in ids[:-1]
            assert tok.decode(ids[:-1]) == doc["text"]
            assert doc["metadata"]["domain"] == domain


def test_injected_duplicates_are_removed(small_run):
    corpus, manifest_path = small_run
    root = manifest_path.parent
    before = {d["id"] for d in _jsonl_gz(root / "work/filtered")}  # what entered deduplication
    after = {d["id"] for domain in ("web",) for d in _final_docs(root, domain)}
    pairs = corpus.injected["near_duplicates"] + corpus.injected["exact_duplicates"]
    checked = 0
    for a, b in pairs:
        assert not (a in after and b in after), (a, b)
        if a in before and b in before:
            checked += 1
    assert checked >= 4  # the check above was not vacuous: both copies reached MinHash
    dedup = json.loads(manifest_path.read_text())["stages"]["dedup"][0]
    assert dedup["reasons"]["minhash_duplicate"] >= checked


def test_injected_benchmark_items_are_removed_and_reported(small_run):
    corpus, manifest_path = small_run
    root = manifest_path.parent
    report = json.loads((root / "decontamination_report.json").read_text())
    survivors = {
        d["id"] for domain in ("web", "encyclopedia", "math", "code") for d in _final_docs(root, domain)
    }
    reported = {
        d["document"]: {(m["benchmark"], m["item_id"]) for m in d["matches"]} for d in report["documents"]
    }
    leaks = corpus.injected["leaks"]
    assert leaks and all(leak["document"] not in survivors for leak in leaks)
    mmlu = [leak for leak in leaks if leak["benchmark"] == "mmlu"]
    assert mmlu and all(leak["document"] in reported for leak in mmlu)  # encyclopedia reaches stage 5 whole
    humaneval = [leak for leak in leaks if leak["benchmark"] == "HumanEval" and leak["document"] in reported]
    assert humaneval
    for leak in humaneval:
        assert ("HumanEval", leak["item_id"]) in reported[leak["document"]]
    assert report["n"] == 10 and report["documents_dropped"] == len(report["documents"])
    assert {b["name"]: b["items"] for b in report["benchmarks"]}["HumanEval"] == 164


def test_bad_records_are_quarantined_and_counted(small_run):
    corpus, manifest_path = small_run
    root = manifest_path.parent
    records = [
        json.loads(line)
        for path in (root / "quarantine").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sorted(r["reason"] for r in records) == sorted(corpus.injected["bad_records"])
    assert all(r["source"] == "bad" and r["file"] == "part-0.jsonl" and r["line"] >= 1 for r in records)
    assert json.loads(manifest_path.read_text())["quarantined"]["bad"] == {r["reason"]: 1 for r in records}
    code_ids = {d["id"] for d in _final_docs(root, "code")}
    assert not code_ids & set(corpus.injected["bad_code"])


def _outputs(root: Path) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    files = {p.name: p.read_bytes() for p in sorted(root.glob("*.bin")) + sorted(root.glob("*.idx"))}
    report = json.loads((root / "decontamination_report.json").read_text())
    return {
        "files": files,
        "funnel": manifest["funnel"],
        "stages": manifest["stages"],
        "quarantined": manifest["quarantined"],
        "contaminated": [d["document"] for d in report["documents"]],
    }


def test_rerun_is_a_no_op_and_killed_run_resumes_to_identical_output(small_run, tmp_path):
    _, manifest_path = small_run
    reference = manifest_path.parent
    config = reference / "config.yaml"
    command = [
        sys.executable,
        "-m",
        "megatron_infi.data_processing.pipelines.pretrain",
        "--config",
        str(config),
    ]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    stamp = manifest_path.stat().st_mtime_ns
    subprocess.run(command, check=True, env=env, cwd=REPO, capture_output=True)
    assert manifest_path.stat().st_mtime_ns == stamp  # every task was complete: nothing redone

    out = tmp_path / "resumed"
    run = command + [f"output_dir={out}"]
    proc = subprocess.Popen(
        run, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    marker = out / "logs/score/completions/00000"
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)  # mid-stage: task 1 of `score` is running
    proc.wait()
    assert not (out / "manifest.json").exists() and not (out / "logs/score/completions/00001").exists()

    subprocess.run(run, check=True, env=env, cwd=REPO, capture_output=True)
    resumed, ref = _outputs(out), _outputs(reference)
    assert resumed["files"].keys() == ref["files"].keys()
    for name in ref["files"]:
        assert resumed["files"][name] == ref["files"][name], name
    assert resumed == ref


@pytest.mark.parametrize("domain", ["code"])
def test_scores_are_written_into_metadata(small_run, domain):
    _, manifest_path = small_run
    root = manifest_path.parent
    web = _final_docs(root, "web")
    assert web and all("edu_score" in d["metadata"] and "recall_general" in d["metadata"] for d in web)
    assert all(d["metadata"]["edu_score"] >= 1.5 for d in web)  # the demo threshold
    assert all(d["metadata"]["math_score"] >= 2.0 for d in _final_docs(root, "math"))
    assert all(d["metadata"]["code_quality"] == 1.0 for d in _final_docs(root, domain))
