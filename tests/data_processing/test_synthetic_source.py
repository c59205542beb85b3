"""InfiR's synthetic annealing data: SFT conversations (as sft-synthesize writes them, JSONL or Parquet)
through the pretraining data pipeline (`render: chat`) into a `synthetic` .bin/.idx, one document per
conversation in the few-shot evaluation's "Question / Answer" shape."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_infi.config.core import from_dict, validate_tree
from megatron_infi.data.tokenizer import load_tokenizer
from megatron_infi.data_processing.pipelines.config import PretrainDataConfig
from megatron_infi.data_processing.pipelines.pretrain import run
from megatron_infi.data_processing.sft.curriculum import write_records
from megatron_infi.data_processing.steps.sources import JsonlSource, ParquetSource, render_chat


def _conversation(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"A shop sells {i} pens a day for {i + 3} days. How many pens?"},
            {"role": "assistant", "content": f"{i} x {i + 3} = {i * (i + 3)} pens. \\boxed{{{i * (i + 3)}}}"},
        ],
        "meta": {"id": f"synth-{i}", "domain": "Arithmetic Word Problems", "pass_rate": 0.75},
    }


def test_render_chat():
    record = _conversation(2)
    assert render_chat(record["messages"]) == (
        "Question: A shop sells 2 pens a day for 5 days. How many pens?\nAnswer: 2 x 5 = 10 pens. \\boxed{10}"
    )
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": " 4 "},
    ]
    assert render_chat(turns) == "Question: Hi\nAnswer: Hello.\n\nQuestion: 2+2?\nAnswer: 4"
    for bad in (None, "text", [{"role": "user", "content": "no answer"}], [{"role": "tool", "content": "x"}]):
        assert render_chat(bad) is None


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_chat_source_reads_what_synthesis_writes(tmp_path, fmt):
    data = tmp_path / "synthesis"
    data.mkdir()
    write_records(data / f"synthesized.{fmt}", [_conversation(i) for i in range(3)], fmt)
    if fmt == "parquet":  # a damaged row: no conversation
        pq.write_table(pa.Table.from_pylist([{"messages": None, "meta": "{}"}]), data / "z_bad.parquet")
    else:
        (data / "z_bad.jsonl").write_text('{"messages": "x"}\n')
    cls = ParquetSource if fmt == "parquet" else JsonlSource
    reader = cls(str(data), "synthesis", "synthetic", str(tmp_path / "q"), render="chat")
    docs = list(reader.run())
    assert [d.id for d in docs] == ["synthesis/synth-0", "synthesis/synth-1", "synthesis/synth-2"]
    assert docs[1].text == render_chat(_conversation(1)["messages"])
    assert all(d.metadata["domain"] == "synthetic" for d in docs)
    quarantined = [
        json.loads(line) for p in (tmp_path / "q").rglob("*.jsonl") for line in p.read_text().splitlines()
    ]
    assert [q["reason"] for q in quarantined] == ["not-a-conversation"]


@pytest.mark.slow
def test_synthesis_output_becomes_the_synthetic_domain(tmp_path, llama3_tokenizer_dir):
    records = [_conversation(i) for i in range(40)]
    write_records(tmp_path / "synthesized.parquet", records, "parquet")
    benchmark = tmp_path / "bench.jsonl"  # a leaked benchmark item must not reach the annealing data
    leaked = records[7]["messages"][1]["content"]
    benchmark.write_text(json.dumps({"id": "b7", "question": leaked}) + "\n")
    cfg = from_dict(
        PretrainDataConfig,
        {
            "output_dir": str(tmp_path / "out"),
            "sources": [
                {
                    "name": "synthesis",
                    "path": str(tmp_path / "synthesized.parquet"),
                    "format": "parquet",
                    "domain": "synthetic",
                    "render": "chat",
                }
            ],
            "dedup": {"enabled": False},
            "decontamination": {"n": 8, "benchmarks": [{"path": str(benchmark)}]},
            "tokenize": {"tokenizer": str(llama3_tokenizer_dir)},
            "executor": {"tasks": 1, "workers": 1},
            "report": {"count_tokens": False},
        },
    )
    validate_tree(cfg)
    run(cfg)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(manifest["domains"]) == {"synthetic"} and manifest["documents"] == 39
    tokenizer = load_tokenizer(llama3_tokenizer_dir)
    dataset = IndexedDataset(str(tmp_path / "out" / "synthetic"))
    texts = {tokenizer.decode(dataset[i][:-1].tolist()) for i in range(len(dataset))}  # EOD last
    assert all(dataset[i][-1] == tokenizer.eod_id for i in range(len(dataset)))
    assert texts == {render_chat(r["messages"]) for r in records if r is not records[7]}
