"""The local runner behind ``make dev``: every function of template.yaml served as Lambda
would serve it, without Docker.

- Function URLs: ``http://127.0.0.1:3000/<function>/<path>`` becomes a Function URL event
  (payload 2.0) whose rawPath is ``/<path>``; the handler's response is turned back into
  HTTP as the URL service does it.
- Each function runs in worker processes of its own (``devkit.worker``): its CodeUri and
  layers on sys.path, warm between requests, restarted cold when a file under the CodeUri
  or a layer changes, killed when it overruns the function's Timeout.
- Scheduled functions (ScheduleV2 / Schedule events) fire on their rate/cron/at
  expressions with their Input, and on demand: ``POST /_schedules/<function>``.
- ``POST /_invoke/<function>`` invokes any function with the request body as its event
  (what ``scripts/invoke`` uses).

``main()`` adds the local stand-ins: Postgres (``DATABASE_URL`` or the embedded server),
migrations and demo data, a moto S3 server with the buckets, and prints what runs where.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from devkit import ROOT, cfn, lambdas, s3, schedules

log = logging.getLogger("devkit.runner")

TEMPLATE = ROOT / "template.yaml"
DEFAULT_PORT = 3000
DEFAULT_ENV_FILE = ROOT / "env.local.json"
#: Where `make dev` keeps the local S3's objects between runs (next to .local/pgdata).
DEFAULT_S3_STATE = ROOT / ".local" / "s3"
#: Used when neither the shell nor env.local.json sets JWT_SECRET; long enough for HS256.
LOCAL_JWT_SECRET = "local-dev-jwt-secret-not-for-production-000"
#: Local values for the secrets that verify incoming requests, so sample webhook events
#: can be signed with known values; the shell or env.local.json override them.
LOCAL_SECRETS = {
    "JWT_SECRET": LOCAL_JWT_SECRET,
    "PAYMOB_HMAC_SECRET": "local-paymob-hmac-secret",
    "STRIPE_WEBHOOK_SECRET": "whsec_local_stripe_webhook_secret",
    "REVENUECAT_WEBHOOK_AUTH": "local-revenuecat-webhook-auth",
}
MAX_WORKERS = 4  # per function, unless ReservedConcurrentExecutions says otherwise
INIT_TIMEOUT_S = 10.0  # Lambda's limit for the init phase
MAX_PAYLOAD = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit
#: Process variables a worker inherits (the rest of its environment is the function's).
PASSTHROUGH = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SSL_CERT_FILE",
               "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "XDG_RUNTIME_DIR")
#: Settings taken from the shell when set there (secrets and provider endpoints).
SHELL_SETTINGS = ("OPENAI_BASE_URL", "PAYMOB_API_URL", "STRIPE_API_BASE", "REVENUECAT_API_URL")
#: The payment providers' APIs are local fakes (devkit.fake_paymob, devkit.fake_stripe,
#: devkit.fake_revenuecat) unless you configure the provider's secret key (shell or env.local.json): then the
#: settings that point at the fake are left out, and the template's (real) ones apply.
FAKE_PROVIDER_SETTINGS = {
    "PAYMOB_SECRET_KEY": ("PAYMOB_API_URL", "PAYMOB_PUBLIC_KEY", "PAYMOB_INTEGRATION_IDS", "PAYMOB_API_KEY"),
    "STRIPE_API_KEY": ("STRIPE_API_BASE",),
    "REVENUECAT_API_KEY": ("REVENUECAT_API_URL",),
}
LOCAL_PAYMOB_KEYS = {"PAYMOB_SECRET_KEY": "local-paymob-secret-key", "PAYMOB_PUBLIC_KEY": "pk_test_local",
                     "PAYMOB_API_KEY": "local-paymob-api-key"}
LOCAL_REVENUECAT_API_KEY = "sk_local_revenuecat_key"
#: The functions that receive each provider's webhooks: the fakes' checkout pages sign
#: with their secret and send to their URL.
WEBHOOK_FUNCTIONS = {"paymob": "paymob-webhook", "stripe": "stripe-webhook"}
LOCAL_STRIPE_API_KEY = "sk_test_local_stripe_key"
_TEXT_TYPES = re.compile(r"text/.*|application/(json|.*\+json|xml|.*\+xml|javascript|x-www-form-urlencoded"
                         r"|graphql|x-ndjson)")
_SKIP_DIRS = {"__pycache__", "node_modules"}


# --------------------------------------------------------------------------------------
# Workers: one process per concurrent execution environment
# --------------------------------------------------------------------------------------

def code_stamp(paths: Iterable[Path]) -> tuple[int, int, int]:
    """(newest mtime, file count, total size) of the files under ``paths``: any edit,
    addition or removal changes it. Hand-written: a stat walk of a CodeUri and the layer
    takes well under a millisecond, so it runs per request instead of a watcher thread."""
    newest = count = size = 0
    stack = [str(p) for p in paths]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith(".") or entry.name in _SKIP_DIRS:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                st = entry.stat()
                newest, count, size = max(newest, st.st_mtime_ns), count + 1, size + st.st_size
    return newest, count, size


class WorkerError(Exception):
    def __init__(self, error_type: str, message: str):
        super().__init__(f"{error_type}: {message}")
        self.error = {"errorType": error_type, "errorMessage": message}


class FunctionTimeout(Exception):
    pass


class Worker:
    """One ``devkit.worker`` process and the JSON-lines conversation with it."""

    def __init__(self, fn: cfn.LocalFunction, env: dict[str, str], stamp: tuple[int, int, int],
                 sink: Callable[[str], None]):
        self.fn, self.stamp = fn, stamp
        # A session of its own: a Ctrl-C in the terminal reaches the runner, which stops
        # the workers itself, instead of every worker printing a KeyboardInterrupt.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devkit.worker"], cwd=fn.code_uri, env=env, bufsize=0,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self._fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        self._buffer = bytearray()
        threading.Thread(target=self._pump, args=(sink,), daemon=True, name=f"log-{fn.name}").start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _pump(self, sink: Callable[[str], None]) -> None:
        for raw in self.proc.stderr:  # type: ignore[union-attr]
            sink(f"{self.fn.name} | {raw.decode(errors='replace').rstrip()}")

    def _read(self, deadline: float) -> dict[str, Any] | None:
        """The worker's next message, or None when the deadline passes first."""
        while (end := self._buffer.find(b"\n")) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._fd], [], [], remaining)[0]:
                return None
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                code = self.proc.wait()
                raise WorkerError("Runtime.ExitError", f"the function's process exited (code {code})")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return json.loads(line)

    def wait_ready(self, timeout: float = INIT_TIMEOUT_S) -> float:
        """Wait for the init phase (the handler's import); return its duration in ms."""
        message = self._read(time.monotonic() + timeout)
        if message is None:
            raise WorkerError("Runtime.InitTimeout", f"init did not finish within {timeout:g} s")
        if message.get("type") == "init_error":
            error = message["error"]
            raise WorkerError(error["errorType"], error["errorMessage"])
        return float(message.get("init_ms", 0))

    def invoke(self, event: Any, request_id: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        request = {"event": event, "request_id": request_id, "timeout_ms": int(timeout_s * 1000)}
        try:
            self.proc.stdin.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            raise WorkerError("Runtime.ExitError", "the function's process exited") from None
        message = self._read(deadline)
        if message is None:
            raise FunctionTimeout(f"Task timed out after {timeout_s:.2f} seconds")
        return message

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]


