"""The Hugging Face side: lazy reading of safetensors checkpoints, streaming sharded writing in the
layout `save_pretrained` produces, tokenizer files, and transformers' own models on the meta device
as the reference for expected tensor names and shapes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

from megatron_infi.checkpoints_tools.mcore_io import on_meta
from megatron_infi.models.hf_mapping import ConversionError

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
SAFETENSORS_TORCH_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
# Files that make up an HF tokenizer dir (copied verbatim, so ids and chat template are unchanged).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


def load_hf_config(hf_dir: str | Path):
    """transformers' own parsing of config.json (it normalises legacy rope fields), with clear errors."""
    from transformers import AutoConfig

    path = Path(hf_dir) / "config.json"
    if not path.exists():
        raise ConversionError(f"{hf_dir}: no config.json (not a Hugging Face model dir)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    try:
        return AutoConfig.from_pretrained(str(hf_dir), local_files_only=True)
    except (ValueError, KeyError, TypeError) as err:
        raise ConversionError(
            f"{path}: transformers cannot read it (model_type={raw.get('model_type')!r}: {err})"
        ) from None


class SafetensorsReader:
    """Tensors of an HF dir by name, read lazily one at a time (single file or sharded with an index)."""

    def __init__(self, hf_dir: str | Path):
        self.dir = Path(hf_dir)
        self._handles: dict[str, object] = {}
        self._headers: dict[str, tuple[dict, int]] = {}
        index = self.dir / SAFE_INDEX
        if index.exists():
            try:
                self.weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ConversionError(f"{index}: not a safetensors index ({err})") from None
        elif (self.dir / SAFE_WEIGHTS).exists():
            self.weight_map = dict.fromkeys(self._open(SAFE_WEIGHTS).keys(), SAFE_WEIGHTS)
        elif any(self.dir.glob("pytorch_model*.bin")):
            raise ConversionError(
                f"{self.dir}: only pytorch_model*.bin weights; re-save with safetensors "
                "(model.save_pretrained(dir, safe_serialization=True))"
            )
        else:
            raise ConversionError(f"{self.dir}: no {SAFE_WEIGHTS} or {SAFE_INDEX}")
        missing = sorted({f for f in self.weight_map.values() if not (self.dir / f).exists()})
        if missing:
            raise ConversionError(f"{index}: lists shard(s) that are missing: {', '.join(missing)}")

    def _open(self, filename: str):
        from safetensors import safe_open

        if filename not in self._handles:
            try:
                self._handles[filename] = safe_open(str(self.dir / filename), framework="pt")
            except Exception as err:  # safetensors raises its own error type for corrupt files
                raise ConversionError(f"{self.dir / filename}: unreadable safetensors file ({err})") from None
        return self._handles[filename]

    def names(self) -> set[str]:
        return set(self.weight_map)

    def file_dtype(self, name: str) -> str:
        """The dtype as stored (safetensors' name: BF16, F16, F32, ...)."""
        return self._open(self.weight_map[name]).get_slice(name).get_dtype()

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._open(self.weight_map[name]).get_slice(name).get_shape())

    def _header(self, filename: str) -> tuple[dict, int]:
        """The safetensors header of a file (its JSON) and where the data section starts."""
        if filename not in self._headers:
            path = self.dir / filename
            try:
                with open(path, "rb") as f:
                    length = int.from_bytes(f.read(8), "little")
                    header = json.loads(f.read(length))
            except (OSError, ValueError) as err:
                raise ConversionError(f"{path}: unreadable safetensors header ({err})") from None
            self._headers[filename] = (header, 8 + length)
        return self._headers[filename]

    def get(self, name: str) -> torch.Tensor:
        """One tensor, read with plain file reads: safetensors' own loader maps the file, and every
        page it touches stays in the process's RSS until the file is closed (the whole model, by
        the end of a conversion), although the converter holds one tensor."""
        if name not in self.weight_map:
            raise ConversionError(f"{self.dir}: tensor {name!r} not found in the safetensors files")
        filename = self.weight_map[name]
        header, data_start = self._header(filename)
        entry = header.get(name) or {}
        dtype = SAFETENSORS_TORCH_DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise ConversionError(
                f"{self.dir / filename}: {name!r} has unsupported dtype {entry.get('dtype')}"
            )
        start, end = entry["data_offsets"]
        buffer = bytearray(end - start)
        with open(self.dir / filename, "rb") as f:
            f.seek(data_start + start)
            if f.readinto(buffer) != len(buffer):
                raise ConversionError(f"{self.dir / filename}: truncated while reading {name!r}")
        if not buffer:
            return torch.empty(entry["shape"], dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(entry["shape"])


def expected_hf_tensors(hf_config) -> dict[str, tuple[int, ...]]:
    """Names and shapes transformers' own model class has for this config (built on the meta
    device), minus the output layer when it is tied to the embedding."""
    from transformers import AutoModelForCausalLM

    with on_meta():
        model = AutoModelForCausalLM.from_config(hf_config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if getattr(hf_config, "tie_word_embeddings", False):
        shapes.pop("lm_head.weight", None)
    return shapes


class ShardedSafetensorsWriter:
    """Writes tensors, in a planned order, into `model-0000i-of-0000N.safetensors` shards plus
    `model.safetensors.index.json` (or one `model.safetensors` when it all fits), as
    `save_pretrained` does. Holds at most one shard in memory."""

    def __init__(self, out_dir: Path, plan: list[tuple[str, int]], max_shard_bytes: int):
        self.out_dir = out_dir
        shards: list[list[str]] = [[]]
        size = 0
        for name, nbytes in plan:
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(name)
            size += nbytes
        total = len(shards)
        self.files = (
            [SAFE_WEIGHTS]
            if total == 1
            else [f"model-{i + 1:05d}-of-{total:05d}.safetensors" for i in range(total)]
        )
        self.shard_of = {name: i for i, names in enumerate(shards) for name in names}
        self.remaining = [len(names) for names in shards]
        self.total_size = sum(nbytes for _, nbytes in plan)
        self.buffers: list[dict[str, torch.Tensor]] = [{} for _ in shards]

    def add(self, name: str, tensor: torch.Tensor) -> None:
        from safetensors.torch import save_file

        if name not in self.shard_of:
            raise AssertionError(f"{name} was not planned")
        shard = self.shard_of[name]
        self.buffers[shard][name] = tensor.contiguous()
        self.remaining[shard] -= 1
        if self.remaining[shard] == 0:
            save_file(self.buffers[shard], str(self.out_dir / self.files[shard]), metadata={"format": "pt"})
            self.buffers[shard] = {}

    def finish(self) -> None:
        unwritten = [self.files[i] for i, left in enumerate(self.remaining) if left]
        if unwritten:
            raise AssertionError(f"shards not complete: {unwritten}")
        if len(self.files) > 1:
            index = {
                "metadata": {"total_size": self.total_size},
                "weight_map": {name: self.files[i] for name, i in sorted(self.shard_of.items())},
            }
            (self.out_dir / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n")


def has_tokenizer(path: str | Path | None) -> bool:
    return bool(path) and any(
        (Path(path) / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")
    )


def copy_tokenizer(src: str | Path, dst: str | Path) -> list[str]:
    """Copy a tokenizer dir's files verbatim; returns the names copied."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def tokenizer_ids(tokenizer_dir: str | Path) -> dict:
    """bos / eos / pad ids for config.json, and the generation stop ids (eos plus the chat
    template's end-of-turn token when the vocab has one)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    stops = [tok.eos_token_id] if tok.eos_token_id is not None else []
    for end_of_turn in ("<|eot_id|>", "<|im_end|>"):
        token_id = tok.convert_tokens_to_ids(end_of_turn)
        if isinstance(token_id, int) and token_id != tok.unk_token_id and token_id not in stops:
            stops.append(token_id)
    return {
        "config": {
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        "stop_ids": stops,
    }


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str | None) -> torch.dtype | None:
    if name in (None, "auto"):
        return None
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    table |= {"fp16": torch.float16, "float16": torch.float16}
    if name not in table:
        raise ConversionError(f"--dtype {name!r}: expected one of auto, {', '.join(sorted(table))}")
    return table[name]


def nbytes(shape: Iterable[int], dtype: torch.dtype) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n * torch.empty((), dtype=dtype).element_size()
