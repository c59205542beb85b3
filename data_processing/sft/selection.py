"""The global step of selection: the prepared pool -> diversity (domain quotas, then cluster quotas
from the rest, each filled with its longest responses: difficulty) -> near-duplicate removal. Runs as one datatrove task after
every prepare task has finished.

Only light rows (id, domain, length, prompt) and the embeddings are held in memory; the selected
records are streamed from the shards in a second pass. Rows are ordered by id first, so the result
does not depend on how many tasks prepared the pool.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from megatron_infi.data_processing.sft.config import DifficultyConfig, DiversityConfig
from megatron_infi.data_processing.sft.diversity import (
    kmeans_labels,
    near_duplicates,
    sample_by_groups,
    train_domain_classifier,
)
from megatron_infi.data_processing.sft.records import prompt_text
from megatron_infi.data_processing.sft.steps import iter_shards
from megatron_infi.utils import atomic_write_bytes, atomic_write_json


@dataclass
class PoolRow:
    shard: str
    line: int
    id: str
    domain: str | None
    tokens: int
    prompt: str


def load_pool(prepared: Path) -> tuple[list[PoolRow], np.ndarray]:
    rows: list[PoolRow] = []
    blocks: list[np.ndarray] = []
    for shard in iter_shards(prepared):
        vectors = np.load(shard.with_suffix(".npy")).astype(np.float32)
        with open(shard, encoding="utf-8") as handle:
            lines = [json.loads(line) for line in handle if line.strip()]
        if len(lines) != len(vectors):
            raise RuntimeError(f"{shard}: {len(lines)} records but {len(vectors)} embeddings")
        for line, record in enumerate(lines):
            meta = record["meta"]
            rows.append(
                PoolRow(
                    shard.name,
                    line,
                    meta["id"],
                    meta.get("domain"),
                    int(meta.get("response_tokens", 0)),
                    prompt_text(record),
                )
            )
        blocks.append(vectors)
    dim = blocks[0].shape[1] if blocks else 0
    matrix = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
    order = sorted(range(len(rows)), key=lambda i: (rows[i].id, rows[i].shard, rows[i].line))
    return [rows[i] for i in order], matrix[order] if len(order) else matrix


def select_pool(
    rows: list[PoolRow],
    vectors: np.ndarray,
    diversity: DiversityConfig,
    difficulty: DifficultyConfig,
    seed: int,
) -> tuple[dict[int, dict], dict]:
    """-> ({pool index: meta added to the selected record}, stats)."""
    stats: dict = {"pool": len(rows)}
    domains = [r.domain for r in rows]
    sources = ["meta" if d else None for d in domains]
    if diversity.labeller == "classifier" and any(d is None for d in domains):
        predict = train_domain_classifier(vectors, domains, seed)
        missing = [i for i, d in enumerate(domains) if d is None]
        for i, label in zip(missing, predict(vectors[missing]), strict=True):
            domains[i], sources[i] = label, "classifier"
    domains = [d or diversity.default_domain for d in domains]
    clusters = kmeans_labels(vectors, diversity.clusters, seed, diversity.kmeans)
    rng = np.random.default_rng(seed)
    lengths = [r.tokens for r in rows]
    ranking = lengths if difficulty.mode == "longest" else None
    by_domain, domain_quotas = sample_by_groups(domains, diversity.domain_budget, rng, ranking)
    by_cluster, cluster_quotas = sample_by_groups(
        clusters.tolist(), diversity.cluster_budget, rng, ranking, taken=set(by_domain)
    )
    union = sorted(by_domain + by_cluster)
    duplicates: dict[int, int] = {}
    if diversity.dedup_ngram:
        order = sorted(union, key=lambda i: (-lengths[i], rows[i].id))
        duplicates = near_duplicates({i: rows[i].prompt for i in union}, order, diversity.dedup_ngram)
    kept = [i for i in union if i not in duplicates]
    domain_set = set(by_domain)
    chosen = {
        i: {
            "domain": domains[i],
            "domain_source": sources[i] or "default",
            "cluster": int(clusters[i]),
            "selected_by": "domain" if i in domain_set else "cluster",
        }
        for i in kept
    }
    stats.update(
        {
            "domain_pass": len(by_domain),
            "cluster_pass": len(by_cluster),
            "merged": len(union),
            "near_duplicates": len(duplicates),
            "selected": len(kept),
            "difficulty": difficulty.mode,
            **length_stats(lengths, clusters, kept),
            "domain_quotas": {str(k): v for k, v in domain_quotas.items()},
            "cluster_quotas": {str(k): v for k, v in cluster_quotas.items()},
            "domains_pool": dict(Counter(domains)),
            "domains_selected": dict(Counter(domains[i] for i in kept)),
            "clusters_pool": {str(k): v for k, v in Counter(clusters.tolist()).items()},
            "clusters_selected": {str(k): v for k, v in Counter(int(clusters[i]) for i in kept).items()},
            "k": int(clusters.max() + 1) if len(clusters) else 0,
        }
    )
    return chosen, stats


def length_stats(lengths: list[int], clusters: np.ndarray, kept: list[int]) -> dict:
    """How strongly the selection favours long responses: median lengths, and the share of selected
    records in the top length quintile of their cluster (a uniform draw gives about 20%)."""
    tokens = np.asarray(lengths)
    top_quintile = np.zeros(len(tokens), dtype=bool)
    for cluster in np.unique(clusters):
        members = np.flatnonzero(clusters == cluster)
        top_quintile[members] = tokens[members] >= np.quantile(tokens[members], 0.8)
    return {
        "median_tokens_pool": float(np.median(tokens)) if len(tokens) else 0.0,
        "median_tokens_selected": float(np.median(tokens[kept])) if kept else 0.0,
        "top_length_quintile_share": round(float(top_quintile[kept].mean()), 4) if kept else 0.0,
    }


class SelectStep(PipelineStep):
    """One task: reads prepared/ and writes selected/selected.jsonl + selected/stats.json + pool.npz."""

    name = "diversity + difficulty"
    type = "🎯 - SELECT"

    def __init__(
        self, prepared: str, out_dir: str, diversity: DiversityConfig, difficulty: DifficultyConfig, seed: int
    ):
        super().__init__()
        self.prepared, self.out_dir = prepared, out_dir
        self.diversity, self.difficulty, self.seed = diversity, difficulty, seed

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rows, vectors = load_pool(Path(self.prepared))
        chosen, stats = select_pool(rows, vectors, self.diversity, self.difficulty, self.seed)
        wanted = {(rows[i].shard, rows[i].line): extra for i, extra in chosen.items()}
        out = Path(self.out_dir)
        lines = []
        for shard in iter_shards(self.prepared):
            with open(shard, encoding="utf-8") as handle:
                for line, text in enumerate(t for t in handle if t.strip()):
                    extra = wanted.get((shard.name, line))
                    if extra is not None:
                        record = json.loads(text)
                        record["meta"].update(extra)
                        lines.append((record["meta"]["id"], json.dumps(record, ensure_ascii=False)))
        lines.sort()
        atomic_write_bytes(out / "selected.jsonl", "".join(text + "\n" for _, text in lines).encode("utf-8"))
        atomic_write_json(out / "stats.json", stats)
        pool = {
            "tokens": np.array([r.tokens for r in rows], dtype=np.int64),
            "selected": np.array(sorted(chosen), dtype=np.int64),
        }
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **pool)
        atomic_write_bytes(out / "pool.npz", buffer.getvalue())
        self.stat_update("selected", value=len(chosen))
        return iter(())