@dataclass
class Invocation:
    function: str
    status: str  # ok | error (the handler raised) | timeout | init_error | exit
    result: Any = None
    error: dict[str, Any] | None = None
    cold: bool = False
    duration_ms: float = 0.0
    init_ms: float | None = None
    pid: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"function": self.function, "status": self.status, "cold": self.cold,
                                "duration_ms": round(self.duration_ms, 2)}
        body.update({"result": self.result} if self.ok else {"error": self.error})
        return body


class FunctionPool:
    """The warm execution environments of one function.

    A request takes an idle worker whose code is current (warm) or starts one (cold), up
    to ``max_workers`` at once, as Lambda scales out per concurrent request. A worker whose
    CodeUri or layer changed since it started is retired; a timed-out one is killed.
    """

    def __init__(self, fn: cfn.LocalFunction, env: dict[str, str], *, max_workers: int = MAX_WORKERS,
                 sink: Callable[[str], None] | None = None):
        self.fn, self.env = fn, env
        self.paths = (fn.code_uri, *fn.layers)
        self.max_workers = max(1, fn.reserved_concurrency or max_workers)
        self.sink = sink or _stderr_sink
        self._idle: list[Worker] = []
        self._all: set[Worker] = set()  # idle and busy, so close() can stop every one
        self._live = 0
        self._stamp: tuple[int, int, int] | None = None
        self._closed = False
        self._cond = threading.Condition()

    def _take(self, stamp: tuple[int, int, int]) -> Worker | None:
        """An idle current worker, or None after reserving a slot for a new one."""
        with self._cond:
            self._stamp = stamp
            while True:
                for stale in [w for w in self._idle if w.stamp != stamp or not w.alive()]:
                    self._idle.remove(stale)
                    self._all.discard(stale)
                    stale.kill()
                    self._live -= 1
                if self._idle:
                    return self._idle.pop()  # the most recently used: LIFO keeps few warm
                if self._live < self.max_workers:
                    self._live += 1
                    return None
                self._cond.wait()

    def _give_back(self, worker: Worker | None, *, healthy: bool) -> None:
        """Return a worker to the idle list, or retire it (failed, outdated, closing)."""
        with self._cond:
            if worker is not None and healthy and worker.stamp == self._stamp and worker.alive() \
                    and not self._closed:
                self._idle.append(worker)
            else:
                if worker is not None:
                    worker.kill()
                    self._all.discard(worker)
                self._live -= 1
            self._cond.notify()

    def invoke(self, event: Any, *, request_id: str | None = None) -> Invocation:
        started = time.perf_counter()
        stamp = code_stamp(self.paths)
        worker = self._take(stamp)
        inv = Invocation(self.fn.name, "ok", cold=worker is None)
        try:
            if worker is None:
                worker = Worker(self.fn, self.env, stamp, self.sink)
                with self._cond:
                    self._all.add(worker)
                inv.init_ms = worker.wait_ready(INIT_TIMEOUT_S)
            inv.pid = worker.pid
            message = worker.invoke(event, request_id or str(uuid.uuid4()), self.fn.timeout)
        except FunctionTimeout as exc:
            # Lambda ends the execution environment: the worker is killed, the next request is cold
            inv.status, inv.error = "timeout", {"errorType": "Sandbox.Timedout", "errorMessage": str(exc)}
            self.sink(f"{self.fn.name} | {exc}")
        except WorkerError as exc:
            init_kinds = ("Runtime.Import", "Runtime.Init", "Runtime.Handler")
            inv.status = "init_error" if exc.error["errorType"].startswith(init_kinds) else "exit"
            inv.error = exc.error
        else:
            if message.get("ok"):
                inv.result = message.get("result")
            else:  # the handler raised: the environment stays warm, as in Lambda
                inv.status, inv.error = "error", message.get("error")
        finally:
            self._give_back(worker, healthy=inv.status in ("ok", "error"))
            inv.duration_ms = (time.perf_counter() - started) * 1000
        return inv

    def workers(self) -> list[int]:
        """The pids of the idle workers."""
        with self._cond:
            return [w.pid for w in self._idle]

    def close(self) -> None:
        """Kill every worker, busy ones too (their requests then fail)."""
        with self._cond:
            self._closed = True
            workers, self._idle = list(self._all), []
            self._all.clear()
        for worker in workers:
            worker.kill()


