"""Benchmark: backup-export and scripts/restore against pg_dump / pg_restore, in one run.

    .venv/bin/python scripts/bench/backup.py [--rows 1000000] [--repeat 1] [--quick]

Postgres is DATABASE_URL's server, else the embedded one; pg_dump and pg_restore must be
of the server's major version (looked up in /usr/lib/postgresql/<major>/bin, then PATH),
e.g. DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres for the machine's 15.
The bench makes a scratch database (migrated, like production), fills journal_entries
with ``--rows`` generated rows (text, timestamps, JSON, NULLs), and measures on that
same database:

- export: the backup-export handler, invoked as Lambda invokes it in a child process
  (COPY binary -> zstd level 1, or BACKUP_COPY_FORMAT's format and BACKUP_COMPRESSION's
  codec -> multipart uploads to a moto S3 server running in its own process), against
  ``pg_dump -Fc -Z1`` (custom format,
  zlib level 1: the fast setting, like for like), and for the record ``pg_dump -Fc``
  (its default level) and ``pg_dump | gzip`` (plain SQL), all to the same machine.
  Throughput is MB of table data (COPY's output in the export's format) per second; the
  ratios compare times, and sizes are compared too.
- peak RSS of the export child at 10% of the rows and at all of them (ru_maxrss of the
  child), and its growth over the child's RSS before the export began.
- restore: scripts/restore's code (download + SHA-256 verify + migrate + COPY + keys after
  load + ANALYZE) into a fresh database, against ``pg_restore`` of the pg_dump -Fc -Z1
  file into a fresh database (schema + data + indexes).

Goals (issue 15): export throughput >= 1.2x pg_dump -Fc -Z1 at an equal or smaller
output; restore time <= 1.0x pg_restore; peak RSS growth from 10% to all of the rows
(100k to 1M by default) < 20 MB. ``--quick``: 200k rows (20k to 200k).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchkit import free_port

from devkit import ROOT, migrations, postgres

BUCKET = "bench-backups"
STAGE = "bench"
TARGETS = {"export_vs_pg_dump": 1.2, "rss_growth_mb": 20.0, "restore_vs_pg_restore": 1.0}

GENERATE = """
INSERT INTO journal_entries (author_id, title, content, visibility, analysis, analyzed_at, created_at,
                             updated_at)
SELECT u.id,
       CASE WHEN mod(i, 5) = 0 THEN NULL ELSE 'Entry ' || i END,
       md5(i::text) || ' ' || repeat('today we walked by the river, ', 2 + mod(i, 3)) || i,
       'private',
       CASE WHEN mod(i, 2) = 0 THEN jsonb_build_object('mood', 'calm', 'score', mod(i, 100) / 100.0,
                                                   'tags', jsonb_build_array('walk', 'river'))
            END,
       CASE WHEN mod(i, 2) = 0 THEN now() - i * interval '1 second' END,
       now() - i * interval '1 second', now() - i * interval '1 second'
  FROM generate_series(%(start)s::int, %(stop)s::int) i
  JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM users) u ON u.n = mod(i, %(users)s::int)
