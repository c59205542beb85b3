"""Diversity (InfiAlign step 2) and difficulty (step 3) over the whole prepared pool.

- domain-balanced pass: equal quotas per domain label (a domain smaller than its share gives its
  leftover to the others: water-filling);
- semantic pass: K-means over sentence embeddings of the prompts, equal quotas per cluster, filled
  from the records the domain pass did not take (so the two budgets add up);
- difficulty decides which members fill a quota: the longest responses (in tokens) of the domain or
  cluster, equal lengths in random order (`difficulty.mode: random` samples uniformly instead);
- both passes merged, then near-duplicates removed by n-gram overlap (n = 20) of the prompts, keeping
  the longest response of each group.
Domain labels come from the inputs (`meta`), an LLM through the generation backend (labelling.py),
or a logistic-regression classifier on the embeddings trained on the records that have labels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

from megatron_infi.data_processing.decontamination.ngram import ngram_hashes, normalize_words


def balanced_quotas(sizes: dict[Hashable, int], budget: int) -> dict[Hashable, int]:
    """Equal shares of `budget` over groups, capped by group size; leftovers go to larger groups.

    Every group gets min(size, q) or min(size, q + 1) for one common q, and the quotas sum to
    min(budget, total). Ties for the extra unit go to the groups in sorted-key order.
    """
    total = sum(sizes.values())
    budget = min(budget, total)
    quotas = dict.fromkeys(sizes, 0)
    open_groups = sorted((g for g in sizes if sizes[g] > 0), key=lambda g: (sizes[g], str(g)))
    remaining = budget
    while remaining > 0 and open_groups:
        share = remaining // len(open_groups)
        if share == 0:
            for group in sorted(open_groups, key=str)[:remaining]:
                quotas[group] += 1
            break
        still_open = []
        for group in open_groups:
            take = min(share, sizes[group] - quotas[group])
            quotas[group] += take
            remaining -= take
            if quotas[group] < sizes[group]:
                still_open.append(group)
        open_groups = still_open
    return quotas


def sample_by_groups(
    groups: Sequence[Hashable],
    budget: int,
    rng: np.random.Generator,
    lengths: Sequence[int] | None = None,
    taken: set[int] = frozenset(),
) -> tuple[list[int], dict]:
    """Indices chosen within each group, with balanced quotas per group; `taken` indices (chosen by
    an earlier pass) are not candidates.

    With `lengths`, a group fills its quota with its longest members (difficulty by response length);
    `rng` only orders members of equal length. Without, members are drawn uniformly at random.
    """
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        if index not in taken:
            members[group].append(index)
    quotas = balanced_quotas({g: len(m) for g, m in members.items()}, budget)
    chosen: list[int] = []
    for group in sorted(members, key=str):
        if not quotas[group]:
            continue
        indices = np.array(members[group])
        shuffled = rng.permutation(len(indices))
        if lengths is None:
            order = shuffled
        else:  # lexsort: the last key is the primary one (longest first), the shuffle breaks ties
            order = np.lexsort((shuffled, -np.asarray(lengths)[indices]))
        chosen.extend(int(i) for i in indices[order[: quotas[group]]])
    return sorted(chosen), quotas


def kmeans_backend(name: str) -> str:
    """ "auto": faiss when it imports (much faster on millions of rows), else scikit-learn."""
    if name != "auto":
        return name
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "sklearn"
    return "faiss"


def kmeans_labels(vectors: np.ndarray, k: int, seed: int = 0, backend: str = "auto") -> np.ndarray:
    """Cluster id per row (k capped at the number of rows)."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = max(1, min(k, n))
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kmeans_backend(backend) == "faiss":
        import faiss

        km = faiss.Kmeans(vectors.shape[1], k, niter=25, seed=seed, spherical=True, verbose=False)
        km.train(vectors)
        _, labels = km.index.search(vectors, 1)
        return labels[:, 0].astype(np.int64)
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if n > 50_000:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=3)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=3)
    return model.fit_predict(vectors).astype(np.int64)


def near_duplicates(texts: Sequence[str], order: Sequence[int], n: int = 20) -> dict[int, int]:
    """Indices whose text shares an n-gram with an earlier text in `order` -> the index they duplicate.

    Texts shorter than n words match only an identical (normalised) short text.
    """
    seen: dict[int, int] = {}
    dropped: dict[int, int] = {}
    for index in order:
        hashes = [h for h, _ in ngram_hashes(normalize_words(texts[index]), n)]
        hit = next((seen[h] for h in hashes if h in seen), None)
        if hit is not None:
            dropped[index] = hit
            continue
        for h in hashes:
            seen.setdefault(h, index)
    return dropped


def train_domain_classifier(vectors: np.ndarray, labels: Sequence[str | None], seed: int = 0):
    """Logistic regression on the rows that have a label; returns a predict(vectors) -> labels function."""
    from sklearn.linear_model import LogisticRegression

    known = [i for i, label in enumerate(labels) if label]
    classes = sorted({labels[i] for i in known})
    if len(classes) < 2:
        raise ValueError(f"the domain classifier needs labelled records of >= 2 domains, found {classes}")
    model = LogisticRegression(max_iter=1000, random_state=seed)
    model.fit(vectors[known], [labels[i] for i in known])
    return lambda rows: [str(x) for x in model.predict(rows)] if len(rows) else []
