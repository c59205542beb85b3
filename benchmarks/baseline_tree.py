"""A git revision checked out beside this tree, for benchmarks that time a baseline and this change
in the same run and the same venv."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def checked_out(revision: str, where: Path) -> Iterator[Path]:
    """`revision` as a detached git worktree at `where`, removed on exit."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(where), revision], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], check=True)
