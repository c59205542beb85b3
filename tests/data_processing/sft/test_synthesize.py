"""InfiR synthesis: evolution prompts and elimination, best-of-n rejection with the sandbox and a
reward model (a tiny random HF sequence classifier built here), and the whole stage through the
`hf` generation backend with a tiny random Llama (hidden 64, 2 layers, real Llama-3 tokenizer).
ScriptedBackend (same `chat` method as the generation backends) is used where replies must be
controlled."""

import json
import re

import pytest

from megatron_infi.config.core import from_dict, validate_tree
from megatron_infi.data_processing.sft.config import EvolutionConfig, RejectionConfig, SynthesizeConfig
from megatron_infi.data_processing.sft.evolve import evolve, pick_operation, reject
from megatron_infi.data_processing.sft.filters import RuleFilter
from megatron_infi.data_processing.sft.formats import to_canonical
from megatron_infi.data_processing.sft.prompts import EVOL_DEPTH_METHODS
from megatron_infi.data_processing.sft.records import last_prompt, response_text
from megatron_infi.demo.sft_inputs import gsm_symbolic, humaneval

pytest.importorskip("megatron_infi.generation")
pytest.importorskip("megatron_infi.scoring.code")


class ScriptedBackend:
    def __init__(self, script):
        self.script = script
        self.calls = []

    def chat(self, conversations, params):
        self.calls.extend(conversations)
        return [[self.script(conv, k) for k in range(params.n)] for conv in conversations]


def tiny_llama(tmp_path, tokenizer_dir, classifier=False):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"),
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
    )
    torch.manual_seed(0)
    model = (LlamaForSequenceClassification if classifier else LlamaForCausalLM)(config)
    out = tmp_path / ("rm" if classifier else "lm")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_evolution_prompts_rounds_and_elimination():
    seeds = [
        to_canonical({"question": r["question"], "solution": r["solution"], "answer": r["answer"]})
        for r in gsm_symbolic(6, seed=4)
    ]

    refused = last_prompt(seeds[0])[:40]

    def script(conversation, k):
        prompt = conversation[-1]["content"]
        original = re.search(r"Given Prompt#:\n(.*?)\n\n#", prompt, re.S).group(1).strip()
        if original.startswith(refused):
            return "Sorry, I cannot rewrite this."
        return f"#Rewritten Prompt#:\n{original} Explain each step and check the result twice."

    backend = ScriptedBackend(script)
    cfg = EvolutionConfig(rounds=2, operations=["constraints", "reasoning", "breadth"])
    evolved, failed = evolve(backend, seeds, cfg, seed=0)
    first_round = [e for e in evolved if len(e["meta"]["evolution"]) == 1]
    assert len(backend.calls) == len(seeds) + len(first_round)  # round 2 rewrites round 1's survivors
    assert len(first_round) == len(seeds) - 1 and len(evolved) == 2 * (len(seeds) - 1)
    assert [reason for _, reason in failed] == ["evolve: refusal"]
    for record in evolved:
        meta = record["meta"]
        assert meta["answer"] is None and meta["task"] == "math" and meta["parent"] and meta["root"]
        assert set(meta["evolution"]) <= set(cfg.operations)
        assert last_prompt(record).endswith("check the result twice.")
        assert "#" not in last_prompt(record)
    # every prompt sent was an Evol-Instruct template holding its parent instruction
    for call in backend.calls:
        text = call[-1]["content"]
        assert "#The Given Prompt#" in text or "#Given Prompt#" in text
        assert any(m in text for m in EVOL_DEPTH_METHODS.values()) or "brand new prompt" in text
    ops = {pick_operation(s["meta"]["id"], 1, cfg.operations, 0) for s in seeds}
    assert ops <= set(cfg.operations) and pick_operation("x", 1, cfg.operations, 0) == pick_operation(
        "x", 1, cfg.operations, 0
    )


