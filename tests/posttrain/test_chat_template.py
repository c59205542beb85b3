"""The file-level template check (`check_template_files`) agrees with what the tokenizer and TRL
decide: it reads the template transformers loads, refuses only what `prepare_chat_template` refuses,
and leaves a template TRL can patch to TRL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from megatron_infi.posttrain.chat import (
    CHATML_TEMPLATE,
    ChatTemplateError,
    check_template_files,
    prepare_chat_template,
    saved_chat_template,
)

TRL_TEMPLATES = Path(__import__("trl").__file__).parent / "chat_templates"
PLAIN_CHATML = CHATML_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")


def tokenizer_dir(tiny_model_dir: Path, out: Path, jinja: str | None, config_template=None) -> Path:
    """The tiny model's tokenizer files, with `jinja` as chat_template.jinja (None: no such file)
    and `config_template` as tokenizer_config.json's chat_template (None: no such key)."""
    out.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(tiny_model_dir / name, out / name)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    if config_template is not None:
        config["chat_template"] = config_template
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    if jinja is not None:
        (out / "chat_template.jinja").write_text(jinja)
    return out


@pytest.mark.parametrize(
    "jinja, config_template",
    [
        ("{{ 'from the jinja file' }}", "{{ 'from the config' }}"),  # the .jinja file wins
        (None, "{{ 'from the config' }}"),
        (None, [{"name": "default", "template": "{{ 'default' }}"}, {"name": "tool_use", "template": "x"}]),
        (None, None),
    ],
    ids=["jinja-file", "config-string", "config-named-list", "none"],
)
def test_the_saved_template_is_the_one_the_tokenizer_loads(tmp_path, tiny_model_dir, jinja, config_template):
    model_dir = tokenizer_dir(tiny_model_dir, tmp_path / "m", jinja, config_template)
    loaded = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True).chat_template
    if isinstance(loaded, dict):
        loaded = loaded["default"]
    assert saved_chat_template(model_dir) == loaded


def test_a_template_trl_ships_is_left_to_trl_which_patches_it(tmp_path, tiny_model_dir):
    qwen = (TRL_TEMPLATES / "qwen2_5.jinja").read_text(encoding="utf-8")
    model_dir = tokenizer_dir(tiny_model_dir, tmp_path / "m", qwen)
    check_template_files(model_dir)  # no markers, but TRL has a training version: not refused here
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    assert prepare_chat_template(tokenizer) == "own+trl-training"
    assert tokenizer.chat_template == (TRL_TEMPLATES / "qwen2_5_training.jinja").read_text(encoding="utf-8")


def test_the_files_refuse_exactly_what_the_tokenizer_path_refuses(tmp_path, tiny_model_dir):
    cases = {
        "own template without markers": (tokenizer_dir(tiny_model_dir, tmp_path / "a", PLAIN_CHATML), "auto"),
        "own template with markers": (tokenizer_dir(tiny_model_dir, tmp_path / "b", CHATML_TEMPLATE), "auto"),
        "no own template": (tokenizer_dir(tiny_model_dir, tmp_path / "c", None), "auto"),
    }
    markerless = tmp_path / "plain.jinja"
    markerless.write_text(PLAIN_CHATML)
    cases["file without markers"] = (cases["no own template"][0], str(markerless))
    cases["missing file"] = (cases["no own template"][0], str(tmp_path / "missing.jinja"))

    def verdict(check, *args) -> str:
        try:
            check(*args)
        except ChatTemplateError as err:
            assert err.field == "prompt.chat_template"
            return "refused"
        return "ok"

    outcomes = {
        name: [
            verdict(check_template_files, model_dir, choice),
            verdict(prepare_chat_template, AutoTokenizer.from_pretrained(str(model_dir)), choice),
        ]
        for name, (model_dir, choice) in cases.items()
    }
    assert outcomes == {
        "own template without markers": ["refused", "refused"],
        "own template with markers": ["ok", "ok"],
        "no own template": ["ok", "ok"],
        "file without markers": ["refused", "refused"],
        "missing file": ["refused", "refused"],
    }
    # without assistant-only loss (DPO) the markers are not needed
    check_template_files(cases["own template without markers"][0], "auto", need_generation_markers=False)
