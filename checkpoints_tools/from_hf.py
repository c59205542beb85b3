"""Hugging Face model dir -> megatron-core distributed checkpoint the trainer starts from.

    infi convert from-hf --hf DIR --out CKPT [--tp N] [--pp M] [--preset NAME] [--dtype auto|bf16|fp32]

The model config is derived from config.json (any registered architecture: LlamaForCausalLM,
Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM) and written as `preset + overrides` (the
preset of that architecture needing the fewest overrides, or `--preset`, which must then match
exactly). Tensors stream from the safetensors files through the architecture's mapping into
`CKPT/iter_0000000/` one at a time; the tokenizer files are copied to `CKPT/tokenizer/` and recorded
in run.json. The checkpoint's tensors are global (independent of
the layout), so it loads under any TP/PP that divides the shapes; `--tp/--pp` name the layout you
will train with and are validated now, so a wrong one fails here rather than in the trainer.

Start training from it with `checkpoint.load=CKPT` and the model section written to `CKPT/model.yaml`.

input:
  --hf DIR: a Hugging Face model dir: config.json, model*.safetensors (+ index), tokenizer files

output (under --out CKPT):
  iter_0000000/, latest_checkpointed_iteration.txt, run.json    the checkpoint `infi train` loads
  tokenizer/                                                    the HF tokenizer files
  model.yaml                                                    the `model:` section to train with

example: infi convert from-hf --hf runs/smollm2 --out runs/cpt/init --tp 2
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

from megatron_infi.checkpoints_tools import hf_io
from megatron_infi.config.core import ConfigError, command_parser, from_dict, to_dict
from megatron_infi.config.schema import ModelConfig, TrainConfig, model_presets
from megatron_infi.errors import command
from megatron_infi.logs import quiet_logs
from megatron_infi.models import Architecture, architecture, for_hf_config
from megatron_infi.models.hf_mapping import ConversionError, to_mcore
from megatron_infi.training import patches
from megatron_infi.utils import sha256_file

# Tensors some HF checkpoints carry that are not weights of the model.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _resolved_model(fields: dict) -> ModelConfig:
    return from_dict(ModelConfig, TrainConfig.preprocess({"model": fields})["model"])


def model_config_from_fields(fields: dict, preset: str | None = None) -> tuple[str, dict]:
    """(preset name, overrides) that reproduce `fields`: `preset` when given (it must match
    exactly), otherwise the preset of the same architecture needing the fewest overrides."""
    target = to_dict(_resolved_model({"preset": "tiny", **fields}))

    def overrides(name: str) -> dict:
        base = to_dict(_resolved_model({"preset": name}))
        return {k: v for k, v in fields.items() if base[k] != target[k]}

    if preset is not None:
        if preset not in model_presets():
            raise ConfigError(
                "--preset", f"unknown preset {preset!r} (known: {', '.join(sorted(model_presets()))})"
            )
        diff = overrides(preset)
        if diff:
            base = to_dict(_resolved_model({"preset": preset}))
            details = ", ".join(f"{k} (preset {base[k]}, config.json {target[k]})" for k in diff)
            raise ConversionError(f"--preset {preset} does not match config.json: {details}")
        return preset, {}
    candidates = sorted(architecture(fields["arch"]).presets)
    best = min(candidates, key=lambda name: (len(overrides(name)), name))
    return best, overrides(best)


def build_train_config(
    fields: dict, preset: str | None, tp: int, pp: int, tokenizer: str | None
) -> tuple[TrainConfig, dict]:
    """The resolved, validated config (model + intended layout) and the model's preset overrides."""
    name, overrides = model_config_from_fields(fields, preset)
    data = {"tokenizer": tokenizer or ""}
    raw = {"model": {"preset": name, **overrides}, "parallel": {"tensor": tp, "pipeline": pp}, "data": data}
    cfg = from_dict(TrainConfig, TrainConfig.preprocess(raw))
    cfg.model.validate()
    cfg.parallel.validate()
    cfg.validate()
    return cfg, overrides


