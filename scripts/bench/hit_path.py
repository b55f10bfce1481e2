"""Benchmark: a process-image cache hit through the local runner against the layer-only
authenticated route, in one run.

    .venv/bin/python scripts/bench/hit_path.py [--clients 4] [--rounds 6] [--seconds 2] [--quick] [--cpu]

Both functions are served by `scripts/dev.py --no-services` from a bench template (the
real process-image CodeUri, and scripts/bench/layer_handler/), as `make dev` serves them:
HTTP, the event, a warm worker process per concurrent request (up to 4). Postgres is
DATABASE_URL's server, else the embedded one, in a scratch database the bench migrates
and drops; S3 is a moto server on localhost.

Sides, measured in alternating chunks of ``--seconds`` (every client on one side, then
the next) so that drift on a shared machine hits them alike:
- peer: GET /whoami of the layer-only handler (JWT, the request's admission: rate limit
  and user row): what every client request costs before its own work;
- POST /generations repeating a stored request (a cache hit) with `source_etag`;
- the same without it, on a sealed upload (older than its form's life: its ETag is final,
  the container remembers it, no S3 call);
- the same without it, on a fresh upload (its form may still replace it: an S3 HEAD names
  the source, moto here, a network round trip in AWS). Put again (same bytes, same ETag)
  before each of its chunks, so it stays fresh however long the run.
And for information, the floor under the hit's ratios: POST /floor of
scripts/bench/hit_floor_handler/, on the layer alone, which does what the hit does apart
from its own work (the same body validated, the caller admitted in one round trip, one
Count metric, a response of the same model and size), and nothing else.
Each client is one keep-alive connection sending requests back to back.

To have a sealed upload without waiting 5 minutes, process-image runs with
UPLOAD_URL_TTL_S at its minimum (30 s); the sealed source is uploaded first and the
measurement starts once it is older than that plus generations.SEAL_MARGIN_S (~1.5 min
after the upload). The peer's settings are unchanged.

Goals (issue 15): a hit serves at least 0.9x the peer's requests/s, its p50 at most
1.3x the peer's, with source_etag and without it (the sealed upload: the fresh one's
HEAD is reported for information).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from benchkit import free_port, pct

from devkit import ROOT, migrations, postgres
from devkit import s3 as local_s3

LAYER_DIR = Path(__file__).resolve().parent / "layer_handler"
HIT_FLOOR_DIR = Path(__file__).resolve().parent / "hit_floor_handler"
GOAL_RPS = 0.9  # at least
GOAL_P50 = 1.3  # at most
#: process-image's upload form life here: its minimum, so that an upload is sealed soon.
UPLOAD_URL_TTL_S = 30


def template(env: dict[str, str], process_image_env: dict[str, str]) -> str:
    fn = """
  {name}:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: {code}
      Handler: {handler}
      Runtime: python3.13
      Timeout: 30
      MemorySize: 1024
      FunctionUrlConfig: {{AuthType: NONE}}
      Layers: [!Ref CommonLayer]
      Environment:
        Variables:
          POWERTOOLS_SERVICE_NAME: {service}{variables}"""

    def variables(extra: dict[str, str]) -> str:
        return "".join(f"\n          {k}: '{v}'" for k, v in {**env, **extra}.items())

    # The layer of this checkout on the workers' path, as Lambda's /opt/python
    layer = f"""
  CommonLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: {ROOT / "layers" / "common"}
      CompatibleRuntimes: [python3.13]"""
    head = 'AWSTemplateFormatVersion: "2010-09-09"\nTransform: AWS::Serverless-2016-10-31\nResources:'
    return (head + layer
            + fn.format(name="ProcessImageFunction", code=ROOT / "functions" / "process-image",
                        handler="process_image.app.handler", service="process-image",
                        variables=variables(process_image_env))
            + fn.format(name="LayerFunction", code=LAYER_DIR, handler="layer_app.handler", service="layer",
                        variables=variables({}))
            + fn.format(name="HitFloorFunction", code=HIT_FLOOR_DIR, handler="hit_floor_app.handler",
                        service="hit-floor", variables=variables({})) + "\n")


def wait_port(port: int, proc: subprocess.Popen, what: str, path: str | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited")
        try:
            if path is None:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{what} did not start")


class Side:
    def __init__(self, name: str, method: str, path: str, body: dict | None, headers: dict[str, str],
                 expect: int, *, before: Callable[[], object] | None = None, note: str = ""):
        self.name, self.method, self.path, self.expect = name, method, path, expect
        self.before, self.note = before, note  # before: run ahead of each chunk, untimed
        self.body = json.dumps(body).encode() if body is not None else None
        self.headers = {**headers, **({"content-type": "application/json"} if body is not None else {})}
        self.latencies: list[float] = []
        self.requests = 0
        self.seconds = 0.0
        self.cpu_ms: dict[str, float] = {}  # --cpu: CPU time of each process group in the chunks

    def once(self, conn: http.client.HTTPConnection) -> float:
        started = time.perf_counter()
        conn.request(self.method, self.path, body=self.body, headers=self.headers)
        resp = conn.getresponse()
        data = resp.read()
        elapsed = (time.perf_counter() - started) * 1000
        if resp.status != self.expect:
            raise SystemExit(f"{self.name}: {resp.status} {data[:300]!r}")
        return elapsed

    def chunk(self, conns: list[http.client.HTTPConnection], seconds: float,
              cpu: CpuMeter | None = None) -> None:
        """Every client sends requests back to back for ``seconds``."""
        if self.before is not None:
            self.before()
        before = cpu.sample() if cpu else None
        results: list[list[float]] = [[] for _ in conns]
        stop = time.perf_counter() + seconds

        def client(i: int) -> None:
            while time.perf_counter() < stop:
                results[i].append(self.once(conns[i]))

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(conns))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.seconds += time.perf_counter() - started
        for r in results:
            self.latencies += r
            self.requests += len(r)
        if cpu and before is not None:
            for pid, (group, ms) in cpu.sample().items():
                if pid in before:  # a process seen on both sides of the chunk
                    self.cpu_ms[group] = self.cpu_ms.get(group, 0.0) + ms - before[pid][1]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


class CpuMeter:
    """--cpu: the CPU time (user + system, from /proc) of the processes serving the bench,
    by group: the runner, each function's workers (the runner's children), the scratch
    database's Postgres backends, moto, and this process (the clients); other benches on
    the machine are left out. Read between chunks only."""

    def __init__(self, runner_pid: int, moto_pid: int, database: str):
        self.runner_pid, self.moto_pid, self.database = runner_pid, moto_pid, database
        self.tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        self._groups: dict[int, str | None] = {}  # a process's group, decided once

    def _group(self, pid: int) -> str | None:
        if pid not in self._groups:
            try:
                self._groups[pid] = self._classify(pid)
            except OSError:
                return None  # gone, or not readable yet: asked again next time
        return self._groups[pid]

    def _classify(self, pid: int) -> str | None:
        if pid == os.getpid():
            return "clients"
        if pid in (self.runner_pid, self.moto_pid):
            return "runner" if pid == self.runner_pid else "moto"
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if cmdline.startswith(b"postgres:") and f" {self.database} ".encode() in cmdline:
            return "postgres"
        if b"devkit.worker" in cmdline and self._parent(pid) == self.runner_pid:  # ours, not another bench's
            handler = next((v for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                            if v.startswith(b"_HANDLER=")), b"")
            return "workers: " + handler.decode().split("=", 1)[-1].split(".", 1)[0]
        return None

    @staticmethod
    def _parent(pid: int) -> int:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rfind(")") + 2:].split()[1])

    def sample(self) -> dict[int, tuple[str, float]]:
        """pid -> (group, CPU ms so far) of the processes of a group."""
        found: dict[int, tuple[str, float]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                group = self._group(int(entry.name))
                stat = Path(f"/proc/{entry.name}/stat").read_text() if group else ""
            except OSError:
                continue
            if group is not None:
                fields = stat[stat.rfind(")") + 2:].split()
                found[int(entry.name)] = group, (int(fields[11]) + int(fields[12])) * self.tick_ms
        return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients (default 4)")
    parser.add_argument("--rounds", type=int, default=6, help="chunks per side (default 6)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a chunk (default 2 s)")
    parser.add_argument("--quick", action="store_true", help="--rounds 3 --seconds 1")
    parser.add_argument("--cpu", action="store_true",
                        help="also the CPU time per request of each process group (runner, workers, "
                             "Postgres, clients), read from /proc between chunks")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = min(args.rounds, 3), min(args.seconds, 1.0)

    server = postgres.server_url()
    scratch = f"bench_hit_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(server, scratch)
    procs: list[subprocess.Popen] = []
    try:
        migrations.apply(url)
        s3_port = free_port()
        moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)]
        procs.append(subprocess.Popen(moto, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(s3_port, procs[-1], "moto")
        endpoint = f"http://127.0.0.1:{s3_port}"
        jwt_secret = secrets.token_hex(32)
        fn_env = {**local_s3.environment(endpoint), "RATE_LIMIT_PER_MINUTE": str(10**9),
                  "POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_METRICS_NAMESPACE": "Bench"}
        os.environ.update({"DATABASE_URL": url, "JWT_SECRET": jwt_secret, **fn_env})
        local_s3.create_buckets(endpoint)
        user, image = uuid.uuid4(), source_image()
        sealed = upload(user, "sealed.jpg", image)  # first: its form's life starts now
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "template.yaml").write_text(
                template(fn_env, {"UPLOAD_URL_TTL_S": str(UPLOAD_URL_TTL_S)}))
            port = free_port()
            tpl = str(Path(tmp) / "template.yaml")
            runner = [sys.executable, str(ROOT / "scripts" / "dev.py"), "--template", tpl,
                      "--port", str(port), "--no-services", "--no-schedules", "--env-file", "none"]
            procs.append(subprocess.Popen(runner, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          env=os.environ.copy()))
            wait_port(port, procs[-1], "the runner", "/_health")
            cpu = CpuMeter(procs[-1].pid, procs[0].pid, scratch) if args.cpu else None
            run(args, port, user, image, sealed, cpu)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)
        from common import db

        db.reset()
        postgres.drop_database(server, scratch)
    return 0


def source_image() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.linear_gradient("L").resize((1024, 768)).convert("RGB").save(out, "JPEG")
    return out.getvalue()


def upload(user: uuid.UUID, name: str, data: bytes) -> tuple[str, str, float]:
    """The source's key and ETag, and when it was uploaded (time.time())."""
    from common import storage

    key = storage.user_key(user, "uploads", name)
    etag = storage.put(os.environ["UPLOADS_BUCKET"], key, data, "image/jpeg").etag
    return key, etag, time.time()


