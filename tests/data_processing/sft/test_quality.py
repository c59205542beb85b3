"""Quality: math-verify, the code sandbox (through megatron_infi.scoring), the correction loop and
LLM scores. Where a test needs controlled LLM answers it uses ScriptedBackend, a stand-in with the
generation backend's `chat` method that replies from a script and records the prompts it was sent."""

import re

import pytest

from megatron_infi.data_processing.sft.config import QualityConfig
from megatron_infi.data_processing.sft.filters import RuleFilter
from megatron_infi.data_processing.sft.formats import to_canonical
from megatron_infi.data_processing.sft.quality import Verifier, reference_forms, run_quality
from megatron_infi.data_processing.sft.records import response_text
from megatron_infi.demo.sft_inputs import (
    champ_palm_attempts,
    champ_problems,
    champ_qa,
    gsm_symbolic,
    humaneval,
)

pytest.importorskip("megatron_infi.scoring.math")


class ScriptedBackend:
    def __init__(self, script):
        self.script = script  # callable(conversation) -> reply
        self.calls: list[list[dict]] = []

    def chat(self, conversations, params):
        self.calls.extend(conversations)
        return [[self.script(conv)] * params.n for conv in conversations]


RULES = RuleFilter(languages=())


def numeric_champ():
    return [row for row in champ_qa(champ_problems()) if re.fullmatch(r"-?\d+", row["answer"])]


def test_wrong_maths_answer_is_removed_by_math_verify():
    rows = numeric_champ()[:4]
    right = [to_canonical(r) for r in rows]
    wrong = []
    for r in rows:
        altered = dict(
            r,
            solution=r["solution"].replace(f"\\boxed{{{r['answer']}}}", f"\\boxed{{{int(r['answer']) + 1}}}"),
        )
        wrong.append(to_canonical(altered, source="altered"))
    gsm = [to_canonical(r) for r in gsm_symbolic(4, seed=5)]
    kept, dropped = run_quality(right + wrong + gsm, QualityConfig(workers=2), RULES)
    assert {r["meta"]["id"] for r in kept} == {r["meta"]["id"] for r in right + gsm}
    assert all(r["meta"]["verified"] for r in kept)
    assert sorted(reason for _, reason in dropped) == ["quality: math answer wrong"] * 4


def test_real_model_attempts_are_judged_by_their_boxed_answer():
    from megatron_infi.scoring.math import extract_answer, math_equal

    attempts = [to_canonical(r) for r in champ_palm_attempts(champ_problems())]
    boxed = [a for a in attempts if RULES.check(a) is None and re.fullmatch(r"-?\d+", a["meta"]["answer"])][
        :12
    ]
    kept, dropped = run_quality(boxed, QualityConfig(workers=2), RULES)
    assert kept and dropped  # PaLM 2 gets some of these right and some wrong
    for record in kept:
        assert math_equal(extract_answer(response_text(record)), record["meta"]["answer"])
    for record, _ in dropped:
        assert not math_equal(extract_answer(response_text(record)) or "", record["meta"]["answer"])


def test_reference_with_alternative_forms():
    """CHAMP writes some answers as 'X, or equivalently Y': either form verifies."""
    assert reference_forms("C(10, 5), or equivalently 252") == [
        "C(10, 5), or equivalently 252",
        "C(10, 5)",
        "252",
    ]
    answer = "sum_(i=1)^n i^2, or equivalently n(n+1)(2n+1)/6"
    right = to_canonical(
        {"question": "Sum of squares?", "solution": "So \\boxed{\\frac{n(n+1)(2n+1)}{6}}.", "answer": answer}
    )
    wrong = to_canonical({"question": "Sum of squares?", "solution": "So \\boxed{n^2}.", "answer": answer})
    kept, dropped = run_quality([right, wrong], QualityConfig(), RULES)
    assert [r["meta"]["id"] for r in kept] == [right["meta"]["id"]] and kept[0]["meta"]["verified"]
    assert [reason for _, reason in dropped] == ["quality: math answer wrong"]


