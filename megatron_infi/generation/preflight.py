"""Checks of a model dir that need its tokenizer only (about a second), run before any weights load."""

from __future__ import annotations

from pathlib import Path

from megatron_infi.config.core import ConfigError


def check_tokenizer(path: str | Path, field: str, chat_probe: list[dict[str, str]] | None = None):
    """Load the tokenizer of the HF dir `path`; with `chat_probe`, render it with the chat template
    (as generation will). Returns the tokenizer; raises ConfigError naming `field`."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # transformers raises many types for a broken or missing tokenizer
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(field, f"{path}: the tokenizer does not load ({reason})") from None
    if chat_probe is None:
        return tokenizer
    if not tokenizer.chat_template:
        raise ConfigError(
            field,
            f"{path}: the tokenizer has no chat template, so chat prompts cannot be rendered "
            "(evaluate a base model in fewshot mode, or fine-tune it with infi sft first)",
        )
    try:
        tokenizer.apply_chat_template(chat_probe, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # jinja errors, raise_exception() in templates (e.g. no system role)
        raise ConfigError(field, f"{path}: the chat template cannot render a prompt ({err})") from None
    return tokenizer
