"""Stage 2 step: datatrove's FastTextClassifierFilter on a local recall model, scoped to some domains.

The model is a multi-label fastText classifier (one-vs-all: one sigmoid per domain, see
`megatron_infi.data_processing.fasttext_train`); a document is kept when any label reaches its own threshold, and
every label's score is written to metadata as `recall_<label>`.
"""

from __future__ import annotations

from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.fasttext_filter import FastTextClassifierFilter
from datatrove.utils.text import SPLIT_TEXT_DOCUMENTS

from megatron_infi.data_processing.steps.heuristics import PredictOnlyFastTextMixin
from megatron_infi.errors import DataError

LABEL_PREFIX = "__label__"


class RecallFilter(PredictOnlyFastTextMixin, FastTextClassifierFilter):
    name = "🎣 Recall (fastText)"

    def __init__(self, model_path: str, thresholds: dict[str, float], domains: list[str]):
        if not Path(model_path).is_file():
            raise DataError(f"recall model not found: {model_path}")
        super().__init__(
            model_url=model_path,
            keep_labels=list(thresholds.items()),
            save_labels_in_metadata=True,
            newline_replacement=" ",
            filter_mode=SPLIT_TEXT_DOCUMENTS,
        )
        self.domains = set(domains)

    @property
    def model(self):
        # datatrove's property copies the model through its download cache (needs `fasteners`) and reads
        # `model.labels`, which fasttext-predict lacks; load the local file directly instead.
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(self.model_url)
            labels, _ = self._model.predict("probe", k=-1)
            available = {label.removeprefix(LABEL_PREFIX) for label in labels}
            missing = sorted({label for label, _ in self.keep_labels} - available)
            if missing:
                raise ValueError(
                    f"{self.model_url}: no label(s) {missing} (model labels: {sorted(available)})"
                )
        return self._model

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("domain") not in self.domains:
            return True
        text = doc.text
        kept = super().filter(doc)
        doc.text = text  # document mode: the text is kept or dropped whole, never trimmed
        for key in [k for k in doc.metadata if k.startswith(LABEL_PREFIX)]:
            doc.metadata[f"recall_{key.removeprefix(LABEL_PREFIX)}"] = round(doc.metadata.pop(key), 6)
        if not kept:
            return False, "below_recall_threshold"
        best = max(self.keep_labels, key=lambda item: doc.metadata.get(f"recall_{item[0]}", 0.0) - item[1])
        doc.metadata["recalled_as"] = best[0]
        return True
