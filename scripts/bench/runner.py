"""Benchmark: what a request through the local runner adds over calling the same handler
in-process, warm, in one run.

    .venv/bin/python scripts/bench/runner.py [--requests 2000] [--colds 5]

Peer: the bare handler of scripts/bench/bare_handler/ imported here and called with a
prebuilt Function URL event and a context. Runner: a bench-only template (written to a
temporary folder, CodeUri = that same folder) served by `scripts/dev.py --no-services`
in a subprocess, as `make dev` runs it, driven over one keep-alive HTTP connection. A
runner request covers the client's send and read, HTTP parsing, building the event, the
code-change check, the JSON-lines round trip to the warm worker process, mapping the
response and writing the request's log line. The two sides are timed in alternating
chunks so that drift on a shared machine hits both alike.

Also measured: a cold start (the first request after a change to the handler's folder,
so a new worker process imports it) against a bare `python -c pass`.
Target (issue 9): the runner adds under 5 ms at p50.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import free_port, pct

from devkit import ROOT
from devkit.runner.function_url import request_event
from devkit.worker import LambdaContext

HANDLER_DIR = Path(__file__).resolve().parent / "bare_handler"
TARGET_ADDED_MS = 5.0
TEMPLATE = f"""\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  BareFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: {HANDLER_DIR}
      Handler: bare_app.handler
      Runtime: python3.13
      Timeout: 10
      FunctionUrlConfig: {{AuthType: NONE}}
"""


def start_runner(folder: Path, port: int) -> subprocess.Popen:
    (folder / "template.yaml").write_text(TEMPLATE)
    log = (folder / "runner.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "dev.py"), "--template", str(folder / "template.yaml"),
         "--port", str(port), "--no-services", "--no-schedules", "--env-file", "none"],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/_health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the runner did not start:\n{(folder / 'runner.log').read_text()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--colds", type=int, default=5)
    args = parser.parse_args()

    sys.path.insert(0, str(HANDLER_DIR))
    import bare_app

    event = request_event("GET", "/", "", [("host", "127.0.0.1"), ("user-agent", "bench")], b"")
    context = LambdaContext("bench", 10_000)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_runner(Path(tmp), port)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

            def through_runner() -> float:
                started = time.perf_counter()
                conn.request("GET", "/bare_handler/")
                resp = conn.getresponse()
                body = resp.read()
                elapsed = (time.perf_counter() - started) * 1000
                assert resp.status == 200 and body == b"ok", (resp.status, body)
                return elapsed

            def in_process() -> float:
                started = time.perf_counter()
                result = bare_app.handler(event, context)
                elapsed = (time.perf_counter() - started) * 1000
                assert result["body"] == "ok"
                return elapsed

            for _ in range(200):  # warm up: the worker's cold start, connection, caches
                through_runner()
                in_process()
            runner_ms: list[float] = []
            direct_ms: list[float] = []
            chunk = 100
            for _ in range(max(1, args.requests // chunk)):
                runner_ms += [through_runner() for _ in range(chunk)]
                direct_ms += [in_process() for _ in range(chunk)]

            cold_ms = []
            for _ in range(args.colds):
                os.utime(HANDLER_DIR / "bare_app.py")  # a code change: the next request starts a new worker
                time.sleep(0.01)
                cold_ms.append(through_runner())
            conn.close()
        finally:
            proc.terminate()
            proc.wait(10)

    interpreter_ms = []
    for _ in range(args.colds):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        interpreter_ms.append((time.perf_counter() - started) * 1000)

    p50_r, p99_r = pct(runner_ms, 0.50), pct(runner_ms, 0.99)
    p50_d, p99_d = pct(direct_ms, 0.50), pct(direct_ms, 0.99)
    added = p50_r - p50_d
    print(f"bare handler, {len(runner_ms)} warm requests each side (ms)")
    print(f"  {'':<22}{'p50':>9}{'p99':>9}")
    print(f"  {'in-process call':<22}{p50_d:>9.4f}{p99_d:>9.4f}")
    print(f"  {'through the runner':<22}{p50_r:>9.4f}{p99_r:>9.4f}")
    print(f"  added by the runner: {added:.3f} ms at p50, {p99_r - p99_d:.3f} ms at p99 "
          f"(target < {TARGET_ADDED_MS:g} ms at p50: {'met' if added < TARGET_ADDED_MS else 'MISSED'})")
    print(f"cold start after a code change: median {statistics.median(cold_ms):.1f} ms "
          f"(bare `python -c pass`: {statistics.median(interpreter_ms):.1f} ms, "
          f"ratio {statistics.median(cold_ms) / statistics.median(interpreter_ms):.1f}x)")
    print(json.dumps({"runner_p50_ms": round(p50_r, 3), "runner_p99_ms": round(p99_r, 3),
                      "inprocess_p50_ms": round(p50_d, 4), "added_p50_ms": round(added, 3),
                      "cold_start_ms": round(statistics.median(cold_ms), 1)}))
    return 0 if added < TARGET_ADDED_MS else 1


if __name__ == "__main__":
    sys.exit(main())
