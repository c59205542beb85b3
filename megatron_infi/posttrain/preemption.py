"""Checkpoint-and-stop on SLURM's warning signal for the TRL stages.

`#SBATCH --signal=B:USR1@180` warns the job before its time limit or a preemption; the sbatch
forwards SIGUSR1 to the ranks (launch/slurm/common.sh, SIGNAL_MODE=forward). This callback turns the
signal into "save a checkpoint at the end of this optimizer step, then stop"; the stage raises
`Preempted` instead of exporting, exits 0, the job requeues itself, and the rerun resumes from that
checkpoint (`checkpoint.resume`). Without it a time limit loses up to `checkpoint.save_interval`
steps of work.
"""

from __future__ import annotations

import contextlib
import functools
import signal

from megatron_infi.errors import Stopped

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(Stopped):
    """Training stopped on a signal after saving a checkpoint: rerun the same command to resume."""


class _Preemption:
    """The callback's logic; `preemption_callback()` mixes in transformers' TrainerCallback."""

    def __init__(self) -> None:
        self.requested = False
        self.stopped_at: int | None = None
        self._previous: dict[int, object] = {}

    def _request(self, signum, frame) -> None:
        self.requested = True

    def on_train_begin(self, args, state, control, **kwargs):
        for sig in SIGNALS:
            # ValueError off the main thread: no handler there (the signal keeps its default).
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._request)

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def _agreed(self) -> bool:
        """Every rank stops at the same step, even if only some saw the signal."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.requested
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([float(self.requested)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def check(self, state, what: str) -> None:
        """Raise `Preempted` when training stopped on the signal before its last step."""
        if self.stopped_at is not None and state.global_step < state.max_steps:
            raise Preempted(
                f"{what}: stopped on a signal at step {state.global_step} of {state.max_steps} after "
                "checkpointing; rerun the same command to resume"
            )


@functools.cache
def _callback_class() -> type:
    from transformers import TrainerCallback

    return type("PreemptionCallback", (_Preemption, TrainerCallback), {})


def preemption_callback() -> _Preemption:
    """A TrainerCallback instance (transformers is imported here, not for `--dry-run`)."""
    return _callback_class()()
