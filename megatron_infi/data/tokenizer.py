"""Tokenizers as HF tokenizer dirs: the one format every stage (data, train, convert, SFT, eval) reads.

The Llama-3 tokenizer ships inside the llama-models package as tiktoken BPE ranks; it is converted
to an HF `tokenizer.json` at run time (never committed) with transformers' TikTokenConverter.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from megatron_infi import assets
from megatron_infi.errors import DataError
from megatron_infi.utils import sha256_file

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_NAMED_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
]
LLAMA3_NUM_SPECIALS = 256
# Llama-3.x instruct template (the same one Meta ships with its HF checkpoints, minus tool calls).
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}{% generation %}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{% endgeneration %}{%- else %}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


class TokenizerError(DataError):
    """A tokenizer dir or file that cannot be used (exit 2, like any bad input)."""


def llama3_special_tokens() -> list[str]:
    reserved = [
        f"<|reserved_special_token_{2 + i}|>" for i in range(LLAMA3_NUM_SPECIALS - len(LLAMA3_NAMED_SPECIALS))
    ]
    return LLAMA3_NAMED_SPECIALS + reserved


def build_llama3_tokenizer(out_dir: str | Path) -> Path:
    """Write an HF tokenizer dir for Llama-3 (vocab 128,256) converted from llama-models' file.

    Idempotent: a dir that already holds a tokenizer.json built from the same source is reused.
    Written to a temp dir and renamed so a crash never leaves half a tokenizer.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    out_dir = Path(out_dir)
    source = assets.llama3_tiktoken()
    source_sha = sha256_file(source)
    stamp = out_dir / "source.json"
    built = (out_dir / "tokenizer.json").exists() and stamp.exists()
    if built and json.loads(stamp.read_text()).get("sha256") == source_sha:
        return out_dir

    specials = llama3_special_tokens()
    backend = TikTokenConverter(
        vocab_file=str(source), pattern=LLAMA3_PATTERN, extra_special_tokens=specials
    ).converted()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|finetune_right_pad_id|>",
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out_dir.parent))
    try:
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"source": str(source), "sha256": source_sha}, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


@dataclass
class Tokenizer:
    """An HF tokenizer dir plus the two facts the trainer needs: vocab size and the EOD id."""

    path: Path

    @cached_property
    def hf(self):
        from transformers import AutoTokenizer

        if not (self.path / "tokenizer.json").exists() and not (self.path / "tokenizer_config.json").exists():
            raise TokenizerError(
                f"{self.path}: not a tokenizer dir (no tokenizer.json or tokenizer_config.json)"
            )
        return AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)

    @property
    def vocab_size(self) -> int:
        """Number of ids the model's embedding must cover (base vocab + added tokens)."""
        return len(self.hf)

    @property
    def eod_id(self) -> int:
        hf = self.hf
        for token in ("<|end_of_text|>", "<|endoftext|>"):
            token_id = hf.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != hf.unk_token_id and token_id is not None:
                return token_id
        if hf.eos_token_id is None:
            raise TokenizerError(f"{self.path}: tokenizer has no EOS/EOD token")
        return hf.eos_token_id

    @property
    def sha256(self) -> str:
        return sha256_file(self.path / "tokenizer.json")

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.hf.decode(list(ids))


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_dir():
        raise TokenizerError(f"tokenizer dir not found: {path}")
    return Tokenizer(path)