def _stderr_sink(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Function URL events and responses
# --------------------------------------------------------------------------------------

def is_binary(content_type: str | None, body: bytes) -> bool:
    """Whether the URL service would base64-encode this body: anything but text types."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media and not _TEXT_TYPES.fullmatch(media):
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def request_event(method: str, raw_path: str, raw_query: str, headers: Iterable[tuple[str, str]], body: bytes,
                  *, source_ip: str = "127.0.0.1", port: int = DEFAULT_PORT) -> dict[str, Any]:
    """The Function URL event (payload 2.0) for one HTTP request: headers lower-cased,
    repeated ones joined by commas, the cookie header moved to ``cookies``."""
    hdrs: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        name = name.lower()
        if name == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
        else:
            hdrs[name] = f"{hdrs[name]},{value}" if name in hdrs else value
    hdrs.setdefault("x-forwarded-for", source_ip)
    hdrs.setdefault("x-forwarded-proto", "http")
    hdrs.setdefault("x-forwarded-port", str(port))
    hdrs.setdefault("x-amzn-trace-id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}")
    raw_body: bytes | str | None = None
    if body:
        raw_body = body if is_binary(hdrs.get("content-type"), body) else body.decode()
    event = lambdas.url_event(method, raw_path or "/", headers=hdrs, cookies=cookies or None,
                              raw_body=raw_body)
    if "user-agent" not in hdrs:
        event["headers"].pop("user-agent", None)
        event["requestContext"]["http"]["userAgent"] = ""
    event["rawQueryString"] = raw_query
    if raw_query:
        params: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    event["requestContext"]["http"]["sourceIp"] = source_ip
    host = hdrs.get("host", "localhost").rsplit(":", 1)[0]
    event["requestContext"]["domainName"] = host
    event["requestContext"]["domainPrefix"] = host.split(".", 1)[0]
    return event


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """The HTTP response a Function URL makes of a handler's return value."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # no statusCode: the URL service answers 200 with the value as JSON
        return 200, [("Content-Type", "application/json")], json.dumps(result).encode()
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    headers += [("Set-Cookie", str(c)) for c in result.get("cookies") or []]
    body = result.get("body")
    if body is None:
        data = b""
    elif result.get("isBase64Encoded"):
        data = base64.b64decode(body)
    else:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return int(result["statusCode"]), headers, data


def error_response(inv: Invocation) -> tuple[int, list[tuple[str, str]], bytes]:
    """What a Function URL answers when the function fails: 502, or 504 for a timeout
    (the details stay in the runner's log, as they stay in CloudWatch)."""
    status, message = (504, "Endpoint request timed out") if inv.status == "timeout" else \
        (502, "Internal Server Error")
    error_type = (inv.error or {}).get("errorType", "Unknown")
    return status, [("Content-Type", "application/json"), ("X-Amzn-ErrorType", error_type)], \
        json.dumps({"Message": message}).encode()


def _cors_headers(cors: dict[str, Any] | None, origin: str | None, *, preflight: bool,
                  request_headers: str | None = None) -> list[tuple[str, str]]:
    if not cors or not origin:
        return []
    allowed = [o.rstrip("/") for o in cors.get("AllowOrigins") or []]
    if "*" not in allowed and origin.rstrip("/") not in allowed:
        return []
    out = [("Access-Control-Allow-Origin", "*" if "*" in allowed and not cors.get("AllowCredentials")
            else origin), ("Vary", "Origin")]
    if cors.get("AllowCredentials"):
        out.append(("Access-Control-Allow-Credentials", "true"))
    if preflight:
        methods = cors.get("AllowMethods") or ["*"]
        out.append(("Access-Control-Allow-Methods", ",".join(methods)))
        allow_headers = cors.get("AllowHeaders") or []
        if allow_headers or request_headers:
            out.append(("Access-Control-Allow-Headers", ",".join(allow_headers) or request_headers or ""))
        if cors.get("MaxAge") is not None:
            out.append(("Access-Control-Max-Age", str(cors["MaxAge"])))
    elif cors.get("ExposeHeaders"):
        out.append(("Access-Control-Expose-Headers", ",".join(cors["ExposeHeaders"])))
    return out


# --------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------

@dataclass
class ScheduledRun:
    function: str
    schedule: cfn.Schedule
    expression: schedules.Expression
    next_run: datetime | None = None


class Scheduler:
    """Fires every enabled schedule when due, each run in a thread of its own (Scheduler
    invokes asynchronously, so a slow run never delays another)."""

    def __init__(self, runner: Runner, now: datetime | None = None):
        self.runner = runner
        self.entries: list[ScheduledRun] = []
        now = now or datetime.now(UTC)
        for fn in runner.functions.values():
            for sched in fn.schedule_list:
                try:
                    expression = schedules.parse(sched.expression, sched.timezone)
                except schedules.ScheduleError as exc:
                    raise cfn.TemplateError(f"{fn.name}, schedule {sched.name}: {exc}") from None
                entry = ScheduledRun(fn.name, sched, expression)
                entry.next_run = expression.next_after(now) if sched.enabled else None
                self.entries.append(entry)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_pending(self, now: datetime) -> list[threading.Thread]:
        """Start the runs due at ``now`` and schedule their next ones."""
        started = []
        for entry in self.entries:
            if entry.next_run is not None and entry.next_run <= now:
                entry.next_run = entry.expression.next_after(now)
                thread = threading.Thread(target=self.runner.run_schedule, args=(entry.function,),
                                          kwargs={"schedule": entry.schedule.name}, daemon=True)
                thread.start()
                started.append(thread)
        return started

    def _loop(self) -> None:
        while not self._stop.is_set():
            pending = [e.next_run for e in self.entries if e.next_run is not None]
            if not pending:
                return
            wait = (min(pending) - datetime.now(UTC)).total_seconds()
            if self._stop.wait(min(max(wait, 0), 30)):
                return
            self.run_pending(datetime.now(UTC))

    def start(self) -> None:
        if any(e.next_run for e in self.entries):
            self._thread = threading.Thread(target=self._loop, daemon=True, name="scheduler")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------

class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: no TCP handshake per request
    disable_nagle_algorithm = True
    server_version = "local-lambda-runner"
    sys_version = ""
    server: _Server

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of clients got connection
    # resets. The kernel caps it at net.core.somaxconn (4096 on current kernels).
    request_queue_size = 1024
    runner: Runner


class Runner:
    """The functions of one template, served over HTTP and on their schedules."""

    def __init__(self, template: Path = TEMPLATE, *, env_file: Path | None = DEFAULT_ENV_FILE,
                 host: str = "127.0.0.1", port: int | None = DEFAULT_PORT,
                 services_env: dict[str, str] | None = None, max_workers: int = MAX_WORKERS,
                 sink: Callable[[str], None] | None = None):
        """``port=None`` builds a runner that only invokes (scripts/invoke); 0 picks a free port."""
        self.template_path = Path(template).resolve()
        self.server: _Server | None = None
        if port is not None:
            try:
                self.server = _Server((host, port), _RequestHandler)
            except OSError as exc:
                free = free_port_pair(port + 2)
                raise SystemExit(f"cannot listen on {host}:{port} ({exc.strerror}): is another runner "
                                 f"running? Choose another port: PORT={free} make dev "
                                 f"(or scripts/dev.py --port {free}).") from None
            self.server.runner = self
            port = self.server.server_address[1]
        self.port = port or DEFAULT_PORT
        self.base_url = f"http://{host}:{self.port}"
        try:
            self.env_file = cfn.EnvFile.read(env_file)
            self.template = cfn.load(self.template_path)
            self.functions, self.resolver = cfn.functions(
                self.template, self.template_path.parent, self.env_file.template_parameters,
                base_url=self.base_url)
        except BaseException:
            if self.server is not None:
                self.server.server_close()
            raise
        self.services_env = dict(services_env or {})
        self.sink = sink or _stderr_sink
        self.pools = {name: FunctionPool(fn, self.function_env(fn), max_workers=max_workers, sink=self.sink)
                      for name, fn in self.functions.items()}
        self.scheduler = Scheduler(self)
        self._threads: list[threading.Thread] = []
        self.services: Services | None = None  # set by main() when it started them

    # -- configuration ---------------------------------------------------------------
    def function_env(self, fn: cfn.LocalFunction) -> dict[str, str]:
        """The environment a function's workers get, lowest precedence first: a few process
        variables, the template's (Globals + function), the local services, secrets and
        provider endpoints set in the shell, env.local.json, and Lambda's reserved ones."""
        from common.config import SECRET_NAMES

        env = {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}
        for key, value in fn.environment.items():
            # Locally secrets are plain values: a reference to SSM or Secrets Manager from
            # the template would make the function call AWS for them.
            if not key.endswith(("_PARAM", "_SECRET_ARN")):
                env[key] = ",".join(map(str, value)) if isinstance(value, list) else cfn._env_value(value)
        services = dict(self.services_env)
        shell = {k: os.environ[k] for k in (*SECRET_NAMES, *SHELL_SETTINGS) if os.environ.get(k)}
        own = self.env_file.for_function(fn)
        for key, names in FAKE_PROVIDER_SETTINGS.items():
            if shell.get(key) or own.get(key):  # a real account: no setting may point at the fake
                for name in (key, *names):
                    services.pop(name, None)
        env.update(services)
        env.update(shell)
        env.update(own)
        env.update({
            "AWS_LAMBDA_FUNCTION_NAME": fn.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}", "AWS_LAMBDA_LOG_STREAM_NAME": "local",
            "AWS_REGION": cfn.REGION, "AWS_DEFAULT_REGION": cfn.REGION,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13", "LAMBDA_TASK_ROOT": str(fn.code_uri),
            "_HANDLER": fn.handler, "TZ": "UTC", "PYTHONUNBUFFERED": "1",
            "AWS_SAM_LOCAL": "true",  # as sam local does: Powertools' tracer then skips X-Ray
            "LOCAL_LAYER_PATHS": os.pathsep.join(map(str, fn.layers)),
            "LOCAL_FUNCTION_ARN": f"arn:aws:lambda:{cfn.REGION}:{cfn.ACCOUNT_ID}:function:{fn.name}",
        })
        return env

    def jwt_settings(self) -> dict[str, str]:
        """``JWT_SECRET``, ``JWT_ISSUER``, ``JWT_AUDIENCE``, ``JWT_JWKS_URL`` as the functions
        get them (those of the first function with a URL): what a token minted for this
        runner must match (the banner's tokens, scripts/token)."""
        names = ("JWT_SECRET", "JWT_ISSUER", "JWT_AUDIENCE", "JWT_JWKS_URL")
        functions = sorted(self.functions.values(), key=lambda f: (f.url is None, f.name))
        if functions:
            env = self.function_env(functions[0])
        else:
            shell = {k: os.environ[k] for k in names if os.environ.get(k)}
            env = {**LOCAL_SECRETS, **self.services_env, **shell, **self.env_file.all_functions}
        return {k: env[k] for k in names if env.get(k)}

    def function(self, name: str) -> cfn.LocalFunction:
        """A function by local name or logical id."""
        if name in self.functions:
            return self.functions[name]
        for fn in self.functions.values():
            if fn.logical_id == name:
                return fn
        raise KeyError(f"no function {name!r}; known: {', '.join(sorted(self.functions)) or '(none)'}")

    def bucket_names(self) -> list[str]:
        return [self.resolver.bucket_name(lid) for lid, res in self.resolver.resources.items()
                if res.get("Type") == "AWS::S3::Bucket"]

    # -- invoking --------------------------------------------------------------------
    def default_event(self, name: str, schedule: str | None = None) -> Any:
        fn = self.function(name)
        for sched in fn.schedule_list:
            if schedule in (None, sched.name):
                return sched.input
        if schedule is not None:
            raise KeyError(f"{fn.name} has no schedule {schedule!r}")
        return {}

    def invoke(self, name: str, event: Any = None, *, request_id: str | None = None) -> Invocation:
        fn = self.function(name)
        return self.pools[fn.name].invoke(self.default_event(fn.name) if event is None else event,
                                          request_id=request_id)

    def run_schedule(self, name: str, *, schedule: str | None = None, event: Any = None) -> Invocation:
        fn = self.function(name)
        if not fn.schedule_list:
            raise KeyError(f"{fn.name} has no schedule")
        sched = next((s for s in fn.schedule_list if schedule in (None, s.name)), None)
        if sched is None:
            raise KeyError(f"{fn.name} has no schedule {schedule!r}")
        inv = self.invoke(fn.name, sched.input if event is None else event)
        self._log(fn.name, "SCHEDULE", sched.name, _status(inv), inv)
        return inv

    def _log(self, function: str, method: str, route: str, status: int, inv: Invocation | None,
             duration_ms: float | None = None) -> None:
        duration = duration_ms if duration_ms is not None else inv.duration_ms if inv else 0.0
        cold = "-" if inv is None else str(inv.cold).lower()
        log.info("function=%s method=%s route=%s status=%d duration_ms=%.1f cold=%s",
                 function, method, route, status, duration, cold)

    # -- HTTP ------------------------------------------------------------------------
    def handle(self, req: _RequestHandler) -> None:
        started = time.perf_counter()
        path, _, query = req.path.partition("?")
        name, _, rest = path.lstrip("/").partition("/")
        body = req.read_body()
        if body is None:
            self._log(name or "-", req.command, "/" + rest, 413, None, (time.perf_counter() - started) * 1000)
            req.reply(413, [("Content-Type", "application/json")], b'{"Message":"Request Entity Too Large"}')
            return
        if name.startswith("_"):
            self._internal(req, name, rest, query, body)
            return
        fn = self.functions.get(name)
        if fn is None or fn.url is None:
            served = ", ".join(f"/{n}/" for n, f in sorted(self.functions.items()) if f.url is not None)
            self._log(name or "-", req.command, "/" + rest, 404, None, (time.perf_counter() - started) * 1000)
            req.reply(404, [("Content-Type", "application/json")], json.dumps(
                {"Message": f"no function URL at /{name}; served: {served or '(none)'}"}).encode())
            return
        route = "/" + rest
        cors = fn.url.get("Cors")
        origin = req.headers.get("origin")
        if req.command == "OPTIONS" and cors and origin and req.headers.get("access-control-request-method"):
            # CORS preflight: the URL service answers it without invoking the function
            headers = _cors_headers(cors, origin, preflight=True,
                                    request_headers=req.headers.get("access-control-request-headers"))
            self._log(fn.name, "OPTIONS", route, 200, None, (time.perf_counter() - started) * 1000)
            req.reply(200, headers, b"")
            return
        event = request_event(req.command, route, query, req.headers.items(), body,
                              source_ip=req.client_address[0], port=self.port)
        request_id = event["requestContext"]["requestId"]
        inv = self.pools[fn.name].invoke(event)
        if inv.ok:
            try:
                status, headers, data = http_response(inv.result)
            except (TypeError, ValueError, AttributeError) as exc:  # binascii.Error is a ValueError
                self.sink(f"{fn.name} | invalid Function URL response: {type(exc).__name__}: {exc}")
                inv.status = "error"
                inv.error = {"errorType": "Runtime.InvalidResponse", "errorMessage": str(exc)}
                status, headers, data = error_response(inv)
        else:
            status, headers, data = error_response(inv)
        if inv.ok and len(data) > MAX_PAYLOAD:
            status, headers, data = 502, [("Content-Type", "application/json")], \
                b'{"Message":"Response payload size exceeded maximum allowed payload size"}'
        headers += [("X-Amzn-RequestId", request_id), *_cors_headers(cors, origin, preflight=False)]
        # logged before replying, so a client that got its answer finds the line written
        self._log(fn.name, req.command, route, status, inv, (time.perf_counter() - started) * 1000)
        req.reply(status, headers, data)

    def _internal(self, req: _RequestHandler, name: str, rest: str, query: str, body: bytes) -> None:
        def answer(status: int, payload: Any) -> None:
            data = json.dumps(payload, default=str).encode()
            req.reply(status, [("Content-Type", "application/json")], data)

        params = dict(parse_qsl(query))
        if name == "_health":
            return answer(200, {"ok": True, "template": str(self.template_path),
                                "functions": sorted(self.functions)})
        if name == "_schedules" and not rest:
            return answer(200, [{"function": e.function, "schedule": e.schedule.name,
                                 "expression": e.schedule.expression, "enabled": e.schedule.enabled,
                                 "next_run": e.next_run.isoformat() if e.next_run else None}
                                for e in self.scheduler.entries])
        if name in ("_schedules", "_invoke") and rest and req.command == "POST":
            try:
                event = json.loads(body) if body.strip() else None
            except ValueError:
                return answer(400, {"Message": "the body must be a JSON event"})
            try:
                if name == "_schedules":
                    inv = self.run_schedule(rest, schedule=params.get("schedule"), event=event)
                else:
                    inv = self.invoke(rest, event)
                    self._log(inv.function, "INVOKE", "-", _status(inv), inv)
            except KeyError as exc:
                return answer(404, {"Message": exc.args[0]})
            return answer(200 if inv.ok else _status(inv), inv.as_json())
        return answer(404, {"Message": f"unknown runner endpoint {req.command} /{name}/{rest}"})

    # -- lifecycle -------------------------------------------------------------------
    def start(self, *, run_schedules: bool = True) -> Runner:
        if self.server is not None:
            thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                      daemon=True, name="runner-http")
            thread.start()
            self._threads.append(thread)
        if run_schedules:
            self.scheduler.start()
        return self

    def stop(self) -> None:
        self.scheduler.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for pool in self.pools.values():
            pool.close()


