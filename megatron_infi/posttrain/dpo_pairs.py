"""DPO preference pairs from the SFT model's own errors (InfiAlign's recipe).

1. sample the model `sampling.n` times per problem through the shared generation backend;
2. verify every sample: maths with math-verify against the reference answer, code in the sandbox;
3. challenge selection: keep the problems the model gets wrong at least once;
4. pair a wrong sample (rejected) with the expert solution, verified first, or else with a
   verified-correct sample (chosen);
5. clean: length limits (tokens), format (a wrong maths sample must state an answer), dedup;
6. verify both sides again, so that no pair has a correct answer as rejected or a wrong one as chosen.

input:
  generation.model: the SFT model's HF dir (e.g. `infi sft`'s <output_dir>/<last phase>/model)
  problems: JSONL, JSON or Parquet (`infi data dpo-problems` writes them from SFT data), one problem
  per record; "prompt" (a string) or "messages" (ending with the user turn); "solution" is the expert
  solution (for code: a complete program the tests run against):
    {"id": "m1", "domain": "math", "prompt": "What is 2+3?", "answer": "5", "solution": "2+3=5"}
    {"id": "c1", "domain": "code", "prompt": "Write add(a, b).", "tests": "assert add(2, 3) == 5",
     "entry_point": "add"}
  The prompt is rendered under the config's prompt contract (`prompt:`, the same as SFT's and eval's):
  its system prompt and the instruction of the problem's domain are added, and each pair records the
  contract (meta.prompt_contract; report.json too).

output (under output_dir):
  pairs.jsonl      TRL conversational preference pairs + "meta": `infi dpo`'s data
  samples.jsonl    every sample with its verdict
  report.json, report.md, pass_rate.png

example config: launch/configs/posttrain/demo_dpo_pairs.yaml (toy), infialign_dpo_pairs.yaml
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from megatron_infi.config.core import ConfigError, dump_yaml, parse_stage_config
from megatron_infi.config.inputs import InputCheck
from megatron_infi.config.prompt import PromptContract, check_model_contract
from megatron_infi.errors import DataError, command
from megatron_infi.generation import GenerationConfig, SamplingParams
from megatron_infi.generation.preflight import check_tokenizer
from megatron_infi.logs import quiet_logs
from megatron_infi.plots import label_axes, pyplot, save_figure
from megatron_infi.posttrain.data import clean_messages
from megatron_infi.utils import (
    SkipCounter,
    atomic_write_json,
    atomic_write_text,
    read_rows,
    set_run_caches,
    write_jsonl,
)

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def _default_sampling() -> SamplingParams:
    return SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=2048, n=8, seed=0)


@dataclass
class CleaningConfig:
    max_chosen_tokens: int = 8192
    max_rejected_tokens: int = 8192
    min_response_chars: int = 16
    rejected_needs_answer: bool = (
        True  # a wrong maths sample must state a final answer (not cut off / rambling)
    )
    pairs_per_problem: int = 1

    def validate(self) -> None:
        for name in ("max_chosen_tokens", "max_rejected_tokens", "pairs_per_problem"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")


@dataclass
class DPOPairsConfig:
    problems: list[str] = field(default_factory=list)  # problem files (JSONL / JSON / Parquet)
    output_dir: str = ""
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # generation.model: the SFT model
    sampling: SamplingParams = field(default_factory=_default_sampling)  # sampling.n: samples per problem
    chosen: Literal["expert_then_sample", "expert", "sample"] = "expert_then_sample"
    prompt: PromptContract = field(default_factory=PromptContract)  # how problems become prompts
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    code_timeout_s: float = 10.0  # CPU seconds per program (the sandbox derives a wall-clock cap)
    code_memory_mb: int = 1024
    code_unsafe_no_sandbox: bool = False  # run code without the bwrap sandbox (only where it cannot)
    verify_workers: int | None = None  # threads for verification (sandboxes are subprocesses)

    def validate(self) -> None:
        if not self.problems:
            raise ConfigError("problems", "list at least one problem JSONL file")
        if not self.output_dir:
            raise ConfigError("output_dir", "set where pairs and the report go")
        if self.sampling.n > 1 and self.sampling.greedy:
            raise ConfigError(
                "sampling.temperature", f"is 0 (greedy): {self.sampling.n} samples would be identical"
            )

    def check_inputs(self, dry_run: bool = False) -> InputCheck:
        """The model's tokenizer renders the contract's prompts and the problem files parse, before any
        weights load; in a dry run a model not trained yet is noted."""
        check = InputCheck(dry_run)
        gen = self.generation
        if gen.loads_model_dir and check.present("generation.model", gen.model, "sft_model", model_dir=True):
            check_tokenizer(gen.model, "generation.model", self.prompt.render("1 + 1 = ?", "math"))
            check_model_contract(gen.model, self.prompt, "dpo-pairs")
        for j, path in enumerate(self.problems):
            if check.present(f"problems[{j}]", path):
                read_problems([path], SkipCounter(), self.prompt)
        return check


@dataclass
class Problem:
    id: str
    domain: str
    messages: list[dict[str, str]]
    answer: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    solution: str | None = None


def read_problems(paths: list[str | Path], skipped: SkipCounter, contract: PromptContract) -> list[Problem]:
    problems: list[Problem] = []
    seen_ids: set[str] = set()
    seen_prompts: set[str] = set()
    for path in paths:
        before = len(problems)
        for where, obj in read_rows(path, skipped):
            pid, domain = obj.get("id"), obj.get("domain", "math")
            if "messages" in obj:
                messages = clean_messages(obj["messages"])
            elif isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
                messages = [{"role": "user", "content": obj["prompt"]}]
            else:
                messages = "no-prompt"
            reason = None
            if not isinstance(pid, str) or not pid:
                reason = "missing-id"
            elif isinstance(messages, str):
                reason = messages
            elif messages[-1]["role"] != "user":
                reason = "prompt-does-not-end-with-user"
            elif domain not in ("math", "code"):
                reason = "unknown-domain"
            elif domain == "math" and not (
                isinstance(obj.get("answer"), str | int | float) and str(obj["answer"])
            ):
                reason = "math-without-answer"
            elif domain == "code" and not (isinstance(obj.get("tests"), str) and obj["tests"].strip()):
                reason = "code-without-tests"
            elif pid in seen_ids:
                reason = "duplicate-id"
            elif _norm(messages[-1]["content"]) in seen_prompts:
                reason = "duplicate-prompt"
            if reason:
                skipped.skip(reason, where)
                continue
            seen_ids.add(pid)
            seen_prompts.add(_norm(messages[-1]["content"]))
            solution = obj.get("solution")
            problems.append(
                Problem(
                    id=pid,
                    domain=domain,
                    messages=contract.apply(messages, domain),
                    answer=str(obj["answer"]) if domain == "math" else None,
                    tests=obj.get("tests"),
                    entry_point=obj.get("entry_point"),
                    solution=solution if isinstance(solution, str) and solution.strip() else None,
                )
            )
        if len(problems) == before:
            raise DataError(f"{path}: no usable problem (skipped: {skipped.counts})")
    return problems


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def extract_program(text: str) -> str:
    """The last fenced Python block of a response, else the response itself."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


