"""megatron-core distributed checkpoint (any TP/PP, plain or distributed optimizer) -> Hugging Face dir.

    infi convert to-hf --load CKPT [--iteration I] --out DIR [--dtype auto|bf16|fp32]
                       [--max-shard-size 5GB] [--tokenizer DIR]

Everything comes from the checkpoint: the model config from run.json, the tokenizer it recorded
(checked against its sha256), the tensors read one layer at a time (torch DCP reassembles the
TP/PP shards into the global layout) and mapped by the architecture's rules. Megatron's vocab
padding is stripped. The output - config.json, sharded safetensors with an index,
generation_config.json and the tokenizer files - is written to a temp dir and renamed into place;
it loads with AutoModelForCausalLM and vLLM.

input:
  --load CKPT: a checkpoint root written by `infi train` (<run_dir>/checkpoints; the newest
  iteration unless --iteration) or by `infi convert from-hf`, or one iter_XXXXXXX dir

output (under --out DIR):
  config.json, model-0000N-of-0000M.safetensors + model.safetensors.index.json,
  generation_config.json, tokenizer files: the `model` of `infi sft` / `infi eval`

example: infi convert to-hf --load runs/demo/anneal/checkpoints --out runs/demo/hf
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from megatron_infi.checkpoints_tools import hf_io
from megatron_infi.config.core import command_parser
from megatron_infi.errors import command
from megatron_infi.logs import quiet_logs
from megatron_infi.models import architecture
from megatron_infi.models.hf_mapping import ConversionError, to_hf
from megatron_infi.training import patches

DEFAULT_MAX_SHARD = "5GB"


def parse_size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    upper = text.strip().upper()
    for unit, factor in units.items():
        if upper.endswith(unit) and upper[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(upper[: -len(unit)]) * factor)
    if upper.isdigit():
        return int(upper)
    raise ConversionError(f"--max-shard-size {text!r}: expected a size such as 5GB or 500MB")


def expected_mcore_shapes(cfg, dtype: torch.dtype) -> dict[str, tuple[int, ...]]:
    """Global checkpoint shapes for this config, from the model itself (built on the meta device)."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    from megatron_infi.checkpoints_tools.mcore_io import build_meta_model

    layers = cfg.model.num_layers
    shapes = {}
    for item in nested_values(build_meta_model(cfg, dtype).sharded_state_dict()):
        if isinstance(item, ShardedTensor):
            shapes[item.key] = tuple(item.global_shape)
        elif isinstance(item, ShardedTensorFactory):  # fused gate/up: one layer's full tensor
            prefix = (layers,) if item.key.startswith("decoder.layers.") else ()
            shapes[item.key] = prefix + tuple(item.data.shape)
    return shapes


def resolve_tokenizer(info: dict, ckpt_dir: Path, override: str | None) -> Path | None:
    """The tokenizer dir to export: `override`, else the one run.json records (same sha256)."""
    from megatron_infi.utils import sha256_file

    if override:
        if not hf_io.has_tokenizer(override):
            raise ConversionError(f"--tokenizer {override}: not a tokenizer dir")
        return Path(override)
    recorded = info.get("tokenizer") or {}
    path = recorded.get("path")
    if not path or path == "mock":
        return None
    if not hf_io.has_tokenizer(path):
        raise ConversionError(
            f"{ckpt_dir}/run.json records tokenizer {path}, which is missing: pass --tokenizer DIR"
        )
    sha = recorded.get("sha256")
    if sha and (Path(path) / "tokenizer.json").exists() and sha256_file(Path(path) / "tokenizer.json") != sha:
        raise ConversionError(
            f"{path}/tokenizer.json changed since {ckpt_dir} was written (sha256 differs): "
            "pass --tokenizer DIR to export a specific one"
        )
    return Path(path)


