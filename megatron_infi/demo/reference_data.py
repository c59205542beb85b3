"""Real maths data, offline, in the post-training contracts (for tests, the demo and smoke runs).

- GSM-Symbolic (reasoning-gym): procedurally generated grade-school problems with worked solutions
  and verified answers; the "foundational" curriculum phase.
- CHAMP (champ-dataset): 270 competition problems with step-by-step solutions and answers; the
  "advanced" phase, and the source of DPO-pair problems with expert solutions.

Solutions end with `\\boxed{answer}` so that the answer extractor finds them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from megatron_infi import assets
from megatron_infi.utils import atomic_write_text

_NUMBER = re.compile(r"^-?\d+(\.\d+)?(/\d+)?$")


def boxed(answer: str) -> str:
    return f"The answer is $\\boxed{{{answer}}}$."


def gsm_symbolic(size: int, seed: int = 0) -> list[dict[str, Any]]:
    """Problems as {id, question, solution, answer}."""
    import reasoning_gym

    problems = []
    for index, item in enumerate(reasoning_gym.create_dataset("gsm_symbolic", size=size, seed=seed)):
        cot = item["metadata"]["answer_cot"]
        cot = re.sub(r"\n?####.*$", "", cot.strip()).strip()
        answer = str(item["answer"]).strip()
        problems.append(
            {
                "id": f"gsm_symbolic/{seed}/{index}",
                "question": item["question"],
                "solution": cot,
                "answer": answer,
            }
        )
    return problems


def champ(numeric_only: bool = False) -> list[dict[str, Any]]:
    """CHAMP problems as {id, question, solution, answer, category}; `numeric_only` keeps plain-number answers."""
    data = json.loads(assets.champ_json().read_text())["problems"]
    problems = []
    for key, item in data.items():
        answer = item["_answer"].strip()
        if numeric_only and not _NUMBER.match(answer):
            continue
        steps = "\n".join(step["_text"] for step in item["solution"]["steps"])
        problems.append(
            {
                "id": f"champ/{key}",
                "question": item["_text"],
                "solution": steps,
                "answer": answer,
                "category": item["category"],
            }
        )
    return problems


def champ_model_solutions(flawed_only: bool = False) -> dict[str, list[str]]:
    """Real solutions written by GPT-3.5 / GPT-4 / PaLM 2 for CHAMP problems (the texts of its
    first-wrong-step annotations); `flawed_only` keeps those annotated with a wrong step."""
    data = json.loads(assets.champ_json().read_text())["problems"]
    solutions = {}
    for key, item in data.items():
        notes = item.get("fws_annotations", {}).values()
        texts = [
            n["text"] for n in notes if n.get("text") and (not flawed_only or n.get("start_idx") is not None)
        ]
        if texts:
            solutions[f"champ/{key}"] = texts
    return solutions


def champ_preference_pairs() -> list[dict[str, Any]]:
    """TRL conversational preference records: the expert solution (chosen) against a model solution
    annotated as flawed (rejected), one pair per CHAMP problem that has one."""
    problems = {p["id"]: p for p in champ()}
    pairs = []
    for pid, texts in champ_model_solutions(flawed_only=True).items():
        p = problems[pid]
        pairs.append(
            {
                "prompt": [{"role": "user", "content": p["question"]}],
                "chosen": [{"role": "assistant", "content": f"{p['solution']}\n{boxed(p['answer'])}"}],
                "rejected": [{"role": "assistant", "content": texts[0]}],
                "meta": {"source": "champ", "id": pid, "task": "math"},
            }
        )
    return pairs


def sft_records(problems: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Canonical SFT JSONL records: user question, assistant worked solution ending in a boxed answer."""
    return [
        {
            "messages": [
                {"role": "user", "content": p["question"]},
                {"role": "assistant", "content": f"{p['solution']}\n{boxed(p['answer'])}"},
            ],
            "meta": {"source": source, "id": p["id"], "task": "math", "answer": p["answer"]},
        }
        for p in problems
    ]


def pair_problems(problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`infi dpo-pairs` input records: a maths problem with its reference answer and expert solution."""
    return [
        {
            "id": p["id"],
            "domain": "math",
            "prompt": p["question"],
            "answer": p["answer"],
            "solution": f"{p['solution']}\n{boxed(p['answer'])}",
        }
        for p in problems
    ]


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> Path:
    path = Path(path)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path
