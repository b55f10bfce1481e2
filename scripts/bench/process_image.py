"""Benchmark: process-image in-process, in one run.

    .venv/bin/python scripts/bench/process_image.py [--hits 400] [--local 12] [--colds 5] [--quick]

Postgres is DATABASE_URL's server, else the embedded one (devkit.postgres); the bench
makes its own scratch database, applies the migrations and drops it at the end. S3 is a
moto server on localhost. The handler is imported from its CodeUri and called as Lambda
calls it (Function URL event, context), warm.

Measured:
- cache hit: POST /generations repeating a stored request, through the whole handler
  (JWT, rate-limit upsert, user upsert, catalog row, cache read, presigned URL, balance),
  with the upload's ETag in the request (`source_etag`: no S3 call) and without it (then
  an S3 HEAD of the source names it); also the latter's parts, the domain call alone and
  the S3 HEAD alone (moto here; in AWS a HEAD is a network round trip to S3); and the
  peer, a route of the layer-only handler that just authenticates (JWT, rate-limit upsert,
  user upsert): what every client-facing request costs before its own work.
- local tool on a 12-megapixel JPEG (4000 x 3000, noisy so it does not compress away):
  POST /generations with `resize` to a new width each time (always a miss: reserve, read,
  decode, resize, encode, PUT, one transaction), and the Pillow part alone.
- face analysis (offline provider, no OpenAI key), against the image edit paths of the
  same run: its throughput on the same 12 MP photo (with a face pasted in) as `resize`'s,
  both always misses through the whole handler (a new user per analysis: the user is in
  the cache key); and its cache-hit latency against an image edit's cache hit (both with
  `source_etag`). Plus, once per process: importing dlib and numpy and building the
  detector (what the first offline analysis of a container pays).
- cold import: `python -X importtime -c "import process_image.app"` in fresh
  processes against the bare handler of scripts/bench/layer_handler/ (the common layer
  only), alternating; the sum of the top-level imports the statement made.

Targets (issue 6): cache-hit p50 under 10 ms with local Postgres; cold import under 2x
the bare handler. Face analysis (issue 17): offline throughput at least 1x resize's on
the same photo; its cache hit at most 1.1x an image edit's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from benchkit import free_port, pct

from devkit import ROOT, migrations, postgres
from devkit import s3 as local_s3

# This file shares its name with the function's package: drop its folder from the path
# so `import process_image` finds the package (from the CodeUri, as Lambda does).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

CODE_URI = ROOT / "functions" / "process-image"
BARE_DIR = Path(__file__).resolve().parent / "layer_handler"
TARGET_HIT_P50_MS = 10.0
TARGET_IMPORT_RATIO = 2.0
TARGET_FACE_THROUGHPUT_RATIO = 1.0  # at least
TARGET_FACE_HIT_RATIO = 1.1  # at most
FACE = ROOT / "tests" / "fixtures" / "face.jpg"


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def interleaved(fns: list[Callable[[], object]], n: int, chunk: int = 20) -> list[list[float]]:
    """Latencies of each function, taking turns chunk by chunk, so that drift on a shared
    machine hits them alike."""
    out: list[list[float]] = [[] for _ in fns]
    while len(out[0]) < n:
        for i, fn in enumerate(fns):
            out[i] += timed(fn, min(chunk, n - len(out[i])))
    return out


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send fd 1 (the function's JSON logs and metrics) to /dev/null while timing: the
    formatting cost stays in the figures, the terminal stays readable."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def photo(width: int, height: int) -> bytes:
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 24)
    im = Image.merge("RGB", (gradient, noise, Image.blend(gradient, noise, 0.5)))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


def import_ms(module: str, path: Path) -> float:
    """Import time of ``module`` in a fresh interpreter (-X importtime), in ms: the sum of
    the top-level entries imported by the statement (interpreter start-up excluded)."""
    code = f"import sys; sys.stderr.write('@@start\\n'); import {module}"
    env = {**os.environ, "PYTHONPATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=path)
    lines = out.stderr.split("@@start\n", 1)[1].splitlines()
    total = 0
    for line in lines:
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and m.group(2) == "":  # top level: not nested under another import
            total += int(m.group(1))
    return total / 1000


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process (in-process, its threads would compete with the
    code measured for the interpreter lock)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("moto server did not start") from None
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=400)
    parser.add_argument("--local", type=int, default=12)
    parser.add_argument("--colds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer rounds: --hits 100 --local 4 --colds 3")
    args = parser.parse_args()
    if args.quick:
        args.hits, args.local, args.colds = min(args.hits, 100), min(args.local, 4), min(args.colds, 3)

    if os.environ.get("DATABASE_URL"):
        os.environ["BENCH_SERVER_FROM_ENV"] = "1"
    server = postgres.server_url()
    scratch = f"bench_pi_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(server, scratch)
    moto, endpoint = start_moto()
    os.environ.update({
        "DATABASE_URL": url, "JWT_SECRET": secrets.token_hex(32), "POWERTOOLS_SERVICE_NAME": "process-image",
        "POWERTOOLS_METRICS_NAMESPACE": "Bench", "POWERTOOLS_TRACE_DISABLED": "1",
        "RATE_LIMIT_PER_MINUTE": str(10**9), **local_s3.environment(endpoint),
    })
    os.environ.pop("OPENAI_API_KEY", None)
    try:
        migrations.apply(url)
        local_s3.create_buckets(endpoint)
        run(args)
    finally:
        from common import db

        db.reset()
        moto.terminate()
        moto.wait(10)
        postgres.drop_database(server, scratch)
    return 0


def run(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    from common import auth, ledger, storage
    from devkit.lambdas import LambdaContext, load_handler, url_event

    handler = load_handler("process-image")
    from process_image import generations, images, local_tools
    from process_image.catalog import enabled_tool

    user = uuid.uuid4()
    auth.ensure_user(user)
    ledger.grant(user, 10**6, reason="bench", source="bench", ref=str(user))
    headers = {"authorization": f"Bearer {auth.mint_token(user, ttl_s=3600)}"}
    uploads = os.environ["UPLOADS_BUCKET"]

    def post(body: dict) -> dict:
        event = url_event("POST", "/generations", body=body, headers=headers)
        return handler(event, LambdaContext("process-image", 180, 2048))

    # --- cache hit -------------------------------------------------------------------
    small_key = storage.user_key(user, "uploads", "small.jpg")
    small_etag = storage.put(uploads, small_key, photo(1024, 768), "image/jpeg").etag
    hit_body = {"tool_id": "blur", "params": {"radius": 2}, "source_key": small_key}
    etag_body = {**hit_body, "source_etag": small_etag}  # the ETag S3 answered to the upload
    with quiet_stdout():
        first = post(hit_body)
        assert first["statusCode"] == 201, first
        again = post(hit_body)
        assert again["statusCode"] == 200 and json.loads(again["body"])["cached"], again
        timed(lambda: post(hit_body), 20)  # warm-up
        sys.path.insert(0, str(BARE_DIR))
        import layer_app

        whoami = url_event("GET", "/whoami", headers=headers)
        etag_ms, hit_ms, domain_ms, head_ms, floor_ms = interleaved([
            lambda: post(etag_body),
            lambda: post(hit_body),
            lambda: generations.create(user, "blur", {"radius": 2}, small_key),
            lambda: storage.head(uploads, small_key),
            lambda: layer_app.handler(whoami, LambdaContext("layer", 30, 128)),
        ], args.hits)

    # --- local tool on a 12 MP JPEG ----------------------------------------------------
    big = photo(4000, 3000)
    big_key = storage.user_key(user, "uploads", "twelve-megapixels.jpg")
    storage.put(uploads, big_key, big, "image/jpeg")
    widths = iter(range(2000, 3000))
    local_ms: list[float] = []
    with quiet_stdout():
        for _ in range(args.local):
            body = {"tool_id": "resize", "params": {"width": next(widths)}, "source_key": big_key}
            t0 = time.perf_counter()
            response = post(body)
            local_ms.append((time.perf_counter() - t0) * 1000)
            assert response["statusCode"] == 201, response
    resize = enabled_tool("resize")

    def pillow_only() -> None:
        decoded = images.decode(big, max_pixels=40_000_000)
        local_tools.run(resize, {"width": next(widths), "fit": "contain"}, decoded, max_pixels=40_000_000)

    pillow_ms = timed(pillow_only, args.local)

    # --- face analysis (offline) against the image edit paths ------------------------------
    from PIL import Image

    canvas = Image.open(io.BytesIO(big))
    canvas.paste(Image.open(FACE).resize((2400, 2400)), (800, 300))
    framed = io.BytesIO()
    canvas.save(framed, "JPEG", quality=90)
    face_key = storage.user_key(user, "uploads", "face-twelve-megapixels.jpg")
    face_etag = storage.put(uploads, face_key, framed.getvalue(), "image/jpeg").etag
    t0 = time.perf_counter()
    import dlib  # noqa: F401  (what the first offline analysis of a container imports)
    import numpy  # noqa: F401
    from process_image import face_analysis

    face_analysis.detector()
    first_use_ms = (time.perf_counter() - t0) * 1000
    face_ms, resize_ms = [], []
    with quiet_stdout():
        for _ in range(args.local):
            analyst = uuid.uuid4()  # the user is in the cache key: a new one always misses
            auth.ensure_user(analyst)
            ledger.grant(analyst, 100, reason="bench", source="bench", ref=str(analyst))
            own_key = storage.user_key(analyst, "uploads", "face.jpg")
            storage.s3().copy_object(Bucket=uploads, Key=own_key,
                                     CopySource={"Bucket": uploads, "Key": face_key})
            analyst_headers = {"authorization": f"Bearer {auth.mint_token(analyst, ttl_s=3600)}"}
            event = url_event("POST", "/generations", headers=analyst_headers,
                              body={"tool_id": "face_analysis", "params": {}, "source_key": own_key})
            t0 = time.perf_counter()
            response = handler(event, LambdaContext("process-image", 180, 2048))
            face_ms.append((time.perf_counter() - t0) * 1000)
            assert response["statusCode"] == 201 and json.loads(response["body"])["result"]["face_count"] >= 1
            body = {"tool_id": "resize", "params": {"width": next(widths)}, "source_key": face_key}
            t0 = time.perf_counter()
            response = post(body)
            resize_ms.append((time.perf_counter() - t0) * 1000)
            assert response["statusCode"] == 201, response
        face_hit = {"tool_id": "face_analysis", "params": {}, "source_key": face_key,
                    "source_etag": face_etag}
        assert post(face_hit)["statusCode"] == 201
        face_hit_ms, edit_hit_ms = interleaved([lambda: post(face_hit), lambda: post(etag_body)], args.hits)

    # --- cold import -------------------------------------------------------------------
    handler_import, bare_import = [], []
    for _ in range(args.colds):
        handler_import.append(import_ms("process_image.app", CODE_URI))
        bare_import.append(import_ms("layer_app", BARE_DIR))

    def row(name: str, ms: list[float]) -> str:
        return f"  {name:<46} p50 {pct(ms, 0.5):8.2f}   p99 {pct(ms, 0.99):8.2f}   (n={len(ms)})"

    hit_p50 = pct(etag_ms, 0.5)
    ratio = statistics.median(handler_import) / statistics.median(bare_import)
    where = "DATABASE_URL's server" if os.environ.get("BENCH_SERVER_FROM_ENV") else "embedded server"
    print(f"process-image, in-process, warm (ms); Postgres: {where}, S3: moto (own process) on localhost")
    print(row("cache hit with source_etag, whole handler", etag_ms))
    print(row("cache hit without it (HEAD), whole handler", hit_ms))
    print(row("    of which: generations.create (domain)", domain_ms))
    print(row("    of which: S3 HEAD of the source (moto)", head_ms))
    print(row("peer: layer-only handler, authenticated route", floor_ms))
    print(row(f"resize of a 12 MP JPEG ({len(big) / 1e6:.1f} MB), whole handler", local_ms))
    print(row("  of which: decode + resize + encode (Pillow)", pillow_ms))
    face_rate = 1000 / statistics.median(face_ms)
    resize_rate = 1000 / statistics.median(resize_ms)
    throughput = face_rate / resize_rate
    hit_ratio = pct(face_hit_ms, 0.5) / pct(edit_hit_ms, 0.5)
    print(row("face_analysis offline, 12 MP JPEG, whole handler", face_ms))
    print(row("peer: resize of the same photo, whole handler", resize_ms))
    print(row("face_analysis cache hit (source_etag), whole handler", face_hit_ms))
    print(row("peer: image edit cache hit (source_etag), whole handler", edit_hit_ms))
    print(f"  first offline analysis of a container: import dlib + numpy, build the detector: "
          f"{first_use_ms:.0f} ms (once)")
    print(f"ratio: face analysis offline throughput {face_rate:.2f}/s vs resize {resize_rate:.2f}/s = "
          f"{throughput:.2f}x (goal >= {TARGET_FACE_THROUGHPUT_RATIO}x: "
          f"{'met' if throughput >= TARGET_FACE_THROUGHPUT_RATIO else 'NOT met'})")
    print(f"ratio: face analysis cache hit p50 vs image edit cache hit p50 = {hit_ratio:.2f}x "
          f"(goal <= {TARGET_FACE_HIT_RATIO}x: {'met' if hit_ratio <= TARGET_FACE_HIT_RATIO else 'NOT met'})")
    print("cold import (ms, -X importtime, fresh processes, median of "
          f"{args.colds}): process_image.app {statistics.median(handler_import):.1f}, "
          f"bare layer handler {statistics.median(bare_import):.1f}, ratio {ratio:.2f}x")
    print(f"targets: cache-hit p50 {hit_p50:.2f} ms < {TARGET_HIT_P50_MS} ms: "
          f"{'met' if hit_p50 < TARGET_HIT_P50_MS else 'NOT met'}; "
          f"cold import {ratio:.2f}x < {TARGET_IMPORT_RATIO}x: "
          f"{'met' if ratio < TARGET_IMPORT_RATIO else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
