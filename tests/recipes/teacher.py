"""A stand-in for the recipes' large teacher LLM (Qwen2.5-32B / 72B behind vLLM): an OpenAI-compatible
server on localhost that plays every role selection and synthesis give the LLM, with known answers,
so that toy-scale runs keep records the way a good teacher makes them keep theirs."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Teacher:
    """Answers a problem it knows (its text appears in the request) with the reference solution,
    rewrites an instruction (Evol-Instruct) by asking for more detail, names a domain, scores 8."""

    def __init__(self, solutions: dict[str, str]):
        self.solutions = dict(sorted(solutions.items(), key=lambda kv: -len(kv[0])))  # longest match first
        self.requests = 0
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                teacher.requests += 1
                text = teacher.reply(body["messages"][-1]["content"])
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

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

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
