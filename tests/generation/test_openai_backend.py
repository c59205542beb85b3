"""The OpenAI-compatible HTTP backend against a tiny local server (127.0.0.1, started here)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from megatron_infi.generation import (
    GenerationConfig,
    GenerationError,
    SamplingParams,
    build_backend,
    openai_http,
)


class FakeServer:
    """Answers like `vllm serve`; `fail_first` requests get HTTP 500, `always_status` makes all fail."""

    def __init__(self, fail_first=0, always_status=None):
        self.requests = []
        self.fail_first = fail_first
        self.always_status = always_status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with threading.Lock():
                    outer.requests.append((self.path, body, self.headers.get("Authorization")))
                    count = len(outer.requests)
                status = outer.always_status or (500 if count <= outer.fail_first else 200)
                if status != 200:
                    self._send(
                        status, {"error": {"message": "model overloaded" if status >= 500 else "bad model"}}
                    )
                    return
                if self.path == "/v1/chat/completions":
                    last = body["messages"][-1]["content"]
                    reply = {
                        "choices": [
                            {"message": {"role": "assistant", "content": f"re:{last}:{body['seed']}"}}
                        ]
                    }
                elif self.path == "/v1/completions":
                    reply = {"choices": [{"text": f"{body['prompt']}->{body['seed']}"}]}
                else:
                    self._send(404, {"error": "no route"})
                    return
                self._send(200, reply)

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(openai_http, "BACKOFF_BASE_S", 0.01)


def backend_for(server, **kw):
    return build_backend(GenerationConfig(model="served-model", base_url=server.url, batch_size=4, **kw))


def test_completions_and_chat_with_a_retry_after_a_500(monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-local")
    with FakeServer(fail_first=1) as server:
        backend = backend_for(server, api_key_env="TEST_KEY")
        assert backend.name == "openai"  # auto + base_url
        out = backend.generate(["x", "y"], SamplingParams(n=2, temperature=0.8, seed=10, max_new_tokens=7))
        chat = backend.chat([[{"role": "user", "content": "hello"}]], SamplingParams(stop=["\n\n"]))
    assert sorted(out[0]) == ["x->10", "x->11"] and sorted(out[1]) == ["y->10", "y->11"]
    assert chat == [["re:hello:0"]]
    assert backend.retries_done == 1
    assert len(server.requests) == 6  # 1 failed + 4 completions + 1 chat
    path, body, auth = server.requests[-1]
    assert path == "/v1/chat/completions" and body["model"] == "served-model" and body["stop"] == ["\n\n"]
    assert auth == "Bearer sk-local"
    assert server.requests[1][1]["max_tokens"] == 7


def test_gives_up_after_max_retries():
    with FakeServer(always_status=503) as server:
        backend = backend_for(server, max_retries=2)
        with pytest.raises(GenerationError, match="gave up after 2 retries .*HTTP 503"):
            backend.generate(["x"], SamplingParams())
    assert len(server.requests) == 3


def test_client_error_is_not_retried():
    with FakeServer(always_status=400) as server:
        backend = backend_for(server)
        with pytest.raises(GenerationError, match="HTTP 400: .*bad model"):
            backend.generate(["x"], SamplingParams())
    assert len(server.requests) == 1


def test_cached_requests_are_not_sent_again(tmp_path):
    with FakeServer() as server:
        backend_for(server, cache_dir=str(tmp_path)).generate(["x", "y"], SamplingParams())
        again = backend_for(server, cache_dir=str(tmp_path)).generate(["x", "y", "z"], SamplingParams())
    assert again == [["x->0"], ["y->0"], ["z->0"]]
    assert len(server.requests) == 3