def _status(inv: Invocation) -> int:
    return 200 if inv.ok else 504 if inv.status == "timeout" else 502


# --------------------------------------------------------------------------------------
# Local services, banner, main
# --------------------------------------------------------------------------------------

@dataclass
class Services:
    database_url: str
    database_source: str  # "DATABASE_URL" or "embedded (.local/pgdata)"
    s3_endpoint: str
    buckets: list[str]
    applied: list[str] = field(default_factory=list)
    seeded: Any = None
    moto: s3.Server | None = None
    s3_note: str = ""  # e.g. why S3 is not on the port asked for
    paymob: Any = None  # devkit.fake_paymob.FakePaymob
    stripe: Any = None  # devkit.fake_stripe.FakeStripe
    revenuecat: Any = None  # devkit.fake_revenuecat.FakeRevenueCat

    def env(self) -> dict[str, str]:
        env = {**LOCAL_SECRETS, "DATABASE_URL": self.database_url}
        env.update(s3.environment(self.s3_endpoint))
        if self.paymob is not None:
            from devkit.fake_paymob import INTEGRATION_ID

            env.update(LOCAL_PAYMOB_KEYS, PAYMOB_API_URL=self.paymob.base_url,
                       PAYMOB_INTEGRATION_IDS=str(INTEGRATION_ID))
        if self.stripe is not None:
            env.update(STRIPE_API_KEY=LOCAL_STRIPE_API_KEY, STRIPE_API_BASE=self.stripe.base_url)
        if self.revenuecat is not None:
            env.update(REVENUECAT_API_KEY=LOCAL_REVENUECAT_API_KEY,
                       REVENUECAT_API_URL=self.revenuecat.base_url)
        return env

    def stop(self) -> None:
        for name in ("moto", "paymob", "stripe", "revenuecat"):
            server = getattr(self, name)
            if server is not None:
                server.stop()
                setattr(self, name, None)