def test_rejection_keeps_the_best_reward_among_candidates_that_pass_the_sandbox(tmp_path, llama3_tokenizer):
    from megatron_infi.data_processing.sft.reward import RewardModel

    problem = humaneval()[2]
    record = to_canonical(
        {"prompt": problem["prompt"], "test": problem["test"], "entry_point": problem["entry_point"]}
    )
    good_a = f"Here it is.\n```python\n{problem['prompt']}{problem['canonical_solution']}```"
    good_b = f"Using the modulo operator.\n```python\ndef {problem['entry_point']}(number: float) -> float:\n    return number % 1.0\n```"
    failing = f"```python\ndef {problem['entry_point']}(number):\n    return 0.5\n```"
    timeout = f"```python\nwhile True:\n    pass\ndef {problem['entry_point']}(number):\n    return number % 1.0\n```"
    rm = RewardModel(str(tiny_llama(tmp_path, llama3_tokenizer, classifier=True)))
    cfg = RejectionConfig(
        samples=4, timeout_s=1, workers=2
    )  # CPU seconds: a loaded machine loses no candidate
    rules = RuleFilter(languages=())
    candidates = [good_a, failing, good_b, timeout]
    kept, dropped = reject([record], [candidates], cfg, rules, rm)
    assert not dropped and len(kept) == 1
    scores = rm.score([[*record["messages"], {"role": "assistant", "content": c}] for c in (good_a, good_b)])
    assert response_text(kept[0]) == (good_a if scores[0] >= scores[1] else good_b)
    meta = kept[0]["meta"]
    assert (
        meta["pass_rate"] == 0.5
        and meta["difficulty"] == 0.5
        and meta["reward"] == pytest.approx(max(scores), abs=1e-5)
    )
    # the reward model never rescues a candidate that failed: only failures -> rejected
    kept, dropped = reject([record], [[failing, timeout]], cfg, rules, rm)
    assert not kept and dropped[0][1] in ("rejected: quality: code failed", "rejected: quality: code timeout")
    kept, dropped = reject(
        [record], [[good_a]], RejectionConfig(samples=1, min_reward=max(scores) + 1), rules, rm
    )
    assert not kept and dropped[0][1] == "rejected: reward below threshold"


def test_code_without_tests_must_run_cleanly():
    record = to_canonical({"question": "Print the squares of 1..3 in Python."}, task="code")
    ok = "```python\nfor i in range(1, 4):\n    print(i * i)\n```"
    crash = "```python\nprint(undefined_name)\n```"
    kept, dropped = reject(
        [record, record], [[ok], [crash]], RejectionConfig(samples=1), RuleFilter(languages=())
    )
    assert [response_text(r) for r in kept] == [ok]
    assert dropped[0][1] == "rejected: sandbox: code failed"


def test_synthesize_end_to_end_with_a_tiny_local_model(tmp_path, llama3_tokenizer):
    """The whole stage on CPU with a tiny random Llama as evolver, teacher and labeller (its text is
    noise: the test checks the contract and the accounting, not the quality)."""
    from megatron_infi.data_processing.sft import synthesize

    lm = tiny_llama(tmp_path, llama3_tokenizer)
    rm = tiny_llama(tmp_path, llama3_tokenizer, classifier=True)
    seeds = tmp_path / "seeds.jsonl"
    rows = [{"instruction": q["question"], "output": ""} for q in gsm_symbolic(4, seed=9)]
    seeds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {
        "inputs": [{"path": str(seeds), "format": "alpaca", "task": "open"}],
        "output_dir": str(tmp_path / "synth"),
        "llm": {"backend": "hf", "model": str(lm), "batch_size": 8},
        "evolution": {"rounds": 1, "sampling": {"max_new_tokens": 24, "temperature": 1.0}},
        "rejection": {
            "samples": 2,
            "reward_model": str(rm),
            "sampling": {"max_new_tokens": 24, "temperature": 1.0},
        },
        "filters": {"languages": [], "min_response_words": 1},
        "labeller": "llm",
        "tokenizer": str(llama3_tokenizer),
        "executor": {"tasks": 2},
    }
    cfg = from_dict(SynthesizeConfig, data)
    validate_tree(cfg)
    report = synthesize.run_synthesize(cfg)
    stats = json.loads((report.parent / "synthesis_stats.json").read_text())
    out = [json.loads(line) for line in (report.parent / "synthesized.jsonl").read_text().splitlines()]
    instructions = 4 + 4  # seeds kept + one evolved child each (or its failure)
    assert len(out) + sum(stats["dropped"].values()) == instructions
    for record in out:
        assert record["messages"][-1]["role"] == "assistant" and record["messages"][0]["role"] == "user"
        meta = record["meta"]
        assert {"reward", "quality_score", "difficulty", "pass_rate", "domain", "response_tokens"} <= set(
            meta
        )
        assert meta["domain"] in cfg.domains
        assert meta["prompt_contract"] == cfg.prompt.to_dict() == stats["prompt_contract"]
    assert "synthesis report" in report.read_text()
    assert (
        synthesize.run_stages(
            synthesize.build_stages(cfg, report.parent, str(llama3_tokenizer)),
            cfg.executor,
            report.parent / "work",
        )
        == []
    )