class Verifier:
    """Correctness of a response to a problem: math-verify for maths, the sandbox for code."""

    def __init__(self, cfg: DPOPairsConfig):
        self.cfg = cfg

    def __call__(self, item: tuple[Problem, str]) -> bool:
        problem, text = item
        if problem.domain == "math":
            from megatron_infi.scoring.math import math_equal

            return math_equal(text, problem.answer)
        from megatron_infi.scoring.code import check_program

        result = check_program(
            extract_program(text),
            problem.tests,
            entry_point=problem.entry_point,
            timeout_s=self.cfg.code_timeout_s,
            memory_mb=self.cfg.code_memory_mb,
            unsafe_no_sandbox=self.cfg.code_unsafe_no_sandbox,
        )
        return result.passed

    def many(self, items: list[tuple[Problem, str]]) -> list[bool]:
        from tqdm.auto import tqdm

        from megatron_infi.scoring.code import map_parallel

        results = map_parallel(self, items, workers=self.cfg.verify_workers)
        return list(tqdm(results, total=len(items), desc="verifying", leave=False))


def states_an_answer(problem: Problem, text: str) -> bool:
    if problem.domain != "math":
        return True
    from megatron_infi.scoring.math import extract_answer

    return extract_answer(text) is not None


def sample(problems: list[Problem], cfg: DPOPairsConfig) -> list[list[str]]:
    """`sampling.n` responses per problem from the generation backend (cached and resumable)."""
    from megatron_infi.generation import build_backend

    backend = build_backend(cfg.generation)
    samples = backend.chat([p.messages for p in problems], cfg.sampling)
    if len(samples) != len(problems) or any(len(s) != cfg.sampling.n for s in samples):
        raise RuntimeError(
            f"backend returned {[len(s) for s in samples]} samples for {len(problems)} problems"
        )
    return samples


