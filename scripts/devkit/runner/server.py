"""The runner's HTTP server: keep-alive, every method, Lambda's payload limit on bodies;
each request is handed to the ``Runner``."""

from __future__ import annotations

import contextlib
import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devkit.runner.app import Runner

log = logging.getLogger("devkit.runner")
MAX_PAYLOAD = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: no TCP handshake per request
    disable_nagle_algorithm = True
    server_version = "local-lambda-runner"
    sys_version = ""
    server: Server

    def _dispatch(self) -> None:
        try:
            self.server.runner.handle(self)
        except Exception as exc:  # a bug of the runner, not the function's: say so, keep serving
            log.exception("runner error on %s %s", self.command, self.path.partition("?")[0])
            with contextlib.suppress(OSError):
                self.close_connection = True
                body = json.dumps({"Message": f"local runner error: {type(exc).__name__}"}).encode()
                self.reply(500, [("Content-Type", "application/json")], body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def __getattr__(self, name: str) -> Any:
        # any other method (TRACE, QUERY, ...) reaches the function too, whose resolver
        # answers 405, instead of the standard library's 501
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the runner logs one line per request itself

    def read_body(self) -> bytes | None:
        """The request body, or None when it exceeds Lambda's payload limit (read all the
        same, so the client gets the 413 instead of a broken pipe)."""
        chunks: list[bytes] = []
        total = 0

        def take(size: int) -> None:
            nonlocal total
            while size > 0:
                data = self.rfile.read(min(size, 1 << 20))
                if not data:
                    return
                size, total = size - len(data), total + len(data)
                if total <= MAX_PAYLOAD:
                    chunks.append(data)

        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                take(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
        else:
            take(int(self.headers.get("content-length") or 0))
        return None if total > MAX_PAYLOAD else b"".join(chunks)

    def reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of clients got connection
    # resets. The kernel caps it at net.core.somaxconn (4096 on current kernels).
    request_queue_size = 1024
    runner: Runner