def _ordinary_permissions(directory: Path) -> None:
    """The temp dir (mkdtemp) and safetensors files are created owner-only; a model dir is read by
    other users (a serving container): give them the umask's usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def _looks_like_hf_dir(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("model*.safetensors*"))


def export(
    load: str | Path,
    out_dir: str | Path,
    iteration: int | None = None,
    *,
    dtype: str | None = None,
    tokenizer: str | None = None,
    max_shard_size: str = DEFAULT_MAX_SHARD,
) -> Path:
    """Export checkpoint `load` (a root or an iter dir) to `out_dir`; returns `out_dir`.

    Replaces `out_dir` only when it is empty or a previous HF export."""
    from tqdm import tqdm
    from transformers import GenerationConfig

    from megatron_infi.checkpoints_tools.mcore_io import McoreCheckpoint, single_process_group
    from megatron_infi.utils import atomic_dir

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not _looks_like_hf_dir(out_dir):
        raise ConversionError(
            f"{out_dir}: exists, is not empty and is not an HF model dir; refusing to replace it"
        )
    max_shard_bytes = parse_size(max_shard_size)
    single_process_group()
    ckpt = McoreCheckpoint(load, iteration)
    model = ckpt.model
    mapping = architecture(model.arch).hf
    out_dtype = hf_io.parse_dtype(dtype) or ckpt.dtype("embedding.word_embeddings.weight")
    ckpt.check_against(expected_mcore_shapes(ckpt.cfg, out_dtype))
    tokenizer_dir = resolve_tokenizer(ckpt.info, ckpt.dir, tokenizer)
    ids = hf_io.tokenizer_ids(tokenizer_dir) if tokenizer_dir else None
    recorded_ids = (ckpt.info.get("source") or {}).get("hf_token_ids") or {}
    hf_config = mapping.hf_config_from_model(model, ids["config"] if ids else recorded_ids)
    hf_config.dtype = hf_io.dtype_name(out_dtype)

    expected = hf_io.expected_hf_tensors(hf_config)
    rules = mapping.active_rules(model)
    layer_rules = [r for r in rules if r.per_layer]
    global_rules = [r for r in rules if not r.per_layer]
    order = [n for r in global_rules if r.mcore.startswith("embedding.") for n in r.hf_names()]
    order += [n for layer in range(model.num_layers) for r in layer_rules for n in r.hf_names(layer)]
    order += [n for r in global_rules if not r.mcore.startswith("embedding.") for n in r.hf_names()]
    if set(order) != expected.keys() or len(order) != len(expected):
        raise AssertionError(
            f"mapping of {model.arch} does not match transformers' tensors: {sorted(set(order) ^ expected.keys())[:5]}"
        )

    def emit(writer, rule, tensor, layer=None):
        for name, part in zip(rule.hf_names(layer), to_hf(rule, tensor, model), strict=True):
            if tuple(part.shape) != expected[name]:
                raise ConversionError(
                    f"{ckpt.dir}: {name} comes out {tuple(part.shape)}, expected {expected[name]}"
                )
            writer.add(name, part.to(out_dtype))

    with atomic_dir(out_dir) as tmp:
        writer = hf_io.ShardedSafetensorsWriter(
            tmp, [(n, hf_io.nbytes(expected[n], out_dtype)) for n in order], max_shard_bytes
        )
        embedding = [r for r in global_rules if r.mcore.startswith("embedding.")]
        for rule in embedding:
            emit(writer, rule, ckpt.read_global([rule.mcore])[rule.mcore])
        for layer in tqdm(range(model.num_layers), desc="to-hf layers", unit="layer", dynamic_ncols=True):
            tensors = ckpt.read_layer([r.mcore for r in layer_rules], layer)
            for rule in layer_rules:
                emit(writer, rule, tensors[rule.mcore], layer)
            del tensors
        rest = [r for r in global_rules if r not in embedding]
        loaded = ckpt.read_global([r.mcore for r in rest])
        for rule in rest:
            emit(writer, rule, loaded[rule.mcore])
        writer.finish()
        hf_config.save_pretrained(tmp)
        token_ids = ids["config"] if ids else recorded_ids
        GenerationConfig(
            bos_token_id=token_ids.get("bos_token_id"),
            eos_token_id=(ids["stop_ids"] or None) if ids else token_ids.get("eos_token_id"),
            pad_token_id=token_ids.get("pad_token_id"),
        ).save_pretrained(tmp)
        if tokenizer_dir:
            hf_io.copy_tokenizer(tokenizer_dir, tmp)
        provenance = {
            "checkpoint": str(ckpt.dir.resolve()),
            "iteration": ckpt.iteration,
            "preset": model.preset,
            "dtype": hf_io.dtype_name(out_dtype),
            "tokenizer": str(tokenizer_dir.resolve()) if tokenizer_dir else None,
        }
        (tmp / "megatron_infi_export.json").write_text(json.dumps(provenance, indent=2) + "\n")
        _ordinary_permissions(tmp)
    return out_dir


@command("infi convert to-hf")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    parser = command_parser("infi convert to-hf", __doc__)
    parser.add_argument("--load", required=True, help="checkpoint root (uses latest) or an iter_XXXXXXX dir")
    parser.add_argument("--iteration", type=int, help="iteration to export (default: latest)")
    parser.add_argument("--out", required=True, help="HF model dir to write")
    parser.add_argument("--dtype", default="auto", help="auto (as in the checkpoint), bf16 or fp32")
    parser.add_argument("--tokenizer", help="tokenizer dir to export instead of the recorded one")
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD, help="largest safetensors file")
    args = parser.parse_args(argv)
    patches.apply()
    try:
        out = export(
            args.load,
            args.out,
            args.iteration,
            dtype=args.dtype,
            tokenizer=args.tokenizer,
            max_shard_size=args.max_shard_size,
        )
    finally:
        from megatron_infi.training.distributed import shutdown

        shutdown()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
