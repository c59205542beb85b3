"""The demo runner: `--only` runs the real model's track without the toy one, a stage whose inputs are
missing is named, and summary.json carries the `real_model` section in its documented shape."""

from __future__ import annotations

import json

from megatron_infi.demo import run


def _fake(name: str, calls: list[str], extra: dict | None = None):
    def stage(demo):
        calls.append(name)
        return {"summary": name, **(extra or {})}

    return stage


def test_only_skips_unselected_stages_and_names_missing_inputs(tmp_path, monkeypatch, capsys):
    calls: list[str] = []
    parity = {"step0_loss_megatron": 3.1311, "step0_loss_hf": 3.1309, "tp": 1, "pp": 2}
    table = {
        "base": {"acc": 5.0, "ci95": [2.9, 8.5], "n": 263},
        "sft": {"acc": 30.0, "ci95": [24.8, 35.8], "n": 263},
    }
    stages = [
        ("data", _fake("data", calls)),
        ("pretrain", _fake("pretrain", calls)),
        ("cpt", _fake("cpt", calls, parity)),
        ("sft_data", _fake("sft_data", calls)),
        ("sft", _fake("sft", calls)),
        ("eval", _fake("eval", calls, {"table": table})),
    ]
    monkeypatch.setattr(run, "STAGES", stages)
    monkeypatch.setattr(run, "NEEDS", {"pretrain": ["data"], "sft": ["sft_data"], "eval": ["cpt", "sft"]})

    assert run.main(["--out", str(tmp_path), "--only", "sft"]) == 1
    assert "stage sft: needs sft_data" in capsys.readouterr().err and calls == []

    assert run.main(["--out", str(tmp_path), "--only", "cpt", "sft_data", "sft", "eval"]) == 0
    assert calls == ["cpt", "sft_data", "sft", "eval"]  # the toy track (data, pretrain) is not run
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["real_model"] == {"cpt": parity, "eval": table}
    out = capsys.readouterr().out
    assert "CPT step-0 loss: megatron-core 3.1311 vs HF 3.1309" in out and "[24.8, 35.8]" in out
