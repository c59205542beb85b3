"""Distributed checkpoints (megatron-core dist_checkpointing, torch_dist format).

Layout of a checkpoint root (`<run_dir>/checkpoints`):

    iter_0000100/                 dist_checkpointing shards + common.pt, run.json (readable) and
                                  checksums.json (size and xxh3_64 of every other file)
    latest_checkpointed_iteration.txt

A save writes `.iter_XXXXXXX.tmp/`, renames it into place, and only then rewrites `latest`: a
crash at any point leaves `latest` naming a complete checkpoint. Every load checks the files against
checksums.json first, so a damaged shard is named instead of loading (or exporting) wrong weights. Model and optimizer states are
sharded tensors keyed by global parameter names, so a checkpoint loads under any TP/PP layout.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from megatron_infi.config.core import to_dict
from megatron_infi.config.schema import TrainConfig
from megatron_infi.errors import DataError
from megatron_infi.utils import atomic_write_json, atomic_write_text, check_across_ranks, xxh3_file

log = logging.getLogger(__name__)

LATEST_FILE = "latest_checkpointed_iteration.txt"
RUN_FILE = "run.json"
CHECKSUMS_FILE = "checksums.json"
CHECKSUM = "xxh3_64"
FORMAT_VERSION = 1
# Reshardable across TP/PP/DP; megatron-core's default for the distributed optimizer
# ('fully_sharded_model_space') fails without TE/apex ("flattened_range is not supported").
OPTIMIZER_SHARDING = {"distrib_optim_sharding_type": "fully_reshardable"}


class CheckpointError(DataError):
    pass


def iter_dirname(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def latest_iteration(root: str | Path) -> int | None:
    """The iteration `latest` names, if that checkpoint is complete on disk."""
    path = Path(root) / LATEST_FILE
    if not path.exists():
        return None
    text = path.read_text().strip()
    if not text.isdigit():
        raise CheckpointError(f"{path}: expected an iteration number, found {text[:40]!r}")
    iteration = int(text)
    if not (Path(root) / iter_dirname(iteration) / RUN_FILE).exists():
        raise CheckpointError(
            f"{path} names iteration {iteration}, but {Path(root) / iter_dirname(iteration)} is incomplete"
        )
    return iteration


def resolve_checkpoint_dir(root: str | Path, iteration: int | None = None) -> tuple[Path, int]:
    """(iter dir, iteration) for a checkpoint root, a specific iteration, or an iter dir itself."""
    root = Path(root)
    if (root / RUN_FILE).exists():
        return root, int(json.loads((root / RUN_FILE).read_text())["iteration"])
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint dir not found")
    if iteration is None:
        iteration = latest_iteration(root)
        if iteration is None:
            raise CheckpointError(f"{root}: no {LATEST_FILE} (not a checkpoint root)")
    path = root / iter_dirname(iteration)
    if not (path / RUN_FILE).exists():
        raise CheckpointError(f"{path}: checkpoint missing or incomplete (no {RUN_FILE})")
    return path, iteration


def read_run_info(ckpt_dir: str | Path) -> dict:
    path = Path(ckpt_dir) / RUN_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None


@dataclass
class TrainState:
    iteration: int = 0
    consumed_train_samples: int = 0
    consumed_valid_samples: int = 0


def _layout() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    from megatron.core import parallel_state as ps

    shape = (
        ps.get_pipeline_model_parallel_world_size(),
        ps.get_tensor_model_parallel_world_size(),
        ps.get_data_parallel_world_size(),
    )
    offset = (
        ps.get_pipeline_model_parallel_rank(),
        ps.get_tensor_model_parallel_rank(),
        ps.get_data_parallel_rank(),
    )
    return shape, offset


def _rng_state() -> dict:
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    state = {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "tracker": get_cuda_rng_tracker().get_states(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    get_cuda_rng_tracker().set_states(state["tracker"])


def _model_keys(model: list[torch.nn.Module]) -> list[str]:
    return ["model"] if len(model) == 1 else [f"model{i}" for i in range(len(model))]


def _sharded_state_dict(
    model,
    optimizer,
    scheduler,
    state: TrainState | None,
    run_info: dict | None,
    *,
    loading: bool,
    with_optimizer: bool,
    with_rng: bool,
) -> dict:
    from megatron.core.dist_checkpointing.mapping import ShardedObject
    from megatron.core.utils import unwrap_model

    sd: dict = {}
    # Unwrapped (no DDP / Float16Module) so checkpoint keys are the model's own parameter names.
    for key, chunk in zip(_model_keys(model), unwrap_model(model), strict=True):
        sd[key] = chunk.sharded_state_dict()
    if with_optimizer and optimizer is not None:
        if loading:
            from megatron_infi.training.optim import materialize_adam_state

            materialize_adam_state(optimizer)
        model_sd = {k: v for k, v in sd.items() if k.startswith("model")}
        sd["optimizer"] = optimizer.sharded_state_dict(
            model_sd, is_loading=loading, metadata=OPTIMIZER_SHARDING
        )
        if scheduler is not None:
            sd["opt_param_scheduler"] = scheduler.state_dict()
    if state is not None:
        sd["train_state"] = vars(state).copy()
    if run_info is not None:
        sd["run"] = run_info
    if with_rng:
        shape, offset = _layout()
        sd["rng_state"] = ShardedObject(
            "rng_state", _rng_state() if not loading else None, shape, offset, replica_id=0
        )
    return sd


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _run_info(cfg: TrainConfig, state: TrainState, tokenizer_info: dict, num_chunks: int, **extra) -> dict:
    shape, _ = _layout()
    return {
        "format_version": FORMAT_VERSION,
        "iteration": state.iteration,
        "stage": cfg.stage,
        "config": to_dict(cfg),
        "tokenizer": tokenizer_info,
        "parallel": {
            "pipeline": shape[0],
            "tensor": shape[1],
            "data": shape[2],
            "virtual_pipeline": num_chunks,
        },
        "distributed_optimizer": cfg.parallel.distributed_optimizer,
        "train_state": vars(state).copy(),
        **extra,
    }


def _save_atomically(
    root: Path, iteration: int, keep_last: int, sd: dict, run_info: dict, strategy=None
) -> Path:
    """Write into `.iter_X.tmp`, finish with run.json, rename into place, then point `latest` at it."""
    from megatron.core import dist_checkpointing

    final = root / iter_dirname(iteration)
    tmp = root / f".{final.name}.tmp"
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    _barrier()
    dist_checkpointing.save(sd, str(tmp), sharded_strategy=strategy)
    _barrier()
    if is_main:
        # run.json marks the checkpoint complete (latest_iteration looks for it).
        atomic_write_json(tmp / RUN_FILE, run_info)
    _barrier()
    checksums = _checksums(tmp)
    if is_main:
        atomic_write_json(tmp / CHECKSUMS_FILE, {"algorithm": CHECKSUM, "files": checksums})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(root / LATEST_FILE, f"{iteration}\n")
        _prune(root, keep_last, keep=iteration)
    _barrier()
    return final


def _checksums(ckpt_dir: Path) -> dict[str, dict]:
    """{relative path: {bytes, xxh3_64}} of every file; the ranks split the hashing of the files just
    written (still in the page cache), and every rank returns the whole record."""
    names = sorted(p.relative_to(ckpt_dir).as_posix() for p in ckpt_dir.rglob("*") if p.is_file())
    names = [n for n in names if n != CHECKSUMS_FILE]
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    mine = {
        name: {"bytes": (ckpt_dir / name).stat().st_size, CHECKSUM: xxh3_file(ckpt_dir / name)}
        for name in names[rank::world]
    }
    if world == 1:
        return mine
    gathered: list[dict] = [{} for _ in range(world)]
    dist.all_gather_object(gathered, mine)
    return dict(sorted((name, entry) for part in gathered for name, entry in part.items()))


def verify_checkpoint_files(ckpt_dir: str | Path) -> None:
    """Every file checksums.json lists is there with its size and checksum (the ranks split the work;
    all raise the first bad file). A checkpoint saved before checksums were recorded loads with a
    warning after a cheaper check: no shard is shorter than the data torch DCP's .metadata places in it."""
    ckpt_dir = Path(ckpt_dir)
    record_path = ckpt_dir / CHECKSUMS_FILE
    if not record_path.exists():
        log.warning(
            f"{ckpt_dir}: no {CHECKSUMS_FILE} (saved by an older version): file contents not verified"
        )
        check_across_ranks(
            sorted(_dcp_extents(ckpt_dir).items()), _check_extent(ckpt_dir), (CheckpointError,)
        )
        return
    try:
        record = json.loads(record_path.read_text())
        files, algorithm = record["files"], record["algorithm"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{record_path}: unreadable ({type(err).__name__}: {err})") from None
    if algorithm != CHECKSUM:
        raise CheckpointError(f"{record_path}: unknown checksum algorithm {algorithm!r}")

    def check(item: tuple[str, dict]) -> None:
        name, entry = item
        path = ckpt_dir / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing ({CHECKSUMS_FILE} lists it)")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(
                f"{path}: {size} bytes, {CHECKSUMS_FILE} records {entry['bytes']} (truncated or overwritten)"
            )
        if xxh3_file(path) != entry[CHECKSUM]:
            raise CheckpointError(
                f"{path}: content differs from {CHECKSUMS_FILE} ({CHECKSUM} mismatch): it changed after the save"
            )

    check_across_ranks(sorted(files.items()), check, (CheckpointError,))


