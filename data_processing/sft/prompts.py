"""Prompt templates for every LLM call of selection and synthesis, and the parsers of their replies.

Evolution templates follow Evol-Instruct (WizardLM, Xu et al. 2023), the instruction evolution InfiR
uses: five in-depth operations that make an instruction harder and one in-breadth operation that
writes a new instruction of the same domain.
"""

from __future__ import annotations

import re

COT_SYSTEM = "You are an expert tutor. Solve problems step by step and state the final answer clearly."
COT_TEMPLATE = (
    "Solve the following problem. Reason step by step, then give the final answer "
    "{answer_hint}.\n\n{question}"
)
COT_ANSWER_HINT = {
    "math": "in \\boxed{{}}",
    "code": "as a complete Python program in one ```python code block",
    "open": "in a clear final paragraph",
}

LABEL_TEMPLATE = (
    "Classify the problem below into exactly one of these domains:\n{domains}\n\n"
    "Reply with the domain name only.\n\nProblem:\n{question}"
)

CORRECTION_TEMPLATE = (
    "{question}\n\n"
    "A previous attempt at this problem was checked and is incorrect{why}:\n\n"
    "<previous_attempt>\n{attempt}\n</previous_attempt>\n\n"
    "Solve the problem again from scratch, step by step, avoiding that mistake. {answer_hint}"
)
CORRECTION_ANSWER_HINT = {
    "math": "Put the final answer in \\boxed{}.",
    "code": "Give the complete program in one ```python code block.",
    "open": "",
}

SCORE_TEMPLATE = (
    "Rate the quality of the assistant's response to the user's request on a scale from 1 to 10 "
    "(helpfulness, correctness, completeness, clarity). Reply with the number only.\n\n"
    "[User]\n{question}\n\n[Assistant]\n{response}\n\nScore:"
)

EVOL_DEPTH_BASE = (
    "I want you to act as a Prompt Rewriter. Your objective is to rewrite a given prompt into a more "
    "complex version to make those famous AI systems (e.g., ChatGPT and GPT-4) a bit harder to handle. "
    "But the rewritten prompt must be reasonable and must be understood and responded to by humans.\n"
    "You SHOULD complicate the given prompt using the following method:\n{method}\n"
    "You should try your best not to make the #Rewritten Prompt# become verbose; #Rewritten Prompt# can "
    "only add 10 to 20 words into #The Given Prompt#.\n"
    "'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed "
    "to appear in #Rewritten Prompt#.\n\n#The Given Prompt#:\n{instruction}\n\n#Rewritten Prompt#:\n"
)
EVOL_DEPTH_METHODS = {
    "constraints": "Please add one more constraint or requirement into #The Given Prompt#.",
    "deepening": "If #The Given Prompt# contains inquiries about certain issues, the depth and breadth of "
    "the inquiry can be increased.",
    "concretizing": "Please replace general concepts with more specific concepts.",
    "reasoning": "If #The Given Prompt# can be solved with just a few simple thinking processes, you can "
    "rewrite it to explicitly request multiple-step reasoning.",
    "complicate_input": "Please add a piece of data in an appropriate format (a table, a list, code or a "
    "formula) that the rewritten prompt needs to be answered.",
}
EVOL_BREADTH = (
    "I want you to act as a Prompt Creator. Your goal is to draw inspiration from the #Given Prompt# to "
    "create a brand new prompt. This new prompt should belong to the same domain as the #Given Prompt# "
    "but be even more rare. The LENGTH and complexity of the #Created Prompt# should be similar to that "
    "of the #Given Prompt#. The #Created Prompt# must be reasonable and must be understood and responded "
    "to by humans. '#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' are not "
    "allowed to appear in #Created Prompt#.\n\n#Given Prompt#:\n{instruction}\n\n#Created Prompt#:\n"
)
EVOL_OPERATIONS = (*EVOL_DEPTH_METHODS, "breadth")
TEMPLATE_MARKERS = ("#the given prompt#", "#rewritten prompt#", "#given prompt#", "#created prompt#")
REFUSALS = ("sorry", "as an ai", "i cannot", "i can't")


def evolution_prompt(operation: str, instruction: str) -> str:
    if operation == "breadth":
        return EVOL_BREADTH.format(instruction=instruction)
    return EVOL_DEPTH_BASE.format(method=EVOL_DEPTH_METHODS[operation], instruction=instruction)


def cot_prompt(question: str, task: str, answer: str | None) -> str:
    prompt = COT_TEMPLATE.format(answer_hint=COT_ANSWER_HINT[task].format(), question=question)
    if answer:
        prompt += f"\n\n(The reference final answer is {answer}; derive it, do not just state it.)"
    return prompt


def label_prompt(question: str, domains: list[str]) -> str:
    return LABEL_TEMPLATE.format(domains="\n".join(f"- {d}" for d in domains), question=question)


def parse_label(reply: str, domains: list[str]) -> str | None:
    """The first domain named in the reply (case-insensitive; the longest name wins a tie)."""
    text = reply.lower()
    positions = [(text.find(d.lower()), -len(d), d) for d in domains if d.lower() in text]
    return min(positions)[2] if positions else None


def correction_prompt(question: str, attempt: str, task: str, why: str = "") -> str:
    return CORRECTION_TEMPLATE.format(
        question=question,
        attempt=attempt,
        why=f" ({why})" if why else "",
        answer_hint=CORRECTION_ANSWER_HINT[task],
    ).rstrip()


def score_prompt(question: str, response: str) -> str:
    return SCORE_TEMPLATE.format(question=question, response=response)


def parse_score(reply: str, low: float = 1.0, high: float = 10.0) -> float | None:
    match = re.search(r"-?\d+(?:\.\d+)?", reply)
    if not match:
        return None
    value = float(match.group())
    return value if low <= value <= high else None


def clean_evolved(reply: str) -> str:
    """Strip the template's own headings if the model echoed them."""
    text = reply.strip()
    for marker in ("#Rewritten Prompt#:", "#Created Prompt#:"):
        if marker in text:
            text = text.split(marker, 1)[1].strip()
    return text


def evolution_failure(parent: str, evolved: str, min_words: int = 3) -> str | None:
    """Evol-Instruct's elimination rules: why an evolved instruction is dropped, or None."""
    lowered = evolved.lower()
    if len(evolved.split()) < min_words:
        return "evolve: too short"
    if any(marker in lowered for marker in TEMPLATE_MARKERS):
        return "evolve: copied template"
    if any(lowered.startswith(r) or f" {r}" in lowered[:80] for r in REFUSALS):
        return "evolve: refusal"
    if " ".join(lowered.split()) == " ".join(parent.lower().split()):
        return "evolve: unchanged"
    return None
