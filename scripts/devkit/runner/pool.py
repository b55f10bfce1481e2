"""Worker processes: one per concurrent execution environment of a function, warm between
requests, restarted cold when its code changes, killed when it overruns its Timeout."""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit import cfn

MAX_WORKERS = 4  # per function, unless ReservedConcurrentExecutions says otherwise
INIT_TIMEOUT_S = 10.0  # Lambda's limit for the init phase
_SKIP_DIRS = {"__pycache__", "node_modules"}


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
        # Buffered: the pipe is unbuffered (bufsize=0), and line iteration over a raw file
        # reads one byte per system call, a wake-up of this thread per byte of every log
        # line. A buffered reader still hands each line over as soon as it has arrived.
        for raw in io.BufferedReader(self.proc.stderr):  # type: ignore[arg-type]
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
        self.sink = sink or stderr_sink
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


def stderr_sink(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
