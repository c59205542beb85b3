"""The real model's post-training task data (megatron_infi.demo.real_posttrain): training and held-out
problems are disjoint after the decontamination step, and SFT seeds, DPO-pair problems and evaluation
all show the model the same prompt."""

from __future__ import annotations

import json

import pytest

from megatron_infi.data_processing.sft.formats import read_records
from megatron_infi.demo import real_posttrain
from megatron_infi.evaluation.benchmarks import load_benchmark
from megatron_infi.evaluation.config import BenchmarkSpec, EvalConfig, ModelSpec
from megatron_infi.evaluation.run import LoadedBenchmark, _build_inputs
from megatron_infi.utils import SkipCounter


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return real_posttrain.write_task_data(tmp_path_factory.mktemp("task"), train_size=400, pair_problems=60)


def test_held_out_and_training_problems_are_disjoint(task):
    held_out = {row["question"] for row in _rows(task["held_out"])}
    assert len(held_out) >= 200 and len(held_out) == task["stats"]["held_out"]
    seeds = _rows(task["seeds"])
    pairs = _rows(task["pair_problems"])
    assert len(seeds) == task["stats"]["synthesis_seeds"] > 100 and len(pairs) == 60
    train_questions = [row["question"].split("\n")[0] for row in seeds]
    train_questions += [row["messages"][-1]["content"].split("\n")[0] for row in pairs]
    assert not held_out & set(train_questions)
    assert len(set(train_questions)) == len(train_questions)  # seeds and pair problems disjoint too
    assert task["stats"]["train_contaminated"] > 0  # small numbers recur: the step had work to do


def test_decontamination_drops_a_held_out_problem_in_the_training_pool(task):
    held_out, _ = load_benchmark("arithmetic", None, real_posttrain.HELD_OUT)
    fresh, _ = load_benchmark("arithmetic", None, {"seed": 5_000_000, "size": 40})
    fresh = [p for p in fresh if p.question not in {h.question for h in held_out}]
    clean, dropped = real_posttrain.decontaminate([*fresh, held_out[7]], task["held_out"], ngram=3)
    assert held_out[7] not in clean and dropped >= 1


def test_sft_seeds_dpo_problems_and_evaluation_use_one_prompt(task, tmp_path):
    """The user turn synthesis answers, the DPO pairs' prompt and the eval prompt are the same text."""
    held_out, _ = load_benchmark("arithmetic", None, real_posttrain.HELD_OUT)
    spec = BenchmarkSpec(name="arithmetic", options=real_posttrain.HELD_OUT)
    cfg = EvalConfig(
        models=[ModelSpec(name="m", path="m")], benchmarks=[spec], prompt=real_posttrain.contract()
    )
    eval_prompts, _ = _build_inputs(cfg, LoadedBenchmark(spec, held_out, held_out, {}), "chat")
    assert eval_prompts[0] == real_posttrain.task_messages(held_out[0])

    seed_records = list(read_records(task["seeds"], SkipCounter(), fmt="qa"))
    pool, _ = load_benchmark("arithmetic", None, {"seed": real_posttrain.TRAIN_SEED, "size": 400})
    by_id = {p.id: p for p in pool}
    for record in seed_records[:20]:
        problem = by_id[record["meta"]["id"]]
        assert record["messages"] == real_posttrain.task_messages(problem)
        assert record["meta"]["answer"] == problem.answers[0]
    for row in _rows(task["pair_problems"])[:20]:
        assert row["messages"] == real_posttrain.task_messages(by_id[row["id"]])


@pytest.mark.slow
def test_training_chat_template_renders_like_smollm2s_own():
    """SFT / DPO train with SmolLM2's template plus {% generation %} markers; the exported model must
    prompt exactly like the base model, or the evaluation would compare different prompts."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import has_generation_markers

    from megatron_infi import assets

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(assets.smollm2_dir()))
    except assets.AssetError as err:
        pytest.skip(str(err))
    training = real_posttrain.CHAT_TEMPLATE.read_text()
    assert has_generation_markers(training) and not has_generation_markers(tokenizer.chat_template)
    turns = [{"role": "user", "content": "Calculate 5 - 33."}, {"role": "assistant", "content": "-28"}]
    for messages, prompt in [
        (turns[:1], True),
        (turns, False),
        ([{"role": "system", "content": "S"}, *turns], False),
    ]:
        own = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
        assert (
            tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=prompt, chat_template=training
            )
            == own
        )
    rendered = tokenizer.apply_chat_template(
        turns, chat_template=training, return_dict=True, return_assistant_tokens_mask=True
    )
    masked = [t for t, keep in zip(rendered["input_ids"], rendered["assistant_masks"], strict=True) if keep]
    assert tokenizer.decode(masked) == "-28<|im_end|>"  # the loss covers the answer and end of turn only
