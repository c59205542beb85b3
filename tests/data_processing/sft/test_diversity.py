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
    chosen, stats = select_pool(rows, vectors, diversity, DifficultyConfig(mode="random"), seed=0)
    clusters = kmeans_labels(vectors, 8, 0, "sklearn")
    domain_pass = [i for i, extra in chosen.items() if extra["selected_by"] == "domain"]
    assert Counter(chosen[i]["domain"] for i in domain_pass) == Counter(
        {k: v for k, v in stats["domain_quotas"].items() if v}
    )
    # cluster pass: the equal-share quotas over what the domain pass left, capped by those sizes
    left = Counter(int(clusters[i]) for i in range(len(rows)) if i not in set(domain_pass))
    assert stats["cluster_quotas"] == {str(k): v for k, v in balanced_quotas(dict(left), 48).items()}
    cluster_pass = [i for i, extra in chosen.items() if extra["selected_by"] == "cluster"]
    assert Counter(chosen[i]["cluster"] for i in cluster_pass) == Counter(
        {int(k): v for k, v in stats["cluster_quotas"].items() if v}
    )
    assert stats["domain_pass"] == 40 and stats["cluster_pass"] == 48
    assert stats["merged"] == len(chosen) == 88  # the budgets add up: no record is taken twice
    sizes = Counter(clusters.tolist())
    # the clusters of real prompts mean something: code and maths mostly fall in different clusters
    is_code = np.array([r["meta"]["task"] == "code" for r in records])
    majority = sum(max(is_code[clusters == c].sum(), (~is_code[clusters == c]).sum()) for c in sizes)
    assert majority / len(records) >= 0.85


def _known_pool(clusters: int = 4, size: int = 50) -> tuple[list[PoolRow], np.ndarray, list[int]]:
    """Well separated clusters of `size` rows; in each, 10 rows tie at the top length (500) and the
    rest have distinct lengths 100..139; domains d0/d1/d2 cut across the clusters."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(clusters, 32))
    vectors = np.concatenate([c + 0.05 * rng.normal(size=(size, 32)) for c in centers]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    lengths = []
    for _ in range(clusters):
        lengths += rng.permutation([500] * 10 + list(range(100, 100 + size - 10))).tolist()
    rows = [
        PoolRow("s", i, f"id{i:04d}", f"d{i % 3}", lengths[i], f"prompt {i}") for i in range(len(lengths))
    ]
    return rows, vectors, lengths


@pytest.mark.parametrize("quota", [5, 12])
def test_difficulty_fills_each_cluster_quota_with_its_longest(quota):
    rows, vectors, lengths = _known_pool()
    diversity = DiversityConfig(
        domain_budget=0, cluster_budget=4 * quota, clusters=4, kmeans="sklearn", dedup_ngram=0
    )
    picks = []
    for seed in range(4):
        chosen, stats = select_pool(rows, vectors, diversity, DifficultyConfig(mode="longest"), seed=seed)
        assert stats["selected"] == 4 * quota
        # the top quintile of a cluster is its 10 rows of length 500
        assert stats["top_length_quintile_share"] == round(min(quota, 10) / quota, 4)
        for cluster in range(4):
            members = [i for i in range(len(rows)) if i // 50 == cluster]
            kept = [i for i in chosen if i // 50 == cluster]
            assert (
                sorted((lengths[i] for i in kept), reverse=True)
                == sorted((lengths[i] for i in members), reverse=True)[:quota]
            )
        picks.append(frozenset(chosen))
    if quota < 10:  # only the tie at the top is left to chance: the seed changes which tied rows
        assert len(set(picks)) > 1
    else:  # no tie at the quota's edge: every seed selects the same rows
        assert len(set(picks)) == 1


def test_difficulty_fills_each_domain_quota_with_its_longest():
    rows, vectors, lengths = _known_pool()
    diversity = DiversityConfig(
        domain_budget=60, cluster_budget=0, clusters=4, kmeans="sklearn", dedup_ngram=0
    )
    chosen, stats = select_pool(rows, vectors, diversity, DifficultyConfig(mode="longest"), seed=0)
    assert stats["domain_quotas"] == {"d0": 20, "d1": 20, "d2": 20}
    for domain in ("d0", "d1", "d2"):
        members = sorted((lengths[i] for i in range(len(rows)) if rows[i].domain == domain), reverse=True)
        kept = sorted((lengths[i] for i, e in chosen.items() if e["domain"] == domain), reverse=True)
        assert kept == members[:20]


def test_random_difficulty_mode_is_a_uniform_draw():
    rows, vectors, lengths = _known_pool(clusters=4, size=200)
    diversity = DiversityConfig(
        domain_budget=0, cluster_budget=200, clusters=4, kmeans="sklearn", dedup_ngram=0
    )
    _, longest = select_pool(rows, vectors, diversity, DifficultyConfig(mode="longest"), seed=0)
    _, uniform = select_pool(rows, vectors, diversity, DifficultyConfig(mode="random"), seed=0)
    # 50 of each cluster's 200 rows are taken; its top quintile is 40 rows: all of them, then 10 more
    assert longest["top_length_quintile_share"] == 0.8
    assert uniform["top_length_quintile_share"] < 0.5  # a uniform draw: about 0.2 expected
    assert uniform["median_tokens_selected"] < longest["median_tokens_selected"]


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
