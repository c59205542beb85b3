"""Streaming access to megatron-core distributed checkpoints (torch_dist) without materialising a model.

Writing: the model is built on the meta device (no memory), so its own `sharded_state_dict()`
fixes every key, shape, layer axis and factory exactly as the trainer will ask for them on load.
A save strategy derived from megatron-core's `TorchDistSaveShardedStrategy` then hands
torch.distributed.checkpoint a planner that produces each tensor chunk on demand, one at a time,
and writes one file per chunk: memory holds about one layer however large the model is.

Reading: one layer at a time, by asking `dist_checkpointing.load` for hand-made ShardedTensors of
that layer only; torch DCP reassembles them from whatever TP/PP shards the checkpoint holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from megatron_infi.config.schema import ParallelConfig, TrainConfig
from megatron_infi.models import architecture
from megatron_infi.models.hf_mapping import ConversionError

# (key, chunk offsets, chunk sizes) -> the chunk's tensor, in the checkpoint's global layout.
Producer = Callable[[str, tuple[int, ...], tuple[int, ...]], torch.Tensor]


class _AllocateOnMeta(TorchFunctionMode):
    """Every tensor factory call allocates on the meta device.

    `torch.device('meta')` is not enough: the CPU runtime adapter wraps torch's factories, which
    hides them from the device context manager.
    """

    def __init__(self):
        super().__init__()
        from torch.utils._device import _device_constructors

        self.names = {fn.__name__ for fn in _device_constructors()}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if getattr(func, "__name__", None) in self.names:
            kwargs["device"] = torch.device("meta")
        return func(*args, **kwargs)


def on_meta() -> TorchFunctionMode:
    return _AllocateOnMeta()


def single_process_group() -> None:
    """The converters run in one process (gloo group of one): megatron-core's checkpoint I/O needs a group."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConversionError("the converters run in one process: launch them without torchrun")
    from megatron_infi.training.distributed import init_model_parallel

    init_model_parallel(1, 1)


def build_meta_model(cfg: TrainConfig, dtype: torch.dtype):
    """The whole model (TP=1, PP=1) on the meta device, with the layer spec every backend's names match."""
    import dataclasses

    from megatron_infi.models.gpt import build_model_chunk, transformer_config
    from megatron_infi.models.spec import block_spec

    model = dataclasses.replace(cfg.model, kernels="torch")
    flat_cfg = dataclasses.replace(cfg, model=model, parallel=ParallelConfig())
    config = transformer_config(model, flat_cfg.parallel, dtype)
    config.use_cpu_initialization = True
    config.perform_initialization = False
    with on_meta():
        return build_model_chunk(
            flat_cfg, config, block_spec(model, model.num_layers), pre_process=True, post_process=True
        )


def streaming_save_strategy(produce: Producer):
    """A megatron-core save strategy whose tensor data comes from `produce`, chunk by chunk."""
    from megatron.core.dist_checkpointing.strategies.torch import (
        MCoreSavePlanner,
        TorchDistSaveShardedStrategy,
        _replace_state_dict_keys_with_sharded_keys,
        mcore_to_pyt_state_dict,
    )
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint import save as dcp_save
    from torch.distributed.checkpoint.planner import WriteItemType

    class LazyPlanner(MCoreSavePlanner):
        def resolve_data(self, write_item):
            if write_item.type == WriteItemType.BYTE_IO:
                return super().resolve_data(write_item)
            chunk = write_item.tensor_data.chunk
            sizes = tuple(chunk.sizes)
            tensor = produce(write_item.index.fqn, tuple(chunk.offsets), sizes)
            if tuple(tensor.shape) != sizes:
                raise AssertionError(
                    f"{write_item.index.fqn}: produced {tuple(tensor.shape)}, expected {sizes}"
                )
            return tensor.to(write_item.tensor_data.properties.dtype).contiguous()

    class StreamingSave(TorchDistSaveShardedStrategy):
        def save(self, sharded_state_dict, checkpoint_dir: Path):
            state_dict, _, _ = _replace_state_dict_keys_with_sharded_keys(sharded_state_dict, True)
            # One file per chunk: torch's writer keeps every tensor of a file alive until it is closed.
            writer = FileSystemWriter(str(checkpoint_dir), single_file_per_rank=False, thread_count=1)
            planner = LazyPlanner(flatten_state_dict=False, flatten_sharded_tensors=False)
            dcp_save(
                mcore_to_pyt_state_dict(state_dict, False),
                storage_writer=writer,
                planner=planner,
                no_dist=True,
            )

    return StreamingSave()


# ----------------------------------------------------------------------------- reading
def _current_checkpoint_section(section: dict) -> dict:
    """run.json files written before `checkpoint.auto_resume` was renamed `checkpoint.resume`."""
    if "auto_resume" not in section:
        return section
    section = dict(section)
    section["resume"] = section.pop("auto_resume")
    return section


