"""The one reader of record files (megatron_infi.utils.iter_rows): every format gives the same rows,
damage is counted instead of raised, and row sharding agrees with count_rows."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megatron_infi.utils import SkipCounter, count_rows, iter_rows, read_rows

ROWS = [
    {"id": "a", "messages": [{"role": "user", "content": "1+1?"}], "meta": {"score": 1, "tags": ["x"]}},
    {"id": "b", "messages": [{"role": "user", "content": "Zürich ∑"}], "meta": {"answer": "2"}},
    {"id": "c", "messages": [{"role": "user", "content": "last"}], "meta": {}},
]


def write(path, rows=ROWS):
    name = path.name
    if name.endswith(".parquet"):
        # as our writers store records whose meta differs from row to row: meta as JSON text
        table = pa.Table.from_pylist([{**r, "meta": json.dumps(r["meta"])} for r in rows])
        pq.write_table(table, path)
    elif name.endswith(".json"):
        path.write_text(json.dumps({"data": rows}) if "wrapped" in name else json.dumps(rows))
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        path.write_bytes(gzip.compress(text) if name.endswith(".gz") else b"\xef\xbb\xbf" + text)
    return path


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.gz", "r.json", "r_wrapped.json", "r.parquet"])
def test_every_format_reads_back_the_same_rows(tmp_path, name):
    path = write(tmp_path / name)
    skipped = SkipCounter()
    assert [obj for _, obj in read_rows(path, skipped)] == ROWS
    assert skipped.total == 0
    assert count_rows(path) == len(ROWS)
    for world in (2, 3):  # row sharding: every row once, over all ranks
        shards = [
            [obj["id"] for _, obj, _ in iter_rows(path, keep=lambda i, r=r, w=world: i % w == r)]
            for r in range(world)
        ]
        assert sorted(sum(shards, [])) == ["a", "b", "c"] and all(shards)


def test_damaged_files_are_counted_not_raised(tmp_path):
    whole = gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS * 200).encode())
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    skipped = SkipCounter()
    kept = list(read_rows(truncated, skipped))
    assert 0 < len(kept) < 600 and skipped.counts == {"truncated-or-corrupt-file": 1}

    good = write(tmp_path / "good.parquet").read_bytes()
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(good[: len(good) - 40])
    skipped = SkipCounter()
    assert list(read_rows(corrupt, skipped)) == []
    assert skipped.counts == {"truncated-or-corrupt-file": 1}

    lines = tmp_path / "bad.jsonl"
    lines.write_bytes(b'{"a": 1}\n{oops\n\xff\n"text"\n')
    skipped = SkipCounter()
    assert [obj for _, obj in read_rows(lines, skipped)] == [{"a": 1}]
    assert skipped.counts == {"malformed-json": 1, "non-utf8": 1, "not-an-object": 1}
    assert skipped.examples["malformed-json"] == [f"{lines}:2"]


def test_a_parquet_text_column_named_meta_that_is_not_json_stays_text(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "x", "meta": "not json"}]), path)
    assert [obj for _, obj in read_rows(path, SkipCounter())] == [{"text": "x", "meta": "not json"}]
