import json
import re

import numpy as np

from megatron_infi.data_processing.decontamination.embedding import EmbeddingIndex, load_question_items
from megatron_infi.data_processing.decontamination.ngram import BenchmarkItem
from megatron_infi.data_processing.sft.decontaminate import BenchmarkSet
from megatron_infi.data_processing.sft.formats import to_canonical
from megatron_infi.data_processing.sft.records import prompt_text
from megatron_infi.demo.sft_inputs import champ_problems, gsm_symbolic


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_whitespace_and_case_changes_are_caught_by_each_method(tmp_path, encoder):
    bench = gsm_symbolic(12, seed=7)
    path = write_jsonl(
        tmp_path / "gsm_bench.jsonl",
        [{"id": f"b{i}", "question": r["question"]} for i, r in enumerate(bench)],
    )
    leaked = "  ".join(bench[5]["question"].upper().split(" "))
    clean = gsm_symbolic(12, seed=8)
    records = [
        to_canonical({"question": leaked, "solution": "I think the answer is 3.\n#### 3", "answer": "3"})
    ]
    records += [to_canonical({"question": r["question"], "solution": r["solution"]}) for r in clean[:3]]
    bench_ids = {r["question"] for r in bench}
    records = [r for r in records[:1]] + [r for r in records[1:] if prompt_text(r) not in bench_ids]
    vectors = encoder.encode([prompt_text(r) for r in records])
    ngram_only = BenchmarkSet.build([str(path)], ngram=15, threshold=None, encoder=None)
    embedding_only = BenchmarkSet.build([str(path)], ngram=0, threshold=0.9, encoder=encoder)
    for benchmarks, method in ((ngram_only, "ngram"), (embedding_only, "embedding")):
        hits = benchmarks.check(records, vectors)
        assert hits[0] is not None and hits[0]["method"] == method
        assert (hits[0]["benchmark"], hits[0]["item_id"]) == ("gsm_bench", "b5")


def champ_paraphrase():
    """CHAMP's own restatement of P_Combinatorics_1 (shown to models in its 'Problem C' prompts)."""
    problem = next(p for p in champ_problems() if p["identifier"] == "P_Combinatorics_1")
    prompt = next(
        m["text"]
        for m in problem["conversations"]["GPT-4|Problem C w/o H"]["messages"]
        if m["role"] == "User"
    )
    match = re.search(r"Problem: (.*?)\nStep-wise solution:\n(.*?)\n\n", prompt, re.S)
    return problem, match.group(1).strip(), match.group(2).strip()


def test_embedding_catches_a_real_paraphrase_that_ngrams_miss(tmp_path, encoder):
    problem, paraphrase, solution = champ_paraphrase()
    path = write_jsonl(
        tmp_path / "champ.jsonl", [{"id": problem["identifier"], "question": problem["_text"]}]
    )
    record = to_canonical(
        {"question": paraphrase, "solution": solution + "\n\nSo the answer is $\\boxed{239}$."}
    )
    vectors = encoder.encode([prompt_text(record)])
    assert BenchmarkSet.build([str(path)], 15, None, None).check([record], vectors) == [None]
    hit = BenchmarkSet.build([str(path)], 15, 0.9, encoder).check([record], vectors)[0]
    assert hit["method"] == "embedding" and hit["item_id"] == "P_Combinatorics_1"
    assert float(hit["evidence"].split()[-1]) > 0.9


def test_embedding_index_threshold_and_blocks():
    items = [BenchmarkItem("b", str(i), f"t{i}") for i in range(5)]
    vectors = np.eye(5, dtype=np.float32)
    index = EmbeddingIndex(threshold=0.9, items=items, vectors=vectors, block=2)
    queries = np.array([[0, 0, 0, 1, 0], [0.6, 0.8, 0, 0, 0], [0, 0, 0, 0, 0.95]], dtype=np.float32)
    found = index.search(queries)
    assert found[0].item_id == "3" and found[0].score == 1.0
    assert found[1] is None  # best cosine 0.8
    assert found[2].item_id == "4"


def test_question_items_skip_answers(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", [{"id": 1, "question": "What is two plus two?", "answer": "4"}])
    assert [(i.item_id, i.text) for i in load_question_items(path)] == [("1", "What is two plus two?")]


def test_benchmark_embeddings_are_cached(tmp_path, encoder):
    path = write_jsonl(
        tmp_path / "b.jsonl",
        [{"id": i, "question": r["question"]} for i, r in enumerate(gsm_symbolic(4, seed=3))],
    )
    first = BenchmarkSet.build([str(path)], 15, 0.9, encoder, cache=tmp_path / "bench")
    second = BenchmarkSet.build([str(path)], 15, 0.9, None, cache=tmp_path / "bench")  # no encoder needed
    assert np.array_equal(first.embedding.vectors, second.embedding.vectors)
    assert first.sizes == second.sizes == {"b": 4}
