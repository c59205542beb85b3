"""One exception family and one exit-code policy for every command (`infi ...`, `python -m ...`).

| exit | when                                                                                  |
|------|---------------------------------------------------------------------------------------|
| 0    | success, or a clean stop that saved its state (preemption: rerun to resume)           |
| 1    | a failure while running (`RunError`), or a bug (an unexpected exception, traceback kept) |
| 2    | a bad config (`ConfigError`) or bad input (`DataError`), found before or during the run |

Expected errors print one line on stderr, `<command>: <kind>: <message>`, and no traceback; the
message names the config field or the file (and line). Each stage's errors subclass these three, so
one wrapper, `command`, maps them for every entry point's `main`.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable


class InfiError(Exception):
    """An expected failure: a one-line message, an exit code and a short kind for the message."""

    exit_code = 1
    kind = "error"


class ConfigError(InfiError, ValueError):
    """A config problem, reported as `<dotted.field>: <message>`."""

    exit_code = 2
    kind = "config error"

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)

    def under(self, prefix: str) -> ConfigError:
        return ConfigError(f"{prefix}.{self.field}" if self.field else prefix, self.message)


class DataError(InfiError, ValueError):
    """Bad input: a file that is missing, unreadable, malformed or holds no usable record (the message
    names the file, and the line where there is one)."""

    exit_code = 2
    kind = "input error"


class RunError(InfiError, RuntimeError):
    """A failure while running that is not the input's fault (a task that did not complete, a server
    that stopped answering)."""

    exit_code = 1
    kind = "error"


class Stopped(InfiError):
    """A clean stop after saving state (a preemption signal): exit 0, rerun the command to resume."""

    exit_code = 0
    kind = "stopped"


def _rank() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def report(prog: str, err: InfiError) -> None:
    """One line on stderr. Under torchrun every rank reads the same config, so a config error is
    printed by rank 0 only; other errors may be one rank's own, so every rank prints its own."""
    rank, world = _rank()
    if isinstance(err, ConfigError) and rank != 0:
        return
    where = f"[rank {rank}] " if world > 1 else ""
    message = " ".join(str(err).split("\n"))
    print(f"{where}{prog}: {err.kind}: {message}", file=sys.stderr, flush=True)


def command(prog: str) -> Callable[[Callable[..., int | None]], Callable[..., int]]:
    """Decorate an entry point's `main(argv)`: expected errors -> one line + their exit code."""

    def wrap(main: Callable[..., int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return int(main(*args, **kwargs) or 0)
            except InfiError as err:
                report(prog, err)
                return err.exit_code

        return run

    return wrap
