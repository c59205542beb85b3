"""What each model sees: zero-shot chat messages for instruct models, few-shot text for base models,
and how a reply turns back into a program for code problems.

Zero-shot prompts are the benchmark's problem statement rendered under the run's prompt contract
(megatron_infi/config/prompt.py: system prompt and the instruction of each kind - the \\boxed{}
instruction of Qwen2.5-Math / DeepSeek-R1 for maths, "The answer is (X)" for multiple choice, a
```python block for code), the same contract SFT data and DPO pairs use; few-shot prompts follow
lm-evaluation-harness's shapes (Question/Answer pairs; MMLU's header and "Answer: X"; HumanEval as
plain completion; MBPP's [BEGIN]/[DONE] format).
"""

from __future__ import annotations

import re

from megatron_infi.config.prompt import PromptContract
from megatron_infi.evaluation.problems import Problem

CODE_FENCE = re.compile(r"```(?:python|py|Python3?)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)
# completion of a HumanEval-style function stops where the next top-level statement would start
CODE_COMPLETION_STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert "]


def problem_statement(problem: Problem) -> str:
    """The task as the benchmark states it, before the contract's instruction for its kind."""
    if problem.kind != "code":
        return problem.question
    if problem.code_prompt:  # HumanEval
        return f"Complete the following Python function.\n```python\n{problem.code_prompt}```"
    if problem.tests:  # MBPP
        shown = "\n".join(problem.meta.get("shown_tests", []))
        return f"{problem.question}\nYour code should pass these tests:\n{shown}"
    # LiveCodeBench
    if problem.starter_code:
        how = f"Use this starter code and complete it:\n```python\n{problem.starter_code}\n```"
    else:
        how = "Read the input from standard input and write the answer to standard output."
    return f"{problem.question}\n\n{how}"


def chat_messages(problem: Problem, contract: PromptContract) -> list[dict]:
    if problem.image:
        # A question about an image: the image, then the question (HF's multimodal message parts), as
        # the VL stages trained (their text format is the export's chat template; the contract's
        # system prompt and kind instructions are the text stages').
        content = [{"type": "image", "path": problem.image}, {"type": "text", "text": problem.question}]
        return [{"role": "user", "content": content}]
    return contract.render(problem_statement(problem), problem.kind)


def _math_shot(problem: Problem) -> str:
    return f"Question: {problem.question}\nAnswer: {problem.solution.strip()}"


def _choice_shot(problem: Problem, answer: str | None) -> str:
    return f"{problem.question}\nAnswer:" + (f" {answer}" if answer else "")


def _mbpp_shot(problem: Problem, code: str | None) -> str:
    shown = "\n".join(problem.meta.get("shown_tests", []))
    head = (
        f"You are an expert Python programmer, and here is your task: {problem.question} "
        f"Your code should pass these tests:\n\n{shown}\n[BEGIN]\n"
    )
    return head + (f"{code.strip()}\n[DONE]" if code is not None else "")


def fewshot_prompt(problem: Problem, shots: list[Problem]) -> tuple[str, list[str]]:
    """(prompt text, stop strings) for a base model (questions about images are asked in chat mode:
    EvalConfig refuses few-shot there)."""
    if problem.kind == "math":
        parts = [_math_shot(s) for s in shots] + [f"Question: {problem.question}\nAnswer:"]
        return "\n\n".join(parts), ["\n\nQuestion:", "Question:"]
    if problem.kind == "choice":
        header = "The following are multiple choice questions (with answers).\n\n"
        parts = [_choice_shot(s, s.answers[0]) for s in shots] + [_choice_shot(problem, None)]
        return header + "\n\n".join(parts), ["\n"]
    if problem.code_prompt:  # HumanEval: complete the function body
        return problem.code_prompt, CODE_COMPLETION_STOPS
    if problem.tests:  # MBPP
        parts = [_mbpp_shot(s, s.solution) for s in shots] + [_mbpp_shot(problem, None)]
        return "\n".join(parts), ["[DONE]"]
    header = f"### Question:\n{problem.question}\n\n### Answer:\n```python\n"
    return header + problem.starter_code, ["```"]


def pick_shots(problem: Problem, pool: list[Problem], k: int) -> list[Problem]:
    """The first k exemplars of the pool (a separate split, see benchmarks.load_exemplars); for a
    problem with a subject (MMLU), exemplars of that subject first."""
    subject = problem.meta.get("subject")
    if subject:
        pool = sorted(pool, key=lambda candidate: candidate.meta.get("subject") != subject)  # stable
    return [candidate for candidate in pool if candidate.id != problem.id][:k]


def extract_code(reply: str) -> str:
    """The last fenced code block of a reply (an unclosed final block counts), else the whole reply."""
    blocks = CODE_FENCE.findall(reply)
    return blocks[-1] if blocks else reply


def _header_lines(code_prompt: str) -> str:
    """Imports and helper definitions of a HumanEval prompt, which a model's rewrite may leave out."""
    head = code_prompt.split("\ndef ")[0] if not code_prompt.startswith("def ") else ""
    return head.strip()


def program_from_reply(problem: Problem, reply: str, mode: str) -> str:
    """The program to test: base completions continue the prompt; chat replies carry code blocks."""
    if mode == "fewshot":
        if problem.code_prompt:
            return problem.code_prompt + reply
        return problem.starter_code + reply  # the prompt ended with the starter code
    code = extract_code(reply)
    if problem.code_prompt:
        if problem.entry_point and re.search(rf"^\s*def\s+{re.escape(problem.entry_point)}\s*\(", code, re.M):
            return f"{_header_lines(problem.code_prompt)}\n\n{code}"
        return problem.code_prompt + code  # the reply wrote only the body
    return code
