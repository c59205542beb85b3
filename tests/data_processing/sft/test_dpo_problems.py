"""`infi data dpo-problems`: from SFT data (as sft-select writes it) to the problems `infi dpo-pairs`
reads: only verifiable problems with a verified expert response, one per prompt, no benchmark item,
the hardest first, as many as the target number of pairs needs; then dpo-pairs turns them into pairs."""

import json

import pytest

from megatron_infi import cli
from megatron_infi.config.core import from_dict, validate_tree
from megatron_infi.config.prompt import PromptContract
from megatron_infi.data_processing.sft.config import DPOProblemsConfig
from megatron_infi.data_processing.sft.curriculum import write_records
from megatron_infi.data_processing.sft.dpo_problems import build_problems
from megatron_infi.posttrain.dpo_pairs import DPOPairsConfig, read_problems, run_dpo_pairs
from megatron_infi.utils import SkipCounter
from tests.generation.tiny_model import build_tiny_llama

pytest.importorskip("megatron_infi.scoring.code")


def _math(i: int, answer: str, response: str | None = None, tokens: int = 100) -> dict:
    question = f"A farmer has {i} rows of {i + 4} trees. How many trees are there?"
    return {
        "messages": [
            {"role": "system", "content": "Reason step by step."},
            {"role": "user", "content": question},
            {
                "role": "assistant",
                "content": response or f"{i} x {i + 4} = {answer}. So $\\boxed{{{answer}}}$.",
            },
        ],
        "meta": {
            "id": f"math-{i}",
            "task": "math",
            "answer": answer,
            "response_tokens": tokens,
            "domain": "Algebra",
        },
    }


CHECK = "def check(candidate):\n    assert candidate(2, 3) == 5\n"  # HumanEval's convention


def _code(i: int, body: str, tests: str | None = CHECK, tokens: int = 100) -> dict:
    meta = {"id": f"code-{i}", "task": "code", "response_tokens": tokens, "entry_point": "add"}
    if tests:
        meta["tests"] = tests
    else:
        meta["task"] = "open"
    return {
        "messages": [
            {"role": "user", "content": f"Write add(a, b) returning the sum (variant {i})."},
            {"role": "assistant", "content": f"```python\ndef add(a, b):\n    return {body}\n```"},
        ],
        "meta": meta,
    }


@pytest.fixture
def sft_data(tmp_path):
    phase1 = [
        _math(1, str(1 * 5), tokens=300),
        _math(2, str(2 * 6), tokens=900),  # the hardest maths problem
        _math(3, "7", tokens=2000),  # expert response states 21 but the reference says 7: fails
        _math(4, "The number of trees is even", tokens=5000),  # free text: math-verify cannot check it
        _math(5, str(5 * 9), tokens=100),
        _math(6, str(6 * 10), tokens=50),  # the easiest: beyond the wanted count
    ]
    phase1[2]["messages"][2]["content"] = "3 x 7 = 21. So $\\boxed{21}$."
    phase2 = [
        _code(1, "a + b", tokens=800),
        _code(2, "a - b", tokens=1500),  # its own tests fail
        _code(3, "a + b", tests=None, tokens=3000),  # no tests: open-ended
        {**_math(1, "5", tokens=10), "meta": {**_math(1, "5")["meta"], "id": "dup"}},  # same prompt again
        {
            "messages": [
                {"role": "user", "content": "Tell me about trees."},
                {"role": "assistant", "content": "Trees are tall."},
            ],
            "meta": {"id": "open-1", "task": "open", "response_tokens": 9000},
        },
        _math(7, str(7 * 11), tokens=600),  # leaked into a benchmark
    ]
    write_records(tmp_path / "phase1.parquet", phase1, "parquet")
    write_records(tmp_path / "phase2.jsonl", phase2, "jsonl")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"id": "b1", "question": phase2[-1]["messages"][1]["content"]}) + "\n")
    return tmp_path, bench