def _start_database() -> tuple[str, str, list[str], Any]:
    from devkit import migrations, postgres, seed

    if os.environ.get("DATABASE_URL"):
        url, source = os.environ["DATABASE_URL"], "DATABASE_URL"
    else:
        url = _embedded_url()
        source = f"embedded, data in {_relative(postgres.DEFAULT_DATA_DIR)}"
    applied = migrations.apply(url)
    return url, source, applied, seed.seed(url)


def _embedded_url() -> str:
    """Start the embedded server from a child process: the server then outlives the
    runner (a second `make dev` reuses it and its data), and the runner never holds a
    handle that would stop it on exit."""
    code = "from devkit import postgres; print(postgres.embedded_url())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         start_new_session=True)
    if out.returncode != 0:
        raise SystemExit(f"could not start the embedded Postgres:\n{out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def _start_s3(buckets: list[str], port: int | None, *, port_fixed: bool,
              state_dir: Path | None) -> tuple[s3.Server, str]:
    """moto with ``buckets`` and the demo objects, on ``port``: when ``port_fixed`` (you
    chose it) a port in use is an error, else another free port is taken and said so."""
    from devkit import seed

    note = ""
    try:
        server = s3.start_server(port, state_dir)
    except s3.PortInUse:
        if port_fixed:
            free = free_port_pair(port + 1)  # type: ignore[operator]
            raise SystemExit(f"cannot listen on 127.0.0.1:{port} for S3: the port is in use. Choose another: "
                             f"S3_PORT={free} make dev (or scripts/dev.py --s3-port {free}).") from None
        server, note = s3.start_server(None, state_dir), f"port {port} was in use"
    except RuntimeError as exc:  # e.g. the state folder is another server's
        raise SystemExit(str(exc)) from None
    try:
        s3.create_buckets(server.endpoint, buckets)
        if {s3.LOCAL_BUCKETS["UPLOADS_BUCKET"], s3.LOCAL_BUCKETS["GENERATIONS_BUCKET"]} <= set(buckets):
            seed.seed_objects(server.endpoint, uploads_bucket=s3.LOCAL_BUCKETS["UPLOADS_BUCKET"],
                              generations_bucket=s3.LOCAL_BUCKETS["GENERATIONS_BUCKET"])
    except BaseException:
        server.stop()
        raise
    return server, note


