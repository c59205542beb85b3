"""The full llama3.2-1b model trained with kernels=triton and with kernels=torch from the same
weights on the same batches: the same step-0 loss and gradient norm to bf16 rounding, the same loss
curve on average over 20 steps, and a falling loss (GPU; judged by kernels_model.parity_verdict)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels_model.py"


def test_triton_and_torch_loss_curves_match(tmp_path):
    spec = importlib.util.spec_from_file_location("kernels_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = Path(os.environ.get("KERNELS_RESULTS_DIR", tmp_path)) / "parity.jsonl"
    rc = module.main(["parity", "--steps", "20", "--seq", "2048", "--mb", "2", "--out", str(out)])
    record = json.loads(out.read_text().splitlines()[-1])
    assert "error" not in record, record.get("error")
    tolerances = record["tolerances"]
    for name in ("step0_loss_abs", "step0_grad_norm_rel", "mean_abs_diff"):
        assert record[name] <= tolerances[name], (name, record)
    assert record["learned"], "the model did not learn"
    assert rc == 0
