"""Benchmark: the layer's cache `get` (hit) and `set` against Redis, in one run.

    .venv/bin/python scripts/bench/cache.py [--keys 100000] [--ops 20000] [--quick]

Postgres is DATABASE_URL's server, else the embedded one (devkit.postgres); the bench
makes its own scratch database, applies the migrations and drops it at the end. Redis
is 127.0.0.1:6379; when it is not reachable the bench says so and measures Postgres
alone. Values are 1 KB JSON documents; both stores hold `--keys` entries.

Measured, one client, per operation:
- layer get: `cache.get(cache.key(...))` (key hashing, expiry check, JSON decoding and
  the hit metric included), against Redis `GET` of the same `cache.key(...)` +
  `json.loads`;
- layer set: `cache.set(cache.key(...), value, ttl)` (an upsert over an existing key),
  against Redis `SET ... EX` of `json.dumps(value)` under the same `cache.key(...)`.
Both sides compute the key per operation: the same key work on each.
The layer runs twice, side by side: with the default settings on a direct connection
(named prepared statements, an asynchronously committed upsert) and as behind RDS Proxy
(DATABASE_PROXY_HOST set to the same server: no prepared statements, simple-protocol
queries, cache_put); rows marked ~.
Each is measured for the table as LOGGED and as UNLOGGED. The two sides are timed in
alternating chunks so that drift on a shared machine hits both alike. Throughput is
sequential (one connection): operations per second of summed latency.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable

from devkit import migrations, postgres

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
TTL_S = 3600
TARGETS = {"get": 1.3, "set": 1.6}  # layer p50 / Redis p50 (issue 15)


def make_value(i: int, size: int) -> dict:
    """A JSON document of exactly `size` bytes (as `json.dumps` writes it)."""
    rng = random.Random(i)
    doc = {
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "model": "gpt-image-1",
        "tags": [f"tag{rng.randrange(1000)}" for _ in range(5)],
        "scores": [round(rng.random(), 4) for _ in range(8)],
        "created": "2025-01-01T00:00:00+00:00",
        "caption": "",
    }
    pad = size - len(json.dumps(doc))
    doc["caption"] = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(max(pad, 0)))
    return doc


def percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * q))] / 1000  # microseconds


def stats(ns: list[int]) -> dict[str, float]:
    s = sorted(ns)
    return {"p50": percentile(s, 0.50), "p99": percentile(s, 0.99), "ops": len(s) / (sum(s) / 1e9)}


def timed(op: Callable[[int], object], indices: list[int]) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for i in indices:
        t0 = clock()
        op(i)
        out.append(clock() - t0)
    return out


def interleaved(
    ops: dict[str, Callable[[int], object]], indices: list[int], chunk: int
) -> dict[str, list[int]]:
    """Latencies of each op over the same indices, taking turns chunk by chunk (the turn
    order reversed every other chunk)."""
    results: dict[str, list[int]] = {name: [] for name in ops}
    for op in ops.values():  # warm-up: connections, caches, code paths
        timed(op, indices[: min(500, len(indices))])
    for start in range(0, len(indices), chunk):
        part = indices[start : start + chunk]
        order = list(ops.items())
        if (start // chunk) % 2:
            order.reverse()
        for name, op in order:
            results[name] += timed(op, part)
    return results


def connect_redis():
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1, socket_timeout=5)
    try:
        info = client.info("server")
    except redis.RedisError as exc:
        print(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT} ({exc.__class__.__name__}): "
              "skipping the comparison, measuring Postgres alone.")
        return None, None
    return client, info.get("redis_version")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=100_000, help="entries in each store (default 100000)")
    parser.add_argument("--ops", type=int, default=20_000, help="timed operations per measurement")
    parser.add_argument("--value-bytes", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=500, help="operations per alternation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="--keys 5000 --ops 4000")
    args = parser.parse_args()
    if args.quick:
        args.keys, args.ops = min(args.keys, 5000), min(args.ops, 4000)

    server = postgres.server_url()
    scratch = f"bench_cache_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(server, scratch)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Bench")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "bench")
    redis_client, redis_version = connect_redis()
    prefix = f"bench:cache:{uuid.uuid4().hex[:8]}:"
    try:
        migrations.apply(url)
        return run(args, url, redis_client, redis_version, prefix)
    finally:
        from common import db
        from common.cache import key as cache_key

        db.reset()
        postgres.drop_database(server, scratch)
        if redis_client is not None:
            for first in range(0, args.keys, 10_000):
                keys = (prefix + cache_key("bench", i) for i in range(first, min(args.keys, first + 10_000)))
                redis_client.delete(*keys)


def run(args, url: str, r, redis_version: str | None, prefix: str) -> int:
    from common import cache, db

    n, rng = args.keys, random.Random(args.seed)
    print(f"Building {n} keys and {args.value_bytes}-byte JSON values ...", flush=True)
    values = [make_value(i, args.value_bytes) for i in range(n)]
    texts = [json.dumps(v) for v in values]
    keys = [cache.key("bench", i) for i in range(n)]
    rkeys = [f"{prefix}{k}" for k in keys]
    get_idx = [rng.randrange(n) for _ in range(args.ops)]
    set_idx = [rng.randrange(n) for _ in range(args.ops)]

    if r is not None:
        pipe = r.pipeline(transaction=False)
        for k, t in zip(rkeys, texts, strict=True):
            pipe.set(k, t, ex=TTL_S)
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()

    settings = {
        row["name"]: row["setting"]
        for row in db.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('server_version', 'synchronous_commit', 'fsync', 'wal_sync_method', 'full_page_writes')"
        )
    }
    print(f"Postgres {settings['server_version']} ({url.rsplit('@', 1)[-1].rsplit('/', 1)[0]}): "
          f"synchronous_commit={settings['synchronous_commit']}, fsync={settings['fsync']}, "
          f"wal_sync_method={settings['wal_sync_method']}, full_page_writes={settings['full_page_writes']}")
    if r is not None:
        print(f"Redis {redis_version} ({REDIS_HOST}:{REDIS_PORT})")
    print(f"{n} keys, {args.value_bytes}-byte values, {args.ops} timed ops per row, one client, "
          f"alternating chunks of {args.chunk}\n", flush=True)

    def layer_get(i: int) -> object:
        value = cache.get(cache.key("bench", i))
        assert value is not None  # a miss would measure the wrong thing
        return value

    def layer_set(i: int) -> None:
        cache.set(cache.key("bench", i), values[i], TTL_S)

    def redis_get(i: int) -> object:
        return json.loads(r.get(prefix + cache.key("bench", i)))

    def redis_set(i: int) -> None:
        r.set(prefix + cache.key("bench", i), json.dumps(values[i]), ex=TTL_S)

    # The layer as deployed behind RDS Proxy: the same calls on a connection made with
    # DATABASE_PROXY_HOST set (to this server's own host, so no proxy is really there).
    from psycopg.conninfo import conninfo_to_dict

    proxy_conn = connect_with(DATABASE_PROXY_HOST=str(conninfo_to_dict(url).get("host") or "localhost"))
    print(f"prepare_threshold: {db.connection().prepare_threshold} (default settings), "
          f"{proxy_conn.prepare_threshold} (behind RDS Proxy)", flush=True)

    def on(conn, fn: Callable[[int], object]) -> Callable[[int], object]:
        def op(i: int) -> object:
            saved, db._local.conn = db._local.conn, conn
            try:
                return fn(i)
            finally:
                db._local.conn = saved
        return op

    rows = []
    for persistence in ("UNLOGGED", "LOGGED"):
        print(f"Loading cache_entries as {persistence} ...", flush=True)
        load_table(db.connection(), persistence, keys, texts)
        with quiet_metrics():
            for op, layer, peer, idx in (
                ("get", layer_get, redis_get, get_idx),
                ("set", layer_set, redis_set, set_idx),
            ):
                sides = {"layer": layer, "proxy": on(proxy_conn, layer)}
                sides |= {"redis": peer} if r else {}
                lat = interleaved(sides, idx, args.chunk)
                peer_stats = stats(lat["redis"]) if r else None
                rows.append((persistence, op, stats(lat["layer"]), peer_stats))
                rows.append((persistence, f"{op}~", stats(lat["proxy"]), peer_stats))
    # A bare round trip on each connection, after the run: on a small shared machine each
    # server process (a Postgres backend per connection, Redis) answers loopback round
    # trips in either ~25 us or ~100 us depending on where the scheduler runs it, and
    # that can change during a run; a ratio between two sides caught in different cases
    # says more about that than about the code.
    bare = {"layer": lambda i: db.connection().execute("SELECT 1").fetchone(),
            "proxy": lambda i: proxy_conn.execute("SELECT 1").fetchone()}
    bare |= {"redis": lambda i: r.ping()} if r else {}
    bare_ns = interleaved(bare, get_idx[:2000], args.chunk)
    round_trips = {name: stats(ns)["p50"] for name, ns in bare_ns.items()}
    proxy_conn.close()

    print("Where the time goes (table LOGGED) ...", flush=True)
    import psycopg

    unnamed = psycopg.connect(url, autocommit=True, prepare_threshold=None)
    named = psycopg.connect(url, autocommit=True, prepare_threshold=0)

    def params(i: int) -> dict:
        return cache._set_params(keys[i], values[i], TTL_S, 0, None)

    # The read as bare psycopg calls, unnamed and named prepared (what the layer does
    # directly connected), then the layer's own; the write's upsert committed
    # synchronously against the layer's asynchronous commit.
    parts = {
        "get: SQL, unnamed*": lambda i: unnamed.execute(PLAIN_GET, (keys[i],)).fetchone()[0],
        "get: SQL, named prepared*": lambda i: named.execute(PLAIN_GET, (keys[i],)).fetchone()[0],
        "get: layer, key given": lambda i: cache.get(keys[i]),
        "get: layer, with key()": layer_get,
        "set: SQL, sync commit, prepared*": lambda i: named.execute(PLAIN_SET, params(i)),
        "set: layer, key given": lambda i: cache.set(keys[i], values[i], TTL_S),
        "set: layer, with key()": layer_set,
    }
    peers = {"get": redis_get, "set": redis_set}
    n_parts = min(args.ops, 10_000)
    with quiet_metrics():
        breakdown = {}
        for op in ("get", "set"):
            ops = {name: fn for name, fn in parts.items() if name.startswith(op)}
            if r:
                ops[f"{op}: redis"] = peers[op]
            idx = get_idx[:n_parts] if op == "get" else set_idx[:n_parts]
            breakdown |= {name: stats(ns) for name, ns in interleaved(ops, idx, args.chunk).items()}
    unnamed.close()
    named.close()

    print()
    head = (f"{'table':9} {'op':4} | {'layer p50':>9} {'p99':>7} {'ops/s':>7} | "
            f"{'redis p50':>9} {'p99':>7} {'ops/s':>7} | {'p50 x':>6} {'p99 x':>6} {'target':>7}")
    print(head)
    print("-" * len(head))
    for persistence, op, ours, peer in rows:
        line = f"{persistence:9} {op:4} | {ours['p50']:9.1f} {ours['p99']:7.1f} {ours['ops']:7.0f} | "
        if peer is None:
            line += f"{'-':>9} {'-':>7} {'-':>7} | {'-':>6} {'-':>6} {'-':>7}"
        else:
            ratio50, ratio99 = ours["p50"] / peer["p50"], ours["p99"] / peer["p99"]
            verdict = "ok" if ratio50 <= TARGETS[op[:3]] else "MISS"
            line += (f"{peer['p50']:9.1f} {peer['p99']:7.1f} {peer['ops']:7.0f} | "
                     f"{ratio50:6.2f} {ratio99:6.2f} {'<=' + str(TARGETS[op[:3]]):>5} {verdict}")
        print(line)
    print("\nLatencies in microseconds; x = layer / Redis. Redis peers: GET + json.loads, "
          "SET EX of json.dumps(value), each under the same cache.key(...).")
    print("get / set: the layer with the default settings on a direct connection (named prepared "
          "statements); get~ / set~: as behind RDS Proxy (none; see common/settings.py).")
    for persistence, op, ours, peer in rows:
        if peer is not None:
            ratio, goal = ours["p50"] / peer["p50"], TARGETS[op[:3]]
            how = "behind RDS Proxy" if op.endswith("~") else "default settings, direct"
            print(f"ratio: {op[:3]} p50 ({persistence} table, {how}) layer vs Redis = {ratio:.2f}x "
                  f"(goal <= {goal}x: {'met' if ratio <= goal else 'NOT met'})")

    print("\nbare round trip p50 (SELECT 1 / PING): " + ", ".join(
        f"{name} {p50:.1f} us" for name, p50 in round_trips.items()))

    print(f"\n{'where the time goes (LOGGED)':32} | {'p50':>7} {'p99':>7} | {'p50 x redis':>11}")
    print("-" * 64)
    for name, st in breakdown.items():
        peer = breakdown.get(f"{name.split(':')[0]}: redis")
        ratio = f"{st['p50'] / peer['p50']:11.2f}" if peer else f"{'-':>11}"
        print(f"{name:32} | {st['p50']:7.1f} {st['p99']:7.1f} | {ratio}")
    print("* bare psycopg calls, for comparison. The layer's writes commit without waiting for the "
          "WAL flush (directly: set_config in the upsert's own transaction; behind RDS Proxy: "
          "cache_put, migration 0002).")
    return 0


def connect_with(**settings: str):
    """A layer connection (``common.db``'s) made with these settings in the environment."""
    from common import config, db

    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    config.settings.cache_clear()
    try:
        return db._connect()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        config.settings.cache_clear()


PLAIN_GET = "SELECT value FROM cache_entries WHERE key = %s AND expires_at > now()"
PLAIN_SET = """
INSERT INTO cache_entries (key, value, expires_at, compute_ms)
VALUES (%(key)s, %(value)s, now() + make_interval(secs => %(ttl)s), %(compute_ms)s)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
"""


def load_table(conn, persistence: str, keys: list[str], texts: list[str]) -> None:
    """(Re)load cache_entries with every key, as a LOGGED or UNLOGGED table."""
    conn.execute(f"ALTER TABLE cache_entries SET {persistence}")
    conn.execute("TRUNCATE cache_entries")
    with conn.cursor().copy("COPY cache_entries (key, value, expires_at) FROM STDIN") as copy:
        for k, t in zip(keys, texts, strict=True):
            copy.write_row((k, t, "infinity"))
    conn.execute("VACUUM ANALYZE cache_entries")
    gc.collect()


@contextlib.contextmanager
def quiet_metrics():
    """Powertools prints its metric set (EMF) every 100 values: keep the cost, drop the text."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


if __name__ == "__main__":
    sys.exit(main())
