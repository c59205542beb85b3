"""One prompt contract across the stages: SFT data, DPO pairs and eval render the same messages for the
same problem, each output records the contract, a model trained under another one warns, and a chat
template that cannot work fails before any model weights load."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest

from megatron_infi.config.core import ConfigError, from_dict, load_config
from megatron_infi.config.prompt import (
    BOXED_INSTRUCTION,
    CONTRACT_FILE,
    PromptContract,
    PromptContractWarning,
    RecordTally,
)
from megatron_infi.data_processing.sft.records import make_record, under_contract
from megatron_infi.demo import reference_data
from megatron_infi.evaluation import run as eval_run
from megatron_infi.evaluation.benchmarks import load_benchmark
from megatron_infi.evaluation.config import EvalConfig
from megatron_infi.posttrain import common, dpo, sft
from megatron_infi.posttrain.chat import CHATML_TEMPLATE
from megatron_infi.posttrain.data import read_sft_records
from megatron_infi.posttrain.dpo_pairs import DPOPairsConfig, run_dpo_pairs
from megatron_infi.utils import SkipCounter

CONTRACT = PromptContract(system_prompt="You are a careful maths tutor.")
CONTRACT_YAML = 'prompt={system_prompt: "You are a careful maths tutor."}'
CONFIGS = Path(__file__).resolve().parents[2] / "launch" / "configs" / "posttrain"


def weightless_copy(model_dir: Path, out: Path) -> Path:
    """The model dir's config and tokenizer files without its weights: whatever reads it before
    loading weights works, anything that loads weights fails."""
    out.mkdir(parents=True)
    for path in model_dir.iterdir():
        if path.is_file() and not path.name.endswith((".safetensors", ".bin")):
            shutil.copy(path, out / path.name)
    return out


class RecordingBackend:
    """Stands in for a generation backend: answers every prompt with a boxed 0 and keeps the prompts."""

    def __init__(self):
        self.conversations = []

    def chat(self, conversations, params):
        self.conversations += conversations
        return [["So the answer is \\boxed{0}."] * params.n for _ in conversations]

    def close(self):
        pass


@pytest.fixture(scope="module")
def problems():
    found, _ = load_benchmark("gsm_symbolic", None, {"size": 2, "seed": 3})
    return found


def eval_config(tmp_path, model_dir: Path, contract_yaml: str) -> EvalConfig:
    return load_config(
        EvalConfig,
        None,
        [
            f"output_dir={tmp_path / 'eval'}",
            f"models=[{{name: sft, path: {model_dir}, mode: chat}}]",
            "benchmarks=[{name: gsm_symbolic, options: {size: 2, seed: 3}}]",
            "chat_sampling={n: 1, temperature: 0.0}",
            "cache=false",
            contract_yaml,
        ],
    )


def run_eval(tmp_path, monkeypatch, model_dir: Path, contract_yaml: str) -> tuple[dict, RecordingBackend]:
    backend = RecordingBackend()
    monkeypatch.setattr(eval_run, "build_backend", lambda cfg: backend)
    return eval_run.run_eval(eval_config(tmp_path, model_dir, contract_yaml)), backend


def test_sft_data_dpo_pairs_and_eval_render_the_same_messages(
    tmp_path, tiny_model_dir, problems, monkeypatch
):
    expected = {
        p.question: [
            {"role": "system", "content": CONTRACT.system_prompt},
            {"role": "user", "content": f"{p.question}\n{CONTRACT.suffix.math}"},
        ]
        for p in problems
    }
    # SFT data: a selected / synthesized record (sft-select, sft-synthesize) ...
    raw = [
        make_record(
            [{"role": "user", "content": p.question}, {"role": "assistant", "content": "\\boxed{1}"}],
            {"source": "gsm", "answer": p.answers[0]},
        )
        for p in problems
    ]
    prepared = [under_contract(r, CONTRACT) for r in raw]
    assert {r["messages"][1]["content"]: r["messages"][:-1] for r in prepared} == {
        m[1]["content"]: m for m in expected.values()
    }
    # ... and raw SFT records rendered by `infi sft` itself, while prepared ones stay as they are
    files = [
        reference_data.write_jsonl(tmp_path / f"{n}.jsonl", rs)
        for n, rs in (("raw", raw), ("prep", prepared))
    ]
    tally = RecordTally(CONTRACT, "sft")
    for path in files:
        records = read_sft_records([path], SkipCounter(), tally)
        assert [r["messages"][:-1] for r in records] == list(expected.values())
    assert tally.counts == {"rendered": 2, "same_contract": 2, "other_contract": 0}

    # DPO pairs: the problems in dpo-pairs' input format
    rows = [
        {"id": f"p{i}", "domain": "math", "prompt": p.question, "answer": p.answers[0],
         "solution": f"\\boxed{{{p.answers[0]}}}"}
        for i, p in enumerate(problems)
    ]  # fmt: skip
    path = reference_data.write_jsonl(tmp_path / "problems.jsonl", rows)
    cfg = load_config(
        DPOPairsConfig,
        None,
        [f"problems=[{path}]", f"output_dir={tmp_path / 'pairs'}", f"generation={{model: {tiny_model_dir}, backend: hf}}",
         "sampling={n: 2, temperature: 1.0}", "cleaning={min_response_chars: 1, rejected_needs_answer: false}", CONTRACT_YAML],
    )  # fmt: skip
    report = run_dpo_pairs(cfg, samples=[["\\boxed{-1}", "\\boxed{-2}"]] * len(problems))
    pairs = [json.loads(line) for line in (tmp_path / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert [p["prompt"] for p in pairs] == [expected[p.question] for p in problems]
    assert report["prompt_contract"] == CONTRACT.to_dict()
    assert all(p["meta"]["prompt_contract"] == CONTRACT.to_dict() for p in pairs)

    # eval: what the model is sent, and what results.json records
    model_dir = weightless_copy(tiny_model_dir, tmp_path / "model")
    results, backend = run_eval(tmp_path, monkeypatch, model_dir, CONTRACT_YAML)
    assert backend.conversations == [expected[p.question] for p in problems]
    assert results["prompt_contract"] == CONTRACT.to_dict()
    assert (
        json.loads((tmp_path / "eval" / "results.json").read_text())["prompt_contract"] == CONTRACT.to_dict()
    )


def test_a_model_trained_under_another_contract_warns_naming_both(tmp_path, tiny_model_dir, monkeypatch):
    model_dir = weightless_copy(tiny_model_dir, tmp_path / "model")
    trained = PromptContract()  # the SFT had no system prompt
    (model_dir / CONTRACT_FILE).write_text(json.dumps(trained.to_dict()))
    with pytest.warns(PromptContractWarning) as caught:
        results, _ = run_eval(tmp_path, monkeypatch, model_dir, CONTRACT_YAML)
    (warning,) = [w for w in caught if w.category is PromptContractWarning]
    text = str(warning.message)
    assert trained.digest in text and CONTRACT.digest in text
    assert "system_prompt: '' vs 'You are a careful maths tutor.'" in text
    assert results["models"]["sft"]["training_prompt_contract"] == trained.to_dict()

    # the same contract: no warning
    (model_dir / CONTRACT_FILE).write_text(json.dumps(CONTRACT.to_dict()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptContractWarning)
        run_eval(tmp_path, monkeypatch, model_dir, CONTRACT_YAML)

    # records prepared under another contract: `infi sft` warns once and keeps them as they are
    other = [under_contract(make_record([{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}],
                                        {"answer": "2"}), trained)] * 3  # fmt: skip
    path = reference_data.write_jsonl(tmp_path / "other.jsonl", other)
    tally = RecordTally(CONTRACT, "sft")
    with pytest.warns(PromptContractWarning, match="records such as .*other.jsonl:1") as caught:
        records = read_sft_records([path], SkipCounter(), tally)
    assert len([w for w in caught if w.category is PromptContractWarning]) == 1
    assert tally.counts["other_contract"] == 3
    assert records[0]["messages"] == other[0]["messages"]


def test_dpo_and_dpo_pairs_warn_about_a_model_trained_under_another_contract(tmp_path, tiny_model_dir):
    model_dir = weightless_copy(tiny_model_dir, tmp_path / "sft_model")
    (model_dir / CONTRACT_FILE).write_text(json.dumps(CONTRACT.to_dict()))
    pairs = reference_data.write_jsonl(tmp_path / "pairs.jsonl", reference_data.champ_preference_pairs()[:2])
    cfg = load_config(
        dpo.DPOStageConfig, None, [f"model={model_dir}", f"output_dir={tmp_path}", f"data=[{pairs}]"]
    )
    with pytest.warns(
        PromptContractWarning, match=r"model .* was prepared under prompt contract .* but dpo uses"
    ):
        cfg.check_inputs()
    problems = reference_data.write_jsonl(
        tmp_path / "problems.jsonl", reference_data.pair_problems(reference_data.gsm_symbolic(1))
    )
    cfg = load_config(
        DPOPairsConfig,
        None,
        [f"problems=[{problems}]", f"output_dir={tmp_path}", f"generation.model={model_dir}"],
    )
    with pytest.warns(PromptContractWarning, match="dpo-pairs uses"):
        cfg.check_inputs(dry_run=True)


def chatml_without_markers(tiny_model_dir: Path, out: Path) -> Path:
    """An ordinary ChatML model: its template renders ChatML but has no {% generation %} markers."""
    model_dir = weightless_copy(tiny_model_dir, out)
    (model_dir / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = CHATML_TEMPLATE.replace("{% generation %}", "").replace(
        "{% endgeneration %}", ""
    )
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    return model_dir


def test_a_template_without_generation_markers_fails_before_weights_load(
    tmp_path, tiny_model_dir, sft_data, monkeypatch, capsys
):
    def no_weights(*args, **kwargs):
        raise AssertionError("model weights were loaded before the chat template was checked")

    monkeypatch.setattr(common, "load_causal_lm", no_weights)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_weights)
    model_dir = chatml_without_markers(tiny_model_dir, tmp_path / "chatml")
    argv = ["--config", str(CONFIGS / "demo_sft.yaml"), f"model={model_dir}",
            f"output_dir={tmp_path / 'out'}", f"phases=[{{name: p, data: [{sft_data['phase1']}]}}]"]  # fmt: skip

    def no_tokenizer(*args, **kwargs):
        raise AssertionError("the tokenizer was loaded before the template files were checked")

    with monkeypatch.context() as files_only:
        # the model dir's files decide this refusal: no tokenizer load, no TRL (seconds each)
        files_only.setattr(sft, "check_tokenizer", no_tokenizer)
        files_only.setattr("transformers.AutoTokenizer.from_pretrained", no_tokenizer)
        files_only.setitem(sys.modules, "trl.chat_template_utils", None)
        for extra in ([], ["--dry-run"]):
            assert sft.main(argv + extra) == 2
            err = capsys.readouterr().err
            assert (
                "prompt.chat_template: auto: the model's own template has no {% generation %} markers" in err
            )
    assert not (tmp_path / "out").exists()
    # what the message suggests works, still without loading weights first
    cfg = load_config(sft.SFTStageConfig, argv[1], argv[2:] + ["prompt.chat_template=chatml"])
    assert cfg.check_inputs().notes == []

    # eval: a chat model whose tokenizer has no chat template fails before a backend is built
    monkeypatch.setattr(eval_run, "build_backend", no_weights)
    bare = weightless_copy(tiny_model_dir, tmp_path / "bare")
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"models\[0\].path: .* has no chat template"):
        eval_run.run_eval(eval_config(tmp_path, bare, "prompt={}"))


def test_dry_run_notes_inputs_a_later_stage_will_produce(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the shipped config's relative paths do not exist here
    config = CONFIGS / "infialign_dpo.yaml"
    assert dpo.main(["--config", str(config), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "model: runs/infialign/sft/advanced/model does not exist yet: will be produced by infi sft" in err
    assert (
        "data[0]: runs/infialign/dpo_pairs/pairs.jsonl does not exist yet: will be produced by infi dpo-pairs"
        in err
    )
    # a real run stops at the first missing input, naming the field and what writes it
    assert dpo.main(["--config", str(config)]) == 2
    assert (
        "model: HF model dir not found: runs/infialign/sft/advanced/model (written by infi sft"
        in capsys.readouterr().err
    )


RECIPES = {
    "demo": ["posttrain/demo_sft.yaml", "posttrain/demo_dpo_pairs.yaml", "posttrain/demo_dpo.yaml",
             "eval/demo.yaml", "sft_data/demo.yaml", "sft_data/demo_synthesize.yaml"],
    "InfiAlign": ["sft_data/infialign_select.yaml", "posttrain/infialign_sft.yaml", "posttrain/infialign_dpo_pairs.yaml",
                  "posttrain/infialign_dpo.yaml", "eval/infialign_7b.yaml"],
    "InfiR": ["sft_data/infir_synthesize.yaml", "posttrain/infir_sft.yaml", "eval/infir_1b.yaml"],
    "any SFT model": ["eval/offline.yaml"],
    "demo-real": ["sft_data/demo_real_synthesize.yaml", "sft_data/demo_real_select.yaml", "posttrain/demo_real_sft.yaml",
                  "posttrain/demo_real_dpo_pairs.yaml", "posttrain/demo_real_dpo.yaml", "eval/demo_real.yaml"],
}  # fmt: skip
# Shipped configs of stages that render no prompt: dpo-problems writes plain problems (question, answer,
# tests), which dpo-pairs renders under its contract.
NO_PROMPT = {"sft_data/infialign_dpo_problems.yaml"}
# SmolLM2's own template plus the {% generation %} markers assistant-only loss needs
TEMPLATES = {"InfiAlign": "chatml", "demo-real": "launch/configs/posttrain/smollm2_chat_template.jinja"}


def test_shipped_configs_carry_one_contract_per_recipe():
    import yaml

    root = CONFIGS.parent
    shipped = {
        p.relative_to(root).as_posix()
        for d in ("posttrain", "eval", "sft_data")
        for p in (root / d).glob("*.yaml")
    }
    covered = {name for names in RECIPES.values() for name in names}
    assert shipped - NO_PROMPT == covered, "add new configs to RECIPES"
    for recipe, names in RECIPES.items():
        contracts = {name: yaml.safe_load((root / name).read_text()).get("prompt") for name in names}
        assert all(contracts.values()), f"{recipe}: configs without a prompt section: {contracts}"
        parsed = {json.dumps(from_dict(PromptContract, c).to_dict()) for c in contracts.values()}
        assert len(parsed) == 1, f"{recipe}: the stages' prompt contracts differ: {contracts}"
        contract = PromptContract.from_record(json.loads(parsed.pop()))
        assert contract.suffix.math == BOXED_INSTRUCTION  # Qwen2.5-Math / DeepSeek-R1 maths evaluation
        assert contract.chat_template == TEMPLATES.get(recipe, "auto")