def free_port_pair(start: int) -> int:
    """The first port from ``start`` that is free with the next one (the runner's and S3's)."""
    for port in range(max(start, 1024), 65535):
        if s3.port_free(port) and s3.port_free(port + 1):
            return port
    return start


def start_services(buckets: list[str], *, s3_port: int | None = None, s3_port_fixed: bool = True,
                   s3_state: Path | None = None, fakes: bool = True) -> Services:
    """Postgres (migrated and seeded) and moto S3 (with ``buckets`` and the demo objects;
    its objects kept in ``s3_state`` when given, else in memory), started in parallel,
    and the Paymob and Stripe fakes (threads of this process)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        database = pool.submit(_start_database)
        storage = pool.submit(_start_s3, buckets, s3_port, port_fixed=s3_port is not None and s3_port_fixed,
                              state_dir=s3_state)
        moto, note = storage.result()  # on an error, leaving the pool waits for the database
        try:
            url, source, applied, seeded = database.result()
        except BaseException:
            moto.stop()
            raise
    services = Services(url, source, moto.endpoint, buckets, applied, seeded, moto, note)
    if fakes:
        from devkit import fake_paymob, fake_revenuecat, fake_stripe

        services.paymob = fake_paymob.FakePaymob().start()
        services.stripe = fake_stripe.FakeStripe().start()
        services.revenuecat = fake_revenuecat.FakeRevenueCat().start()
    return services


def connect_checkout_pages(runner: Runner, services: Services) -> None:
    """Tell the fakes' checkout pages what to sign their webhooks with and where Stripe's
    go (the webhook functions' own settings and URL; Paymob sends to each intention's
    notification_url, as Paymob does)."""
    def first(env: dict[str, str], name: str) -> str | None:
        return next((part.strip() for part in env.get(name, "").split(",") if part.strip()), None)

    paymob_fn = runner.functions.get(WEBHOOK_FUNCTIONS["paymob"])
    if services.paymob is not None and paymob_fn is not None:
        services.paymob.hmac_secret = first(runner.function_env(paymob_fn), "PAYMOB_HMAC_SECRET")
    stripe_fn = runner.functions.get(WEBHOOK_FUNCTIONS["stripe"])
    if services.stripe is not None and stripe_fn is not None:
        services.stripe.webhook_secret = first(runner.function_env(stripe_fn), "STRIPE_WEBHOOK_SECRET")
        services.stripe.webhook_url = f"{runner.base_url}/{stripe_fn.name}/" if stripe_fn.url else None


def redact_url(url: str) -> str:
    """A connection URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def status_line(services: Services, runner: Runner) -> str:
    ai = "OpenAI (OPENAI_API_KEY set)" if os.environ.get("OPENAI_API_KEY") else \
        "offline providers (OPENAI_API_KEY not set)"
    urls = sum(1 for f in runner.functions.values() if f.url is not None)
    scheduled = sum(1 for f in runner.functions.values() if f.schedule_list)
    envs = [runner.function_env(fn) for fn in runner.functions.values()]
    payments = []
    for label, fake, setting in (("Paymob", services.paymob, "PAYMOB_API_URL"),
                                 ("Stripe", services.stripe, "STRIPE_API_BASE"),
                                 ("RevenueCat", services.revenuecat, "REVENUECAT_API_URL")):
        if fake is not None and any(env.get(setting) == fake.base_url for env in envs):
            payments.append(f"{label} fake at {fake.base_url}")
        else:
            payments.append(f"{label} as configured")
    moto = services.moto
    kept = f"data in {_relative(moto.state_dir)}" if moto and moto.state_dir else "in memory"
    if moto and moto.state_dir and moto.restored:
        kept += f", {moto.restored} object(s) restored"
    notes = [n for n in (services.s3_note, *(moto.notes if moto else [])) if n]
    return (f"postgres {redact_url(services.database_url)} ({services.database_source}) | "
            f"s3 moto at {services.s3_endpoint} ({', '.join(services.buckets)}; {kept}"
            f"{''.join('; ' + n for n in notes)}) | ai {ai} | "
            f"payments {', '.join(payments)} | "
            f"functions {urls} URL(s) at {runner.base_url}/<function>/, {scheduled} scheduled")


