"""A minimal OpenAI-compatible server on 127.0.0.1 for backend tests (no model behind it)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAIServer:
    def __init__(self, reply: Callable[[dict], str], model: str = "fake-model") -> None:
        self.reply = reply
        self.model = model
        self.requests: list[dict] = []
        self.fail_next = 0  # answer this many requests with HTTP 500
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(
                        200,
                        {
                            "object": "list",
                            "data": [
                                {"id": fake.model, "object": "model", "created": 0, "owned_by": "t"}
                            ],
                        },
                    )
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.requests.append(body)
                    failing = fake.fail_next > 0
                    fake.fail_next -= failing
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay_s)
                    if failing:
                        self._send(500, {"error": {"message": "injected failure"}})
                        return
                    text = fake.reply(body)
                    usage = {
                        "prompt_tokens": 7,
                        "completion_tokens": len(text.split()),
                        "total_tokens": 7 + len(text.split()),
                    }
                    if self.path == "/v1/chat/completions":
                        choice = {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text},
                        }
                        obj = "chat.completion"
                    else:
                        choice = {
                            "index": 0,
                            "finish_reason": "stop",
                            "text": text,
                            "logprobs": None,
                        }
                        obj = "text_completion"
                    self._send(
                        200,
                        {
                            "id": "x",
                            "object": obj,
                            "created": 0,
                            "model": fake.model,
                            "choices": [choice],
                            "usage": usage,
                        },
                    )
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        return Handler