def build_pairs(
    problems: list[Problem],
    samples: list[list[str]],
    verdicts: list[list[bool]],
    expert_ok: dict[str, bool],
    cfg: DPOPairsConfig,
    token_count,
    dropped: SkipCounter,
) -> list[dict[str, Any]]:
    """Challenge selection, pairing and cleaning (before the final re-verification)."""
    clean = cfg.cleaning
    contract = cfg.prompt.to_dict()
    pairs = []
    for problem, texts, oks in zip(problems, samples, verdicts, strict=True):
        if all(oks):
            dropped.skip("all-samples-correct", problem.id)
            continue
        chosen = []
        if cfg.chosen != "sample" and problem.solution and expert_ok.get(problem.id):
            chosen.append(("expert", None, problem.solution))
        if cfg.chosen == "sample" or (cfg.chosen == "expert_then_sample" and not chosen):
            chosen += [("sample", i, t) for i, (t, ok) in enumerate(zip(texts, oks, strict=True)) if ok]
        chosen = [c for c in chosen if token_count(c[2]) <= clean.max_chosen_tokens]
        if not chosen:
            dropped.skip("no-verified-chosen", problem.id)
            continue
        rejected, seen = [], set()
        for index, (text, ok) in enumerate(zip(texts, oks, strict=True)):
            reason = None
            if ok:
                continue
            if len(text.strip()) < clean.min_response_chars:
                reason = "rejected-too-short"
            elif clean.rejected_needs_answer and not states_an_answer(problem, text):
                reason = "rejected-states-no-answer"
            elif token_count(text) > clean.max_rejected_tokens:
                reason = "rejected-too-long"
            elif _norm(text) in seen:
                reason = "rejected-duplicate"
            if reason:
                dropped.skip(reason, f"{problem.id}#{index}")
                continue
            seen.add(_norm(text))
            rejected.append((index, text))
        if not rejected:
            dropped.skip("no-usable-rejected", problem.id)
            continue
        pass_rate = sum(oks) / len(oks)
        for k, (index, text) in enumerate(rejected[: clean.pairs_per_problem]):
            source, chosen_index, chosen_text = chosen[k % len(chosen)]
            if _norm(chosen_text) == _norm(text):
                dropped.skip("chosen-equals-rejected", f"{problem.id}#{index}")
                continue
            pairs.append(
                {
                    "prompt": problem.messages,
                    "chosen": [{"role": "assistant", "content": chosen_text}],
                    "rejected": [{"role": "assistant", "content": text}],
                    "meta": {
                        "id": problem.id,
                        "domain": problem.domain,
                        "chosen_source": source,
                        "chosen_sample": chosen_index,
                        "rejected_sample": index,
                        "pass_rate": pass_rate,
                        "prompt_contract": contract,
                    },
                }
            )
    return pairs


def reverify(
    pairs: list[dict], by_id: dict[str, Problem], verifier: Verifier, dropped: SkipCounter
) -> list[dict]:
    """Drop any pair whose chosen no longer verifies or whose rejected does (flaky tests, odd parses)."""
    items = [(by_id[p["meta"]["id"]], p["chosen"][0]["content"]) for p in pairs]
    items += [(by_id[p["meta"]["id"]], p["rejected"][0]["content"]) for p in pairs]
    verdicts = verifier.many(items)
    kept = []
    for i, pair in enumerate(pairs):
        chosen_ok, rejected_ok = verdicts[i], verdicts[len(pairs) + i]
        if not chosen_ok:
            dropped.skip("reverify-chosen-failed", pair["meta"]["id"])
        elif rejected_ok:
            dropped.skip("reverify-rejected-passed", pair["meta"]["id"])
        else:
            kept.append(pair)
    return kept


def _dedup(pairs: list[dict], dropped: SkipCounter) -> list[dict]:
    kept, seen = [], set()
    for pair in pairs:
        key = hashlib.sha256(
            "\x00".join(
                [
                    _norm(pair["prompt"][-1]["content"]),
                    _norm(pair["chosen"][0]["content"]),
                    _norm(pair["rejected"][0]["content"]),
                ]
            ).encode()
        ).hexdigest()
        if key in seen:
            dropped.skip("duplicate-pair", pair["meta"]["id"])
            continue
        seen.add(key)
        kept.append(pair)
    return kept