def check_hf_tensors(reader: hf_io.SafetensorsReader, hf_config, arch: Architecture, model) -> None:
    """Names and shapes in the files against transformers' own model class, and the mapping's
    coverage, before anything is written."""
    expected = hf_io.expected_hf_tensors(hf_config)
    present = {n for n in reader.names() if not n.endswith(IGNORED_SUFFIXES)}
    if model.tie_embeddings:
        present.discard("lm_head.weight")
    missing = sorted(expected.keys() - present)
    if missing:
        raise ConversionError(
            f"{reader.dir}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    unexpected = sorted(present - expected.keys())
    if unexpected:
        raise ConversionError(
            f"{reader.dir}: tensors the {arch.hf.hf_architecture} class has no place for "
            f"(unsupported variant?): {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for name, shape in expected.items():
        if reader.shape(name) != shape:
            raise ConversionError(
                f"{reader.dir}: {name} has shape {reader.shape(name)}, config.json implies {shape}"
            )
    used = {
        name
        for rule in arch.hf.active_rules(model)
        for layer in (range(model.num_layers) if rule.per_layer else [None])
        for name in rule.hf_names(layer)
    }
    if used != expected.keys():
        raise AssertionError(f"mapping of {arch.name} does not cover {sorted(expected.keys() ^ used)[:5]}")


def make_producer(reader: hf_io.SafetensorsReader, arch: Architecture, model, progress=None):
    """(key, offsets, sizes) -> that chunk of the megatron-core tensor, built from the HF tensors."""
    from megatron_infi.models.gpt import padded_vocab_size

    rules = {rule.mcore: rule for rule in arch.hf.active_rules(model)}
    padded = padded_vocab_size(model.vocab_size, model.make_vocab_size_divisible_by)
    last: dict[tuple, torch.Tensor] = {}

    def whole(key: str, layer: int | None) -> torch.Tensor:
        if (key, layer) not in last:
            if key not in rules:
                raise ConversionError(
                    f"megatron-core tensor {key!r} has no rule in megatron_infi/models/{arch.name}.py"
                )
            rule = rules[key]
            last.clear()  # one tensor (one layer) alive at a time
            last[(key, layer)] = to_mcore(rule, [reader.get(n) for n in rule.hf_names(layer)], model, padded)
            if progress is not None:
                progress.update(1)
        return last[(key, layer)]

    def produce(key: str, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> torch.Tensor:
        per_layer = key.startswith("decoder.layers.")
        tensor = whole(key, offsets[0] if per_layer else None)
        local_offsets, local_sizes = (offsets[1:], sizes[1:]) if per_layer else (offsets, sizes)
        index = tuple(slice(o, o + s) for o, s in zip(local_offsets, local_sizes, strict=True))
        return tensor[index].reshape(sizes)

    return produce


def read_hf_model_config(hf_dir: Path) -> tuple[object, Architecture, dict]:
    """(HF config, its architecture, the ModelConfig fields it translates to); errors name the file."""
    hf_config = hf_io.load_hf_config(hf_dir)
    arch = for_hf_config(hf_config, source=str(hf_dir / "config.json"))
    try:
        return hf_config, arch, arch.hf.model_fields_from_hf(hf_config)
    except ConversionError as err:
        raise ConversionError(f"{hf_dir}/{err}") from None


def convert(
    hf_dir: str | Path,
    out: str | Path,
    tp: int = 1,
    pp: int = 1,
    preset: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert and return the checkpoint's iteration dir (`out/iter_0000000`)."""
    from tqdm import tqdm

    from megatron_infi.checkpoints_tools.mcore_io import (
        build_meta_model,
        single_process_group,
        streaming_save_strategy,
    )
    from megatron_infi.training.checkpoint import save_weights

    hf_dir, out = Path(hf_dir), Path(out)
    hf_config, arch, fields = read_hf_model_config(hf_dir)
    tokenizer_src = hf_dir if hf_io.has_tokenizer(hf_dir) else None
    cfg, overrides = build_train_config(
        fields, preset, tp, pp, str((out / "tokenizer").resolve()) if tokenizer_src else None
    )
    reader = hf_io.SafetensorsReader(hf_dir)
    check_hf_tensors(reader, hf_config, arch, cfg.model)
    embed = "model.embed_tokens.weight"
    torch_dtype = hf_io.parse_dtype(dtype) or hf_io.SAFETENSORS_TORCH_DTYPES.get(
        reader.file_dtype(embed), torch.float32
    )

    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConversionError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_info = None
    if tokenizer_src:
        hf_io.copy_tokenizer(tokenizer_src, out / "tokenizer")
        sha = (
            sha256_file(out / "tokenizer" / "tokenizer.json")
            if (out / "tokenizer" / "tokenizer.json").exists()
            else None
        )
        tokenizer_info = {"path": str((out / "tokenizer").resolve()), "sha256": sha}

    single_process_group()
    model = build_meta_model(cfg, torch_dtype)
    layers = cfg.model.num_layers
    total = sum(layers if rule.per_layer else 1 for rule in arch.hf.active_rules(cfg.model))
    with tqdm(total=total, desc="from-hf tensors", unit="tensor", dynamic_ncols=True) as bar:
        strategy = streaming_save_strategy(make_producer(reader, arch, cfg.model, bar))
        path = save_weights(
            out,
            cfg,
            [model],
            tokenizer_info,
            iteration=0,
            sharded_strategy=strategy,
            source={"converted_from": str(hf_dir.resolve()), "hf_token_ids": _token_ids(hf_config)},
        )
    model_section = {"model": {"preset": cfg.model.preset, **overrides}}
    (out / "model.yaml").write_text(
        "# The model section for a training config that starts from this checkpoint "
        f"(checkpoint.load={out.resolve()}).\n" + yaml.safe_dump(model_section, sort_keys=False)
    )
    return path


def _token_ids(hf_config) -> dict:
    return {name: getattr(hf_config, name, None) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}


@command("infi convert from-hf")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    parser = command_parser("infi convert from-hf", __doc__)
    parser.add_argument("--hf", required=True, help="Hugging Face model dir (config.json + safetensors)")
    parser.add_argument("--out", required=True, help="checkpoint root to write")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size you will train with")
    parser.add_argument("--pp", type=int, default=1, help="pipeline-parallel size you will train with")
    parser.add_argument("--preset", help="require this model preset to match config.json exactly")
    parser.add_argument("--dtype", default="auto", help="auto (as stored in the HF files), bf16 or fp32")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument(
        "--dry-run", action="store_true", help="validate and print the derived config, write nothing"
    )
    args = parser.parse_args(argv)
    patches.apply()
    try:
        if args.dry_run:
            hf_config, arch, fields = read_hf_model_config(Path(args.hf))
            cfg, _ = build_train_config(fields, args.preset, args.tp, args.pp, None)
            check_hf_tensors(hf_io.SafetensorsReader(args.hf), hf_config, arch, cfg.model)
            print(
                yaml.safe_dump(
                    {"model": to_dict(cfg.model), "parallel": to_dict(cfg.parallel)}, sort_keys=False
                )
            )
            return 0
        path = convert(args.hf, args.out, args.tp, args.pp, args.preset, args.dtype, args.overwrite)
    finally:
        from megatron_infi.training.distributed import shutdown

        shutdown()
    print(f"wrote {path} (model section for training configs: {Path(args.out) / 'model.yaml'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
