"""InfiR synthesis, part 1: instruction evolution (Evol-Instruct in-depth / in-breadth) and
part 2: rejection sampling of teacher responses (rules, math-verify, sandbox, reward model)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from megatron_infi.data_processing.sft import llm as llm_calls
from megatron_infi.data_processing.sft import prompts
from megatron_infi.data_processing.sft.config import EvolutionConfig, QualityConfig, RejectionConfig
from megatron_infi.data_processing.sft.filters import RuleFilter, extract_code
from megatron_infi.data_processing.sft.formats import to_canonical
from megatron_infi.data_processing.sft.quality import Verifier
from megatron_infi.data_processing.sft.records import last_prompt, record_id, with_response


def pick_operation(record_id: str, round_index: int, operations: list[str], seed: int) -> str:
    """Deterministic per (record, round, seed): the same choice however the work is sharded."""
    digest = hashlib.sha1(f"{seed}:{record_id}:{round_index}".encode()).digest()
    return operations[int.from_bytes(digest[:4], "big") % len(operations)]


def evolve(
    backend: llm_calls.ChatBackend, seeds: list[dict[str, Any]], cfg: EvolutionConfig, seed: int = 0
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """(evolved records of every round, [(failed child, reason)]). Children keep the seed's
    source and task but not its answer or tests (a rewritten question has a new answer)."""
    current, evolved, failed = list(seeds), [], []
    for round_index in range(1, cfg.rounds + 1):
        if not current:
            break
        operations = [pick_operation(r["meta"]["id"], round_index, cfg.operations, seed) for r in current]
        conversations = [
            llm_calls.user(prompts.evolution_prompt(op, last_prompt(r)))
            for op, r in zip(operations, current, strict=True)
        ]
        replies = llm_calls.chat(
            backend, conversations, cfg.sampling, seed + round_index, desc=f"evolve round {round_index}"
        )
        survivors = []
        for parent, op, reply in zip(current, operations, replies, strict=True):
            text = prompts.clean_evolved(reply[0] if reply else "")
            meta = {
                "source": parent["meta"]["source"],
                "task": parent["meta"]["task"],
                "domain": parent["meta"].get("domain"),
                "parent": parent["meta"]["id"],
                "root": parent["meta"].get("root", parent["meta"]["id"]),
                "evolution": [*parent["meta"].get("evolution", []), op],
                "answer": None,
            }
            reason = prompts.evolution_failure(last_prompt(parent), text, cfg.min_words)
            if reason:
                messages = [{"role": "user", "content": text}]
                failed.append(
                    (
                        {"messages": messages, "meta": {**meta, "id": record_id(meta["source"], messages)}},
                        reason,
                    )
                )
                continue
            child = to_canonical({"messages": [{"role": "user", "content": text}], "meta": meta})
            survivors.append(child)
        evolved.extend(survivors)
        current = survivors
    return evolved, failed


def _candidate_reason(
    verifier: Verifier, rules: RuleFilter, cfg: RejectionConfig, candidate: dict
) -> str | None:
    """Why a candidate response is rejected (None: it passed every check that applies)."""
    reason = rules.response_reason(candidate)
    if reason:
        return reason
    verdict = verifier(candidate)
    if not verdict.ok:
        return verdict.reason
    meta = candidate["meta"]
    if meta["task"] == "code" and not meta.get("tests") and cfg.run_code:
        from megatron_infi.scoring.code import run_program

        result = run_program(
            extract_code(candidate["messages"][-1]["content"]),
            cfg.timeout_s,
            cfg.memory_mb,
            unsafe_no_sandbox=cfg.unsafe_no_sandbox,
        )
        if not result.passed:
            return f"sandbox: code {result.status}"
    return None


def reject(
    records: list[dict[str, Any]],
    candidates: list[list[str]],
    cfg: RejectionConfig,
    rules: RuleFilter,
    reward_model=None,
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Best-of-n per record. Kept records carry meta: reward, pass_rate, difficulty (1 - pass rate),
    candidates; a record with no passing candidate (or a best reward under min_reward) is dropped."""
    quality = QualityConfig(
        verify_math=cfg.verify_math,
        verify_code=cfg.verify_code,
        timeout_s=cfg.timeout_s,
        memory_mb=cfg.memory_mb,
        unsafe_no_sandbox=cfg.unsafe_no_sandbox,
    )
    verifier = Verifier(quality, rules)
    flat = [
        (i, with_response(r, text))
        for i, (r, texts) in enumerate(zip(records, candidates, strict=True))
        for text in texts
    ]
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        reasons = list(pool.map(lambda item: _candidate_reason(verifier, rules, cfg, item[1]), flat))
    passing: dict[int, list[dict]] = {}
    why: dict[int, dict[str, int]] = {}
    for (i, candidate), reason in zip(flat, reasons, strict=True):
        if reason is None:
            passing.setdefault(i, []).append(candidate)
        else:
            why.setdefault(i, {}).setdefault(reason, 0)
            why[i][reason] += 1
    scores: dict[int, list[float]] = {}
    if reward_model is not None and passing:
        order = [(i, k) for i in sorted(passing) for k in range(len(passing[i]))]
        values = reward_model.score([passing[i][k]["messages"] for i, k in order])
        for (i, _), value in zip(order, values, strict=True):
            scores.setdefault(i, []).append(value)
    kept, dropped = [], []
    for i, record in enumerate(records):
        n = max(1, len(candidates[i]))
        if i not in passing:
            top = max(why.get(i, {"no candidates": 1}).items(), key=lambda kv: kv[1])[0]
            dropped.append((record, f"rejected: {top}"))
            continue
        best = max(range(len(passing[i])), key=lambda k: scores[i][k]) if i in scores else 0
        chosen = passing[i][best]
        meta = chosen["meta"]
        meta["candidates"], meta["pass_rate"] = n, round(len(passing[i]) / n, 4)
        meta["difficulty"] = round(1 - len(passing[i]) / n, 4)
        if i in scores:
            meta["reward"] = round(scores[i][best], 6)
            meta["quality_score"] = meta["reward"]
            if cfg.min_reward is not None and scores[i][best] < cfg.min_reward:
                dropped.append((record, "rejected: reward below threshold"))
                continue
        kept.append(chosen)
    return kept, dropped
