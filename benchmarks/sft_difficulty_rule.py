"""How strongly the selection favours long responses (InfiAlign's difficulty rule), at the proportions
of launch/configs/sft_data/infialign_select.yaml scaled down: each budget 1.1% of the pool, ~5,000
records per cluster, 12 domains, log-normal response lengths (median 3,000 tokens).

    PYTHONPATH=. python benchmarks/sft_difficulty_rule.py [--pool 50000]

Prints, for `difficulty.mode: longest` and the uniform draw (`random`), the share of selected records
in the top length quintile of their cluster and the median response length (selection's own stats).
"""

from __future__ import annotations

import argparse

import numpy as np


def synthetic_pool(n: int, clusters: int, domains: int, seed: int = 0):
    from megatron_infi.data_processing.sft.selection import PoolRow

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, 16))
    cluster = rng.integers(0, clusters, n)
    vectors = (centers[cluster] + 0.1 * rng.normal(size=(n, 16))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    lengths = rng.lognormal(np.log(3000), 0.6, n).astype(int)
    domain = rng.integers(0, domains, n)
    rows = [PoolRow("s", i, f"id{i:07d}", f"d{domain[i]}", int(lengths[i]), f"p{i}") for i in range(n)]
    return rows, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool", type=int, default=50_000)
    args = parser.parse_args()

    from megatron_infi.data_processing.sft.config import DifficultyConfig, DiversityConfig
    from megatron_infi.data_processing.sft.selection import select_pool

    clusters = max(1, args.pool // 5000)
    rows, vectors = synthetic_pool(args.pool, clusters, domains=12)
    budget = int(0.011 * args.pool)
    diversity = DiversityConfig(
        domain_budget=budget, cluster_budget=budget, clusters=clusters, kmeans="sklearn", dedup_ngram=0
    )
    print("| difficulty.mode | selected | in their cluster's top length quintile | median tokens (pool) |")
    print("|---|---|---|---|")
    for mode in ("longest", "random"):
        _, stats = select_pool(rows, vectors, diversity, DifficultyConfig(mode=mode), seed=0)
        print(
            f"| {mode} | {stats['selected']} | {stats['top_length_quintile_share']:.1%} | "
            f"{stats['median_tokens_selected']:.0f} ({stats['median_tokens_pool']:.0f}) |"
        )


if __name__ == "__main__":
    main()
