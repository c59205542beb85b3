import importlib

from megatron_infi.data_processing.sft.filters import RuleFilter, find_boxed, truncation_reason
from megatron_infi.data_processing.sft.formats import to_canonical
from megatron_infi.demo.sft_inputs import champ_palm_attempts, champ_problems, champ_qa


def chat(user: str, assistant: str, **meta) -> dict:
    return to_canonical(
        {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], **meta}
    )


def test_language_filter_drops_real_non_english_and_keeps_maths_and_code():
    rules = RuleFilter()
    for lang in ("de", "fr", "zh", "ru", "ja"):
        sentences = importlib.import_module(f"spacy.lang.{lang}.examples").sentences
        record = chat(sentences[0], sentences[1])
        assert rules.language_reason(record) == "non-english", (lang, record["meta"])
        assert record["meta"]["language"] == lang
    # CHAMP's LaTeX-heavy maths reads as low-confidence "English" or worse; none may be dropped.
    records = [to_canonical(row) for row in champ_qa(champ_problems())]
    dropped = [r["meta"]["id"] for r in records if rules.language_reason(r)]
    assert len(dropped) <= 1, dropped


def test_boxed_answers_with_nested_braces():
    assert find_boxed(r"so \boxed{\frac{1}{2}} and \boxed{3}") == [r"\frac{1}{2}", "3"]
    assert find_boxed(r"\boxed{\frac{1}{2}") == []


def test_truncation_signs():
    assert truncation_reason("Thus (1, 2), (3, 4", {}, None) == "truncated: open bracket"
    assert truncation_reason("```python\nprint(1)\n", {}, None) == "truncated: open code fence"
    assert truncation_reason(r"The answer is \boxed{\frac{1}{2}", {}, None) == "truncated: open \\boxed"
    assert truncation_reason("We add the numbers and", {}, None) == "truncated: dangling end"
    assert truncation_reason("Done.", {"finish_reason": "length"}, None) == "truncated: finish_reason=length"
    assert truncation_reason("Done.", {"response_tokens": 512}, 512) == "truncated: at max tokens"
    assert truncation_reason("So the answer is 4 (by step 1).", {}, None) is None


def test_real_palm_attempts_format_and_truncation():
    """CHAMP's PaLM 2 zero-shot answers: most lack \\boxed{} (dropped as missing answer); the
    reference solutions written in canonical form all pass."""
    problems = champ_problems()
    rules = RuleFilter(languages=())
    attempts = [to_canonical(row) for row in champ_palm_attempts(problems)]
    reasons = [rules.check(r) for r in attempts]
    missing = sum(1 for r in reasons if r == "missing-answer: no \\boxed{}")
    kept = sum(1 for r in reasons if r is None)
    assert missing > 150 and 30 < kept < 80, (missing, kept)
    references = [to_canonical(row) for row in champ_qa(problems)]
    assert [rules.check(r) for r in references] == [None] * len(references)


def test_code_needs_a_code_block():
    rules = RuleFilter(languages=())
    record = chat("Write add(a, b).", "Use the plus operator.", tests="assert add(1, 2) == 3")
    assert rules.check(record) == "missing-answer: no code block"
    record = chat(
        "Write add(a, b).", "```python\ndef add(a, b):\n    return a + b\n```", tests="assert add(1, 2) == 3"
    )
    assert rules.check(record) is None
