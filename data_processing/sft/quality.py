"""Quality (InfiAlign step 4) of the selected records: format checks, maths answers verified with
math-verify against the reference, code run in the sandbox against its tests, a correction loop
that regenerates failures (up to N times, verified again each time), and an optional LLM quality
score for open-ended samples. Verification is the shared scorers' (megatron_infi.scoring).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from megatron_infi.data_processing.sft import llm as llm_calls
from megatron_infi.data_processing.sft.config import QualityConfig
from megatron_infi.data_processing.sft.filters import RuleFilter, extract_code
from megatron_infi.data_processing.sft.records import response_text, with_response


@dataclass
class Verdict:
    ok: bool
    reason: str | None = None  # skip reason when not ok
    why: str = ""  # shown to the LLM in a correction prompt
    verified: bool = False  # a check ran (False: nothing to check against)


ALTERNATIVES = re.compile(
    r",?\s+or\s+(?:equivalently|approximately)?\s*(?:an equivalent form such as)?\s*", re.I
)


def reference_forms(answer: str) -> list[str]:
    """'C(10, 5), or equivalently 252' -> ['C(10, 5), or equivalently 252', 'C(10, 5)', '252']:
    references written with alternatives (CHAMP does) match any of their forms."""
    parts = [p.strip(" .") for p in ALTERNATIVES.split(answer) if p.strip(" .")]
    return [answer, *parts] if len(parts) > 1 else [answer]


class Verifier:
    """Checks one record: format, then maths or code; thread-safe (used from a thread pool)."""

    def __init__(self, cfg: QualityConfig, rules: RuleFilter):
        self.cfg = cfg
        self.rules = rules

    def __call__(self, record: dict[str, Any]) -> Verdict:
        meta, response = record["meta"], response_text(record)
        reason = self.rules.format_reason(record)
        if reason:
            return Verdict(
                False, f"quality: {reason}", why="the response has no final answer in the required format"
            )
        if meta["task"] == "math" and self.cfg.verify_math and meta.get("answer"):
            return self._math(response, str(meta["answer"]))
        if meta["task"] == "code" and self.cfg.verify_code and meta.get("tests"):
            return self._code(response, meta["tests"], meta.get("entry_point"))
        return Verdict(True)

    def _math(self, response: str, answer: str) -> Verdict:
        from megatron_infi.scoring.math import extract_answer, math_equal

        predicted = extract_answer(response)
        if predicted is not None and any(math_equal(predicted, form) for form in reference_forms(answer)):
            return Verdict(True, verified=True)
        return Verdict(
            False, "quality: math answer wrong", why=f"its final answer {predicted!r} is wrong", verified=True
        )

    def _code(self, response: str, tests: str, entry_point: str | None) -> Verdict:
        from megatron_infi.scoring.code import check_program

        result = check_program(
            extract_code(response),
            tests,
            entry_point,
            timeout_s=self.cfg.timeout_s,
            memory_mb=self.cfg.memory_mb,
            unsafe_no_sandbox=self.cfg.unsafe_no_sandbox,
        )
        if result.passed:
            return Verdict(True, verified=True)
        detail = (result.stderr or result.stdout or "").strip().splitlines()[-1:] or [""]
        return Verdict(
            False,
            f"quality: code {result.status}",
            why=f"the tests report {result.status}: {detail[0][:200]}",
            verified=True,
        )


def verify_all(verifier: Verifier, records: list[dict], workers: int, desc: str = "verify") -> list[Verdict]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            tqdm(
                pool.map(verifier, records),
                total=len(records),
                desc=desc,
                disable=True if len(records) < 64 else None,
            )
        )


def run_quality(
    records: list[dict[str, Any]],
    cfg: QualityConfig,
    rules: RuleFilter,
    backend: llm_calls.ChatBackend | None = None,
    seed: int = 0,
) -> tuple[list[dict], list[tuple[dict, str]]]:
    """(kept records, [(dropped record, reason)]). Corrected records carry meta.corrected_attempts."""
    verifier = Verifier(cfg, rules)
    verdicts = verify_all(verifier, records, cfg.workers)
    for record, verdict in zip(records, verdicts, strict=True):
        record["meta"]["verified"] = verdict.verified and verdict.ok
    failing = [i for i, v in enumerate(verdicts) if not v.ok]
    current = {i: records[i] for i in failing}
    for attempt in range(1, cfg.correction_retries + 1):
        if not failing or backend is None:
            break
        batch = [current[i] for i in failing]
        responses = llm_calls.correct(
            backend, batch, [verdicts[i].why for i in failing], cfg.correction_sampling, seed + attempt
        )
        candidates = [with_response(current[i], text) for i, text in zip(failing, responses, strict=True)]
        new_verdicts = verify_all(verifier, candidates, cfg.workers, desc=f"verify correction {attempt}")
        still = []
        for i, candidate, verdict in zip(failing, candidates, new_verdicts, strict=True):
            current[i] = candidate
            verdicts[i] = verdict
            if verdict.ok:
                candidate["meta"]["corrected_attempts"] = attempt
                candidate["meta"]["verified"] = verdict.verified
                records[i] = candidate
            else:
                still.append(i)
        failing = still
    dropped = [(records[i], verdicts[i].reason or "quality: failed") for i in failing]
    failed = set(failing)
    kept = [r for i, r in enumerate(records) if i not in failed]
    if cfg.llm_score and backend is not None:
        kept, low = _score_open(kept, cfg, backend, seed)
        dropped.extend(low)
    return kept, dropped


def _score_open(
    records: list[dict], cfg: QualityConfig, backend, seed: int
) -> tuple[list[dict], list[tuple[dict, str]]]:
    open_ended = [r for r in records if r["meta"]["task"] == "open"]
    scores = llm_calls.quality_scores(backend, open_ended, cfg.score_sampling, seed)
    low: list[tuple[dict, str]] = []
    low_ids = set()
    for record, score in zip(open_ended, scores, strict=True):
        # An unparsable reply is no evidence of low quality: the record stays, with no score.
        record["meta"]["quality_score"] = score
        if score is not None and score < cfg.min_score:
            low.append((record, "quality: llm score low"))
            low_ids.add(record["meta"]["id"])
    return [r for r in records if r["meta"]["id"] not in low_ids], low
