"""Chat template selection for post-training (the prompt contract's `chat_template`): the model's own
template when it has one, ChatML otherwise.

Assistant-only loss needs `{% generation %}` markers in the template. A template without them is
patched with TRL's training template when TRL knows it; ChatML here carries them already. The choice
needs the tokenizer only, so a template that cannot work fails before any weights load; the model
dir's files alone usually decide it (`check_template_files`), so it fails within a second, before
transformers and TRL are even imported (seconds each). The end-of-turn token the template emits is
added to the model's generation EOS ids, so that generation (DPO-pair sampling, evaluation) stops
where the trained turns stop.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from megatron_infi.errors import ConfigError

CHATML_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>"]
# ChatML with the assistant turn (content + <|im_end|>) inside generation markers.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}{% generation %}"
    "{{- message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


# TRL's own test for the markers, including the whitespace-trim variants ({%- generation -%}).
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


class ChatTemplateError(ConfigError):
    """A chat template that cannot train or evaluate (missing, unreadable, without the markers
    assistant-only loss needs): the prompt contract's `chat_template` field is wrong, exit 2."""

    def __init__(self, message: str):
        super().__init__("prompt.chat_template", message)


def has_generation_markers(template: str | dict[str, str]) -> bool:
    """For a template shipped as named variants (a dict), its `default` one counts, as in TRL."""
    if isinstance(template, dict):
        template = template["default"]
    return GENERATION_MARKER.search(template) is not None


def _no_markers_no_trl_version() -> ChatTemplateError:
    return ChatTemplateError(
        "auto: the model's own template has no {% generation %} markers (needed for "
        "assistant_only_loss) and TRL has no training version of it; set "
        "prompt.chat_template=chatml or point it at a .jinja file with markers"
    )


def saved_chat_template(model_dir: str | Path) -> str | None:
    """The default chat template an HF model dir carries, read as transformers reads it:
    `chat_template.jinja` first, else `tokenizer_config.json`'s `chat_template` (a string, or a list
    of named templates whose `default` counts)."""
    model_dir = Path(model_dir)
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        template = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8")).get(
            "chat_template"
        )
    except (OSError, ValueError, AttributeError):
        return None  # the tokenizer load that follows names what is wrong
    if isinstance(template, list):
        template = next(
            (t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None
        )
    return template if isinstance(template, str) and template else None


def _trl_shipped_templates() -> set[str] | None:
    """The templates TRL ships (`trl/chat_templates/*.jinja`), found without importing TRL; its
    training versions exist only for these. None when TRL's files cannot be found."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "chat_templates"
    if not folder.is_dir():
        return None
    return {file.read_text(encoding="utf-8") for file in folder.glob("*.jinja")}


def check_template_files(
    model_dir: str | Path, choice: str = "auto", need_generation_markers: bool = True
) -> None:
    """What `prepare_chat_template` will refuse, decided from files alone (no transformers, no TRL):
    a missing template file, a file without markers, or a model's own template without markers that
    TRL has no training version of (it has one only for templates it ships, byte for byte). Anything
    the files cannot settle is left to `prepare_chat_template`."""
    if choice not in ("auto", "chatml"):
        template = _read_template_file(choice)
        if need_generation_markers and not has_generation_markers(template):
            raise ChatTemplateError(f"{choice} has no {{% generation %}} markers")
        return
    if choice == "chatml" or not need_generation_markers:
        return
    own = saved_chat_template(model_dir)
    if own is None or has_generation_markers(own):
        return
    shipped = _trl_shipped_templates()
    if shipped is not None and own not in shipped:
        raise _no_markers_no_trl_version()


def _read_template_file(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise ChatTemplateError(f"{path} is neither 'auto', 'chatml' nor an existing .jinja file")
    return file.read_text(encoding="utf-8")


def _install_chatml(tokenizer) -> None:
    """Set ChatML; add its two special tokens when missing (`fit_model_to_template` grows the embeddings)."""
    missing = [tok for tok in CHATML_SPECIAL_TOKENS if tok not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer.chat_template = CHATML_TEMPLATE


def prepare_chat_template(tokenizer, choice: str = "auto", need_generation_markers: bool = True) -> str:
    """Give `tokenizer` a training template; returns which one: 'own', 'own+trl-training', 'chatml' or 'file'.

    `choice` is 'auto' (own template if any, else ChatML), 'chatml', or a path to a .jinja file.
    Needs no model: call `fit_model_to_template` once the weights are loaded.
    """
    if choice == "chatml" or (choice == "auto" and not tokenizer.chat_template):
        _install_chatml(tokenizer)
        used = "chatml"
    elif choice == "auto":
        used = "own"
        if need_generation_markers and not has_generation_markers(tokenizer.chat_template):
            from trl.chat_template_utils import get_training_chat_template

            try:
                patched = get_training_chat_template(tokenizer)
            except ValueError as err:
                raise _no_markers_no_trl_version() from err
            if patched is not None:
                tokenizer.chat_template = patched
                used = "own+trl-training"
    else:
        tokenizer.chat_template = _read_template_file(choice)
        used = "file"
        if need_generation_markers and not has_generation_markers(tokenizer.chat_template):
            raise ChatTemplateError(f"{choice} has no {{% generation %}} markers")
    return used


def fit_model_to_template(tokenizer, model) -> None:
    """Grow the embeddings over tokens the template added; stop generation at its end-of-turn token."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    add_end_of_turn_to_generation_eos(tokenizer, model)


def end_of_turn_id(tokenizer) -> int | None:
    """The special token that closes an assistant turn in the template (e.g. <|eot_id|>, <|im_end|>)."""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    try:
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
    except Exception:  # a template that cannot render assistant masks has no detectable end-of-turn
        return None
    added = set(tokenizer.get_added_vocab().values())
    masked = [tok for tok, keep in zip(out["input_ids"], out["assistant_masks"], strict=False) if keep]
    for token_id in reversed(masked):
        if token_id in added:
            return token_id
    return None


def add_end_of_turn_to_generation_eos(tokenizer, model) -> None:
    eot = end_of_turn_id(tokenizer)
    if eot is None or not hasattr(model, "generation_config") or model.generation_config is None:
        return
    current = model.generation_config.eos_token_id
    ids = [] if current is None else [current] if isinstance(current, int) else list(current)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if eot not in ids:
        ids.append(eot)
    model.generation_config.eos_token_id = ids
