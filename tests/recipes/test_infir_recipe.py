"""InfiR as one chain: launch/recipes/infir.yaml runs the shipped configs in order at toy scale (the
`tiny` preset converted from a random HF Llama, a handful of steps and records, a scripted teacher, a
neutral reward model) in one temporary root. Only inputs, sizes and models are overridden, so a stage
whose input path does not match the previous stage's output fails the test."""

import json

import pytest

from megatron_infi.utils import write_jsonl
from tests.recipes import harness, toy
from tests.recipes.teacher import Teacher

pytestmark = [pytest.mark.recipe, pytest.mark.slow]

TRAIN_SIZES = [
    "model.preset=tiny",
    "train.train_iters=3",
    "train.global_batch_size=2",
    "train.micro_batch_size=1",
    "train.eval_iters=1",
    "train.precision=fp32",
    "data.seq_length=64",
    'data.split="90,10,0"',  # toy corpora: the paper's 0.2% validation share would hold no document
    "data.num_workers=0",
    "schedule.warmup_iters=1",
    "logging.wandb=false",
    "logging.tensorboard=false",
]


def infir_sets(root, tokenizer_dir, teacher_url) -> list[str]:
    hf = toy.tiny_causal_lm(root / "models" / "Llama-3.2-1B", tokenizer_dir, preset="tiny")
    reward = toy.tiny_reward_model(root / "models" / "reward", tokenizer_dir)
    seeds = toy.math_qa(seed=5, n=6) + toy.humaneval_qa(2)
    write_jsonl(root / "seeds" / "seeds.jsonl", seeds)
    return [
        f"from-hf:hf={hf}",
        "from-hf:preset=tiny",
        *harness.data_pipeline_sets("data", "data/infir_pretrain.yaml", root),
        *(f"pretrain:{s}" for s in TRAIN_SIZES),
        f"synthesize:inputs.0.path={root / 'seeds' / 'seeds.jsonl'}",
        "synthesize:llm.backend=openai",
        f"synthesize:llm.base_url={teacher_url}",
        "synthesize:llm.model=teacher",
        "synthesize:llm.batch_size=8",
        "synthesize:executor.kind=local",
        "synthesize:executor.tasks=1",
        "synthesize:evolution.rounds=1",
        "synthesize:rejection.samples=2",
        f"synthesize:rejection.reward_model={reward}",
        "synthesize:rejection.workers=2",
        *harness.data_pipeline_sets("anneal-data", "data/infir_anneal.yaml", root),
        *(f"anneal:{s}" for s in TRAIN_SIZES),
        "sft:max_length=256",
        "sft:phases.0.schedule.max_steps=2",
        "sft:phases.0.schedule.global_batch_size=2",
        "sft:phases.0.schedule.micro_batch_size=2",
        "sft:runtime.precision=fp32",
        "sft:runtime.gradient_checkpointing=false",
        "sft:logging.wandb=false",
        "sft:logging.tensorboard=false",
        *harness.benchmark_sets("eval", "eval/infir_1b.yaml", root),
        "eval:generation.batch_size=8",
        "eval:chat_sampling.max_new_tokens=8",
        "eval:fewshot_sampling.max_new_tokens=8",
    ]


def test_infir_recipe_chains_the_shipped_configs(tmp_path, llama3_tokenizer_dir):
    work, inputs = tmp_path / "work", tmp_path / "inputs"
    work.mkdir()
    seeds = toy.math_qa(seed=5, n=6)
    teacher = Teacher(toy.solutions_for(seeds, toy.humaneval_qa(2)))
    try:
        sets = infir_sets(inputs, llama3_tokenizer_dir, teacher.url)
        harness.run("infir", sets, work, inputs)
    finally:
        teacher.close()
    runs = work / "runs" / "infir-1b"
    synthesized = (runs / "sft_data" / "synthesis_stats.json").read_text()
    kept = json.loads(synthesized)["kept"]
    anneal = json.loads((runs / "anneal_data" / "manifest.json").read_text())
    assert kept > 0 and 0 < anneal["domains"]["synthetic"]["documents"] <= kept
    sft = json.loads((runs / "sft" / "sft_summary.json").read_text())
    assert sft["phases"][0]["train_records"] == kept  # the SFT read the synthesis output, Parquet
    results = json.loads((runs / "eval" / "results.json").read_text())
    assert set(results["scores"]) == {"InfiR-1B-Base", "InfiR-1B-Instruct"}
    assert set(results["scores"]["InfiR-1B-Base"]) == {"mmlu", "gsm8k", "MATH", "humaneval", "mbpp"}
