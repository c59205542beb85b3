from megatron_infi import assets
from megatron_infi.data_processing.decontamination.ngram import (
    BenchmarkItem,
    NGramIndex,
    load_benchmark_items,
)


def test_humaneval_prompt_found_despite_case_and_whitespace():
    items = load_benchmark_items(assets.humaneval_jsonl_gz(), "humaneval", text_fields=("prompt",))
    assert len(items) == 164
    index = NGramIndex(n=10).add_all(items)
    leaked = items[17].text.upper().replace(" ", "   ").replace("\n", " \n\t")
    doc = "Some blog post about programming.\n" + leaked + "\nThanks for reading."
    hits = {(m.benchmark, m.item_id) for m in index.matches(doc)}
    # Prompts share boilerplate (imports), so other items may match too; the leaked one must.
    assert ("humaneval", items[17].item_id) in hits
    assert not index.is_contaminated("Some blog post about programming. Thanks for reading.")


def test_clean_text_and_short_text_do_not_match():
    index = NGramIndex(n=10).add_all(
        [BenchmarkItem("b", "1", "one two three four five six seven eight nine ten eleven")]
    )
    assert not index.is_contaminated("one two three four five six seven eight nine")  # 9 words < n
    assert not index.is_contaminated("completely different words " * 10)
    assert index.is_contaminated("prefix ONE two, three four five six seven eight nine ten suffix")
