"""transformers `generate`, batched with left padding: the CPU path (and a GPU fallback without vLLM).

Sampling is reproducible per batch: each batch seeds its own RNG from (seed, its sample indices, its
inputs), without touching the caller's RNG state. Unlike vLLM it has no per-request seed, so a
sample's text can depend on which batch it lands in; the cache makes resumed runs exact anyway.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from megatron_infi.generation.backend import GenerationBackend, GenerationError, model_dir_fingerprint
from megatron_infi.generation.params import GenerationConfig, SamplingParams

# End-of-turn / end-of-text tokens of the chat formats we meet (Llama-3, ChatML / Qwen).
END_TOKENS = ("<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>")


def select_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def select_dtype(name: str, device: str):
    import torch

    if name == "auto":
        if device == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class HFBackend(GenerationBackend):
    name = "hf"

    def __init__(self, cfg: GenerationConfig):
        super().__init__(cfg)
        path = Path(cfg.model)
        self.device = select_device()
        self.tokenizer, self.model = self._load(path, select_dtype(cfg.dtype, self.device))
        self.model.to(self.device)
        self.model.eval()
        self._model_id = model_dir_fingerprint(path)
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if self.pad_id is None:
            raise GenerationError(f"{path}: tokenizer has neither a pad nor an EOS token")
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tok.eos_token_id is not None:
            ids.add(tok.eos_token_id)
        vocab = tok.get_vocab()
        ids.update(vocab[t] for t in END_TOKENS if t in vocab)
        self.eos_ids = sorted(ids)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)

    def _load(self, path: Path, dtype):
        """(tokenizer, model) of the HF dir."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return tokenizer, AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)

    @property
    def model_id(self) -> str:
        return self._model_id

    def _encode(self, kind: str, item: Any) -> list[int]:
        tok = self.tokenizer
        if kind == "chat":
            if not tok.chat_template:
                raise GenerationError(
                    f"{self.cfg.model}: tokenizer has no chat template; use a text prompt instead"
                )
            text = tok.apply_chat_template(item, tokenize=False, add_generation_prompt=True)
            return tok(text, add_special_tokens=False)["input_ids"]
        ids = tok(item, add_special_tokens=True)["input_ids"]
        if tok.bos_token_id is not None and (not ids or ids[0] != tok.bos_token_id):
            ids = [tok.bos_token_id, *ids]
        return ids

    def _model_inputs(self, kind: str, items: list[Any], params: SamplingParams) -> dict:
        """The batch's `generate` inputs (input_ids, attention_mask, ...), left-padded."""
        import torch

        encoded = [self._encode(kind, item) for item in items]
        if self.max_positions:
            # keep the end of an over-long prompt (the question) and room for the answer
            room = max(1, self.max_positions - params.max_new_tokens)
            encoded = [ids[-room:] for ids in encoded]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        return {"input_ids": input_ids, "attention_mask": attention}

    def _complete(
        self, kind: str, items: list[Any], sample_indices: list[int], params: SamplingParams
    ) -> list[str]:
        import torch
        from transformers import GenerationConfig as HFGenerationConfig

        inputs = self._model_inputs(kind, items, params)
        width = inputs["input_ids"].shape[1]
        gen_cfg = HFGenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=not params.greedy,
            temperature=params.temperature if not params.greedy else None,
            top_p=params.top_p if not params.greedy else None,
            top_k=None,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            stop_strings=list(params.stop) or None,
        )
        digest = hashlib.sha256(json.dumps([params.seed, sample_indices, items]).encode()).digest()
        devices = [torch.cuda.current_device()] if self.device == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(int.from_bytes(digest[:8], "little") % (2**63))
            out = self.model.generate(
                **{name: tensor.to(self.device) for name, tensor in inputs.items()},
                generation_config=gen_cfg,
                tokenizer=self.tokenizer if params.stop else None,
            )
        new_tokens = out[:, width:].tolist()
        texts = []
        for row in new_tokens:
            # everything after the first end token is padding of rows that finished early
            for i, token in enumerate(row):
                if token in self.eos_ids:
                    row = row[:i]
                    break
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return texts

    def close(self) -> None:
        import torch

        del self.model
        if self.device == "cuda":
            torch.cuda.empty_cache()


class HFImageTextBackend(HFBackend):
    """An image-text model (an HF dir whose config has a `vision_config`, e.g. the InfiR-VL LLaVA
    export): its processor renders chat conversations with the processor's chat template and turns
    their image parts (`{"type": "image", "path": ...}`) into pixel values."""

    name = "hf-image-text"

    def _load(self, path: Path, dtype):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        if not self.processor.chat_template:
            raise GenerationError(f"{path}: the processor has no chat template to render conversations")
        self.processor.tokenizer.padding_side = "left"
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype, local_files_only=True)
        return self.processor.tokenizer, model

    def _model_inputs(self, kind: str, items: list[Any], params: SamplingParams) -> dict:
        from PIL import Image

        if kind != "chat":
            raise GenerationError(f"{self.cfg.model}: an image-text model answers conversations (chat mode)")
        texts = [
            self.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in items
        ]
        images = []
        for conversation in items:
            for message in conversation:
                parts = message["content"] if isinstance(message["content"], list) else []
                for part in parts:
                    if part["type"] == "image":
                        with Image.open(part["path"]) as image:
                            images.append(image.convert("RGB"))
        batch = self.processor(
            text=texts, images=images or None, padding=True, add_special_tokens=False, return_tensors="pt"
        )
        return dict(batch)
