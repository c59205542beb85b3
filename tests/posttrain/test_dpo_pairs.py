"""`infi dpo-pairs`: challenge selection, pairing and cleaning never put a verified-correct answer on
the rejected side; the output is what `infi dpo` reads.

Most tests replay real model outputs: CHAMP ships solutions written by GPT-3.5 / GPT-4 / PaLM 2 for
its competition problems, some right, some wrong; they stand in for the SFT model's samples here and
are verified by the same scorer. One test samples the tiny model through the HF backend end to end.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from megatron_infi import assets
from megatron_infi.config.core import ConfigError, load_config
from megatron_infi.config.prompt import PromptContract
from megatron_infi.demo import reference_data
from megatron_infi.posttrain.data import read_preference_records
from megatron_infi.posttrain.dpo_pairs import DPOPairsConfig, extract_program, read_problems, run_dpo_pairs
from megatron_infi.scoring.math import math_equal
from megatron_infi.utils import SkipCounter


def pairs_config(model_dir: Path, problems: Path, out: Path, *extra: str) -> DPOPairsConfig:
    return load_config(
        DPOPairsConfig,
        None,
        [
            f"problems=[{problems}]",
            f"output_dir={out}",
            f"generation={{model: {model_dir}, backend: hf, batch_size: 8}}",
            "sampling={n: 4, temperature: 1.0, max_new_tokens: 16, seed: 0}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def champ_replay(tmp_path_factory, tiny_model_dir):
    """CHAMP problems with plain-number answers; their samples: the real model solutions CHAMP ships."""
    root = tmp_path_factory.mktemp("pairs")
    solutions = reference_data.champ_model_solutions()
    problems = [p for p in reference_data.champ(numeric_only=True) if len(solutions.get(p["id"], [])) >= 2]
    path = reference_data.write_jsonl(root / "champ_problems.jsonl", reference_data.pair_problems(problems))
    samples = [solutions[p["id"]][:2] for p in problems]
    cfg = pairs_config(tiny_model_dir, path, root / "out", "sampling.n=2", "cleaning.pairs_per_problem=2")
    report = run_dpo_pairs(cfg, samples=samples)
    return cfg, problems, samples, report


def _pairs(cfg) -> list[dict]:
    return [json.loads(line) for line in (Path(cfg.output_dir) / "pairs.jsonl").read_text().splitlines()]


def test_no_pair_rejects_a_correct_answer(champ_replay):
    cfg, problems, samples, report = champ_replay
    answers = {p["id"]: p["answer"] for p in problems}
    pairs = _pairs(cfg)
    assert len(pairs) == report["pairs"] > 5
    for pair in pairs:
        answer = answers[pair["meta"]["id"]]
        assert not math_equal(pair["rejected"][0]["content"], answer)
        assert math_equal(pair["chosen"][0]["content"], answer)


def test_only_problems_the_model_gets_wrong_are_kept(champ_replay):
    cfg, problems, samples, report = champ_replay
    verdicts = {
        p["id"]: [math_equal(s, p["answer"]) for s in texts]
        for p, texts in zip(problems, samples, strict=True)
    }
    all_correct = {pid for pid, oks in verdicts.items() if all(oks)}
    assert all_correct and report["dropped"]["all-samples-correct"] == len(all_correct)
    assert report["challenging_problems"] == len(problems) - len(all_correct)
    paired = {pair["meta"]["id"] for pair in _pairs(cfg)}
    assert not paired & all_correct
    for pair in _pairs(cfg):
        oks = verdicts[pair["meta"]["id"]]
        assert pair["meta"]["pass_rate"] == pytest.approx(sum(oks) / len(oks))
        assert (
            samples[[p["id"] for p in problems].index(pair["meta"]["id"])][pair["meta"]["rejected_sample"]]
            == (pair["rejected"][0]["content"])
        )
        assert pair["meta"]["chosen_source"] == "expert"  # CHAMP's step solutions verify


def test_pairs_file_is_dpo_input_and_reports_exist(champ_replay):
    cfg, _, _, report = champ_replay
    out = Path(cfg.output_dir)
    skipped = SkipCounter()
    records = read_preference_records([out / "pairs.jsonl"], skipped)
    assert len(records) == report["pairs"] and skipped.total == 0
    assert (
        max(
            c
            for _, c in __import__("collections").Counter(r["prompt"][0]["content"] for r in records).items()
        )
        <= 2
    )
    assert json.loads((out / "report.json").read_text())["pairs"] == report["pairs"]
    assert "| pairs |" in (out / "report.md").read_text()
    assert (out / "pass_rate.png").stat().st_size > 0
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 2 * report["problems"]


def test_expert_solution_that_fails_verification_is_not_chosen(tmp_path, tiny_model_dir):
    problem = {"id": "p1", "domain": "math", "prompt": "What is 6 times 7?", "answer": "42",
               "solution": "6 * 7 = 48\nThe answer is $\\boxed{48}$."}  # fmt: skip
    path = reference_data.write_jsonl(tmp_path / "p.jsonl", [problem])
    samples = [
        ["6 * 7 = 42, so the answer is $\\boxed{42}$.", "The answer is $\\boxed{41}$.", "Um", "It is 13."]
    ]
    cfg = pairs_config(tiny_model_dir, path, tmp_path / "out", "cleaning.min_response_chars=4")
    report = run_dpo_pairs(cfg, samples=samples)
    assert report["expert_solutions_failed"] == 1
    (pair,) = _pairs(cfg)
    assert pair["meta"]["chosen_source"] == "sample" and "\\boxed{42}" in pair["chosen"][0]["content"]
    assert pair["rejected"][0]["content"] == "The answer is $\\boxed{41}$."
    assert report["dropped"]["rejected-too-short"] == 1  # "Um"

    only_expert = pairs_config(tiny_model_dir, path, tmp_path / "out2", "chosen=expert")
    assert run_dpo_pairs(only_expert, samples=samples)["dropped"] == {"no-verified-chosen": 1}


def test_code_problems_are_verified_in_the_sandbox(tmp_path, tiny_model_dir):
    with gzip.open(assets.humaneval_jsonl_gz(), "rt") as handle:
        task = json.loads(next(handle))  # HumanEval/0: has_close_elements
    problem = {"id": task["task_id"], "domain": "code", "prompt": task["prompt"], "tests": task["test"],
               "entry_point": task["entry_point"], "solution": task["prompt"] + task["canonical_solution"]}  # fmt: skip
    path = reference_data.write_jsonl(tmp_path / "code.jsonl", [problem])
    wrong = f"```python\n{task['prompt']}    return False\n```"
    right = f"Here it is:\n```python\n{task['prompt'] + task['canonical_solution']}```"
    cfg = pairs_config(tiny_model_dir, path, tmp_path / "out", "sampling.n=2")
    report = run_dpo_pairs(cfg, samples=[[right, wrong]])
    assert report["expert_solutions_verified"] == 1
    (pair,) = _pairs(cfg)
    assert pair["rejected"][0]["content"] == wrong
    assert pair["meta"]["pass_rate"] == 0.5


def test_samples_the_model_through_the_hf_backend(tmp_path, tiny_model_dir):
    problems = reference_data.pair_problems(reference_data.gsm_symbolic(3, seed=5))
    path = reference_data.write_jsonl(tmp_path / "gsm.jsonl", problems)
    cfg = pairs_config(
        tiny_model_dir, path, tmp_path / "out", "sampling.n=2", "cleaning.rejected_needs_answer=false",
        "cleaning.min_response_chars=1",
    )  # fmt: skip
    report = run_dpo_pairs(cfg)
    assert report["problems"] == 3 and report["mean_pass_rate"] == 0.0  # a random model gets nothing right
    assert report["pairs"] + sum(report["dropped"].values()) >= 3
    samples = (tmp_path / "out" / "samples.jsonl").read_text()
    assert list((tmp_path / "out" / "generation_cache").glob("*.jsonl"))
    again = run_dpo_pairs(cfg)  # served from the generation cache: same samples, same pairs
    assert (tmp_path / "out" / "samples.jsonl").read_text() == samples and again["pairs"] == report["pairs"]


def test_problem_reader_skips_and_counts(tmp_path):
    rows = [
        {"id": "a", "prompt": "1+1?", "answer": "2"},
        {"id": "a", "prompt": "2+2?", "answer": "4"},
        {"id": "b", "prompt": " 1+1? ", "answer": "2"},
        {"id": "c", "prompt": "x", "domain": "poetry"},
        {"id": "d", "prompt": "x"},
        {"id": "e", "domain": "code", "prompt": "write f"},
        {"prompt": "no id", "answer": "1"},
        {
            "id": "f",
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "answer": "1",
        },
    ]
    path = reference_data.write_jsonl(tmp_path / "p.jsonl", rows)
    skipped = SkipCounter()
    assert [p.id for p in read_problems([path], skipped, PromptContract())] == ["a"]
    assert skipped.counts == {
        "duplicate-id": 1, "duplicate-prompt": 1, "unknown-domain": 1, "math-without-answer": 1,
        "code-without-tests": 1, "missing-id": 1, "prompt-does-not-end-with-user": 1,
    }  # fmt: skip


def test_greedy_sampling_of_several_samples_is_a_config_error(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="sampling.temperature"):
        pairs_config(tiny_model_dir, tmp_path / "p.jsonl", tmp_path, "sampling.temperature=0")


def test_extract_program():
    assert extract_program("a\n```python\nx = 1\n```\nthen\n```py\nx = 2\n```") == "x = 2\n"
    assert extract_program("def f():\n    return 1") == "def f():\n    return 1"