def humaneval_records(n):
    return [to_canonical(p) for p in humaneval()[:n]]


def test_failing_code_solution_is_removed_by_the_sandbox():
    good = humaneval_records(3)
    bad = []
    for problem in humaneval()[:3]:
        broken = dict(problem, canonical_solution="    return None\n")
        bad.append(to_canonical(broken, source="broken"))
    kept, dropped = run_quality(good + bad, QualityConfig(workers=2, timeout_s=20), RULES)
    assert [r["meta"]["id"] for r in kept] == [r["meta"]["id"] for r in good]
    assert [reason for _, reason in dropped] == ["quality: code failed"] * 3


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("import time\n    time.sleep(60)\n    return 0", "timeout"),
        ("while True:\n        pass", "timeout"),
        ("x = []\n    while True:\n        x.append(bytearray(10**7))", "memory"),
        ("import socket\n    socket.create_connection(('1.1.1.1', 80))\n    return 0", "blocked"),
    ],
    ids=["sleep", "loop", "allocate", "socket"],
)
def test_hostile_programs_are_killed_and_reported(body, status):
    record = to_canonical(
        {
            "question": "Write f().",
            "solution": f"```python\ndef f():\n    {body}\n```",
            "tests": "assert f() == 0",
        }
    )
    verdict = Verifier(QualityConfig(timeout_s=1, memory_mb=256), RULES)(record)  # CPU seconds
    assert not verdict.ok and verdict.reason == f"quality: code {status}"


def test_correction_loop_regenerates_until_verified():
    rows = numeric_champ()[:2]
    wrong = [
        to_canonical(dict(r, solution=r["solution"].replace(f"\\boxed{{{r['answer']}}}", "\\boxed{-12345}")))
        for r in rows
    ]
    fixable, hopeless = wrong
    answer = fixable["meta"]["answer"]
    attempts: dict[str, int] = {}

    def script(conversation):
        prompt = conversation[-1]["content"]
        key = "fixable" if fixable["messages"][0]["content"] in prompt else "hopeless"
        attempts[key] = attempts.get(key, 0) + 1
        if key == "fixable" and attempts[key] == 2:
            return f"Recomputing carefully step by step. The final answer is \\boxed{{{answer}}}."
        return "Still guessing: \\boxed{-1}."

    backend = ScriptedBackend(script)
    cfg = QualityConfig(correction_retries=3, workers=2)
    kept, dropped = run_quality([fixable, hopeless], cfg, RULES, backend)
    assert [r["meta"]["id"] for r in kept] == [fixable["meta"]["id"]]
    assert kept[0]["meta"]["corrected_attempts"] == 2 and kept[0]["meta"]["verified"]
    assert response_text(kept[0]).endswith(f"\\boxed{{{answer}}}.")
    assert [(r["meta"]["id"], reason) for r, reason in dropped] == [
        (hopeless["meta"]["id"], "quality: math answer wrong")
    ]
    assert attempts == {"fixable": 2, "hopeless": 3}  # stops at the first verified attempt; N tries at most
    first = backend.calls[0][-1]["content"]
    assert "-12345" in first and "previous attempt" in first and "\\boxed{}" in first


def test_llm_score_drops_low_quality_open_answers():
    good = to_canonical(
        {"instruction": "Name a prime.", "output": "2 is prime: its only divisors are 1 and 2."}
    )
    poor = to_canonical({"instruction": "Name a colour.", "output": "yes"})
    backend = ScriptedBackend(lambda conv: "9" if "prime" in conv[-1]["content"] else "Score: 2")
    kept, dropped = run_quality([good, poor], QualityConfig(llm_score=True, min_score=6), RULES, backend)
    assert [r["meta"]["quality_score"] for r in kept] == [9.0]
    assert [(r["meta"]["id"], reason) for r, reason in dropped] == [
        (poor["meta"]["id"], "quality: llm score low")
    ]
