"""Readers accept what writers write: SFT records (sft-select's curriculum, sft-synthesize's output) and
DPO pairs (dpo-pairs), each written by its stage's own writer as JSONL and Parquet, read back by the
stages after it."""

import gzip
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megatron_infi.config.prompt import PromptContract
from megatron_infi.data_processing.sft.curriculum import write_records
from megatron_infi.data_processing.sft.formats import read_records
from megatron_infi.data_processing.sft.synthesize import finalize_synthesis
from megatron_infi.posttrain.data import read_preference_records, read_sft_records
from megatron_infi.utils import SkipCounter, atomic_write_json, write_jsonl

# meta differs by source (optional keys, mixed value types), as in a real selection
SFT = [
    {
        "messages": [
            {"role": "system", "content": "Think step by step."},
            {"role": "user", "content": "What is 6 x 7?"},
            {"role": "assistant", "content": "6 x 7 = 42. The final answer is $\\boxed{42}$."},
        ],
        "meta": {"id": "m1", "task": "math", "answer": "42", "response_tokens": 17, "phase": 1},
    },
    {
        "messages": [
            {"role": "user", "content": "Write add(a, b)."},
            {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"},
        ],
        "meta": {"id": "c1", "task": "code", "tests": "assert add(1, 2) == 3", "verified": True},
    },
]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_sft_records_written_by_selection_read_by_sft_and_as_inputs(tmp_path, fmt):
    path = tmp_path / f"phase1.{fmt}"
    write_records(path, SFT, fmt)
    skipped = SkipCounter()
    assert read_sft_records([path], skipped) == [{"messages": r["messages"]} for r in SFT]
    assert skipped.total == 0
    again = list(read_records(path, SkipCounter(), fmt="messages"))  # an input of another selection
    assert [r["meta"]["id"] for r in again] == ["m1", "c1"]
    assert again[1]["meta"]["tests"] == "assert add(1, 2) == 3" and again[0]["meta"]["answer"] == "42"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_synthesis_output_read_by_sft(tmp_path, fmt):
    shards = tmp_path / "work" / "synthesized"
    shards.mkdir(parents=True)
    records = [{**r, "meta": {**r["meta"], "pass_rate": 0.5, "evolution": []}} for r in SFT]
    write_jsonl(shards / "00000.jsonl", records)
    atomic_write_json(
        shards / "00000.stats.json",
        {"rank": 0, "kept": 2, "dropped": {}, "examples": {}, "contamination": []},
    )
    out = tmp_path / "out"
    finalize_synthesis(tmp_path / "work", out, fmt, ["seeds.jsonl"], PromptContract())
    assert read_sft_records([out / f"synthesized.{fmt}"], SkipCounter()) == [
        {"messages": SFT[1]["messages"]},  # sorted by id: c1, m1
        {"messages": SFT[0]["messages"]},
    ]


def _pair(i: int) -> dict:
    return {
        "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
        "chosen": [{"role": "assistant", "content": f"\\boxed{{{2 * i}}}"}],
        "rejected": [{"role": "assistant", "content": f"\\boxed{{{2 * i + 1}}}"}],
        "meta": {"id": f"p{i}", "pass_rate": 0.25},
    }


def test_dpo_pairs_read_by_dpo_from_jsonl_gz_and_parquet(tmp_path):
    pairs = [_pair(i) for i in range(3)]
    jsonl = tmp_path / "pairs.jsonl"
    write_jsonl(jsonl, [*pairs, {"prompt": "not messages"}])  # the writer dpo-pairs uses, one bad row
    gz = tmp_path / "pairs.jsonl.gz"
    with open(jsonl, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    parquet = tmp_path / "pairs.parquet"
    rows = [{**p, "meta": json.dumps(p["meta"])} for p in pairs]
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    expected = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]
    for path in (jsonl, gz, parquet):
        skipped = SkipCounter()
        assert read_preference_records([path], skipped) == expected
        assert skipped.counts == ({"messages-not-a-list": 1} if path != parquet else {})
