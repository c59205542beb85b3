import gzip
import json

import pytest

from megatron_infi import assets
from megatron_infi.data_processing.sft.formats import detect_format, read_records, to_canonical
from megatron_infi.data_processing.sft.records import RecordError, response_text
from megatron_infi.utils import SkipCounter


def test_every_format_becomes_the_same_canonical_record():
    expected = [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "It is 5."}]
    rows = {
        "messages": {"messages": expected},
        "sharegpt": {
            "conversations": [
                {"from": "human", "value": "What is 2+3?"},
                {"from": "gpt", "value": "It is 5."},
            ]
        },
        "alpaca": {"instruction": "What is 2+3?", "input": "", "output": "It is 5."},
        "qa": {"question": "What is 2+3?", "response": "It is 5."},
    }
    for fmt, row in rows.items():
        assert detect_format(row) == fmt
        record = to_canonical(row, source="s")
        assert record["messages"] == expected, fmt
        assert record["meta"]["source"] == "s" and record["meta"]["task"] == "open"
    ids = {to_canonical(row, source="s")["meta"]["id"] for row in rows.values()}
    assert len(ids) == 1  # identity is content, not format


def test_gsm_answer_line_becomes_boxed_and_humaneval_becomes_fenced_code():
    gsm = to_canonical({"question": "q?", "solution": "2+2=4\n#### 4", "answer": 4})
    assert response_text(gsm).endswith("The final answer is $\\boxed{4}$.")
    assert gsm["meta"]["task"] == "math" and gsm["meta"]["answer"] == "4"
    with gzip.open(assets.humaneval_jsonl_gz(), "rt") as handle:
        problem = json.loads(handle.readline())
    record = to_canonical(problem)
    meta = record["meta"]
    assert (
        meta["task"] == "code"
        and meta["tests"] == problem["test"]
        and meta["entry_point"] == problem["entry_point"]
    )
    response = response_text(record)
    assert response.startswith("```python\n") and response.endswith("```")
    assert problem["prompt"].strip() in response and problem["canonical_solution"].strip() in response


def test_question_without_solution_is_marked_for_cot():
    record = to_canonical({"question": "How many?", "answer": "3"})
    assert [m["role"] for m in record["messages"]] == ["user"] and record["meta"]["needs_cot"]


def test_bad_rows_are_skipped_and_counted_with_file_and_line(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"messages": [{"role": "wizard", "content": "x"}]}),
        json.dumps({"foo": "bar"}),
        "",
        json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    skipped = SkipCounter()
    records = list(read_records(path, skipped))
    assert len(records) == 2
    assert skipped.counts == {
        "malformed-json": 1,
        "not-an-object": 1,
        "bad-record: unknown-role": 1,
        "bad-record: unrecognised-format": 1,
        "non-utf8": 1,
    }
    assert skipped.examples["malformed-json"] == [f"{path}:2"]
    assert skipped.examples["non-utf8"] == [f"{path}:8"]


def test_row_sharding_partitions_the_rows(small_inputs):
    path = small_inputs["gsm_symbolic"]
    shards = [
        [r["meta"]["id"] for r in read_records(path, SkipCounter(), keep=lambda i, k=k: i % 3 == k)]
        for k in range(3)
    ]
    every = [r["meta"]["id"] for r in read_records(path, SkipCounter())]
    assert sorted(sum(shards, [])) == sorted(every) and len(every) == 30


def test_unknown_task_is_an_error():
    with pytest.raises(RecordError):
        to_canonical({"question": "q", "response": "a"}, task="poetry")
