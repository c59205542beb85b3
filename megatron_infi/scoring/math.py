"""Maths answers: pull the final answer out of a solution, and compare it with a reference by value.

`extract_answer` finds what a model meant as its final answer (the last `\\boxed{...}`, "the answer is
X", GSM8K's "#### X", else the last number). `math_equal` compares by mathematical value with
math-verify (1/2 == \\frac{1}{2} == 0.5, x = 3 == 3, {1,2} == {2,1}, 50\\% == 0.5).

math-verify bounds its own time with `signal.alarm`, which only works in the main thread; we always
turn that off (`parsing_timeout=None`, `timeout_seconds=None`) so these functions are safe in worker
threads, and bound time ourselves: in the main thread with an interval timer, elsewhere by refusing
inputs that make sympy expand without bound (power towers, huge exponents or factorials, very long
answers), which are then compared as normalised strings only.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
from collections.abc import Iterable, Iterator

# We disable math-verify's signal timeouts on purpose (see above); its one-time warning about that
# would otherwise print in every process.
logging.getLogger("math_verify").setLevel(logging.ERROR)

MAX_ANSWER_CHARS = 1000
DEFAULT_TIMEOUT_S = 5.0

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_IS = re.compile(r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*:?\s*(.+)", re.IGNORECASE)
_GSM8K_MARK = re.compile(r"####\s*(.+)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
# Inputs sympy would evaluate without bound: 10^{10000000}, 999999!, towers of powers (2^{2^{2^{30}}},
# 2^3^4). Python's big integers make 2^{2024} or 2024! instant, so those still go through.
_BIG_EXPONENT = re.compile(r"(\^|\*\*)\s*[{(]?\s*-?\d{6,}")
_BIG_FACTORIAL = re.compile(r"\d{5,}\s*!")
_NESTED_POWER = re.compile(r"(\^|\*\*)\s*(\{[^}]*|\([^)]*|[\w.]+\s*)(\^|\*\*)")


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at text[start] == '{', with nesting; None if unclosed."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed X`) in `text`."""
    found = None
    for match in _BOXED.finditer(text):
        pos = match.end()
        if pos < len(text) and text[pos] == "{":
            group = _braced(text, pos)
            if group is not None:
                found = group[0]
        elif match.group(0).endswith((" ", "\t")):
            # `\boxed 5` : the token after the space, up to `$` or whitespace
            tail = re.match(r"([^\s$]+)", text[pos:])
            if tail:
                found = tail.group(1)
    return found.strip() if found is not None else None


def _clean(answer: str) -> str:
    answer = answer.strip()
    answer = re.sub(r"^\$+|\$+$", "", answer).strip()
    answer = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", answer).strip()
    return answer.rstrip(".").strip()


def extract_answer(text: str) -> str | None:
    """The final answer a solution states, or None.

    Order: the last `\\boxed{...}` (nested braces kept); the last "answer is X" / "Answer: X" /
    "#### X" line; else the last number in the text.
    """
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    for pattern in (_GSM8K_MARK, _ANSWER_IS):
        matches = list(pattern.finditer(text))
        if matches:
            line = matches[-1].group(1).split("\n")[0]
            # "The answer is 42 because ..." -> keep the clause before a sentence break
            line = re.split(r"(?<=[^\d\s])\.\s|\.$|;\s", line.strip())[0]
            cleaned = _clean(line)
            if cleaned:
                return cleaned
    numbers = _NUMBER.findall(text)
    return numbers[-1].rstrip(".") if numbers else None


def _looks_like_solution(text: str) -> bool:
    """A whole solution (to reduce with extract_answer) rather than a bare answer."""
    return "\\boxed" in text or "\\fbox" in text or "####" in text or "\n" in text.strip() or len(text) > 120


def _too_costly(answer: str) -> bool:
    return (
        len(answer) > MAX_ANSWER_CHARS
        or bool(_BIG_EXPONENT.search(answer))
        or bool(_BIG_FACTORIAL.search(answer))
        or bool(_NESTED_POWER.search(answer))
    )


def _normalise_string(answer: str) -> str:
    answer = _clean(answer)
    answer = re.sub(r"\\text\{([^}]*)\}", r"\1", answer)
    answer = re.sub(r"\\[,;!: ]|\\left|\\right|\s+", "", answer)
    return answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").lower()


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise _Timeout after `seconds` (main thread only; elsewhere a no-op, see module doc)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _parse(answer: str):
    from math_verify import parse

    # Wrapping in $...$ makes math-verify read a bare answer (\frac12, (n+1)^{n-1}, \{1,2\}) as LaTeX.
    return parse(f"${answer}$", parsing_timeout=None)


def math_equal(prediction: str, reference: str, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> bool:
    """True when `prediction` has the same mathematical value as `reference`.

    `prediction` may be a bare answer ("1/2") or a whole solution, which is first reduced with
    `extract_answer`. Safe in worker threads; see the module doc for how time is bounded.
    """
    from math_verify import verify

    if prediction is None or reference is None:
        return False
    answer = extract_answer(prediction) if _looks_like_solution(prediction) else _clean(prediction)
    reference = last_boxed(reference) or _clean(reference)
    if not answer or not reference:
        return False
    if _normalise_string(answer) == _normalise_string(reference):
        return True
    if _too_costly(answer) or _too_costly(reference):
        return False
    try:
        with _time_limit(timeout_s):
            gold = _parse(reference)
            pred = _parse(answer)
            return bool(gold and pred and verify(gold, pred, timeout_seconds=None))
    except _Timeout:
        return False
    except Exception:  # sympy can raise nearly anything on odd input: that is "not equal", not a crash
        return False


# Words a maths answer may contain (function names); any other word makes it free text.
_MATH_WORDS = frozenset({"sqrt", "pi", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "mod"})
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")


def checkable_answer(answer: str, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> bool:
    """True when the reference answer is a mathematical value math-verify can compare by value (a
    number, an expression, a set, an interval); free text ("the limit exists", "Yes") is not."""
    answer = last_boxed(answer or "") or _clean(answer or "")
    words = re.findall(r"[A-Za-z]{2,}", _LATEX_COMMAND.sub(" ", answer))
    if not answer or _too_costly(answer) or any(w.lower() not in _MATH_WORDS for w in words):
        return False
    try:
        with _time_limit(timeout_s):
            return bool(_parse(answer))
    except _Timeout:
        return False
    except Exception:  # sympy can raise nearly anything on odd input: not checkable
        return False


def math_equal_any(
    prediction: str, references: Iterable[str], timeout_s: float | None = DEFAULT_TIMEOUT_S
) -> bool:
    """True when `prediction` equals any accepted form of the reference."""
    return any(math_equal(prediction, ref, timeout_s=timeout_s) for ref in references)
