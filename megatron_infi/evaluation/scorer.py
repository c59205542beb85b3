"""Verdicts for replies (math-verify, letter extraction, the code sandbox, short-answer match) and the
metrics over them (avg@k, unbiased pass@k)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from megatron_infi.evaluation.problems import Problem
from megatron_infi.evaluation.prompts import program_from_reply
from megatron_infi.scoring.choice import extract_choice
from megatron_infi.scoring.code import check_program, run_program
from megatron_infi.scoring.math import extract_answer, math_equal_any


@dataclass
class Verdict:
    correct: bool
    extracted: str | None  # the answer / letter / program that was judged
    status: str  # math/choice/vqa: "correct" | "wrong" | "no-answer"; code: the sandbox status


def normalize_short_answer(text: str) -> str:
    """VQA-style answer normalisation: the first line, lower case, punctuation and articles dropped,
    whitespace collapsed ("The digit 7." and "digit 7" compare equal)."""
    line = text.strip().split("\n", 1)[0].lower()
    words = re.sub(r"[^\w\s]", " ", line).split()
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def _functional_harness(problem: Problem, program: str) -> str:
    """LiveCodeBench "functional" tests: call Solution().<func_name>(*args) for each test in one run."""
    cases = [
        ([line for line in str(t["input"]).split("\n") if line.strip()], str(t["output"]))
        for t in problem.io_tests
    ]
    return (
        f"{program}\n\nimport json as _json\n"
        f"for _args, _expected in {cases!r}:\n"
        f"    _got = Solution().{problem.func_name}(*[_json.loads(a) for a in _args])\n"
        "    assert _got == _json.loads(_expected), (_args, _got, _expected)\n"
    )


def _same_output(got: str, expected: str) -> bool:
    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip().splitlines()]

    return lines(got) == lines(expected)


def score_code(
    problem: Problem, program: str, timeout_s: float, memory_mb: int, unsafe_no_sandbox: bool = False
) -> Verdict:
    limits = {"timeout_s": timeout_s, "memory_mb": memory_mb, "unsafe_no_sandbox": unsafe_no_sandbox}
    if problem.tests:
        # HumanEval's tests define check(candidate); MBPP's are bare asserts
        entry = problem.entry_point if "def check(" in problem.tests else None
        result = check_program(program, problem.tests, entry, **limits)
        return Verdict(result.passed, program, result.status)
    if problem.func_name:
        result = run_program(_functional_harness(problem, program), **limits)
        return Verdict(result.passed, program, result.status)
    for test in problem.io_tests:  # stdin/stdout tests: every one must match
        result = run_program(program, stdin=str(test["input"]), **limits)
        if not result.passed:
            return Verdict(False, program, result.status)
        if not _same_output(result.stdout, str(test["output"])):
            return Verdict(False, program, "wrong-output")
    return Verdict(True, program, "passed")


def score_reply(
    problem: Problem,
    reply: str,
    mode: str,
    timeout_s: float = 10,
    memory_mb: int = 1024,
    unsafe_no_sandbox: bool = False,
) -> Verdict:
    if problem.kind == "math":
        answer = extract_answer(reply)
        if answer is None:
            return Verdict(False, None, "no-answer")
        correct = math_equal_any(answer, problem.answers)
        return Verdict(correct, answer, "correct" if correct else "wrong")
    if problem.kind == "choice":
        letter = extract_choice(reply, problem.letters or "ABCD")
        if letter is None:
            return Verdict(False, None, "no-answer")
        correct = letter == problem.answers[0]
        return Verdict(correct, letter, "correct" if correct else "wrong")
    if problem.kind == "vqa":
        answer = normalize_short_answer(reply)
        if not answer:
            return Verdict(False, None, "no-answer")
        correct = answer in {normalize_short_answer(a) for a in problem.answers}
        return Verdict(correct, answer, "correct" if correct else "wrong")
    program = program_from_reply(problem, reply, mode)
    return score_code(problem, program, timeout_s, memory_mb, unsafe_no_sandbox)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion `accuracy` in [0, 1] measured on n independent items.

    Unlike the normal approximation it stays inside [0, 1] and is usable at 0 % and 100 %."""
    if n <= 0:
        return (0.0, 1.0)
    denom = 1.0 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denom
    half = z * math.sqrt(accuracy * (1.0 - accuracy) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(verdicts: list[list[bool]], pass_ks: list[int]) -> dict:
    """avg@n (mean accuracy over all samples), its 95 % Wilson interval `ci95` over the problems
    (n = problems: samples of one problem are not independent, so each problem counts once), and
    pass@k per k <= n, all in percent."""
    if not verdicts:
        return {"problems": 0, "samples": 0}
    n = len(verdicts[0])
    accuracy = sum(sum(v) / n for v in verdicts) / len(verdicts)
    low, high = wilson_interval(accuracy, len(verdicts))
    summary = {
        "problems": len(verdicts),
        "samples": n,
        f"avg@{n}": 100.0 * accuracy,
        "ci95": [100.0 * low, 100.0 * high],
    }
    for k in sorted(set(pass_ks)):
        if k <= n:
            summary[f"pass@{k}"] = 100.0 * sum(pass_at_k(n, sum(v), k) for v in verdicts) / len(verdicts)
    return summary
