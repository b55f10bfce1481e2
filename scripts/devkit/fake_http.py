"""The HTTP plumbing the local provider fakes (devkit.fake_openai, fake_paymob,
fake_stripe) share: a threaded server on a free local port that records every request,
answers from responses tests queue per route (with delays and errors) or from the fake's
default, and sends JSON (or a ``Page``: the checkout pages' HTML and redirects). Each fake
says how a request maps to a route in ``route``.

Hand-written on the standard library's http.server: the fakes need recorded requests and
scripted answers in-process, which no maintained stub-server library gives more simply."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


@dataclass
class Scripted:
    status: int = 200
    body: Any = None  # dict (sent as JSON), or a callable(request) -> dict
    delay: float = 0.0


@dataclass
class Page:
    """An answer that is not JSON: a checkout page, or a redirect (``headers``)."""

    body: str = ""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]  # lower-case names, and ":method"
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


#: An answer: status and body (JSON-able, bytes sent as they are, or a Page).
Answer = tuple[int, Any]
#: What a route answers when nothing is scripted for it.
Default = Callable[[Recorded], Answer]


@dataclass
class FakeServer:
    scripts: dict[str, deque[Scripted]] = field(default_factory=lambda: defaultdict(deque))
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    #: Appended to the server's root in ``base_url``.
    url_suffix = ""
    #: The HTTP methods the fake serves; others get 501, unrecorded.
    methods: ClassVar[tuple[str, ...]] = ("POST",)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.url_suffix}"

    def route(self, request: Recorded) -> tuple[str | None, Default]:
        """The script key of ``request`` and its default answer; key None answers with
        the default alone (e.g. a 404), scripts unused."""
        raise NotImplementedError

    def response_headers(self) -> dict[str, str]:
        """Headers sent with every answer besides content-type and content-length."""
        return {}

    def _queue(self, key: str, responses: tuple[Scripted, ...]) -> None:
        with self.lock:
            self.scripts[key].extend(responses)

    def reset(self) -> None:
        with self.lock:
            self.scripts.clear()
            self.requests.clear()

    def _answer(self, request: Recorded) -> Answer:
        key, default = self.route(request)
        with self.lock:
            queue = self.scripts.get(key) if key is not None else None
            scripted = queue.popleft() if queue else None
        if scripted is None:
            return default(request)
        if scripted.delay:
            time.sleep(scripted.delay)
        return scripted.status, scripted.body(request) if callable(scripted.body) else scripted.body

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                if self.command not in fake.methods:
                    return self.send_error(501, f"Unsupported method ({self.command!r})")
                length = int(self.headers.get("content-length") or 0)
                headers = {k.lower(): v for k, v in self.headers.items()} | {":method": self.command}
                request = Recorded(self.path, headers, self.rfile.read(length))
                with fake.lock:
                    fake.requests.append(request)
                status, body = fake._answer(request)
                answer_headers = {"content-type": "application/json", **fake.response_headers()}
                if isinstance(body, Page):
                    payload = body.body.encode()
                    answer_headers.update({"content-type": body.content_type, **body.headers})
                else:
                    payload = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-length", str(len(payload)))
                    for name, value in answer_headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first, as some tests intend

            do_GET = do_POST = _handle

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