"""


# --- helpers ---------------------------------------------------------------------------


def pg_tool(name: str, major: int) -> str | None:
    candidate = Path(f"/usr/lib/postgresql/{major}/bin/{name}")
    path = str(candidate) if candidate.exists() else shutil.which(name)
    if not path:
        return None
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    return path if f" {major}." in version else None


def timed(cmd: str | list[str], **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t0


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    moto = str(Path(sys.executable).parent / "moto_server")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, endpoint


def child_env(url: str, endpoint: str) -> dict[str, str]:
    from devkit import s3

    return {**os.environ, **s3.environment(endpoint), "BACKUPS_BUCKET": BUCKET, "STAGE": STAGE,
            "DATABASE_URL": url, "POWERTOOLS_METRICS_NAMESPACE": "Bench", "POWERTOOLS_TRACE_DISABLED": "1",
            "POWERTOOLS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT / "scripts")}


def run_export(url: str, endpoint: str) -> dict:
    """The handler in a child process (its own RSS), as Lambda invokes it."""
    out = subprocess.run([sys.executable, __file__, "--child-export"], env=child_env(url, endpoint),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_export() -> None:
    """Import and warm up everything the export uses, note the RSS, then export."""
    import contextlib
    import io

    from devkit import lambdas

    handler = lambdas.load_handler("backup-export")
    import boto3  # noqa: F401  (the handler's first run imports it; count it in the baseline)
    import psycopg  # noqa: F401

    from common import db, storage

    storage.s3().list_objects_v2(Bucket=BUCKET, MaxKeys=1)
    db.execute("SELECT 1")
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    context = lambdas.LambdaContext("backup-export", timeout_s=900)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the EMF metric lines
        summary = handler({"retention": False}, context)
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "before_kb": before_kb, "peak_kb": peak_kb, "run": summary["run"],
                      "data_bytes": summary["data_bytes"], "bytes": summary["bytes"],
                      "rows": summary["rows"]}))


def child_pipeline() -> None:
    """The export's own pipeline (snapshot, catalog, COPY -> gzip -> SHA-256) for every
    table, into a sink instead of S3: what the export costs without the S3 server."""
    import hashlib
    import importlib

    import psycopg
    from psycopg.rows import dict_row

    from devkit import lambdas

    lambdas.load_handler("backup-export")
    export = importlib.import_module("backup_export.export")
    catalog = importlib.import_module("backup_export.catalog")

    class Sink:
        def __init__(self) -> None:
            self.sha256, self.size = hashlib.sha256(), 0

        def write(self, data: bytes) -> int:
            self.sha256.update(data)
            self.size += len(data)
            return len(data)

    t0 = time.perf_counter()
    data_bytes = size = 0
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, row_factory=dict_row) as conn, \
            conn.transaction():
        conn.execute(export.BEGIN_SNAPSHOT)
        schema = catalog.read(conn, exclude=frozenset({"cache_entries", "rate_limit_windows"}))
        for table in schema.tables:
            sink = Sink()
            codec = os.environ.get("BACKUP_COMPRESSION", "zstd")
            level = int(os.environ.get("BACKUP_ZSTD_LEVEL" if codec == "zstd" else "BACKUP_GZIP_LEVEL", "1"))
            copy_format = os.environ.get("BACKUP_COPY_FORMAT", "binary")
            statement = export.copy_statement(table, frozenset(), "", copy_format)
            _, n = export.stream_table(conn, statement, sink, codec=codec, level=level,
                                       binary=copy_format == "binary")
            data_bytes, size = data_bytes + n, size + sink.size
    print(json.dumps({"seconds": time.perf_counter() - t0, "data_bytes": data_bytes, "bytes": size}))


def run_pipeline(url: str, endpoint: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child-pipeline"], env=child_env(url, endpoint),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fill(url: str, start: int, stop: int, users: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        if start == 1:
            conn.execute("INSERT INTO users (id, email) SELECT gen_random_uuid(), "
                         "'user' || i || '@example.com' FROM generate_series(1, %s) i", (users,))
        step = 200_000
        for lo in range(start, stop + 1, step):
            conn.execute(GENERATE, {"start": lo, "stop": min(stop, lo + step - 1), "users": users})
        conn.execute("VACUUM ANALYZE journal_entries")


def mb(n: float) -> float:
    return n / 1e6


# --- main ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs of each side (the best is kept)")
    parser.add_argument("--gzip-level", type=int, default=None, help="BACKUP_GZIP_LEVEL for the export")
    parser.add_argument("--copy-format", choices=["binary", "csv"], default=None,
                        help="BACKUP_COPY_FORMAT for the export (default binary)")
    parser.add_argument("--compression", choices=["zstd", "gzip"], default=None,
                        help="BACKUP_COMPRESSION for the export (default zstd)")
    parser.add_argument("--quick", action="store_true", help="--rows 200000")
    parser.add_argument("--child-export", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-pipeline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_export:
        child_export()
        return 0
    if args.child_pipeline:
        child_pipeline()
        return 0
    if args.gzip_level:
        os.environ["BACKUP_GZIP_LEVEL"] = str(args.gzip_level)
    if args.compression:
        os.environ["BACKUP_COMPRESSION"] = args.compression
    if args.copy_format:
        os.environ["BACKUP_COPY_FORMAT"] = args.copy_format
    if args.quick:
        args.rows = min(args.rows, 200_000)

    import boto3
    import psycopg

    from devkit import restore

    server = postgres.server_url()
    with psycopg.connect(server) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        major = conn.execute("SHOW server_version_num").fetchone()[0]
    major = int(major) // 10000
    pg_dump, pg_restore = pg_tool("pg_dump", major), pg_tool("pg_restore", major)
    if not (pg_dump and pg_restore):
        print(f"pg_dump/pg_restore {major} not found (server {version}): point DATABASE_URL at a "
              "server whose client tools are installed", file=sys.stderr)
        return 2
    scratch = f"bench_backup_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(server, scratch)
    targets: list[str] = []
    moto, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    try:
        os.environ.update(child_env(url, endpoint))
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        migrations.apply(url)
        small = max(1, args.rows // 10)
        print(f"Postgres {version}; {pg_dump}; journal_entries filled to {small} rows ...", flush=True)
        fill(url, 1, small, args.users)
        small_run = run_export(url, endpoint)
        print(f"... and to {args.rows} rows", flush=True)
        fill(url, small + 1, args.rows, args.users)

        dump, dump_z1 = work / "db.dump", work / "db-z1.dump"
        exports, pipelines, dumps, dumps_z1, plains = [], [], [], [], []
        for _ in range(args.repeat):  # alternating, so drift on a shared machine hits all alike
            exports.append(run_export(url, endpoint))
            dumps_z1.append(timed([pg_dump, "-Fc", "-Z1", "-f", str(dump_z1), url]))
            pipelines.append(run_pipeline(url, endpoint)["seconds"])
            dumps.append(timed([pg_dump, "-Fc", "-f", str(dump), url]))
            plains.append(timed(f"{pg_dump} '{url}' | gzip > {work / 'db.sql.gz'}", shell=True))
        big_run = min(exports, key=lambda r: r["seconds"])
        data_mb = mb(big_run["data_bytes"])
        export_s, dump_s, plain_s = big_run["seconds"], min(dumps), min(plains)
        dump_z1_s = min(dumps_z1)
        pipeline_s = min(pipelines)

        restores, pg_restores, analyzes = [], [], []
        for i in range(args.repeat):
            target = postgres.create_database(server, f"{scratch}_r{i}")
            targets.append(f"{scratch}_r{i}")
            t0 = time.perf_counter()
            report = restore.restore(BUCKET, STAGE, big_run["run"], target, progress=False,
                                     log=lambda _: None)
            restores.append((time.perf_counter() - t0, report))
            peer = postgres.create_database(server, f"{scratch}_p{i}")
            targets.append(f"{scratch}_p{i}")
            pg_restores.append(timed([pg_restore, "--no-owner", "-d", peer, str(dump_z1)]))
            with psycopg.connect(peer, autocommit=True) as conn:
                t0 = time.perf_counter()
                conn.execute("ANALYZE")
                analyzes.append(time.perf_counter() - t0)
        restore_s, best = min(restores, key=lambda r: r[0])
        pg_restore_s = min(pg_restores)

        growth_small = (small_run["peak_kb"] - small_run["before_kb"]) / 1024
        growth_big = (big_run["peak_kb"] - big_run["before_kb"]) / 1024
        growth = (big_run["peak_kb"] - small_run["peak_kb"]) / 1024
        codec = os.environ.get("BACKUP_COMPRESSION", "zstd")
        copy_format = os.environ.get("BACKUP_COPY_FORMAT", "binary")
        level = os.environ.get("BACKUP_ZSTD_LEVEL" if codec == "zstd" else "BACKUP_GZIP_LEVEL", "1")
        sizes = (f"{mb(big_run['bytes']):.1f} MB {codec} level {level}; "
                 f"pg_dump -Fc -Z1 {mb(dump_z1.stat().st_size):.1f} MB; "
                 f"pg_dump -Fc {mb(dump.stat().st_size):.1f} MB; "
                 f"plain|gzip {mb((work / 'db.sql.gz').stat().st_size):.0f} MB")
        print()
        print(f"table data: {args.rows} rows, {data_mb:.0f} MB of COPY {copy_format} data over all tables "
              f"({sizes})")
        print(f"{'export':<38}{'seconds':>9}{'MB/s':>9}{'vs pg_dump -Fc -Z1':>20}")
        for name, s in [(f"backup-export (COPY->{codec}->moto S3)", export_s),
                        ("  same pipeline, no S3 server", pipeline_s), ("pg_dump -Fc -Z1", dump_z1_s),
                        ("pg_dump -Fc", dump_s), ("pg_dump | gzip", plain_s)]:
            print(f"{name:<38}{s:>9.2f}{data_mb / s:>9.1f}{dump_z1_s / s:>19.2f}x")
        print(f"peak RSS of the export child  {args.rows // 10:>8} rows: "
              f"{small_run['peak_kb'] / 1024:6.1f} MB "
              f"(+{growth_small:.1f} MB over its {small_run['before_kb'] / 1024:.1f} MB before the export)")
        print(f"{'':<30}{args.rows:>8} rows: {big_run['peak_kb'] / 1024:6.1f} MB (+{growth_big:.1f} MB); "
              f"growth 10% -> 100% of the rows: {growth:+.1f} MB")
        print(f"{'restore':<38}{'seconds':>9}{'':>9}{'vs pg_restore':>20}")
        for name, s in [("scripts/restore", restore_s), ("pg_restore", pg_restore_s),
                        ("pg_restore + ANALYZE", pg_restore_s + min(analyzes))]:
            print(f"{name:<38}{s:>9.2f}{'':>9}{s / pg_restore_s:>19.2f}x")
        copy_s = sum(t.seconds for t in best.tables)
        print(f"  scripts/restore: download+verify {best.download_seconds:.2f} s, "
              f"migrate {best.migrate_seconds:.2f} s, COPY {copy_s:.2f} s, keys {best.keys_seconds:.2f} s, "
              f"ANALYZE {best.analyze_seconds:.2f} s")
        print()
        size_ratio = big_run["bytes"] / dump_z1.stat().st_size
        checks = {
            "export throughput vs pg_dump -Fc -Z1": (dump_z1_s / export_s, ">=",
                                                     TARGETS["export_vs_pg_dump"]),
            "export size vs pg_dump -Fc -Z1": (size_ratio, "<=", 1.0),
            "restore time vs pg_restore": (restore_s / pg_restore_s, "<=", TARGETS["restore_vs_pg_restore"]),
        }
        for name, (value, op, target) in checks.items():
            ok = value >= target if op == ">=" else value <= target
            print(f"ratio: {name} = {value:.2f}x (goal {op} {target}x: {'met' if ok else 'NOT met'})")
        ok = growth < TARGETS["rss_growth_mb"]
        print(f"peak RSS growth {args.rows // 10} -> {args.rows} rows: {growth:+.1f} MB "
              f"(goal < {TARGETS['rss_growth_mb']:g} MB: {'met' if ok else 'NOT met'})")
        if args.repeat > 1:
            spread = statistics.pstdev([r["seconds"] for r in exports])
            print(f"(best of {args.repeat} runs of each; spread of the export runs {spread:.2f} s)")
    finally:
        moto.terminate()
        shutil.rmtree(work, ignore_errors=True)
        for name in [scratch, *targets]:
            postgres.drop_database(server, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
