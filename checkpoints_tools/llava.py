"""InfiR-VL checkpoints <-> Hugging Face LLaVA (`LlavaForConditionalGeneration` with a CLIP vision
tower), with logit parity on real images.

    infi convert vl-to-hf  --load CKPT [--iteration I] --out DIR [--dtype auto|bf16|fp32]
    infi convert vl-verify --load CKPT --hf DIR [--tp N]   (under torchrun with N ranks)

The language model goes through the text mapping of its architecture (models/: the same rules as
`infi convert to-hf`, under LLaVA's `model.language_model.` prefix), the ViT and projector through
`models.llava.VIT_HF_RULES`. The export holds config.json (LlavaConfig: CLIPVisionConfig +
the text config, image_token_id = the tokenizer's image token, vision_feature_layer -1, the class
token dropped or kept as trained), model.safetensors, the tokenizer and a LlavaProcessor whose
CLIPImageProcessor reproduces the training preprocessing (data/images.to_pixels) and whose chat
template renders the training text format (data/vl_data.chat_template), so `infi eval` asks in it. CLIP's
post_layernorm, which LLaVA never applies to the features it uses, is written as identity.

input:
  --load CKPT: a VL checkpoint root written by `infi train` with a `vision:` section
  (<run_dir>/checkpoints; the newest iteration unless --iteration), or one iter_XXXXXXX dir

output (under --out DIR):
  config.json (LlavaConfig), model.safetensors, tokenizer files, processor (CLIP preprocessing +
  chat template): loads with LlavaForConditionalGeneration; the `path` of an `infi eval` model

example: infi convert vl-to-hf --load runs/vl/instruct/checkpoints --out runs/vl/hf
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from megatron_infi.config.core import command_parser
from megatron_infi.errors import command
from megatron_infi.logs import quiet_logs
from megatron_infi.models import architecture
from megatron_infi.models.hf_mapping import ConversionError, to_hf
from megatron_infi.training import patches


def _language_name(hf_name: str) -> str:
    """Text-model HF names (LlamaForCausalLM) -> their names inside LlavaForConditionalGeneration."""
    return (
        hf_name
        if hf_name.startswith("lm_head.")
        else "model.language_model." + hf_name.removeprefix("model.")
    )


def hf_config(cfg, tokenizer_dir: Path):
    from transformers import AutoTokenizer, CLIPVisionConfig, LlavaConfig

    from megatron_infi.checkpoints_tools import hf_io

    model, vision = cfg.model, cfg.vision
    ids = hf_io.tokenizer_ids(tokenizer_dir)
    text = architecture(model.arch).hf.hf_config_from_model(model, ids["config"])
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    image_token_id = tokenizer.convert_tokens_to_ids(vision.image_token)
    vision_config = CLIPVisionConfig(
        hidden_size=vision.hidden_size,
        intermediate_size=vision.ffn_hidden_size,
        num_hidden_layers=vision.num_layers,
        num_attention_heads=vision.num_attention_heads,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
        layer_norm_eps=vision.norm_eps,
        hidden_act="quick_gelu",
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=vision.image_tokens,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if vision.drop_class_token else "full",
        vision_feature_layer=-1,
        multimodal_projector_bias=True,
        tie_word_embeddings=model.tie_embeddings,
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    return config


def _stacked(name: str) -> tuple[str, int | None]:
    """'vision_model.decoder.layers.3.x' -> ('vision_model.decoder.layers.x', 3): the checkpoint
    stacks per-layer tensors along a leading axis under one key."""
    parts = name.split(".")
    if "layers" in parts:
        at = parts.index("layers")
        if at + 1 < len(parts) and parts[at + 1].isdigit():
            return ".".join(parts[: at + 1] + parts[at + 2 :]), int(parts[at + 1])
    return name, None


def export(
    load, out_dir, iteration: int | None = None, *, dtype: str | None = None, tokenizer: str | None = None
) -> Path:
    from safetensors.torch import save_file

    from megatron_infi.checkpoints_tools import hf_io
    from megatron_infi.checkpoints_tools.mcore_io import McoreCheckpoint, single_process_group
    from megatron_infi.checkpoints_tools.to_hf import resolve_tokenizer
    from megatron_infi.data.images import CLIP_MEAN, CLIP_STD
    from megatron_infi.data.tokenizer import load_tokenizer
    from megatron_infi.data.vl_data import chat_template
    from megatron_infi.models.llava import vit_rules, vit_to_hf
    from megatron_infi.utils import atomic_dir

    single_process_group()
    ckpt = McoreCheckpoint(load, iteration)
    cfg, model, vision = ckpt.cfg, ckpt.cfg.model, ckpt.cfg.vision
    if vision is None:
        raise ConversionError(
            f"{ckpt.dir}: not a VL checkpoint (no vision section in run.json): use `infi convert to-hf`"
        )
    tokenizer_dir = resolve_tokenizer(ckpt.info, ckpt.dir, tokenizer)
    if tokenizer_dir is None:
        raise ConversionError(f"{ckpt.dir}: records no tokenizer: pass --tokenizer DIR")
    config = hf_config(cfg, tokenizer_dir)
    out_dtype = hf_io.parse_dtype(dtype) or ckpt.dtype("language_model.embedding.word_embeddings.weight")
    tensors: dict[str, torch.Tensor] = {}
    for rule in architecture(model.arch).hf.active_rules(model):
        key = "language_model." + rule.mcore
        for layer in range(model.num_layers) if rule.per_layer else [None]:
            tensor = ckpt.read_layer([key], layer)[key] if rule.per_layer else ckpt.read_global([key])[key]
            for name, part in zip(rule.hf_names(layer), to_hf(rule, tensor, model), strict=True):
                tensors[_language_name(name)] = part
    stacked = {}
    for mcore, hf_names, kind in vit_rules(vision):
        key, layer = _stacked(mcore)
        if key not in stacked:
            stacked[key] = ckpt.read_global([key])[key]
        tensor = stacked[key] if layer is None else stacked[key][layer]
        for name, part in zip(hf_names, vit_to_hf(kind, tensor, vision), strict=True):
            tensors["model." + name] = part
    post = "model.vision_tower.post_layernorm."
    tensors[post + "weight"] = torch.ones(vision.hidden_size)
    tensors[post + "bias"] = torch.zeros(vision.hidden_size)
    _check_names(config, tensors)
    tokenizer = load_tokenizer(tokenizer_dir)
    from transformers import CLIPImageProcessor, LlavaProcessor  # after the checkpoint checks: it warns

    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": vision.image_size},
            crop_size={"height": vision.image_size, "width": vision.image_size},
            image_mean=list(CLIP_MEAN),
            image_std=list(CLIP_STD),
        ),
        tokenizer=tokenizer.hf,
        patch_size=vision.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_token=vision.image_token,
        num_additional_image_tokens=1,
        # Prompts at inference in the training text format (USER: <image>\n... ASSISTANT:).
        chat_template=chat_template(
            tokenizer.hf.bos_token or "",
            vision.image_token,
            tokenizer.hf.convert_ids_to_tokens(tokenizer.eod_id),
        ),
    )
    with atomic_dir(Path(out_dir)) as tmp:
        save_file(
            {k: v.to(out_dtype).contiguous() for k, v in tensors.items()},
            str(tmp / "model.safetensors"),
            metadata={"format": "pt"},
        )
        config.dtype = hf_io.dtype_name(out_dtype)
        config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        provenance = {
            "checkpoint": str(ckpt.dir.resolve()),
            "iteration": ckpt.iteration,
            "preset": model.preset,
            "vision_preset": vision.preset,
        }
        (tmp / "megatron_infi_export.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return Path(out_dir)


def _check_names(config, tensors: dict) -> None:
    """The tensors are exactly what LlavaForConditionalGeneration holds (tied lm_head aside)."""
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        expected = LlavaForConditionalGeneration(config).state_dict()
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise AssertionError(
            f"LLaVA export names differ from transformers': missing {missing[:4]}, extra {extra[:4]}"
        )
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ConversionError(
                f"{name}: {tuple(tensor.shape)}, transformers expects {tuple(expected[name].shape)}"
            )


@command("infi convert vl-to-hf")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    parser = command_parser("infi convert vl-to-hf", __doc__)
    parser.add_argument(
        "--load", required=True, help="VL checkpoint root (uses latest) or an iter_XXXXXXX dir"
    )
    parser.add_argument("--iteration", type=int)
    parser.add_argument("--out", required=True, help="HF model dir to write")
    parser.add_argument("--dtype", default="auto", help="auto (as in the checkpoint), bf16 or fp32")
    parser.add_argument("--tokenizer", help="tokenizer dir to export instead of the recorded one")
    args = parser.parse_args(argv)
    patches.apply()
    try:
        out = export(args.load, args.out, args.iteration, dtype=args.dtype, tokenizer=args.tokenizer)
    finally:
        from megatron_infi.training.distributed import shutdown

        shutdown()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
