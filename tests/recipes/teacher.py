"""A stand-in for the recipes' large teacher LLM (Qwen2.5-32B / 72B behind vLLM): an OpenAI-compatible
server on localhost that plays every role selection and synthesis give the LLM, with known answers,
so that toy-scale runs keep records the way a good teacher makes them keep theirs."""

from __future__ import annotations

import re

from tests.chat_server import ScriptedChatServer


class Teacher(ScriptedChatServer):
    """Answers a problem it knows (its text appears in the request) with the reference solution,
    rewrites an instruction (Evol-Instruct) by asking for more detail, names a domain, scores 8."""

    def __init__(self, solutions: dict[str, str]):
        self.solutions = dict(sorted(solutions.items(), key=lambda kv: -len(kv[0])))  # longest match first
        super().__init__(lambda body: self.reply(body["messages"][-1]["content"]))

    def reply(self, prompt: str) -> str:
        if prompt.startswith("Classify the problem below"):
            return "Algebra"
        if prompt.startswith("Rate the quality"):
            return "8"
        given = re.search(r"#(?:The )?Given Prompt#:\n(.*?)\n\n#(?:Rewritten|Created) Prompt#", prompt, re.S)
        if given:
            return f"#Rewritten Prompt#:\n{given.group(1).strip()} Explain every step of the work."
        for question, solution in self.solutions.items():
            if question.strip() in prompt:
                return solution
        return "I do not know."
