import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from megatron_infi import assets
from megatron_infi.scoring import math as math_scoring
from megatron_infi.scoring.math import extract_answer, math_equal, math_equal_any


def gsm_symbolic_items(n: int, seed: int = 7) -> list[dict]:
    import reasoning_gym

    return list(reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=seed))


def champ_numeric_answers() -> list[str]:
    problems = json.loads(assets.champ_json().read_text())["problems"]
    return [p["_answer"] for p in problems.values() if p["_answer"].lstrip("-").isdigit()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $x = \\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}"),
        ("first \\boxed{1}, then corrected: \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{\\dfrac{a^{2}}{b_{1}}} done", "\\dfrac{a^{2}}{b_{1}}"),
        ("\\fbox{7}", "7"),
        ("Adding them up, the answer is 42.", "42"),
        ("Final Answer: $\\frac{3}{4}$", "\\frac{3}{4}"),
        ("12 x 2 = 24\n24 + 34 = 58\n#### 58", "58"),
        ("She had 3 apples and bought 1,250 more", "1,250"),
        ("it is -0.5 or so", "-0.5"),
        ("no numbers at all", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("\\frac12", "1/2"),
        ("\\dfrac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"),
        ("x = 3", "3"),
        ("70.0", "70"),
        ("1,000", "1000"),
        ("(n+1)^{n-1}", "(n+1)^(n-1)"),
        ("\\{2, 1\\}", "\\{1,2\\}"),
        ("50\\%", "0.5"),
        ("[-1, 1]", "[-1,1]"),
        ("The sum is 5, so the answer is $\\boxed{\\frac{10}{2}}$.", "5"),
        ("\\text{No}", "No"),
    ],
)
def test_equivalent_forms_are_equal(prediction, reference):
    assert math_equal(prediction, reference)


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [("\\frac{1}{3}", "0.5"), ("x = 4", "3"), ("2^{n}", "2^{n-1}"), ("", "1"), ("no answer here", "7")],
)
def test_different_values_are_not_equal(prediction, reference):
    assert not math_equal(prediction, reference)


def test_gsm_symbolic_reference_solutions_verify_and_perturbed_answers_do_not():
    items = gsm_symbolic_items(25)
    for item in items:
        solution = item["metadata"]["answer_cot"]  # real worked solution ending in "#### N"
        assert extract_answer(solution) == item["answer"]
        assert math_equal(solution, item["answer"])
        assert not math_equal(solution, str(float(item["answer"]) + 1))


def test_champ_boxed_answers_verify():
    answers = champ_numeric_answers()
    assert len(answers) > 50
    for ans in answers[:40]:
        assert math_equal(f"Putting it together we get $\\boxed{{{ans}}}$.", ans)
        assert not math_equal(f"\\boxed{{{int(ans) + 3}}}", ans)
    assert math_equal_any("\\boxed{252}", ["C(10, 5)", "252"])


def test_safe_in_worker_threads():
    pairs = [("\\frac{1}{2}", "0.5"), ("\\sqrt{2}", "2^{1/2}"), ("3", "4")] * 10
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: math_equal(*p), pairs))
    assert results == [True, True, False] * 10


def test_unbounded_inputs_are_refused_quickly_in_threads():
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(lambda p: math_equal(*p), [("2^{2^{2^{2^{30}}}}", "1"), ("10^{100000000}", "1")])
        )
    assert results == [False, False]
    assert time.monotonic() - start < 5


def test_main_thread_time_limit(monkeypatch):
    def slow_parse(answer):
        time.sleep(5)
        return []

    monkeypatch.setattr(math_scoring, "_parse", slow_parse)
    start = time.monotonic()
    assert not math_equal("\\frac{1}{3}", "0.5", timeout_s=0.3)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize(
    ("answer", "checkable"),
    [
        ("42", True),
        ("\\frac{1}{2}", True),
        ("(n+1)^{n-1}", True),
        ("\\{1, 2\\}", True),
        ("(0, 1]", True),
        ("\\sqrt{2} + \\pi", True),
        ("The answer is \\boxed{7}", True),
        ("The limit exists and is finite", False),  # free text: math-verify would read letters as symbols
        ("Yes", False),
        ("3 apples", False),
        ("\\text{odd}", False),
        ("", False),
    ],
)
def test_checkable_answer_tells_values_from_free_text(answer, checkable):
    assert math_scoring.checkable_answer(answer) is checkable
