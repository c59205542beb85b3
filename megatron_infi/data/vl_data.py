"""VL training data: LLaVA-style conversation JSONL (data_processing/vision/conversations.py) ->
fixed-length micro-batches of (image, tokens, labels, loss mask) for megatron-core's LLaVAModel.

Text format (plain, like LLaVA-1.5's): `<bos>USER: {human}\\nASSISTANT: {gpt}<eos>` per turn pair,
the `<image>` placeholder replaced by the tokenizer's image token (one per record). The loss covers
the assistant answers and their end token only. Every sample has `seq_length - image_tokens + 1`
text tokens (truncated or padded, padding masked out), so image + text fill exactly `seq_length`.

Sample `i` of the run is record `perm_e[i mod N]` of epoch `e = i // N` (a seeded permutation per
epoch), so resuming at `consumed_samples` is exact, as for the text datasets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from megatron_infi.config.core import ConfigError
from megatron_infi.config.schema import TrainConfig
from megatron_infi.data.gpt_data import DataError
from megatron_infi.data.images import open_checked, to_pixels
from megatron_infi.data.tokenizer import Tokenizer, TokenizerError, load_tokenizer

IMAGE_PLACEHOLDER = "<image>"


def read_records(paths: list[str]) -> list[dict]:
    """Every record of the JSONL files (or of the *.jsonl files in a dir); a malformed record is a
    DataError naming its file and line (the data pipeline wrote these files: they must be clean)."""
    records = []
    for entry in paths:
        entry = Path(entry)
        files = sorted(entry.glob("*.jsonl")) if entry.is_dir() else [entry]
        if not files or not all(f.is_file() for f in files):
            raise DataError(f"{entry}: no conversation JSONL file there")
        for file in files:
            for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    turns = record["conversations"]
                    image = record["image"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(
                        f"{file}:{number}: not a conversation record (image, conversations)"
                    ) from None
                if sum(t["value"].count(IMAGE_PLACEHOLDER) for t in turns) != 1:
                    raise DataError(f"{file}:{number}: needs exactly one {IMAGE_PLACEHOLDER} placeholder")
                image_path = Path(image) if Path(image).is_absolute() else file.parent / image
                records.append(
                    {"image": str(image_path), "conversations": turns, "where": f"{file}:{number}"}
                )
    return records


def encode_conversation(turns: list[dict], tokenizer, image_token_id: int) -> tuple[list[int], list[int]]:
    """(ids, loss flags) of one conversation; the placeholder becomes `image_token_id`."""
    hf = tokenizer.hf
    ids: list[int] = [hf.bos_token_id] if hf.bos_token_id is not None else []
    flags = [0] * len(ids)
    for turn in turns:
        if turn["from"] == "human":
            before, _, after = f"USER: {turn['value']}\n".partition(IMAGE_PLACEHOLDER)
            part = hf.encode(before, add_special_tokens=False)
            if _:
                part += [image_token_id] + hf.encode(after, add_special_tokens=False)
            ids += part
            flags += [0] * len(part)
        else:
            prefix = hf.encode("ASSISTANT:", add_special_tokens=False)
            answer = hf.encode(" " + turn["value"].strip(), add_special_tokens=False) + [tokenizer.eod_id]
            newline = hf.encode("\n", add_special_tokens=False)
            ids += prefix + answer + newline
            flags += [0] * len(prefix) + [1] * len(answer) + [0] * len(newline)
    return ids, flags


def chat_template(bos_token: str, image_token: str, eod_token: str) -> str:
    """The Jinja chat template that renders a conversation the way `encode_conversation` encodes it
    (the HF export's processor carries it, so prompts at inference are the training text): user
    turns as `USER: <image>\\n{text}\\n` (HF's multimodal parts: an image part becomes the image
    token), assistant turns as `ASSISTANT: {text}<eod>\\n`, and the generation prompt `ASSISTANT:`.
    Newlines are Jinja expressions: transformers renders with trim_blocks, which would drop a
    literal newline after a tag."""
    newline = "{{ '\\n' }}"
    parts = (
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
        f"{image_token}{newline}"
        "{% else %}{{ part['text'] }}{% endif %}{% endfor %}"
    )
    user = f"USER: {{% if message['content'] is string %}}{{{{ message['content'] }}}}{{% else %}}{parts}{{% endif %}}"
    assistant = f"ASSISTANT: {{{{ message['content'] | trim }}}}{eod_token}"
    return (
        f"{bos_token}{{% for message in messages %}}{{% if message['role'] == 'user' %}}{user}{newline}"
        f"{{% else %}}{assistant}{newline}{{% endif %}}{{% endfor %}}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )


class ConversationDataset(torch.utils.data.Dataset):
    """`num_samples` samples drawn epoch by epoch (seeded permutations) from `records`."""

    def __init__(
        self, records, tokenizer, image_token_id: int, cfg: TrainConfig, num_samples: int, seed: int
    ):
        self.records, self.tokenizer, self.image_token_id = records, tokenizer, image_token_id
        self.text_length = cfg.data.seq_length - cfg.vision.image_tokens + 1
        self.image_size = cfg.vision.image_size
        self.num_samples, self.seed = num_samples, seed

    def __len__(self) -> int:
        return self.num_samples

    def _record(self, index: int) -> dict:
        epoch, offset = divmod(index, len(self.records))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.records))
        return self.records[int(order[offset])]

    def __getitem__(self, index: int) -> dict:
        record = self._record(index)
        ids, flags = encode_conversation(record["conversations"], self.tokenizer, self.image_token_id)
        length = self.text_length + 1  # tokens and labels are the sequence shifted by one
        if self.image_token_id not in ids[: length - 1]:
            raise DataError(f"{record['where']}: the image token falls outside the first {length - 1} tokens")
        pad = max(0, length - len(ids))
        ids = (ids + [self.tokenizer.eod_id] * pad)[:length]
        flags = (flags + [0] * pad)[:length]
        try:
            image = open_checked(record["image"])
        except ValueError as err:
            raise DataError(f"{record['where']}: {record['image']}: {err}") from None
        tokens = torch.tensor(ids[:-1], dtype=torch.long)
        return {
            "images": torch.from_numpy(to_pixels(image, self.image_size)),
            "tokens": tokens,
            "labels": torch.tensor(ids[1:], dtype=torch.long),
            "loss_mask": torch.tensor(flags[1:], dtype=torch.float),
            "position_ids": torch.arange(len(tokens), dtype=torch.long),
        }


def image_token_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.hf.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.hf.unk_token_id or token_id >= tokenizer.vocab_size:
        raise ConfigError("vision.image_token", f"{token!r} is not a token of {tokenizer.path}")
    return int(token_id)


def preflight_data(cfg: TrainConfig) -> Tokenizer:
    try:
        tokenizer = load_tokenizer(cfg.data.tokenizer)
    except (TokenizerError, OSError, ValueError) as err:
        raise ConfigError("data.tokenizer", str(err)) from None
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            "data.tokenizer", f"vocab {tokenizer.vocab_size} > model.vocab_size={cfg.model.vocab_size}"
        )
    image_token_id(tokenizer, cfg.vision.image_token)
    if cfg.data.seq_length <= cfg.vision.image_tokens:
        raise ConfigError(
            "data.seq_length", f"must exceed the {cfg.vision.image_tokens} positions one image takes"
        )
    if not read_records(cfg.data.conversations):
        raise DataError(f"data.conversations {cfg.data.conversations}: no records")
    return tokenizer


def build_datasets(cfg: TrainConfig, tokenizer: Tokenizer, data_parallel_size: int):
    """(train, valid): records split by `data.split` (train, valid proportions) after a seeded shuffle."""
    records = read_records(cfg.data.conversations)
    order = np.random.default_rng(cfg.train.seed).permutation(len(records))
    parts = [float(x) for x in cfg.data.split.split(",")]
    valid_count = int(round(len(records) * parts[1] / sum(parts))) if parts[1] > 0 else 0
    valid = [records[i] for i in order[:valid_count]]
    train = [records[i] for i in order[valid_count:]]
    t = cfg.train
    token = image_token_id(tokenizer, cfg.vision.image_token)
    evals = (t.train_iters // t.eval_interval + 1) * t.eval_iters if t.eval_interval else 0
    train_ds = ConversationDataset(train, tokenizer, token, cfg, t.train_iters * t.global_batch_size, t.seed)
    valid_ds = (
        ConversationDataset(valid, tokenizer, token, cfg, evals * t.global_batch_size, t.seed + 1)
        if valid
        else None
    )
    return train_ds, valid_ds