def _config(tmp_path, bench, **extra) -> DPOProblemsConfig:
    cfg = from_dict(
        DPOProblemsConfig,
        {
            "inputs": [str(tmp_path / "phase1.parquet"), str(tmp_path / "phase2.jsonl")],
            "output_dir": str(tmp_path / "problems"),
            "target_pairs": 2,
            "expected_pair_rate": 0.5,  # -> 4 problems wanted
            "workers": 2,
            "decontamination": {"benchmarks": [str(bench)], "ngram": 8, "embedding_threshold": None},
            **extra,
        },
    )
    validate_tree(cfg)
    return cfg


def test_verifiable_clean_hardest_problems_in_the_dpo_pairs_format(sft_data):
    tmp_path, bench = sft_data
    report = build_problems(_config(tmp_path, bench))
    skipped = SkipCounter()
    problems = read_problems([tmp_path / "problems" / "problems.jsonl"], skipped, PromptContract())
    assert skipped.total == 0  # dpo-pairs reads every record the builder writes
    # hardest first among the verified: math-2 (900), code-1 (800), math-1 (300), math-5 (100)
    assert [p.id for p in problems] == ["math-2", "code-1", "math-1", "math-5"]
    assert report["problems"] == report["wanted"] == 4 and report["tasks"] == {"math": 3, "code": 1}
    math2 = problems[0]
    assert math2.domain == "math" and math2.answer == "12" and "\\boxed{12}" in math2.solution
    assert [m["role"] for m in math2.messages] == ["system", "user"]
    assert problems[1].tests == CHECK and problems[1].entry_point == "add"
    assert report["dropped"] == {
        "not verifiable: answer is not a value math-verify can check": 1,
        "not verifiable: open-ended": 2,
        "duplicate prompt": 1,
        "contaminated: ngram": 1,
        "expert response fails: quality: math answer wrong": 1,
        "expert response fails: quality: code failed": 1,
    }
    assert report["contamination"][0]["sample"] == "math-7"
    assert (tmp_path / "problems" / "report.md").read_text().startswith("# DPO problem set")


def test_problems_become_pairs_with_the_sft_models_wrong_answers(sft_data, llama3_tokenizer_dir):
    tmp_path, bench = sft_data
    model = build_tiny_llama(tmp_path / "sft_model", llama3_tokenizer_dir)  # samples are scripted below
    build_problems(_config(tmp_path, bench))
    path = tmp_path / "problems" / "problems.jsonl"
    problems = read_problems([path], SkipCounter(), PromptContract())
    cfg = from_dict(
        DPOPairsConfig,
        {
            "problems": [str(path)],
            "output_dir": str(tmp_path / "pairs"),
            "generation": {"model": str(model), "backend": "hf"},
            "sampling": {"n": 2, "temperature": 1.0},
        },
    )
    # the "SFT model" gets the maths right once and wrong once, and writes broken code
    samples = [
        ["So $\\boxed{" + p.answer + "}$.", "So $\\boxed{-1}$."]
        if p.domain == "math"
        else ["```python\ndef add(a, b):\n    return 0\n```"] * 2
        for p in problems
    ]
    report = run_dpo_pairs(cfg, samples=samples)
    assert report["pairs"] == 4 and report["chosen_sources"] == {"expert": 4}


def test_cli_and_config_errors(sft_data, tmp_path, capsys):
    data, bench = sft_data
    config = tmp_path / "dpo_problems.yaml"
    config.write_text(
        json.dumps(
            {
                "inputs": [str(data / "phase1.parquet")],
                "output_dir": str(tmp_path / "cli_out"),
                "target_pairs": 1,
                "expected_pair_rate": 1.0,
                "tasks": ["math"],
            }
        )
    )
    assert cli.main(["data", "dpo-problems", "--config", str(config)]) == 0
    assert "[dpo-problems] 1 problems" in capsys.readouterr().out
    assert cli.main(["data", "dpo-problems", "--config", str(config), "inputs=[missing.jsonl]"]) == 2
    assert "inputs[0]: file not found: missing.jsonl" in capsys.readouterr().err
    assert cli.main(["data", "dpo-problems", "--config", str(config), "expected_pair_rate=0"]) == 2
    assert "config error: expected_pair_rate: must be in (0, 1]" in capsys.readouterr().err
