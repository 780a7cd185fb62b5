"""A minimal OpenAI-compatible server on 127.0.0.1 for backend tests (no model behind it).

Faults can be injected into POST requests (completions): ``faults`` is a queue, one fault per
request in arrival order; ``fault`` is a function of the request body (consulted when the
queue is empty) for faults that hit only some requests, e.g. only the student's. See FAULTS.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = {
    "500": "HTTP 500 with a JSON error body",
    "400": "HTTP 400 (a request the server refuses, e.g. prompt too long): not retryable",
    "429": "HTTP 429 with `Retry-After: <retry_after>`",
    "hang": "no answer until hang_s has passed (or the server stops)",
    "truncated": "HTTP 200 whose body stops halfway, then the connection closes",
    "bad_json": "HTTP 200, Content-Type application/json, a body that is not JSON",
    "html": "HTTP 200, Content-Type text/html (a proxy's error page, say)",
    "drop": "the connection closes without any response",
    "empty": "a valid completion whose text is empty",
    "no_choices": "a valid completion object with no choices",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


class FakeOpenAIServer:
    def __init__(
        self, reply: Callable[[dict], str], model: str = "fake-model", port: int = 0
    ) -> None:
        self.reply = reply
        self.model = model
        # LoRA adapters loaded through /v1/load_lora_adapter, as vLLM does: name -> path.
        self.adapters: dict[str, str] = {}
        self.refuse_adapters = False  # answer load_lora_adapter as a server without LoRA does
        # The `root` of the model's card in /v1/models: vLLM reports where it loaded the model
        # from (`--model`); None: not reported, as by servers other than vLLM.
        self.root: str | None = None
        self.authorization: list[str] = []  # the Authorization header of every request
        self.requests: list[dict] = []
        self.request_times: list[float] = []  # time.monotonic() at each POST's arrival
        self.fail_next = 0  # answer this many requests with HTTP 500
        self.faults: list[str] = []  # injected into the next POST requests, in order
        self.fault: Callable[[dict], str | None] | None = None
        self.retry_after = "1"
        self.hang_s = 30.0
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving; from now on connections are refused. Safe to call twice."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stopped.set()  # ends hanging requests
        self._server.shutdown()
        self._server.server_close()

    def stop_soon(self) -> None:
        """Stop from inside a request handler (``stop`` waits for the serving loop)."""
        threading.Thread(target=self.stop, daemon=True).start()

    def _next_fault(self, body: dict) -> str | None:
        if self.fail_next > 0:
            self.fail_next -= 1
            return "500"
        if self.faults:
            return self.faults.pop(0)
        return self.fault(body) if self.fault else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def _send_bytes(
                self,
                status: int,
                data: bytes,
                content_type: str = "application/json",
                headers: dict[str, str] | None = None,
                cut: int | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data if cut is None else data[:cut])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

            def _send(self, status: int, body: dict, **kw: object) -> None:
                self._send_bytes(status, json.dumps(body).encode(), **kw)

            def do_GET(self) -> None:
                fake.authorization.append(self.headers.get("Authorization", ""))
                if self.path == "/v1/models":
                    base = {"id": fake.model, "object": "model", "owned_by": "t"}
                    if fake.root is not None:
                        base["root"] = fake.root
                    with fake._lock:
                        loaded = list(fake.adapters.items())
                    adapters = [  # as vLLM lists a LoRA adapter
                        {"id": name, "object": "model", "root": path, "parent": fake.model}
                        for name, path in loaded
                    ]
                    self._send(200, {"object": "list", "data": [base, *adapters]})
                elif self.path == "/health":
                    self._send_bytes(200, b"")
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                fake.authorization.append(self.headers.get("Authorization", ""))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/v1/load_lora_adapter":
                    if fake.refuse_adapters:
                        self._send(404, {"detail": "Not Found"})
                        return
                    with fake._lock:
                        fake.adapters[body["lora_name"]] = body["lora_path"]
                    self._send_bytes(200, b"Success: LoRA adapter added.", "text/plain")
                    return
                with fake._lock:
                    fake.requests.append(body)
                    fake.request_times.append(time.monotonic())
                    fault = fake._next_fault(body)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay_s)
                    self._answer(body, fault)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def _answer(self, body: dict, fault: str | None) -> None:
                if fault is not None and fault not in FAULTS:
                    raise ValueError(f"unknown fault {fault!r}")
                if fault == "500":
                    self._send(500, {"error": {"message": "injected failure"}})
                    return
                if fault == "400":
                    self._send(400, {"error": {"message": "injected: prompt too long"}})
                    return
                if fault == "429":
                    self._send(
                        429,
                        {"error": {"message": "injected: slow down"}},
                        headers={"Retry-After": fake.retry_after},
                    )
                    return
                if fault == "hang":
                    fake._stopped.wait(fake.hang_s)
                    self.close_connection = True
                    return
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault == "bad_json":
                    self._send_bytes(200, b'{"id": "x", "choices": [{"text": "4"')
                    return
                if fault == "html":
                    self._send_bytes(200, b"<html>502 Bad Gateway</html>", "text/html")
                    return
                text = "" if fault in ("empty", "no_choices") else fake.reply(body)
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
                    choice = {"index": 0, "finish_reason": "stop", "text": text, "logprobs": None}
                    obj = "text_completion"
                reply = {
                    "id": "x",
                    "object": obj,
                    "created": 0,
                    "model": body.get("model") or fake.model,  # vLLM names the adapter used
                    "choices": [] if fault == "no_choices" else [choice],
                    "usage": usage,
                }
                data = json.dumps(reply).encode()
                self._send_bytes(200, data, cut=len(data) // 2 if fault == "truncated" else None)

        return Handler