def run(args: argparse.Namespace, port: int, user: uuid.UUID, image: bytes,
        sealed: tuple[str, str, float], cpu: CpuMeter | None = None) -> None:
    from common import auth, ledger

    sys.path.insert(0, str(ROOT / "functions" / "process-image"))
    from process_image.generations import SEAL_MARGIN_S

    auth.ensure_user(user)
    ledger.grant(user, 10**6, reason="bench", source="bench", ref=str(user))
    headers = {"authorization": f"Bearer {auth.mint_token(user, ttl_s=3600)}"}
    key, etag, _ = upload(user, "small.jpg", image)
    body = {"tool_id": "blur", "params": {"radius": 2}, "source_key": key}
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(args.clients)]
    first = Side("first", "POST", "/process-image/generations", body, headers, 201)
    first.once(conns[0])
    # LastModified and Date are whole seconds: 2 s more and S3's clock says it is older
    wait = sealed[2] + UPLOAD_URL_TTL_S + SEAL_MARGIN_S + 2 - time.time()
    print(f"waiting {max(wait, 0):.0f} s for the first upload to be sealed", file=sys.stderr)
    time.sleep(max(wait, 0))
    sides = [Side("peer: layer-only GET /whoami", "GET", "/layer_handler/whoami", None, headers, 200),
             Side("hit with source_etag", "POST", "/process-image/generations", {**body, "source_etag": etag},
                  headers, 200),
             Side("hit without it, sealed upload", "POST", "/process-image/generations",
                  {**body, "source_key": sealed[0]}, headers, 200),
             Side("hit without it, fresh (HEAD)", "POST", "/process-image/generations", body, headers, 200,
                  before=lambda: upload(user, "small.jpg", image), note="informative: one S3 HEAD each"),
             Side("floor: the hit's shape, no work", "POST", "/hit_floor_handler/floor",
                  {**body, "source_etag": etag}, headers, 200,
                  note="informative: the least any hit can cost here")]
    for side in sides:  # warm every worker of each function (a sealed source is remembered then)
        side.chunk(conns, 0.5)
        side.latencies, side.requests, side.seconds = [], 0, 0.0
    for _ in range(args.rounds):
        for side in sides:
            side.chunk(conns, args.seconds, cpu)
    for conn in conns:
        conn.close()
    peer = sides[0]
    print(f"through the runner, {args.clients} keep-alive clients, {args.rounds} x {args.seconds:g} s "
          "per side, interleaved (ms)")
    for side in sides:
        print(f"  {side.name:<30} {side.rps:8.1f} req/s   p50 {pct(side.latencies, 0.5):7.2f}   "
              f"p99 {pct(side.latencies, 0.99):7.2f}   (n={side.requests})")
    if cpu:
        print("CPU ms per request (user + system) of each process group:")
        for side in sides:
            groups = {k: v / side.requests for k, v in sorted(side.cpu_ms.items()) if v > 0}
            print(f"  {side.name:<30} total {sum(groups.values()):5.2f}: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in groups.items()))
    for side in sides[1:]:
        rps, p50 = side.rps / peer.rps, pct(side.latencies, 0.5) / pct(peer.latencies, 0.5)
        note = f"; {side.note}" if side.note else ""
        print(f"ratio: {side.name} requests/s vs peer = {rps:.2f}x "
              f"(goal >= {GOAL_RPS}x: {'met' if rps >= GOAL_RPS else 'NOT met'}{note})")
        print(f"ratio: {side.name} p50 vs peer = {p50:.2f}x "
              f"(goal <= {GOAL_P50}x: {'met' if p50 <= GOAL_P50 else 'NOT met'}{note})")


if __name__ == "__main__":
    sys.exit(main())
