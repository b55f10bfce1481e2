"""A local HTTP server that speaks the parts of the OpenAI API the project uses, so the
real ``openai`` SDK code path runs in tests: chat completions (structured output) and
image edits. Tests script responses, delays and errors per path; every request is
recorded for assertions."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: A valid 1x1 PNG, the default image an edit returns.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@dataclass
class Scripted:
    status: int = 200
    body: Any = None  # dict (sent as JSON), or a callable(request) -> dict
    delay: float = 0.0


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeOpenAI:
    scripts: dict[str, deque[Scripted]] = field(default_factory=lambda: defaultdict(deque))
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def script(self, path: str, *responses: Scripted) -> None:
        """Queue responses for ``path`` (e.g. "/v1/chat/completions"), used in order."""
        with self.lock:
            self.scripts[path].extend(responses)

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def reset(self) -> None:
        with self.lock:
            self.scripts.clear()
            self.requests.clear()

    def _next(self, path: str) -> Scripted:
        with self.lock:
            queue = self.scripts.get(path)
            if queue:
                return queue.popleft()
        return Scripted(body=DEFAULTS.get(path, lambda _req: {"error": {"message": "not scripted"}}))

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = Recorded(self.path, {k.lower(): v for k, v in self.headers.items()},
                                   self.rfile.read(length))
                with fake.lock:
                    fake.requests.append(request)
                scripted = fake._next(self.path)
                if scripted.delay:
                    time.sleep(scripted.delay)
                body = scripted.body(request) if callable(scripted.body) else scripted.body
                payload = json.dumps(body or {}).encode()
                try:
                    self.send_response(scripted.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first, as some tests intend

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def chat_completion(content: str | dict[str, Any], model: str = "gpt-4o-mini") -> dict[str, Any]:
    """A chat.completion response whose message carries ``content`` (JSON for dicts)."""
    text = content if isinstance(content, str) else json.dumps(content)
    return {
        "id": "chatcmpl-local", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": text, "refusal": None}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


def image_result(png: bytes = TINY_PNG) -> dict[str, Any]:
    return {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(png).decode()}]}


DEFAULTS: dict[str, Callable[[Recorded], dict[str, Any]]] = {
    "/v1/images/edits": lambda _req: image_result(),
}
