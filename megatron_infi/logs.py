"""What a run prints: known-harmless library notices hidden, other warnings once, progress bars only on
a terminal. Every entry point calls `quiet_logs()` first; `INFI_SHOW_WARNINGS=1` shows everything.

Each filtered message below was read in a real run's log and traced to its source; none is caused by
our code, and none changes what a run computes (the tests that cover each path pass with it hidden):
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

SHOW_WARNINGS_ENV = "INFI_SHOW_WARNINGS"

# (warning category, message start) raised through `warnings`, and where it comes from.
HARMLESS_WARNINGS: list[tuple[type[Warning], str]] = [
    # megatron-core at import, on machines without them: our kernels / torch implementations are used.
    (UserWarning, "Transformer Engine and Apex are not installed"),
    (UserWarning, "Apex is not installed"),
    # megatron-core's TransformerConfig normalizes its own default cuda_graph_modules ("full").
    (UserWarning, "full scope is deprecated"),
    # megatron-core's models/mimo config module, imported by megatron.core.models; we do not use it.
    (UserWarning, "MimoModelConfig is experimental"),
    # megatron-core's torch_dist loader calls torch DCP with no_dist=True on every rank by design: each
    # rank reads its own shards without a collective plan (a torchrun load; resume/reshard tests pass).
    (UserWarning, "torch.distributed is disabled, unavailable or uninitialized, assuming the intent"),
    (UserWarning, "torch.distributed is unavailable or uninitialized, assuming the intent"),
    # ... and passes torch DCP's arguments positionally, and uses its ShardedTensor format.
    (UserWarning, "The argument order of load has been changed"),
    (FutureWarning, "Please use DTensor instead and we are deprecating ShardedTensor"),
    # TRL's trainers ask transformers 5 for the old attribute name (TRL's to update; nothing changes).
    (FutureWarning, "`is_gradient_checkpointing` is deprecated"),
    # megatron-core's rank lookup in a single process (the demo reading a checkpoint): rank 0 is right.
    (UserWarning, "Could not determine rank from torch.distributed, RANK, or SLURM_PROCID"),
]
# (logger name, message start) logged through `logging`, and where it comes from.
HARMLESS_LOG_RECORDS: list[tuple[str, str]] = [
    # megatron-core logs this on every GPTModel it builds (the migration to HybridModel is its own issue).
    ("megatron.core.models.gpt.gpt_model", "GPTModel IS DEPRECATED"),
    # megatron-core's synchronous torch_dist save runs its own async path internally and warns about it.
    ("megatron.core.dist_checkpointing.strategies.torch", "MCore's async save is deprecated"),
    # megatron-core: we train without its rerun (fault-injection) machinery, which it announces.
    ("megatron.core.rerun_state_machine", "Implicit initialization of Rerun State Machine"),
    ("megatron.core.rerun_state_machine", "RerunStateMachine initialized in mode RerunMode.DISABLED"),
    # torch on a CPU-only machine, when something imports torch.utils.cpp_extension.
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
]


class _DropKnown(logging.Filter):
    def __init__(self, starts: list[str]):
        super().__init__()
        self.starts = tuple(starts)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


_applied = False


def quiet_logs() -> None:
    """Hide the known-harmless notices and show other warnings once per run (unless the user chose
    warning filters with -W / PYTHONWARNINGS, or set INFI_SHOW_WARNINGS=1); progress bars off when
    stderr is not a terminal (a log file), for this process and the ones it starts."""
    global _applied
    if _applied:
        return
    _applied = True
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")  # tqdm reads TQDM_* defaults: ours, HF's, datasets'
    if os.environ.get(SHOW_WARNINGS_ENV) == "1":
        return
    if not sys.warnoptions:
        warnings.simplefilter("once")  # the first time only, not once per call site
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)  # hidden as by Python's default filters
    for category, start in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(start), category=category)
    by_logger: dict[str, list[str]] = {}
    for name, start in HARMLESS_LOG_RECORDS:
        by_logger.setdefault(name, []).append(start)
    for name, starts in by_logger.items():
        logging.getLogger(name).addFilter(_DropKnown(starts))
