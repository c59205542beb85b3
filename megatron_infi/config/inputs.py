"""Input checks a stage runs before it loads any model weights, and in `--dry-run`.

A real run stops at the first input that is missing or malformed, with a `ConfigError` naming the
config field. A dry run checks the inputs that exist the same way, and only notes the ones that do
not exist yet (a recipe's later stage reads what an earlier stage will write):

    model: runs/infialign/sft/advanced/model does not exist yet: will be produced by infi sft

A launcher about to run the stage now (launch/slurm/common.sh `infi_check_config`) sets
INFI_REQUIRE_INPUTS=1: its dry run then fails on a missing input, as the real run would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from megatron_infi.config.core import ConfigError

# What usually writes each kind of input; named in a dry run's note.
PRODUCERS = {
    "hf_model": "infi convert to-hf (a pretrained checkpoint) or a downloaded HF model dir",
    "sft_model": "infi sft (<output_dir>/<last phase>/model)",
    "sft_data": "infi data sft-select (phase1/phase2.jsonl) or infi data sft-synthesize (synthesized.jsonl)",
    "pairs": "infi dpo-pairs (<output_dir>/pairs.jsonl)",
    "trained_model": "infi sft / infi dpo (<output_dir>/.../model) or infi convert to-hf",
    "tokenizer_dir": "infi convert from-hf (<out>/tokenizer) or an HF model dir",
    "indexed_data": "infi data pretrain (<output_dir>/<domain>.bin/.idx)",
    "checkpoint": "infi convert from-hf (--out) or infi train (checkpoint.dir)",
    "vl_data": "infi data vl (<output_dir>/records)",
}
REQUIRE_INPUTS_ENV = "INFI_REQUIRE_INPUTS"


class InputCheck:
    def __init__(self, dry_run: bool = False):
        self.dry_run = dry_run and os.environ.get(REQUIRE_INPUTS_ENV) != "1"
        self.notes: list[str] = []

    def present(
        self,
        field: str,
        path: str | Path,
        producer: str | None = None,
        model_dir: bool = False,
        what: str | None = None,
    ) -> bool:
        """True when `path` exists and can be checked further. A missing one raises, or in a dry run is
        noted with what produces it (`producer`: a PRODUCERS key or any text)."""
        path = Path(path)
        if model_dir and path.is_dir() and not (path / "config.json").is_file():
            raise ConfigError(field, f"{path} is not an HF model dir (no config.json)")
        if path.exists():
            return True
        self.absent(field, path, what or ("HF model dir" if model_dir else "file"), producer)
        return False

    def absent(self, field: str, path: str | Path, what: str = "file", producer: str | None = None) -> None:
        """An input that is not there: an error naming `field`, or in a dry run a note."""
        made_by = PRODUCERS.get(producer, producer) if producer else None
        if not self.dry_run:
            raise ConfigError(
                field, f"{what} not found: {path}" + (f" (written by {made_by})" if made_by else "")
            )
        self.notes.append(
            f"{field}: {path} does not exist yet: "
            + (f"will be produced by {made_by}" if made_by else "provide it before the run")
        )

    def print_notes(self, stage: str) -> None:
        for note in self.notes:
            print(f"{stage}: note: {note}", file=sys.stderr)
        if self.dry_run:
            print(f"{stage}: inputs checked ({len(self.notes)} not produced yet)", file=sys.stderr)
