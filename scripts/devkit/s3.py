"""A moto S3 server on localhost, reached by boto3 through ``AWS_ENDPOINT_URL``.

The server runs in a process of its own (``python -m devkit.s3``), so its state is its own
(moto keeps state per process) and, given a state folder, survives restarts as the local
Postgres does: moto's S3 backend is saved with pickle (moto makes its objects picklable
for this: ``FakeKey.__getstate__``) into ``<folder>/s3-state.pickle`` shortly after every
request that may change it and when the server stops, and loaded when it starts. Moto
has no persistence of its own for server mode; its request recorder replays requests
instead of keeping state, which cannot reproduce a multipart upload (its upload id is
random) and grows with every read.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUCKET_VARS = ("UPLOADS_BUCKET", "GENERATIONS_BUCKET", "BACKUPS_BUCKET", "EXPORTS_BUCKET")
LOCAL_BUCKETS = {"UPLOADS_BUCKET": "local-uploads", "GENERATIONS_BUCKET": "local-generations",
                 "BACKUPS_BUCKET": "local-backups", "EXPORTS_BUCKET": "local-exports"}
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}
STATE_FILE = "s3-state.pickle"
#: Held by the server using a state folder: two servers saving one file would lose writes.
LOCK_FILE = "lock"
#: How soon after a change the state is saved (a crash loses at most this much).
SAVE_DELAY_S = 0.5
#: Methods that never change moto's state; any other request marks it for saving.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
START_TIMEOUT_S = 60.0


class PortInUse(OSError):
    """The port asked for is taken (not merely in TIME_WAIT: the server reuses those)."""


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now. Bound with SO_REUSEADDR, as the
    servers themselves bind: a port left in TIME_WAIT by a quick restart is free."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Server:
    """A running ``python -m devkit.s3`` process."""

    proc: subprocess.Popen[str]
    port: int
    state_dir: Path | None = None
    restored: int = 0  # objects loaded from the state folder
    notes: list[str] = field(default_factory=list)  # e.g. a state file moto could not load

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server; it saves its state first (SIGTERM)."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def start_server(port: int | None = None, state_dir: Path | None = None) -> Server:
    """Start moto's S3 in a process of its own on ``port`` (None: a free one); with
    ``state_dir`` its objects are kept there between runs. Raises ``PortInUse`` when the
    port is taken."""
    command = [sys.executable, "-m", "devkit.s3", "--port", str(port or 0)]
    log = subprocess.DEVNULL
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        command += ["--state-dir", str(state_dir)]
        log = open(state_dir / "moto.log", "a")  # noqa: SIM115 (the child holds it)
    # A session of its own: Ctrl-C reaches the runner, which stops this server (so it
    # saves). Its stdin is a pipe from this process: should this process die without
    # stopping it, the pipe closes and the server stops too, freeing its port.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if log is not subprocess.DEVNULL:
        log.close()
    import boto3  # noqa: F401  (what callers reach the server with: imported while it boots)

    ready = _first_line(proc, START_TIMEOUT_S)
    message = json.loads(ready) if ready.startswith("{") else {"error": ready or "exited before it was ready"}
    if "port" not in message:
        Server(proc, 0).stop(timeout=5)
        if message.get("in_use"):
            raise PortInUse(f"127.0.0.1:{port} is in use")
        raise RuntimeError(f"the local S3 server did not start: {message['error']}")
    return Server(proc, int(message["port"]), state_dir, int(message.get("restored", 0)),
                  list(message.get("notes", [])))


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return line[0].strip() if line else ""


def environment(endpoint: str) -> dict[str, str]:
    """The variables that point boto3 and the functions at the local server."""
    return {"AWS_ENDPOINT_URL": endpoint, **FAKE_CREDENTIALS, **LOCAL_BUCKETS}


def create_buckets(endpoint: str, names: list[str] | None = None) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    for name in names or [os.environ.get(v) or LOCAL_BUCKETS[v] for v in BUCKET_VARS]:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)


# --- the server process -----------------------------------------------------------------


class _State:
    """moto's S3 backends, saved to and loaded from one pickle file."""

    def __init__(self, folder: Path):
        self.path = folder / STATE_FILE
        self.lock = threading.Lock()  # held by changing requests and by a save
        self.dirty = threading.Event()

    def claim(self) -> bool:
        """Lock the folder for this process (released when it exits, however it exits)."""
        import fcntl

        self._lock_file = (self.path.parent / LOCK_FILE).open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def load(self) -> tuple[int, list[str]]:
        """Restore the saved backends; (objects restored, notes)."""
        import moto
        from moto.s3.models import s3_backends

        if not self.path.exists():
            return 0, []
        try:
            with self.path.open("rb") as f:
                saved = pickle.load(f)
            if saved.get("moto") != moto.__version__:
                raise ValueError(f"saved by moto {saved.get('moto')}, this is moto {moto.__version__}")
            objects = 0
            for account, partitions in saved["backends"].items():
                for partition, backend in partitions.items():
                    s3_backends[account][partition] = backend
                    objects += sum(len(bucket.keys) for bucket in backend.buckets.values())
        except Exception as exc:  # an unreadable file must not stop make dev: set it aside
            aside = self.path.with_suffix(".unreadable")
            self.path.replace(aside)
            return 0, [f"could not load {self.path.name} ({type(exc).__name__}: {exc}); "
                       f"moved to {aside.name}"]
        return objects, []

    def save(self) -> None:
        import moto
        from moto.s3.models import s3_backends

        with self.lock:
            self.dirty.clear()
            backends = {account: dict(partitions) for account, partitions in s3_backends.items()}
            data = pickle.dumps({"moto": moto.__version__, "backends": backends},
                                protocol=pickle.HIGHEST_PROTOCOL)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)  # atomic: a crash leaves the previous state, never half of one

    def wrap(self, app: Any) -> Any:
        """The WSGI app, marking the state dirty after any request that may change it."""

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("REQUEST_METHOD") in _READS:
                return app(environ, start_response)
            with self.lock:  # moto does the work inside the call; a save waits for it
                response = app(environ, start_response)
                self.dirty.set()
            return response

        return wsgi

    def keep_saving(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.dirty.wait(0.5) and not stop.wait(SAVE_DELAY_S):
                self.save()


def _serve(port: int, state_dir: Path | None) -> int:
    import logging
    import signal

    # Refusals first, before importing moto (over a second)
    state = _State(state_dir) if state_dir is not None else None
    if state and not state.claim():
        print(json.dumps({"error": f"{state_dir} is in use by another local S3 server (another make dev "
                                   "in this checkout?); stop it, or keep this one's objects in memory "
                                   "(scripts/dev.py --s3-state none)"}), flush=True)
        return 2
    if port and not port_free(port):
        print(json.dumps({"error": f"cannot listen on 127.0.0.1:{port}", "in_use": True}), flush=True)
        return 2

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per S3 request otherwise
    restored, notes = state.load() if state else (0, [])
    app: Any = DomainDispatcherApplication(create_backend_app)
    if state:
        app = state.wrap(app)
    try:
        # werkzeug's server sets SO_REUSEADDR: a port in TIME_WAIT after a restart is reused
        server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    except (OSError, SystemExit) as exc:  # werkzeug exits (status 1) when the port is in use
        in_use = isinstance(exc, SystemExit) or exc.errno == errno.EADDRINUSE
        print(json.dumps({"error": f"cannot listen on 127.0.0.1:{port}", "in_use": in_use}), flush=True)
        return 2
    stop = threading.Event()

    def shutdown(*_: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    # stdin closes when the process that started this one stops it or dies
    threading.Thread(target=lambda: (sys.stdin.read(), shutdown()), daemon=True).start()
    saver = threading.Thread(target=state.keep_saving, args=(stop,), daemon=True) if state else None
    if saver:
        saver.start()
    print(json.dumps({"port": server.server_port, "restored": restored, "notes": notes}), flush=True)
    server.serve_forever()
    if state and state.dirty.is_set():
        state.save()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="moto's S3 on 127.0.0.1, its state kept in --state-dir")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--state-dir", type=Path, help="keep the objects here between runs")
    args = parser.parse_args()
    return _serve(args.port, args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
