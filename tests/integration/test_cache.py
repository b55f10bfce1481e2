"""The in-database cache on a real Postgres: keys, reads and writes, expiry, writes in a
caller's transaction, and single-flight computation under concurrency."""

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest

from common import cache, db
from common.errors import AppError


@pytest.fixture(autouse=True)
def fresh(clean_db):
    db.reset()
    yield
    db.reset()


def _in_thread(fn):
    """Run ``fn`` on its own thread (so with its own thread-local connections)."""
    def run(*args):
        try:
            return fn(*args)
        finally:
            db.reset()
    return run


def _leases(database_url) -> int:
    """Single-flight leases held in this test database."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        return admin.execute("SELECT count(*) FROM cache_leases").fetchone()[0]


# --- keys ---------------------------------------------------------------------------


def test_key_is_independent_of_dict_order_at_every_depth():
    a = cache.key("caption", {"b": 1, "a": {"y": [1, 2], "x": "z"}}, size=512, style="noir")
    b = cache.key("caption", {"a": {"x": "z", "y": [1, 2]}, "b": 1}, style="noir", size=512)
    assert a == b
    assert a.startswith("caption:") and len(a.split(":", 1)[1]) == 64


def test_key_changes_with_any_part_and_with_the_namespace():
    base = cache.key("caption", {"a": [1, 2]}, size=512)
    assert cache.key("caption", {"a": [2, 1]}, size=512) != base  # list order matters
    assert cache.key("caption", {"a": [1, 2]}, size=513) != base
    assert cache.key("caption", {"a": [1, 2]}, 512) != base  # positional is not named
    assert cache.key("summary", {"a": [1, 2]}, size=512) != base
    assert cache.key("summary", {"a": [1, 2]}, size=512).split(":")[1] == base.split(":")[1]


def test_key_normalises_numbers_and_standard_types():
    uid = uuid.uuid4()
    assert cache.key("n", 2) == cache.key("n", 2.0) == cache.key("n", Decimal("2.00"))
    assert cache.key("n", 0.1 + 0.2) != cache.key("n", 0.3)  # floats keyed by exact value
    assert cache.key("n", Decimal("1.50")) == cache.key("n", Decimal("1.5"))
    assert cache.key("n", uid) == cache.key("n", str(uid))
    assert cache.key("n", (1, 2)) == cache.key("n", [1, 2])
    assert cache.key("n", {3, 1, 2}) == cache.key("n", frozenset({2, 3, 1}))
    cairo = timezone(timedelta(hours=2))
    assert cache.key("n", datetime(2025, 1, 1, 12, tzinfo=cairo)) == cache.key(
        "n", datetime(2025, 1, 1, 10, tzinfo=UTC)
    )
    assert cache.key("n", date(2025, 1, 1)) == cache.key("n", "2025-01-01")


def test_a_flat_dict_keys_alike_on_the_plain_path_and_the_normalising_one():
    # {"radius": 2} takes the plain path, the others are normalised: one key for all
    user, params = uuid.UUID(int=1), {"radius": 2, "mode": "x", "on": True, "n": None}
    plain = cache.key("n", user=str(user), params=params)
    assert plain == cache.key("n", user=user, params={**params, "radius": 2.0})
    assert plain == cache.key("n", user=str(user), params={"n": None, "on": True, "mode": "x",
                                                          "radius": Decimal(2)})
    with pytest.raises(TypeError):
        cache.key("n", params={1: "x"})  # not str keys: refused on either path


@pytest.mark.parametrize(
    "part",
    [float("nan"), float("inf"), Decimal("NaN"), datetime(2025, 1, 1), b"raw", {1: "x"}, object()],
)
def test_key_rejects_ambiguous_or_unknown_parts(part):
    with pytest.raises(TypeError):
        cache.key("n", part)


@pytest.mark.parametrize("namespace", ["", "has space", "ümlaut", "x" * 101])
def test_key_rejects_bad_namespaces(namespace):
    with pytest.raises(ValueError):
        cache.key(namespace, 1)


# --- get / set / delete -------------------------------------------------------------


def test_set_get_delete_round_trip():
    k = cache.key("t", "round-trip")
    assert cache.get(k) is None
    cache.set(k, {"caption": "a cat", "scores": [0.5, 1], "nested": {"ok": True}}, 60)
    assert cache.get(k) == {"caption": "a cat", "scores": [0.5, 1], "nested": {"ok": True}}
    cache.set(k, ["replaced"], timedelta(minutes=5))  # upsert
    assert cache.get(k) == ["replaced"]
    assert cache.delete(k) is True
    assert cache.get(k) is None
    assert cache.delete(k) is False


def test_get_many_returns_only_live_entries():
    k1, k2, k3 = (cache.key("t", i) for i in range(3))
    cache.set(k1, 1, 60)
    cache.set(k2, None, 60)  # a stored null is an entry
    assert cache.get_many([k1, k2, k3, k1]) == {k1: 1, k2: None}
    assert cache.get_many([]) == {}


@pytest.mark.parametrize("ttl", [0, -1, timedelta(0), "60", True])
def test_set_rejects_bad_ttls(ttl):
    with pytest.raises(ValueError):
        cache.set(cache.key("t", "ttl"), 1, ttl)


def test_expired_rows_are_never_returned_even_before_cleanup():
    # Given an entry whose expiry has passed (written directly, as if cleanup never ran)
    k = cache.key("t", "expired")
    db.execute(
        "INSERT INTO cache_entries (key, value, expires_at) VALUES (%s, '\"stale\"', now() - interval '1 s')",
        (k,),
    )
    # Then no read returns it, and get_or_compute recomputes over it
    assert cache.get(k) is None
    assert cache.get_many([k]) == {}
    assert cache.get_or_compute(k, 60, lambda: "fresh") == "fresh"
    assert cache.get(k) == "fresh"


def test_set_stores_every_field_directly_and_behind_the_proxy(connection_mode):
    # Directly connected, set is one prepared upsert that commits asynchronously; behind
    # RDS Proxy, cache_put (its set_config out of the proxy's sight) and nothing prepared.
    k, owner = cache.key("t", "modes"), uuid.uuid4()
    for n in range(3):  # the second and third run prepared on a direct connection
        cache.set(k, {"n": n}, 60, compute_ms=7 + n, owner=owner)
        row = db.execute("SELECT value, compute_ms, owner, expires_at - now() AS ttl "
                         "FROM cache_entries WHERE key = %s", (k,)).fetchone()
        assert row["value"] == {"n": n} and row["compute_ms"] == 7 + n and row["owner"] == owner
        assert timedelta(seconds=59) < row["ttl"] <= timedelta(seconds=60)
    prepared = [r["statement"] for r in db.connection().execute(
        "SELECT statement FROM pg_prepared_statements", prepare=False)]
    if connection_mode == "direct":
        assert any("INSERT INTO cache_entries" in s and "set_config('synchronous_commit'" in s
                   for s in prepared)
    else:
        assert prepared == []
    # synchronous_commit was off for each write's own transaction only
    assert db.execute("SELECT current_setting('synchronous_commit') AS s").fetchone() == {"s": "on"}


def test_set_inside_a_caller_transaction_commits_or_rolls_back_with_it(connection_mode):
    rolled_back, committed = cache.key("t", "rolled-back"), cache.key("t", "committed")
    with pytest.raises(RuntimeError), db.transaction() as conn:
        cache.set(rolled_back, "never visible", 60, conn=conn)
        raise RuntimeError("the caller's work failed")
    with db.transaction() as conn:
        cache.set(committed, "visible", 60, conn=conn)
    assert cache.get(rolled_back) is None
    assert cache.get(committed) == "visible"


# --- get_or_compute and single flight -----------------------------------------------


def test_get_or_compute_computes_on_miss_then_hits():
    k, calls = cache.key("t", "goc"), []
    compute = lambda: calls.append(1) or {"n": len(calls)}  # noqa: E731
    assert cache.get_or_compute(k, 60, compute) == {"n": 1}
    assert cache.get_or_compute(k, 60, compute) == {"n": 1}
    assert len(calls) == 1
    row = db.execute(
        "SELECT compute_ms, expires_at > now() + interval '50 s' AS ok FROM cache_entries"
    ).fetchone()
    assert row["ok"] and row["compute_ms"] >= 0


def test_a_stored_none_is_a_hit():
    k, calls = cache.key("t", "none"), []
    for _ in range(2):
        assert cache.get_or_compute(k, 60, lambda: calls.append(1)) is None
    assert len(calls) == 1


@pytest.mark.parametrize("run", range(3))
def test_twenty_threads_on_one_cold_key_compute_once(run, database_url):
    # Given 20 threads with warm connections, released together on one cold key
    k = cache.key("t", "stampede", run)
    threads, computed, counter_lock = 20, [], threading.Lock()
    barrier = threading.Barrier(threads)

    def compute():
        with counter_lock:
            computed.append(threading.get_ident())
        time.sleep(0.3)  # long enough for every other thread to miss and wait
        return {"value": uuid.uuid4().hex}

    @_in_thread
    def caller(_):
        db.connection()
        barrier.wait(timeout=30)
        return cache.get_or_compute(k, 60, compute, wait_s=20)

    # When they all call get_or_compute
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(caller, range(threads)))

    # Then compute ran exactly once, everyone got its value, and no lease is left behind
    assert len(computed) == 1
    assert len({r["value"] for r in results}) == 1
    assert cache.get(k) == results[0]
    assert _leases(database_url) == 0


def test_two_concurrent_misses_on_one_key_run_the_tool_once(database_url):
    # Given two callers missing one key at the same moment, with a slow tool
    k = cache.key("t", "two-misses")
    runs, barrier = [], threading.Barrier(2)

    def tool():
        runs.append(1)
        time.sleep(0.5)
        return {"run": len(runs)}

    @_in_thread
    def caller(_):
        db.connection()
        barrier.wait(timeout=10)
        return cache.get_or_compute(k, 60, tool, wait_s=10)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(caller, range(2)))
    # Then the tool ran once and both got its value; the lease is gone
    assert runs == [1] and results == [{"run": 1}, {"run": 1}]
    assert _leases(database_url) == 0


def test_an_expired_lease_is_taken_over(database_url):
    # Given a lease left by a holder that died (expired a second ago)
    k = cache.key("t", "expired-lease")
    dead = uuid.uuid4()
    db.execute("INSERT INTO cache_leases (key, holder, expires_at) VALUES (%s, %s, now() - interval '1 s')",
               (k, dead))
    # Then a miss takes it over at once and computes
    started = time.monotonic()
    assert cache.get_or_compute(k, 60, lambda: "fresh", wait_s=0) == "fresh"
    assert time.monotonic() - started < 2
    assert _leases(database_url) == 0


def test_a_live_lease_of_another_holder_is_waited_for_and_kept():
    # Given a lease another caller holds (not expired)
    k = cache.key("t", "live-lease")
    other = uuid.uuid4()
    db.execute("INSERT INTO cache_leases (key, holder, expires_at) VALUES (%s, %s, now() + interval '1 min')",
               (k, other))
    # Then a miss waits, gives up with CacheBusy and leaves the other's lease alone
    with pytest.raises(cache.CacheBusy):
        cache.get_or_compute(k, 60, lambda: pytest.fail("must not compute"), wait_s=0.3)
    assert db.execute("SELECT holder FROM cache_leases WHERE key = %s", (k,)).fetchone()["holder"] == other
    # And once the other stores the value and releases, the waiter finds it without computing
    cache.set(k, "theirs", 60)
    db.execute("DELETE FROM cache_leases WHERE key = %s", (k,))
    assert cache.get_or_compute(k, 60, lambda: pytest.fail("must not compute"), wait_s=0) == "theirs"


def test_no_connection_or_transaction_is_held_while_the_tool_runs(database_url, monkeypatch):
    # Given a caller whose connections are named apart from everyone else's
    name = f"lease-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", name)
    k = cache.key("t", "no-connection-held")
    seen = []

    def tool():
        # While the slow tool runs: how many sessions does this caller have, and in what state?
        with psycopg.connect(database_url, autocommit=True) as admin:
            seen.extend(admin.execute("SELECT state FROM pg_stat_activity WHERE application_name = %s",
                                      (name,)).fetchall())
        return "done"

    @_in_thread
    def caller():
        return cache.get_or_compute(k, 60, tool)

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(caller).result() == "done"
    # Then it had one connection, idle: no second connection, no open transaction, no lock
    assert seen == [("idle",)]


def test_a_waiter_that_times_out_gets_cache_busy():
    # Given another thread holding the key's lease (computing, and not done)
    k = cache.key("t", "busy")
    holding, release = threading.Event(), threading.Event()

    @_in_thread
    def holder():
        with cache.single_flight(k):
            holding.set()
            release.wait(timeout=10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert holding.wait(timeout=10)
        # When a caller misses and waits briefly, then it gets CacheBusy (503 busy)
        started = time.monotonic()
        with pytest.raises(cache.CacheBusy) as busy:
            cache.get_or_compute(k, 60, lambda: pytest.fail("must not compute"), wait_s=0.2)
        assert 0.15 < time.monotonic() - started < 5
        assert isinstance(busy.value, AppError)
        assert (busy.value.status, busy.value.code) == (503, "busy")
        with pytest.raises(cache.CacheBusy), cache.single_flight(k, wait_s=0):  # try once
            pass
    finally:
        release.set()
        t.join()
    # And once the holder is done the key is free again
    assert cache.get_or_compute(k, 60, lambda: "done", wait_s=1) == "done"


def test_compute_failure_stores_nothing_and_releases_the_lease(database_url):
    k = cache.key("t", "fails")

    def compute():
        raise RuntimeError("provider down")

    with pytest.raises(RuntimeError, match="provider down"):
        cache.get_or_compute(k, 60, compute)
    assert cache.get(k) is None
    assert _leases(database_url) == 0
    # Another caller can take the key's lease at once
    with cache.single_flight(k, wait_s=0):
        pass


def test_compute_commits_its_own_transactions_on_the_main_connection():
    # Given a compute that reserves something in its own transaction, then fails
    k = cache.key("t", "own-transaction")
    user_id = uuid.uuid4()

    def compute():
        with db.transaction() as conn:
            conn.execute("INSERT INTO users (id) VALUES (%s)", (user_id,))
        raise RuntimeError("the AI call failed after the reservation")

    with pytest.raises(RuntimeError):
        cache.get_or_compute(k, 60, compute)
    # Then its transaction committed on the one connection, while the lease was held
    assert db.execute("SELECT count(*) AS n FROM users WHERE id = %s", (user_id,)).fetchone()["n"] == 1
    assert cache.get(k) is None


def test_a_lease_held_past_hold_s_is_taken_over():
    # Given a holder still running past its lease's hold_s
    k = cache.key("t", "abandoned")
    holding, release, errors = threading.Event(), threading.Event(), []

    @_in_thread
    def holder():
        try:
            with cache.single_flight(k, hold_s=1):
                holding.set()
                release.wait(timeout=10)
        except Exception as exc:  # the holder's exit must not fail
            errors.append(exc)

    t = threading.Thread(target=holder)
    t.start()
    assert holding.wait(timeout=10)
    time.sleep(1.2)
    # Then another caller takes the key without waiting, and the late holder's release
    # leaves the new lease alone
    with cache.single_flight(k, wait_s=0):
        release.set()
        t.join()
        assert db.execute("SELECT count(*) AS n FROM cache_leases WHERE key = %s", (k,)).fetchone()["n"] == 1
    assert errors == []


def test_early_refresh_recomputes_near_expiry_only_when_enabled():
    k = cache.key("t", "xfetch")
    # An entry 1 s from expiry that took 10 s to compute
    db.execute(
        "INSERT INTO cache_entries (key, value, expires_at, compute_ms)"
        " VALUES (%s, '\"old\"', now() + interval '1 s', 10000)",
        (k,),
    )
    assert cache.get_or_compute(k, 60, lambda: "new") == "old"  # off by default
    assert cache.get_or_compute(k, 60, lambda: "new", early_refresh=1000.0) == "new"
    assert cache.get_or_compute(k, 60, lambda: "newer", early_refresh=1.0) == "new"  # far from expiry


def test_hits_misses_and_computes_are_counted():
    from common.observability import metrics

    metrics.clear_metrics()
    k = cache.key("t", "metrics")
    cache.get(k)
    cache.get_or_compute(k, 60, lambda: 1)
    cache.get_or_compute(k, 60, lambda: 1)
    counts = {name: sum(m["Value"]) for name, m in metrics.metric_set.items()}
    metrics.clear_metrics()
    assert counts == {"CacheMiss": 2, "CacheCompute": 1, "CacheHit": 1}


def test_a_count_after_a_flush_is_the_entry_add_metric_makes(capsys):
    import json

    from aws_lambda_powertools.metrics import MetricUnit

    from common.observability import metrics

    metrics.clear_metrics()
    emitted = []
    for _ in range(3):  # the first through add_metric, the others copied from its entry
        cache._count("CacheHit")
        cache._count("CacheHit")
        cache._count("CacheMiss")
        entries = {name: (type(m), list(m.items())) for name, m in metrics.metric_set.items()}
        metrics.flush_metrics()
        emitted.append(json.loads(capsys.readouterr().out))
    metrics.add_metric(name="CacheHit", unit=MetricUnit.Count, value=2)
    metrics.add_metric(name="CacheMiss", unit=MetricUnit.Count, value=1)
    assert entries == {name: (type(m), list(m.items())) for name, m in metrics.metric_set.items()}
    metrics.clear_metrics()
    for out in emitted:
        assert (out["CacheHit"], out["CacheMiss"]) == ([2.0], [1.0])
        assert {k: v for k, v in out["_aws"].items() if k != "Timestamp"} == \
            {k: v for k, v in emitted[0]["_aws"].items() if k != "Timestamp"}


def test_get_or_compute_refuses_to_compute_inside_a_caller_transaction():
    # The lease and the entry would be published only at the caller's commit.
    k = cache.key("t", "in-transaction")
    with pytest.raises(RuntimeError, match="inside a transaction"), db.transaction():
        cache.get_or_compute(k, 60, lambda: pytest.fail("must not compute"))
    cache.set(k, "hit", 60)
    with db.transaction():  # a hit needs no lease and is fine
        assert cache.get_or_compute(k, 60, lambda: pytest.fail("must not compute")) == "hit"


def test_values_must_be_json():
    k = cache.key("t", "not-json")
    with pytest.raises(TypeError):
        cache.set(k, {"when": object()}, 60)
    with pytest.raises(TypeError):
        cache.get_or_compute(k, 60, lambda: {1, 2})
    assert cache.get(k) is None
