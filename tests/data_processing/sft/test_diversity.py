from collections import Counter

import numpy as np
import pytest

from megatron_infi.data_processing.sft.config import DifficultyConfig, DiversityConfig
from megatron_infi.data_processing.sft.diversity import (
    balanced_quotas,
    kmeans_labels,
    near_duplicates,
    train_domain_classifier,
)
from megatron_infi.data_processing.sft.formats import to_canonical
from megatron_infi.data_processing.sft.records import prompt_text
from megatron_infi.data_processing.sft.selection import PoolRow, select_pool
from megatron_infi.demo.sft_inputs import champ_problems, champ_qa, gsm_symbolic, humaneval


@pytest.mark.parametrize(
    ("sizes", "budget"),
    [
        ({"a": 100, "b": 3, "c": 50, "d": 0}, 60),
        ({"a": 5, "b": 5}, 100),
        ({"a": 7, "b": 7, "c": 7}, 10),
        ({}, 5),
    ],
)
def test_balanced_quotas_water_fill(sizes, budget):
    quotas = balanced_quotas(sizes, budget)
    assert sum(quotas.values()) == min(budget, sum(sizes.values()))
    assert all(0 <= quotas[g] <= sizes[g] for g in sizes)
    unsaturated = [quotas[g] for g in sizes if quotas[g] < sizes[g]]
    if unsaturated:
        # every group not taken whole gets the same share (+1 at most), and no more than a full group
        assert max(unsaturated) - min(unsaturated) <= 1
        assert all(quotas[g] <= max(unsaturated) for g in sizes)


@pytest.fixture(scope="module")
def pool(encoder):
    """Real prompts of three kinds (competition maths, word problems, code) and their embeddings."""
    records = [to_canonical(r) for r in champ_qa(champ_problems())[::3]]
    records += [to_canonical(r) for r in gsm_symbolic(30, seed=3)]
    records += [to_canonical(r, domain="Programming") for r in humaneval()[:30]]
    return records, encoder.encode([prompt_text(r) for r in records])


def test_cluster_and_domain_quotas_hold_on_real_prompts(pool):
    records, vectors = pool
    rows = [
        PoolRow(
            "s", i, r["meta"]["id"], r["meta"]["domain"], len(r["messages"][-1]["content"]), prompt_text(r)
        )
        for i, r in enumerate(records)
    ]
    diversity = DiversityConfig(
        domain_budget=40, cluster_budget=48, clusters=8, kmeans="sklearn", dedup_ngram=0
    )
    chosen, stats = select_pool(rows, vectors, diversity, DifficultyConfig(mode="off"), seed=0)
    clusters = kmeans_labels(vectors, 8, 0, "sklearn")
    sizes = Counter(clusters.tolist())
    # cluster pass: the equal-share quotas, capped by the cluster sizes
    assert stats["cluster_quotas"] == {str(k): v for k, v in balanced_quotas(dict(sizes), 48).items()}
    cluster_pass = [i for i, extra in chosen.items() if extra["selected_by"] in ("cluster", "both")]
    assert Counter(chosen[i]["cluster"] for i in cluster_pass) == Counter(
        {int(k): v for k, v in stats["cluster_quotas"].items() if v}
    )
    domain_pass = [i for i, extra in chosen.items() if extra["selected_by"] in ("domain", "both")]
    assert Counter(chosen[i]["domain"] for i in domain_pass) == Counter(
        {k: v for k, v in stats["domain_quotas"].items() if v}
    )
    assert stats["domain_pass"] == 40 and stats["cluster_pass"] == 48
    assert stats["merged"] == len(chosen) == 88 - stats["both_passes"]
    # the clusters of real prompts mean something: code and maths mostly fall in different clusters
    is_code = np.array([r["meta"]["task"] == "code" for r in records])
    majority = sum(max(is_code[clusters == c].sum(), (~is_code[clusters == c]).sum()) for c in sizes)
    assert majority / len(records) >= 0.85


def test_difficulty_keeps_the_longest_per_cluster(pool):
    records, vectors = pool
    lengths = [len(r["messages"][-1]["content"].split()) for r in records]
    rows = [
        PoolRow("s", i, r["meta"]["id"], r["meta"]["domain"], lengths[i], prompt_text(r))
        for i, r in enumerate(records)
    ]
    diversity = DiversityConfig(
        domain_budget=0, cluster_budget=len(rows), clusters=6, kmeans="sklearn", dedup_ngram=0
    )
    chosen, stats = select_pool(
        rows, vectors, diversity, DifficultyConfig(mode="quota", per_cluster=5), seed=0
    )
    assert stats["selected"] == 30
    by_cluster = Counter(extra["cluster"] for extra in chosen.values())
    assert set(by_cluster.values()) == {5}
    clusters = kmeans_labels(vectors, 6, 0, "sklearn")
    for cluster in by_cluster:
        members = sorted((lengths[i] for i in range(len(rows)) if clusters[i] == cluster), reverse=True)
        kept = sorted((lengths[i] for i, e in chosen.items() if e["cluster"] == cluster), reverse=True)
        assert kept == members[:5]


def test_near_duplicates_keep_the_first_in_order():
    base = "John has 35 apples and buys 93 more at the store; how many apples does John have now in total at home"
    texts = [
        base,
        base.upper().replace(" ", "  "),
        base.replace("93", "94"),
        "A completely different question about geometry.",
    ]
    dropped = near_duplicates(texts, order=[0, 1, 2, 3], n=20)
    assert dropped == {1: 0}  # "94" breaks every 20-gram of a 21-word text; the case/space copy shares all
    assert near_duplicates(texts, order=[1, 0, 2, 3], n=10) == {0: 1, 2: 1}
    assert near_duplicates(["short one", "Short  one", "short two"], order=[0, 1, 2], n=20) == {1: 0}


def test_domain_classifier_from_labelled_records(pool):
    records, vectors = pool
    labels = [r["meta"]["domain"] or "Arithmetic Word Problems" for r in records]
    train = [lab if i % 3 else None for i, lab in enumerate(labels)]
    predict = train_domain_classifier(vectors, train)
    held = [i for i in range(len(records)) if i % 3 == 0]
    accuracy = np.mean([p == labels[i] for p, i in zip(predict(vectors[held]), held, strict=True)])
    assert accuracy > 0.6, accuracy  # 7 classes; CHAMP's categories overlap, code and GSM do not
    with pytest.raises(ValueError, match=">= 2 domains"):
        train_domain_classifier(vectors[:3], ["a", None, None])


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_kmeans_backends_recover_separated_clusters(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 32))
    x = np.concatenate([c + 0.05 * rng.normal(size=(50, 32)) for c in centers]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = kmeans_labels(x, 4, seed=0, backend=backend)
    assert all(len(set(labels[i * 50 : (i + 1) * 50].tolist())) == 1 for i in range(4))
    assert len(set(labels.tolist())) == 4
    assert len(kmeans_labels(x[:3], 10, backend=backend)) == 3  # k is capped at the number of rows
