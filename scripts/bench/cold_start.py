"""Benchmark: cold start of each client function against a minimal handler, in one run.

    .venv/bin/python scripts/bench/cold_start.py [--colds 7] [--quick]

A cold start is a fresh process that imports the function's handler and answers its
first authenticated request: JWT verified, the database connected, the route's queries
run, the response built. Measured for each client-facing function (its CodeUri on the
path, as Lambda has it) on a cheap authenticated route, against the peer
scripts/bench/reference_handler/ (psycopg and PyJWT alone: the same JWT checks and one
query on a new connection), the sides alternating process by process. Also measured, for
information: scripts/bench/stack_floor_handler/, the reference wired as the design brief wires
every client function (Powertools' event handler with validation, a pydantic response
model, Powertools Logger and Metrics) and nothing else: what any function built to the
brief pays, the floor under the functions' ratios. The clock starts
at the child's first statement (the interpreter's own start-up, the same for both, is
left out) and stops when the handler returns. Tracing is off, as outside Lambda. Modules
load from bytecode compiled beforehand, as the build ships them (``--no-bytecode``: each
process compiles from source, as Lambda did before).

Postgres is DATABASE_URL's server, else the embedded one (devkit.postgres); the bench
makes a scratch database, applies the migrations and drops it at the end.

Goal (issue 15): each function at most 1.5x the reference (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from devkit import ROOT, migrations, postgres

HERE = Path(__file__).resolve().parent
REFERENCE_DIR = HERE / "reference_handler"
FLOOR_DIR = HERE / "stack_floor_handler"
GOAL = 1.5
#: The template's Globals variables that tune a library rather than the app
RUNTIME_ENV = ("PYDANTIC_DISABLE_PLUGINS",)

#: function folder -> (handler, method, path) of a cheap authenticated route
ROUTES = {
    "process-image": ("process_image.app.handler", "GET", "/tools"),
    # an unknown entry: 404 once the caller is authenticated
    "analyze-entry": ("analyze_entry.app.handler", "GET", f"/entries/{uuid.UUID(int=1)}"),
    "checkout": ("checkout.app.handler", "GET", "/products"),
    "account": ("account.app.handler", "GET", "/me"),
}

# The child: one cold start. Times from its first statement to the handler's return.
CHILD = """
import time
t0, c0 = time.perf_counter(), time.process_time()
import importlib, json, sys
module, attr = sys.argv[1].rsplit(".", 1)
handler = getattr(importlib.import_module(module), attr)
t1 = time.perf_counter()

class Context:
    function_name = sys.argv[3]
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:" + sys.argv[3]
    aws_request_id = "00000000-0000-0000-0000-000000000001"
    log_group_name = "/aws/lambda/" + sys.argv[3]
    log_stream_name = "local"
    def get_remaining_time_in_millis(self):
        return 30000

with open(sys.argv[2]) as f:
    event = json.load(f)
response = handler(event, Context())
t2, c2 = time.perf_counter(), time.process_time()
sys.stderr.write(f"@@cold {response['statusCode']} {(t1 - t0) * 1000:.2f} {(t2 - t0) * 1000:.2f} "
                 f"{(c2 - c0) * 1000:.2f}\\n")
