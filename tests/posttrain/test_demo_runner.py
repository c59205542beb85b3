"""The demo runner: `--track` runs one track (the toy one by default) and `--only` single stages, a
stage whose inputs are missing is named, results of the other track already in the demo dir are kept,
and summary.json carries the `real_model` section in its documented shape."""

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
        ("real_sft_data", _fake("real_sft_data", calls)),
        ("real_sft", _fake("real_sft", calls)),
        ("real_eval", _fake("real_eval", calls, {"table": table})),
    ]
    monkeypatch.setattr(run, "STAGES", stages)
    monkeypatch.setattr(
        run,
        "TRACKS",
        {"toy": ["data", "pretrain"], "real": ["cpt", "real_sft_data", "real_sft", "real_eval"]},
    )
    needs = {"pretrain": ["data"], "real_sft": ["real_sft_data"], "real_eval": ["cpt", "real_sft"]}
    monkeypatch.setattr(run, "NEEDS", needs)

    assert run.main(["--out", str(tmp_path), "--only", "real_sft"]) == 2  # a usage error, before any stage
    assert "stage real_sft needs real_sft_data" in capsys.readouterr().err and calls == []

    assert run.main(["--out", str(tmp_path), "--track", "real"]) == 0
    assert calls == ["cpt", "real_sft_data", "real_sft", "real_eval"]  # the toy track is not run
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["real_model"] == {"cpt": parity, "eval": table}
    out = capsys.readouterr().out
    assert "CPT step-0 loss: megatron-core 3.1311 vs HF 3.1309" in out and "[24.8, 35.8]" in out

    # `make demo` afterwards: the toy track only; the real model's finished results stay in the summary
    calls.clear()
    assert run.main(["--out", str(tmp_path)]) == 0
    assert calls == ["data", "pretrain"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["stages"]) == {name for name, _ in stages}
    assert summary["real_model"] == {"cpt": parity, "eval": table}
