"""Reward-model scores for rejection sampling (InfiR): any local HF sequence-classification dir
(one output: the score; two or more: the probability of the last label, "good"). Conversations are
rendered with the reward model's own chat template when it has one."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from megatron_infi.errors import DataError


def reward_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class RewardModel:
    path: str
    batch_size: int = 8
    max_length: int = 4096
    device: str | None = None

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        if not Path(self.path).is_dir():
            raise DataError(f"reward model dir not found: {self.path}")
        tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        return tokenizer

    @cached_property
    def model(self):
        import torch
        from transformers import AutoModelForSequenceClassification

        device = self.device or reward_device()
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model = AutoModelForSequenceClassification.from_pretrained(
            self.path, local_files_only=True, dtype=dtype
        )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        return model.to(device).eval()

    def render(self, conversation: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(conversation, tokenize=False)
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in conversation)

    def score(self, conversations: list[list[dict]]) -> list[float]:
        import torch

        scores: list[float] = []
        for start in range(0, len(conversations), self.batch_size):
            texts = [self.render(c) for c in conversations[start : start + self.batch_size]]
            batch = self.tokenizer(
                texts,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,
            ).to(self.model.device)
            with torch.inference_mode():
                logits = self.model(**batch).logits.float()
            values = logits[:, 0] if logits.shape[-1] == 1 else logits.softmax(-1)[:, -1]
            scores.extend(values.tolist())
        return scores