#: The sample shown for a route that has several (else the first by name); the others
#: run with scripts/invoke.
HEADLINE_SAMPLES = ("transaction-paid", "initial-purchase", "checkout-session-completed")
_ID_SEGMENT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\d+")


def sample_route(event: Any) -> tuple[str, str] | None:
    """(method, path with ids as ``{id}``) of a Function URL sample event, else None."""
    if not isinstance(event, dict) or "rawPath" not in event:
        return None
    method = str(((event.get("requestContext") or {}).get("http") or {}).get("method") or "GET").upper()
    path = "/".join("{id}" if _ID_SEGMENT.fullmatch(part) else part for part in event["rawPath"].split("/"))
    return method, path or "/"


def _samples(folder: Path) -> list[tuple[Path, Any]]:
    samples = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stem) if folder.is_dir() else []:
        try:
            samples.append((path, json.loads(path.read_text())))
        except ValueError:
            continue
    return samples


def curl_examples(runner: Runner, events_dir: Path | None = None) -> list[str]:
    """One example per route of each URL function, from its sample events in
    events/<function>/*.json (a curl, or for a sample whose signature expires a re-sign
    piped to scripts/invoke), one curl to the base URL of a URL function without samples,
    a scripts/invoke line per sample of a function without a URL, and one curl per
    scheduled function (run it now)."""
    events_dir = events_dir or runner.template_path.parent / "events"
    port = f" --port {runner.port}" if runner.port != DEFAULT_PORT else ""
    lines: list[str] = []
    for name, fn in sorted(runner.functions.items()):
        samples = _samples(events_dir / name)
        if fn.url is None:
            lines += [f"scripts/invoke {name} --event {_relative(path)}{port}" for path, _ in samples]
        elif not samples:
            lines.append(f'curl -s {runner.base_url}/{name}/ -H "Authorization: Bearer $TOKEN"')
        routes: dict[tuple[str, str], list[tuple[Path, Any]]] = {}
        for path, event in samples if fn.url is not None else []:
            route = sample_route(event)
            if route is not None:
                routes.setdefault(route, []).append((path, event))
        for (method, route), found in routes.items():
            path, event = next((s for s in found if s[0].stem in HEADLINE_SAMPLES), found[0])
            more = f" (+{len(found) - 1} more: {_relative(path.parent)}/)" if len(found) > 1 else ""
            lines.append(f"# {name} {method} {route}: {_relative(path)}{more}")
            if any(k.lower() == "stripe-signature" for k in event.get("headers") or {}):
                # the signature's timestamp must be recent: sign it now, then invoke
                signed = f"scripts/sign-webhook {_relative(path)}"
                lines.append(f"{signed} | scripts/invoke {name} --event -{port}")
            elif _token_variable(event) is None:
                # a sample of another demo user (the account samples): its own token, as committed
                lines.append(f"scripts/invoke {name} --event {_relative(path)}{port}")
            else:
                lines.append(sample_curl(runner.base_url, name, event)
                             or f"scripts/invoke {name} --event {_relative(path)}{port}")
        if fn.schedule_list:
            lines.append(f"curl -s -X POST {runner.base_url}/_schedules/{name}")
    return lines


_CURL_SKIP = {"host", "content-length", "user-agent", "connection", "accept-encoding"}


def _token_variable(event: dict[str, Any]) -> str | None:
    """The banner's variable holding the token of the sample's user ($TOKEN for the demo
    user, $PARTNER_TOKEN for the partner, "" for a sample without a token), else None."""
    from devkit import samples, seed

    subject = samples.token_subject(event)
    if subject is None:
        return ""
    return {str(seed.DEMO_USER_ID): "$TOKEN", str(seed.PARTNER_USER_ID): "$PARTNER_TOKEN"}.get(subject)


