"""`quiet_logs()`: the known-harmless notices are hidden (warnings and log records), other warnings are
shown once per run, INFI_SHOW_WARNINGS=1 shows everything, progress bars stay out of log files.
Each case runs in a fresh interpreter: the filters are process-wide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = """
import logging, os, warnings
from megatron_infi.logs import quiet_logs
quiet_logs()
logging.basicConfig(format="%(message)s")
warnings.warn("Transformer Engine and Apex are not installed. Falling back to Torch optimizers.")
warnings.warn("something new went wrong")  # the same warning from two places (two ranks' code paths,
warnings.warn("something new went wrong")  # two modules): Python's default shows it twice
logging.getLogger("megatron.core.models.gpt.gpt_model").warning("GPTModel IS DEPRECATED. GPTModel is ...")
logging.getLogger("megatron.core.models.gpt.gpt_model").warning("a real problem in the model")
from tqdm import tqdm
for _ in tqdm(range(3), desc="progress-bar"):
    pass
print("TQDM_DISABLE=" + os.environ.get("TQDM_DISABLE", ""))
"""


def run(**env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONWARNINGS", "TQDM_DISABLE", "INFI_SHOW_WARNINGS")
    }
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )


def test_known_notices_hidden_others_once_and_no_bars_in_a_log():
    proc = run()
    assert "Transformer Engine and Apex" not in proc.stderr and "GPTModel IS DEPRECATED" not in proc.stderr
    assert proc.stderr.count("something new went wrong") == 1  # shown, once per run
    assert "a real problem in the model" in proc.stderr  # the logger still passes everything else
    assert "progress-bar" not in proc.stderr and "TQDM_DISABLE=1" in proc.stdout  # stderr is a pipe here


def test_the_switch_shows_everything():
    proc = run(INFI_SHOW_WARNINGS="1")
    assert "Transformer Engine and Apex" in proc.stderr and "GPTModel IS DEPRECATED" in proc.stderr
