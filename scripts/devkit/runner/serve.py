"""``main()``: the local services, the runner and its banner, served until Ctrl-C (what
``make dev`` runs, through scripts/dev.py)."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from devkit import cfn, s3
from devkit.runner.app import Runner
from devkit.runner.banner import print_banner
from devkit.runner.services import Services, connect_checkout_pages, start_services
from devkit.runner.settings import DEFAULT_ENV_FILE, DEFAULT_PORT

log = logging.getLogger("devkit.runner")


@contextlib.contextmanager
def _request_log(out: TextIO) -> Iterator[None]:
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


def main(template: Path = cfn.TEMPLATE, port: int = DEFAULT_PORT, env_file: Path | None = DEFAULT_ENV_FILE, *,
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
        print_banner(out, runner, svc, time.perf_counter() - started)
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
