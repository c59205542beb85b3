"""Directory layout of a pretraining data run."""

from __future__ import annotations

from pathlib import Path


class RunLayout:
    """Where everything of a run lives under output_dir (outputs at the top, intermediates in work/)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.logs = self.root / "logs"
        self.quarantine = self.root / "quarantine"
        work = self.root / "work"
        self.filtered = work / "filtered"
        self.minhash = work / "minhash"
        self.final = work / "final"
        self.tokens = work / "tokens"
        self.funnel = work / "funnel"
        self.decontamination = work / "decontamination"
