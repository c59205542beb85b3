"""Directory layout of a pretraining data run."""

from __future__ import annotations

import shutil
from pathlib import Path

from megatron_infi.config.core import ConfigError
from megatron_infi.data_processing.pipelines.config import DOMAINS

# top-level files a run writes besides `<domain>.bin/.idx` (and their `.<name>.tmp` siblings)
RUN_FILES = ("config.yaml", "manifest.json", "report.md", "funnel.png", "decontamination_report.json")


class RunLayout:
    """Where everything of a run lives under output_dir (outputs at the top, intermediates in work/)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.logs = self.root / "logs"
        self.quarantine = self.root / "quarantine"
        self.cache = self.root / "cache"
        work = self.root / "work"
        self.work = work
        self.filtered = work / "filtered"
        self.minhash = work / "minhash"
        self.final = work / "final"
        self.tokens = work / "tokens"
        self.funnel = work / "funnel"
        self.decontamination = work / "decontamination"

    def written_by_a_run(self) -> list[Path]:
        """What a run (finished or not) left here; nothing else in output_dir is touched by a clean."""
        names = [*RUN_FILES, *(f"{d}.{ext}" for d in DOMAINS for ext in ("bin", "idx"))]
        temps = [p for name in [*RUN_FILES, *DOMAINS] for p in self.root.glob(f".{name}.*")]
        folders = [self.logs, self.quarantine, self.cache, self.work]
        return [p for p in [*folders, *(self.root / n for n in names), *temps] if p.exists()]

    def clean(self) -> list[Path]:
        """Remove a previous run's files and folders so that the next run starts from scratch."""
        removed = self.written_by_a_run()
        if removed and not (self.root / "config.yaml").is_file():  # every run writes it first
            raise ConfigError(
                "output_dir", f"{self.root} holds no config.yaml of a data run: not cleaning it"
            )
        for path in removed:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        return removed
