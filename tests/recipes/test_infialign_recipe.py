"""InfiAlign as one chain: launch/recipes/infialign.yaml runs the shipped configs in order at toy scale
(raw math / code / open-ended pools from packaged data, a scripted teacher for every LLM role of the
selection, a tiny random base model, a handful of steps and records) in one temporary root. Only inputs,
sizes and models are overridden, so a stage whose input path does not match the previous stage's
output fails the test."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megatron_infi.utils import write_jsonl
from tests.recipes import harness, toy
from tests.recipes.teacher import Teacher

pytestmark = [pytest.mark.recipe, pytest.mark.slow]

MATH = dict(seed=11, n=10)
CODE = dict(n=4, start=10)
OPEN = 4
POSTTRAIN = [
    "max_length=256",
    "runtime.precision=fp32",
    "runtime.gradient_checkpointing=false",
    "logging.wandb=false",
    "logging.tensorboard=false",
]


def make_teacher() -> Teacher:
    math = toy.math_qa(**MATH)
    return Teacher(toy.solutions_for(math, toy.humaneval_qa(**CODE), toy.open_qa(OPEN)))


def infialign_sets(root, tokenizer_dir, teacher_url) -> list[str]:
    tokenizer = toy.copy_tokenizer(tokenizer_dir, root / "models" / "tokenizer")
    base = toy.tiny_causal_lm(root / "models" / "Qwen2.5-Math-7B", tokenizer)
    math = toy.math_qa(**MATH)
    for row in math[-3:]:  # no worked solution: the teacher writes the chain of thought
        del row["solution"]
    write_jsonl(root / "raw" / "math.jsonl", math)
    write_jsonl(root / "raw" / "code.jsonl", toy.humaneval_qa(**CODE))
    (root / "raw").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(toy.open_qa(OPEN)), root / "raw" / "science.parquet")
    select = toy.load("sft_data/infialign_select.yaml")
    sets = [
        f"select:inputs.0.path={root / 'raw' / 'math.jsonl'}",
        f"select:inputs.1.path={root / 'raw' / 'code.jsonl'}",
        f"select:inputs.2.path={root / 'raw' / 'science.parquet'}",
        "select:llm.backend=openai",
        f"select:llm.base_url={teacher_url}",
        "select:llm.model=teacher",
        "select:llm.batch_size=8",
        "select:executor.kind=local",
        "select:executor.tasks=1",
        "select:diversity.domain_budget=8",
        "select:diversity.cluster_budget=8",
        "select:diversity.clusters=4",
        f"select:difficulty.tokenizer={tokenizer}",
        "select:quality.workers=2",
    ]
    for i, path in enumerate(select["decontamination"]["benchmarks"]):
        sets.append(f"select:decontamination.benchmarks.{i}={toy.benchmark_file(path.split('/')[-1], root)}")
    sets += [f"sft:model={base}", *(f"sft:{s}" for s in POSTTRAIN)]
    for phase in (0, 1):
        sets += [
            f"sft:phases.{phase}.schedule.{k}"
            for k in ("max_steps=2", "global_batch_size=2", "micro_batch_size=2")
        ]
    problems = toy.load("sft_data/infialign_dpo_problems.yaml")
    for i, path in enumerate(problems["decontamination"]["benchmarks"]):
        sets.append(
            f"dpo-problems:decontamination.benchmarks.{i}={toy.benchmark_file(path.split('/')[-1], root)}"
        )
    sets += [
        "dpo-problems:target_pairs=4",
        "dpo-problems:workers=2",
        "dpo-pairs:sampling.n=2",
        "dpo-pairs:sampling.max_new_tokens=16",
        "dpo-pairs:generation.batch_size=8",
        "dpo-pairs:cleaning.rejected_needs_answer=false",  # a toy model's samples state no answer
        *(f"dpo:{s}" for s in POSTTRAIN),
        "dpo:schedule.max_steps=2",
        "dpo:schedule.global_batch_size=2",
        "dpo:schedule.micro_batch_size=1",
        *harness.benchmark_sets("eval", "eval/infialign_7b.yaml", root),
        "eval:chat_sampling.n=1",
        "eval:chat_sampling.max_new_tokens=8",
        "eval:generation.batch_size=8",
    ]
    eval_cfg = toy.load("eval/infialign_7b.yaml")
    sets += [
        f"eval:benchmarks.{i}.samples=1" for i, b in enumerate(eval_cfg["benchmarks"]) if b.get("samples")
    ]
    return sets


def test_infialign_recipe_chains_the_shipped_configs(tmp_path, llama3_tokenizer_dir):
    work, inputs = tmp_path / "work", tmp_path / "inputs"
    work.mkdir()
    teacher = make_teacher()
    try:
        harness.run("infialign", infialign_sets(inputs, llama3_tokenizer_dir, teacher.url), work, inputs)
    finally:
        teacher.close()
    runs = work / "runs" / "infialign"
    stats = json.loads((runs / "sft_data" / "selection_stats.json").read_text())
    sft = json.loads((runs / "sft" / "sft_summary.json").read_text())
    assert [p["train_records"] for p in sft["phases"]] == [
        stats["curriculum"]["phase1"],
        stats["curriculum"]["phase2"],
    ]  # both phases read the selection's Parquet output
    problems = json.loads((runs / "dpo_problems" / "report.json").read_text())
    pairs = json.loads((runs / "dpo_pairs" / "report.json").read_text())
    assert problems["problems"] == pairs["problems"] > 0 and pairs["pairs"] > 0
    results = json.loads((runs / "eval" / "results.json").read_text())
    assert set(results["scores"]) == {"InfiAlign-SFT", "InfiAlign-DPO"}