def sample_curl(base_url: str, name: str, event: dict[str, Any]) -> str | None:
    """The curl command that makes the runner produce (nearly) this Function URL event."""
    if not isinstance(event, dict) or "rawPath" not in event:
        return None
    http = (event.get("requestContext") or {}).get("http") or {}
    method = str(http.get("method") or "GET").upper()
    query = event.get("rawQueryString") or ""
    url = f"{base_url}/{name}{event['rawPath']}" + (f"?{query}" if query else "")
    parts = ["curl -s"] + ([f"-X {method}"] if method != "GET" else []) + [shlex.quote(url)]
    for key, value in (event.get("headers") or {}).items():
        key = key.lower()
        if key in _CURL_SKIP or key.startswith(("x-forwarded-", "x-amzn-")):
            continue
        if key == "authorization" and str(value).lower().startswith("bearer "):
            parts.append(f'-H "authorization: Bearer {_token_variable(event) or "$TOKEN"}"')
        else:
            parts.append("-H " + shlex.quote(f"{key}: {value}"))
    if event.get("cookies"):
        parts.append("-b " + shlex.quote("; ".join(event["cookies"])))
    body = event.get("body")
    if body:
        if event.get("isBase64Encoded"):
            parts.append(f"--data-binary @<(echo {shlex.quote(body)} | base64 -d)")
        else:
            parts.append("--data-binary " + shlex.quote(body))
    return " ".join(parts)


def stop_embedded_postgres() -> str:
    """Stop the embedded server cleanly (its data stays in .local/pgdata)."""
    from devkit import postgres

    if not postgres.stop_embedded():
        return "the embedded Postgres is not running"
    return f"stopped the embedded Postgres (data kept in {_relative(postgres.DEFAULT_DATA_DIR)})"


@contextlib.contextmanager
def _request_log(out: TextIO) -> Any:
    """Request lines to ``out`` while main() runs (restored after, for callers in tests)."""
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def main(template: Path = TEMPLATE, port: int = DEFAULT_PORT, env_file: Path | None = DEFAULT_ENV_FILE, *,
         host: str = "127.0.0.1", services: bool = True, run_schedules: bool = True,
         s3_port: int | None = None, s3_state: Path | None = None, stop: threading.Event | None = None,
         out: TextIO | None = None, on_ready: Callable[[Runner], None] | None = None) -> int:
    """Start the services and the runner, print how to use them, serve until Ctrl-C
    (or ``stop`` is set), then stop what was started. S3 listens on ``s3_port`` (an error
    when taken), else on ``port`` + 1 when free, else on a free port; its objects are kept
    in ``s3_state`` (``make dev``: .local/s3), else in memory."""
    out = out or sys.stdout
    with _request_log(out):
        return _main(template, port, env_file, host=host, services=services, run_schedules=run_schedules,
                     s3_port=s3_port, s3_state=s3_state, stop=stop, out=out, on_ready=on_ready)


def _main(template: Path, port: int, env_file: Path | None, *, host: str, services: bool, run_schedules: bool,
          s3_port: int | None, s3_state: Path | None, stop: threading.Event | None, out: TextIO,
          on_ready: Callable[[Runner], None] | None) -> int:
    started = time.perf_counter()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # The template is read once to learn the buckets; the runner reads it again with the
    # services' environment (cheap: no function is started before the first request).
    probe = Runner(template, env_file=env_file, host=host, port=None)
    svc: Services | None = None
    runner: Runner | None = None
    try:
        if services:
            buckets = sorted({*probe.bucket_names(), *s3.LOCAL_BUCKETS.values()})
            if s3_port is not None:
                svc = start_services(buckets, s3_port=s3_port, s3_state=s3_state)
            else:  # port + 1 when free (port 0: any free port)
                svc = start_services(buckets, s3_port=port + 1 if port else None, s3_port_fixed=False,
                                     s3_state=s3_state)
        runner = Runner(template, env_file=env_file, host=host, port=port,
                        services_env=svc.env() if svc else {}).start(run_schedules=run_schedules)
        runner.services = svc  # for callers of on_ready (tests drive the fakes through it)
        if svc is not None:
            connect_checkout_pages(runner, svc)
        _banner(out, runner, svc, time.perf_counter() - started)
        if on_ready:
            on_ready(runner)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if runner is not None:
            runner.stop()
        if svc is not None:
            svc.stop()
        print("runner stopped: workers and moto are down"
              + ("; the embedded Postgres keeps running (scripts/dev.py --stop-postgres stops it)"
                 if svc and svc.database_source.startswith("embedded") else ""), file=out, flush=True)
    return 0


def _banner(out: TextIO, runner: Runner, svc: Services | None, elapsed: float) -> None:
    lines = [f"local runner ready in {elapsed:.1f} s: {runner.template_path}"]
    if svc is not None:
        from devkit import seed

        lines.append("status: " + status_line(svc, runner))
        if svc.applied:
            lines.append(f"migrations applied: {', '.join(svc.applied)}")
        demo = svc.seeded
        env = runner.jwt_settings()

        def token(user_id: Any) -> str:
            return seed.token(user_id, env.get("JWT_SECRET") or LOCAL_JWT_SECRET,
                              issuer=env.get("JWT_ISSUER") or None, audience=env.get("JWT_AUDIENCE") or None)

        lines += [f"demo user {demo.demo_user_id} ({demo.demo_credits} credits), partner "
                  f"{demo.partner_user_id}, pair {demo.pair_id}",
                  "tokens for the demo user and the partner (valid 7 days):",
                  f"export TOKEN={token(demo.demo_user_id)}",
                  f"export PARTNER_TOKEN={token(demo.partner_user_id)}"]
    else:
        lines.append(f"functions at {runner.base_url}/<function>/ (no local services)")
    if svc is not None and (svc.paymob or svc.stripe):
        lines.append("checkout pages: open the checkout_url of POST /checkout/paymob or the url of "
                     "POST /checkout/stripe to pay, decline or pay a wrong amount; each button sends the "
                     "provider's signed webhook to this runner")
    examples = curl_examples(runner)
    if examples:
        lines += ["examples:", *(f"  {line}" for line in examples)]
    lines.append("Ctrl-C stops the runner.")
    print("\n".join(lines), file=out, flush=True)