"""


def cold_start(handler: str, event_file: str, path: Path, name: str, env: dict[str, str],
               expect: int) -> tuple[float, float, float]:
    """(import ms, import + first request ms, the CPU ms of both) of one fresh process."""
    # the CodeUri, then the layer (Lambda's /opt/python), as Lambda orders them
    child_env = {**env, "PYTHONPATH": os.pathsep.join([str(path), str(ROOT / "layers" / "common")]),
                 "POWERTOOLS_SERVICE_NAME": name}
    out = subprocess.run([sys.executable, "-c", CHILD, handler, event_file, name], env=child_env, cwd=path,
                         capture_output=True, text=True)
    line = next((ln for ln in out.stderr.splitlines() if ln.startswith("@@cold ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"{name}: the cold start failed:\n{out.stderr[-3000:]}")
    _, status, imported, answered, cpu = line.split()
    if int(status) != expect:
        raise SystemExit(f"{name}: answered {status}, expected {expect}:\n{out.stdout[-2000:]}")
    return float(imported), float(answered), float(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--colds", type=int, default=7, help="fresh processes per side and function")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="compile every module from source in each process, as Lambda did before the "
                             "build shipped bytecode (the default compiles it once first, as the build does)")
    parser.add_argument("--quick", action="store_true", help="3 fresh processes per side")
    parser.add_argument("--only", action="append", choices=sorted(ROUTES), help="these functions only")
    args = parser.parse_args()
    if args.quick:
        args.colds = min(args.colds, 3)
    names = args.only or list(ROUTES)

    server = postgres.server_url()
    scratch = f"bench_cold_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(server, scratch)
    try:
        migrations.apply(url)
        run(args, names, url)
    finally:
        postgres.drop_database(server, scratch)
    return 0


def run(args: argparse.Namespace, names: list[str], url: str) -> None:
    from devkit.cfn import functions
    from devkit.lambdas import url_event

    jwt_secret = secrets.token_hex(32)
    env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET": jwt_secret,
           "POWERTOOLS_METRICS_NAMESPACE": "Bench", "RATE_LIMIT_PER_MINUTE": str(10**9)}
    if args.no_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="no-pyc-")  # an empty cache: nothing is found
    else:  # what scripts/build/Makefile ships: every module compiled beforehand
        folders = [*sys.path[1:], str(ROOT / "layers"), str(ROOT / "functions"), str(REFERENCE_DIR),
                   str(FLOOR_DIR)]
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *folders], capture_output=True)
    # What the template sets for the libraries themselves rather than the app (Globals), as
    # deployed; both sides get it (the reference does not use pydantic).
    specs = functions()
    env.update({key: str(specs[names[0]].environment[key]) for key in RUNTIME_ENV})
    for name in ("LAMBDA_TASK_ROOT", "OPENAI_API_KEY", "POWERTOOLS_TRACE_DISABLED"):
        env.pop(name, None)  # tracing off by Powertools' own rule: not in Lambda
    os.environ.update({"DATABASE_URL": url, "JWT_SECRET": jwt_secret})
    from common import auth, db

    user = uuid.uuid4()
    auth.ensure_user(user)
    db.reset()
    headers = {"authorization": f"Bearer {auth.mint_token(user, ttl_s=3600)}"}
    with tempfile.TemporaryDirectory() as tmp:
        events = {}
        for name in [*names, "reference", "floor"]:
            method, path = ROUTES[name][1:] if name in ROUTES else ("GET", "/whoami")
            events[name] = str(Path(tmp) / f"{name}.json")
            Path(events[name]).write_text(json.dumps(url_event(method, path, headers=headers)))
        results: dict[str, list[tuple[float, float, float]]] = {name: []
                                                                 for name in [*names, "reference", "floor"]}
        for _ in range(args.colds):
            for name in names:  # each function, then the reference: drift hits both alike
                handler = ROUTES[name][0]
                expect = 404 if name == "analyze-entry" else 200
                code_uri = specs[name].code_uri
                results[name].append(cold_start(handler, events[name], code_uri, name, env, expect))
                results["reference"].append(cold_start("reference_app.handler", events["reference"],
                                                       REFERENCE_DIR, "reference", env, 200))
            results["floor"].append(cold_start("stack_floor_app.handler", events["floor"], FLOOR_DIR, "floor",
                                               env, 200))
    ref_import = statistics.median(r[0] for r in results["reference"])
    ref_total = statistics.median(r[1] for r in results["reference"])
    ref_cpu = statistics.median(r[2] for r in results["reference"])
    print(f"cold start (ms, fresh processes, median of {args.colds} per function; the reference "
          f"{len(results['reference'])}x): import, then import + first authenticated request, "
          f"and the CPU time of both")
    print(f"  {'reference (psycopg + PyJWT)':<30} import {ref_import:7.1f}   "
          f"first request answered {ref_total:7.1f}   cpu {ref_cpu:7.1f}")
    for name in ["floor", *names]:
        label = "floor (brief's stack)" if name == "floor" else \
            " ".join((name, ROUTES[name][1], ROUTES[name][2][:12]))
        imported = statistics.median(r[0] for r in results[name])
        total = statistics.median(r[1] for r in results[name])
        cpu = statistics.median(r[2] for r in results[name])
        print(f"  {label:<30} import {imported:7.1f}   "
              f"first request answered {total:7.1f}   cpu {cpu:7.1f}")
    # Wall time is what a user waits; on a shared machine other work stretches it, so the
    # CPU time of the same processes is printed too (what a Lambda's own vCPU would spend).
    for name in names:
        ratio = statistics.median(r[1] for r in results[name]) / ref_total
        cpu_ratio = statistics.median(r[2] for r in results[name]) / ref_cpu
        print(f"ratio: {name} cold start vs reference = {ratio:.2f}x wall, {cpu_ratio:.2f}x cpu "
              f"(goal <= {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'})")
    ratio = statistics.median(r[1] for r in results["floor"]) / ref_total
    cpu_ratio = statistics.median(r[2] for r in results["floor"]) / ref_cpu
    print(f"ratio: floor (the reference on the brief's stack, no layer code) vs reference = "
          f"{ratio:.2f}x wall, {cpu_ratio:.2f}x cpu "
          "(informative: what any function built to the brief pays at least)")

if __name__ == "__main__":
    sys.exit(main())