def _dcp_extents(ckpt_dir: Path) -> dict[str, int]:
    """{shard file: the end of the last byte range torch DCP's .metadata places in it}."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(ckpt_dir)).read_metadata()
    except Exception as err:  # torch raises several types for a missing or damaged .metadata
        raise CheckpointError(f"{ckpt_dir / '.metadata'}: unreadable ({type(err).__name__}: {err})") from None
    extents: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        extents[info.relative_path] = max(extents.get(info.relative_path, 0), info.offset + info.length)
    return extents


def _check_extent(ckpt_dir: Path):
    def check(item: tuple[str, int]) -> None:
        path, end = ckpt_dir / item[0], item[1]
        size = path.stat().st_size if path.is_file() else None
        if size is None or size < end:
            raise CheckpointError(
                f"{path}: {'missing' if size is None else f'{size} bytes'}, the checkpoint's .metadata places "
                f"data up to byte {end} (truncated)"
            )

    return check


def save_checkpoint(
    root: str | Path,
    cfg: TrainConfig,
    model,
    optimizer,
    scheduler,
    state: TrainState,
    tokenizer_info: dict,
) -> Path:
    """Save atomically and point `latest` at it; prune to `checkpoint.keep_last`. All ranks call this."""
    run_info = _run_info(cfg, state, tokenizer_info, len(model))
    sd = _sharded_state_dict(
        model, optimizer, scheduler, state, run_info, loading=False, with_optimizer=True, with_rng=True
    )
    return _save_atomically(Path(root), state.iteration, cfg.checkpoint.keep_last, sd, run_info)


def save_weights(
    root: str | Path,
    cfg: TrainConfig,
    model,
    tokenizer_info: dict | None,
    iteration: int = 0,
    *,
    sharded_strategy=None,
    **extra_info,
) -> Path:
    """Model weights only (no optimizer, scheduler or RNG), with the same layout, run.json and atomic
    protocol as `save_checkpoint`: what `load_checkpoint(..., load_optimizer=False,
    load_train_state=False)` (a `checkpoint.load` start) and the HF converters read.
    `sharded_strategy` lets a caller supply the tensor data lazily (megatron_infi.checkpoints_tools.from_hf)."""
    state = TrainState(iteration=iteration)
    run_info = _run_info(cfg, state, tokenizer_info, len(model), weights_only=True, **extra_info)
    run_info["distributed_optimizer"] = False
    sd = _sharded_state_dict(
        model, None, None, state, run_info, loading=False, with_optimizer=False, with_rng=False
    )
    return _save_atomically(Path(root), iteration, cfg.checkpoint.keep_last, sd, run_info, sharded_strategy)


def _prune(root: Path, keep_last: int, keep: int) -> None:
    iters = sorted(int(p.name[5:]) for p in root.glob("iter_*") if p.name[5:].isdigit())
    for iteration in iters[:-keep_last]:
        if iteration != keep:
            shutil.rmtree(root / iter_dirname(iteration), ignore_errors=True)
    for stale in root.glob(".iter_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


# Per-group schedule values that megatron-core also uses to match saved param groups to live ones.
_SCHEDULE_KEYS = ("max_lr", "min_lr", "start_wd", "end_wd")


def _adopt_current_schedule(loaded_optimizer: dict, optimizer) -> None:
    """The run being started owns the LR/WD schedule: annealing loads the pretraining optimizer state
    (Adam moments) under a new peak and minimum LR. megatron-core matches saved param groups by a key
    that includes those values and would refuse the load, so give the saved groups the live ones
    (groups are built in the same order from the same model; on a count mismatch megatron-core's own
    error stands)."""
    saved: list[dict] = []

    def collect(node) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("param_groups"), list):
                saved.extend(node["param_groups"])
                return
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(loaded_optimizer)
    live = optimizer.param_groups
    if len(saved) != len(live):
        return
    for saved_group, live_group in zip(saved, live, strict=True):
        for key in _SCHEDULE_KEYS:
            if key in live_group:
                saved_group[key] = live_group[key]


def load_checkpoint(
    ckpt_dir: Path,
    model,
    optimizer=None,
    scheduler=None,
    *,
    load_optimizer: bool,
    load_train_state: bool,
    verify_files: bool = True,
) -> TrainState:
    """Load weights (always), optimizer + scheduler (when asked), RNG (when the layout matches).
    `verify_files=False` only where the caller has just verified them (verify_checkpoint_files)."""
    from megatron.core import dist_checkpointing

    info = read_run_info(ckpt_dir)
    if verify_files:
        verify_checkpoint_files(ckpt_dir)
    shape, _ = _layout()
    saved = info.get("parallel", {})
    same_layout = (saved.get("pipeline"), saved.get("tensor"), saved.get("data")) == shape
    has_optimizer = load_optimizer and optimizer is not None
    sd = _sharded_state_dict(
        model,
        optimizer,
        scheduler,
        TrainState() if load_train_state else None,
        None,
        loading=True,
        with_optimizer=has_optimizer,
        with_rng=load_train_state and same_layout,
    )
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        loaded = dist_checkpointing.load(sd, str(ckpt_dir))
    # megatron-core and torch DCP raise many types (DCP's derives from BaseException): name the
    # checkpoint in all of them.
    except (Exception, CheckpointException) as err:
        raise CheckpointError(f"{ckpt_dir}: failed to load ({type(err).__name__}: {err})") from err
    from megatron.core.utils import unwrap_model

    for key, chunk in zip(_model_keys(model), unwrap_model(model), strict=True):
        chunk.load_state_dict(loaded[key], strict=True)
    if has_optimizer:
        _adopt_current_schedule(loaded["optimizer"], optimizer)
        optimizer.load_state_dict(loaded["optimizer"])
        from megatron_infi.training.optim import untie_adam_steps

        untie_adam_steps(optimizer)
        if scheduler is not None and load_train_state:
            scheduler.load_state_dict(loaded["opt_param_scheduler"])
    elif optimizer is not None:
        # Weights only: a mixed-precision optimizer's fp32 main params are copies made from the
        # initial weights; without this the first step writes those back over the loaded ones.
        optimizer.reload_model_params()
    if load_train_state and same_layout:
        _set_rng_state(loaded["rng_state"])
    state = TrainState(**loaded["train_state"]) if load_train_state else TrainState()
    return state
