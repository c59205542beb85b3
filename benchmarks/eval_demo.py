"""Wall time of the demo's eval stage: three random Llama models of the demo's largest size (hidden
256) with the real Llama-3 tokenizer, evaluated with launch/configs/eval/demo.yaml exactly as
`make demo` calls it (base few-shot, SFT and DPO zero-shot chat). Random weights never emit EOS, so
every sample runs to max_new_tokens: an upper bound for the trained demo models.

    PYTHONPATH=. python benchmarks/eval_demo.py [--hidden 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from megatron_infi.data.tokenizer import build_llama3_tokenizer
from megatron_infi.evaluation.run import evaluate_models


def build_model(out: Path, tokenizer_dir: Path, hidden: int, layers: int, seed: int) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 64 * 64 or 64,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|eot_id|>")],
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tokenizer_dir = build_llama3_tokenizer(root / "tokenizer")
        models = [
            {
                "name": name,
                "path": str(build_model(root / name, tokenizer_dir, args.hidden, args.layers, i)),
                "mode": mode,
            }
            for i, (name, mode) in enumerate([("base", "fewshot"), ("sft", "chat"), ("dpo", "chat")])
        ]
        start = time.monotonic()
        results = evaluate_models(models, root / "eval")
        wall = time.monotonic() - start
        samples = sum(s["problems"] * s["samples"] for m in results["scores"].values() for s in m.values())
        gen = sum(s["generation_s"] for m in results["scores"].values() for s in m.values())
        print(
            f"demo eval: 3 models (hidden {args.hidden}, {args.layers} layers), {samples} samples, "
            f"{wall:.1f}s wall ({gen:.1f}s generating)"
        )


if __name__ == "__main__":
    main()