class McoreCheckpoint:
    """One `iter_XXXXXXX/` dir: its run.json, resolved config and tensor metadata; reads by layer."""

    def __init__(self, load: str | Path, iteration: int | None = None):
        from megatron.core import dist_checkpointing

        from megatron_infi.config.core import from_dict
        from megatron_infi.training.checkpoint import (
            CheckpointError,
            read_run_info,
            resolve_checkpoint_dir,
            verify_checkpoint_files,
        )

        try:
            self.dir, self.iteration = resolve_checkpoint_dir(load, iteration)
            self.info = read_run_info(self.dir)
            verify_checkpoint_files(self.dir)
        except CheckpointError as err:
            raise ConversionError(str(err)) from None
        config = self.info.get("config")
        if not isinstance(config, dict) or "model" not in config:
            raise ConversionError(f"{self.dir}/run.json: no resolved config with a model section")
        self.cfg = from_dict(
            TrainConfig,
            {
                **config,
                "model": self._current_model_section(config["model"]),
                "checkpoint": _current_checkpoint_section(config.get("checkpoint", {})),
            },
        )
        self.cfg.model.validate()
        try:
            self.tensors = dist_checkpointing.load_tensors_metadata(str(self.dir))
        except Exception as err:  # megatron-core raises several types; name the dir in all of them
            raise ConversionError(
                f"{self.dir}: unreadable checkpoint metadata ({type(err).__name__}: {err})"
            ) from err

    def _current_model_section(self, model: dict) -> dict:
        """run.json files written before q/k/v biases became a fact of `model.arch` carry them as
        the field `qkv_bias`: drop it where it agrees with the architecture."""
        if "qkv_bias" not in model:
            return model
        model = dict(model)
        legacy = model.pop("qkv_bias")
        arch = architecture(model.get("arch", "llama"))
        if legacy != arch.qkv_bias:
            raise ConversionError(
                f"{self.dir}/run.json: model.qkv_bias={legacy} contradicts model.arch={arch.name}, "
                f"whose q/k/v projections {'have' if arch.qkv_bias else 'have no'} biases"
            )
        return model

    @property
    def model(self):
        return self.cfg.model

    def dtype(self, key: str) -> torch.dtype:
        return self.tensors[key].dtype

    def check_against(self, expected: dict[str, tuple[int, ...]]) -> None:
        """Every expected key is present with its shape: catches a run.json that does not describe
        the tensors (a wrong preset or hand-edited config) before anything is written."""
        for key, shape in expected.items():
            if key not in self.tensors:
                raise ConversionError(
                    f"{self.dir}: no tensor {key!r}, which model {self.model.preset!r} "
                    f"(arch {self.model.arch}) in run.json needs"
                )
            if tuple(self.tensors[key].global_shape) != tuple(shape):
                raise ConversionError(
                    f"{self.dir}: {key} has shape {tuple(self.tensors[key].global_shape)}, but the model "
                    f"in run.json (preset {self.model.preset!r}) implies {tuple(shape)}"
                )

    def _read(self, request: dict) -> dict[str, torch.Tensor]:
        from megatron.core import dist_checkpointing
        from torch.distributed.checkpoint.api import CheckpointException

        try:
            # A partial read (one layer) is intended: skip the whole-tensor coverage check.
            loaded = dist_checkpointing.load(request, str(self.dir), validate_access_integrity=False)
        except (Exception, CheckpointException) as err:
            raise ConversionError(f"{self.dir}: failed to read ({type(err).__name__}: {err})") from err
        # The result also carries the checkpoint's common (non-tensor) state: keep what was asked for.
        return {key: loaded[key] for key in request}

    def read_layer(self, keys: list[str], layer: int) -> dict[str, torch.Tensor]:
        """Layer `layer` of stacked per-layer keys ([L, ...] in the checkpoint)."""
        from megatron.core.dist_checkpointing.mapping import ShardedTensor

        num_layers = self.model.num_layers
        request = {}
        for key in keys:
            meta = self.tensors[key]
            # A [1, ...] slab of the [L, ...] tensor as a plain shard: megatron-core turns prepended-axis
            # shards into torch ShardedTensors that expect every layer to be requested locally.
            data = torch.empty((1, *meta.global_shape[1:]), dtype=meta.dtype)
            request[key] = ShardedTensor.from_rank_offsets(key, data, (0, layer, num_layers))
        return {key: tensor[0] for key, tensor in self._read(request).items()}

    def read_global(self, keys: list[str]) -> dict[str, torch.Tensor]:
        from megatron.core.dist_checkpointing.mapping import ShardedTensor

        request = {}
        for key in keys:
            meta = self.tensors[key]
            request[key] = ShardedTensor.from_rank_offsets(
                key, torch.empty(tuple(meta.global_shape), dtype=meta.dtype)
            )
        return self._read(request)