def plot_pass_rates(rates: list[float], n: int, path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    ax.hist(rates, bins=[(i - 0.5) / n for i in range(n + 2)], edgecolor="black")
    label_axes(
        ax,
        f"fraction of {n} samples verified correct",
        "problems",
        "SFT model pass rate per problem (pairs come from < 1)",
    )
    save_figure(fig, path)


def _report_md(report: dict) -> str:
    lines = [
        "# DPO pairs report",
        "",
        f"model: `{report['model']}`, {report['samples_per_problem']} samples per problem",
        "",
        "| step | count |",
        "|---|---|",
    ]
    for key in (
        "problems",
        "expert_solutions_verified",
        "expert_solutions_failed",
        "challenging_problems",
        "pairs",
    ):
        lines.append(f"| {key.replace('_', ' ')} | {report[key]} |")
    lines += [
        "",
        f"mean pass rate: {report['mean_pass_rate']:.3f}",
        "",
        "| dropped / skipped | count |",
        "|---|---|",
    ]
    for reason, count in sorted({**report["skipped_problems"], **report["dropped"]}.items()):
        lines.append(f"| {reason} | {count} |")
    return "\n".join(lines) + "\n"


def run_dpo_pairs(cfg: DPOPairsConfig, samples: list[list[str]] | None = None) -> dict[str, Any]:
    """Sample (unless `samples` are given, one list per problem), verify, select, pair, clean, write."""
    from transformers import AutoTokenizer

    out = Path(cfg.output_dir)
    cfg.check_inputs()
    set_run_caches(out)
    if cfg.generation.cache_dir is None:
        cfg.generation.cache_dir = str(out / "generation_cache")
    atomic_write_text(out / "resolved_config.yaml", dump_yaml(cfg))
    skipped = SkipCounter()
    problems = read_problems(cfg.problems, skipped, cfg.prompt)
    by_id = {p.id: p for p in problems}
    verifier = Verifier(cfg)

    with_expert = [p for p in problems if p.solution]
    expert_verdicts = verifier.many([(p, p.solution) for p in with_expert])
    expert_ok = {p.id: ok for p, ok in zip(with_expert, expert_verdicts, strict=True)}

    if samples is None:
        samples = sample(problems, cfg)
    flat = [(p, text) for p, texts in zip(problems, samples, strict=True) for text in texts]
    flat_verdicts = iter(verifier.many(flat))
    verdicts = [[next(flat_verdicts) for _ in texts] for texts in samples]

    tokenizer = (
        AutoTokenizer.from_pretrained(cfg.generation.model) if Path(cfg.generation.model).is_dir() else None
    )

    def token_count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False)) if tokenizer else len(text) // 4

    dropped = SkipCounter()
    pairs = build_pairs(problems, samples, verdicts, expert_ok, cfg, token_count, dropped)
    pairs = reverify(_dedup(pairs, dropped), by_id, verifier, dropped)

    write_jsonl(
        out / "samples.jsonl",
        (
            {"id": p.id, "sample": i, "correct": ok, "text": t}
            for p, texts, oks in zip(problems, samples, verdicts, strict=True)
            for i, (t, ok) in enumerate(zip(texts, oks, strict=True))
        ),
    )
    write_jsonl(out / "pairs.jsonl", pairs)
    rates = [sum(oks) / len(oks) for oks in verdicts]
    report = {
        "model": cfg.generation.model,
        "samples_per_problem": cfg.sampling.n,
        "problems": len(problems),
        "skipped_problems": skipped.counts,
        "skipped_examples": skipped.examples,
        "expert_solutions_verified": sum(expert_ok.values()),
        "expert_solutions_failed": len(expert_ok) - sum(expert_ok.values()),
        "challenging_problems": sum(1 for r in rates if r < 1.0),
        "mean_pass_rate": sum(rates) / len(rates),
        "pass_rate_histogram": dict(sorted(Counter(round(r, 4) for r in rates).items())),
        "pairs": len(pairs),
        "prompt_contract": cfg.prompt.to_dict(),
        "chosen_sources": dict(Counter(p["meta"]["chosen_source"] for p in pairs)),
        "dropped": dropped.counts,
        "pairs_file": str(out / "pairs.jsonl"),
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", _report_md(report))
    plot_pass_rates(rates, cfg.sampling.n, out / "pass_rate.png")
    return report


@command("infi dpo-pairs")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    cfg, dry_run = parse_stage_config(DPOPairsConfig, "infi dpo-pairs", __doc__, argv)
    if dry_run:
        cfg.check_inputs(dry_run=True).print_notes("dpo-pairs")
        return 0
    report = run_dpo_pairs(cfg)
    print(
        f"[dpo-pairs] {report['pairs']} pairs from {report['challenging_problems']}/{report['problems']} "
        f"challenging problems -> {report['pairs_file']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
