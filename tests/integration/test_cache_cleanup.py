"""cache-cleanup on a real Postgres, invoked as Lambda invokes it: bounded purges of every
kind of expired row, stale reservations refunded once, a run cut short by the Lambda
deadline that the next run finishes, and two overlapping runs."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg
import pytest
from pydantic import ValidationError

from common import db, ledger
from devkit import lambdas

REPORT_KEYS = {"cache_entries", "idempotency_records", "rate_limit_windows", "webhook_inbox", "pair_invites"}


@pytest.fixture(autouse=True)
def fresh(clean_db):
    db.reset()
    yield
    db.reset()


def invoke(event=None, timeout_s=60):
    try:
        return lambdas.invoke("cache-cleanup", event or {}, timeout_s=timeout_s)
    finally:
        db.reset()


def concurrently(n, fn):
    """fn(i) in n threads released together (each thread has its own connections)."""
    start = threading.Barrier(n)

    def worker(i):
        try:
            db.connection()
            start.wait(timeout=30)
            return fn(i)
        finally:
            db.reset()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(worker, range(n)))


def expired_cache_rows(n, *, prefix="old"):
    db.execute("""
        INSERT INTO cache_entries (key, value, expires_at)
        SELECT %s || ':' || i, jsonb_build_object('i', i), now() - interval '1 hour' - i * interval '1 ms'
          FROM generate_series(1, %s) i""", (prefix, n))


def live_cache_row():
    db.execute("INSERT INTO cache_entries (key, value, expires_at) "
               "VALUES ('live', '1', now() + interval '1 hour')")


def count(table, where="true"):
    return db.execute(f"SELECT count(*) AS n FROM {table} WHERE {where}").fetchone()["n"]


def user_with_credits(credits):
    user_id = uuid.uuid4()
    db.execute("INSERT INTO users (id) VALUES (%s)", (user_id,))
    ledger.grant(user_id, credits, reason="test funding", source="test", ref=f"fund:{user_id}")
    return user_id


def test_expired_rows_of_every_kind_are_purged_and_live_ones_kept():
    # Given expired and live rows of each purged kind
    expired_cache_rows(30)
    live_cache_row()
    db.execute("""INSERT INTO idempotency_records (id, status, expires_at) VALUES
                  ('gone', 'COMPLETED', now() - interval '1 minute'),
                  ('kept', 'COMPLETED', now() + interval '1 hour')""")
    db.execute("""INSERT INTO rate_limit_windows (subject, route, window_start, hits) VALUES
                  ('u', 'GET /a', now() - interval '2 hours', 3),
                  ('u', 'GET /a', now() - interval '30 seconds', 1)""")
    # webhook deliveries: finished ones (rejected too) past the 90-day retention go; recent
    # ones and unfinished ones (whatever their age) stay
    for i, (status, age) in enumerate([("processed", "100 days"), ("ignored", "95 days"),
                                        ("rejected", "91 days"), ("rejected", "89 days"),
                                        ("processed", "10 days"), ("unmatched", "200 days"),
                                        ("failed", "200 days"), ("received", "200 days")]):
        db.execute("""INSERT INTO webhook_inbox (provider, event_id, body, signature_ok, status, received_at)
                      VALUES ('stripe', %s, '{}', true, %s, now() - %s::interval)""",
                   (f"evt_{i}", status, age))
    # invites never used go a week after they expired; a used one stays with its pair
    inviter, joiner = user_with_credits(1), user_with_credits(1)
    pair_id = db.execute("INSERT INTO pairs DEFAULT VALUES RETURNING id").fetchone()["id"]
    for n, (expired_days_ago, used) in enumerate([(8, False), (2, False), (30, True)]):
        db.execute("""INSERT INTO pair_invites (inviter_id, code_sha256, created_at, expires_at, used_at,
                                                used_by, pair_id)
                      VALUES (%(inviter)s, sha256(%(n)s::bytea),
                              now() - %(days)s * interval '1 day' - interval '1 day',
                              now() - %(days)s * interval '1 day',
                              CASE WHEN %(used)s THEN now() - interval '40 days' END,
                              CASE WHEN %(used)s THEN %(joiner)s::uuid END,
                              CASE WHEN %(used)s THEN %(pair)s::uuid END)""",
                   {"inviter": inviter, "joiner": joiner, "pair": pair_id, "n": str(n).encode(),
                    "days": expired_days_ago, "used": used})
    # payments and ledger rows are never purged, however old
    user_id = user_with_credits(5)
    db.execute("UPDATE credit_ledger SET created_at = now() - interval '10 years'")
    db.execute("""INSERT INTO payments (provider, provider_transaction_id, status, amount_minor, currency,
                                        raw, created_at)
                  VALUES ('stripe', 'ch_old', 'unmatched', 100, 'USD', '{}', now() - interval '10 years')""")

    # When the cleanup runs with its scheduled input
    report = invoke({"max_seconds": 60, "batch_size": 7, "dry_run": False})

    # Then each expired row is gone and reported, in small batches
    assert report["deleted"] == {"cache_entries": 30, "idempotency_records": 1, "rate_limit_windows": 1,
                                 "webhook_inbox": 3, "pair_invites": 1}
    assert report["complete"] is True and report["refunded"] == 0
    assert report["remaining_expired"] == {**dict.fromkeys(REPORT_KEYS, 0), "credit_reservations": 0}
    assert report["batches"] >= 30 // 7
    assert count("cache_entries") == 1 and count("idempotency_records") == 1
    assert count("rate_limit_windows") == 1
    assert sorted(r["status"] for r in db.execute("SELECT status FROM webhook_inbox")) == [
        "failed", "processed", "received", "rejected", "unmatched"]
    assert count("payments") == 1 and count("credit_ledger", f"user_id = '{user_id}'") == 1
    assert ledger.balance(user_id) == 5


def test_dry_run_changes_nothing_and_reports_what_is_eligible():
    expired_cache_rows(12)
    report = invoke({"dry_run": True})
    assert report["dry_run"] is True and report["deleted"] == dict.fromkeys(REPORT_KEYS, 0)
    assert report["remaining_expired"]["cache_entries"] == 12 and report["complete"] is False
    assert count("cache_entries") == 12


def test_unknown_or_invalid_input_is_refused():
    with pytest.raises(ValidationError):
        invoke({"batchsize": 10})
    with pytest.raises(ValidationError):
        invoke({"batch_size": 0})


def test_a_run_cut_short_by_the_deadline_stops_cleanly_and_the_next_run_finishes():
    # Given more expired rows than small batches can purge in half a second
    expired_cache_rows(40_000)
    live_cache_row()

    # When a run has 1.5 s before its Lambda deadline (the safety margin is 1 s)
    first = invoke({"batch_size": 50}, timeout_s=1.5)

    # Then it stops before the deadline and says what is left
    assert first["complete"] is False
    assert 0 < first["deleted"]["cache_entries"] < 40_000
    assert first["remaining_expired"]["cache_entries"] == 40_000 - first["deleted"]["cache_entries"]
    assert first["seconds"] < 1.5

    # When the next run has time, it finishes the job
    second = invoke({"batch_size": 10_000})
    assert second["complete"] is True
    assert first["deleted"]["cache_entries"] + second["deleted"]["cache_entries"] == 40_000
    assert second["remaining_expired"]["cache_entries"] == 0
    assert count("cache_entries") == 1


def test_max_seconds_bounds_a_run_below_the_deadline():
    expired_cache_rows(40_000)
    report = invoke({"batch_size": 20, "max_seconds": 1.2}, timeout_s=60)
    assert report["complete"] is False and report["seconds"] < 1.2


def test_two_overlapping_runs_share_the_work_without_errors(monkeypatch):
    monkeypatch.setenv("CLEANUP_PAUSE_MS", "0")  # 100 rounds of small batches: no pauses
    # Given 20,000 expired rows
    expired_cache_rows(20_000)
    db.execute("""INSERT INTO idempotency_records (id, status, expires_at)
                  SELECT 'r' || i, 'COMPLETED', now() - interval '1 minute'
                    FROM generate_series(1, 3000) i""")

    # When two runs start at the same moment with small batches
    reports = concurrently(2, lambda i: invoke({"batch_size": 200}))

    # Then both finish, every row is deleted exactly once between them
    assert all(r["complete"] for r in reports)
    assert sum(r["deleted"]["cache_entries"] for r in reports) == 20_000
    assert sum(r["deleted"]["idempotency_records"] for r in reports) == 3000
    assert count("cache_entries") == 0 and count("idempotency_records") == 0


def test_a_stale_reservation_is_refunded_once_even_by_overlapping_runs():
    # Given a user with 10 credits, one reservation from a process that died long ago and
    # one from work still running
    user_id = user_with_credits(10)
    stale = ledger.reserve(user_id, 3, idempotency_key="died")
    fresh = ledger.reserve(user_id, 2, idempotency_key="running")
    db.execute("UPDATE credit_reservations SET created_at = now() - interval '10 minutes' WHERE id = %s",
               (stale.id,))
    assert ledger.balance(user_id) == 5

    # When two cleanups run at once, and then once more
    reports = concurrently(2, lambda i: invoke({"batch_size": 10}))
    again = invoke()

    # Then the stale one was refunded exactly once, the running one left alone
    assert sorted(r["refunded"] for r in reports) == [0, 1] and again["refunded"] == 0
    assert ledger.balance(user_id) == 8
    assert ledger.ledger_matches_balance(user_id)
    statuses = {r["id"]: r["status"] for r in db.execute("SELECT id, status FROM credit_reservations")}
    assert statuses == {stale.id: "refunded", fresh.id: "reserved"}
    refunds = db.execute("SELECT amount FROM credit_ledger WHERE kind = 'refund'").fetchall()
    assert refunds == [{"amount": 3}]


def test_an_expired_key_renewed_during_a_purge_survives(database_url):
    # Given an expired entry that a writer renews while holding its row lock
    expired_cache_rows(3)
    with psycopg.connect(database_url, autocommit=True) as writer, writer.transaction():
        writer.execute("UPDATE cache_entries SET expires_at = now() + interval '1 hour' WHERE key = 'old:2'")
        # When a cleanup runs meanwhile, it skips the locked row instead of waiting for it
        report = invoke()
        assert report["deleted"]["cache_entries"] == 2
    # Then the renewed entry is still there after the writer commits
    assert [r["key"] for r in db.execute("SELECT key FROM cache_entries")] == ["old:2"]


@pytest.mark.parametrize(("table", "index", "seed"), [
    ("cache_entries", "cache_entries_expires_idx",
     "INSERT INTO cache_entries (key, value, expires_at) SELECT 'k' || i, '1', now() + (i - 10000) * "
     "interval '1 second' FROM generate_series(1, 20000) i"),
    ("webhook_inbox", "webhook_inbox_terminal_received_idx",
     "INSERT INTO webhook_inbox (provider, event_id, body, signature_ok, status, received_at) "
     "SELECT 'stripe', 'e' || i, '{}', true, (ARRAY['processed', 'failed', 'rejected'])[i % 3 + 1], "
     "now() - i * interval '1 hour' FROM generate_series(1, 20000) i"),
    ("pair_invites", "pair_invites_unused_expires_idx",
     "WITH u AS (INSERT INTO users (id) VALUES (gen_random_uuid()) RETURNING id) "
     "INSERT INTO pair_invites (inviter_id, code_sha256, created_at, expires_at, used_at, used_by, pair_id) "
     "SELECT u.id, sha256(i::text::bytea), now() - i * interval '1 hour' - interval '1 day', "
     "now() - i * interval '1 hour', NULL, NULL, NULL FROM u, generate_series(1, 20000) i"),
])
def test_each_batch_walks_the_expiry_index(table, index, seed):
    lambdas.load_handler("cache-cleanup")  # the function's CodeUri on sys.path, as Lambda has it
    from cache_cleanup import purge

    # Given a table with many rows, analysed
    db.execute(seed)
    db.execute(f"ANALYZE {table}")
    query = next(p.delete for p in purge.PURGES if p.name == table)
    params = purge.Limits(timedelta(minutes=5), timedelta(days=90), timedelta(hours=1)).params(limit=5000)
    # When the batch DELETE is planned, then its row choice reads the index, not the table
    plan = "\n".join(r["QUERY PLAN"] for r in db.execute("EXPLAIN " + query, params))
    assert index in plan and "Seq Scan" not in plan, plan
    assert "Tid Scan" in plan, plan
