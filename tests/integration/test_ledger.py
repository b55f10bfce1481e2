"""The credits ledger on a real Postgres: idempotent grants and clawbacks, reservations
that cannot overdraw, refunds that happen once, and sum(ledger) == balance after every
concurrent run."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg
import pytest

from common import db, ledger
from common.errors import Conflict, InsufficientCredits, NotFound

RUNS = range(3)  # every concurrency test runs three times per session


@pytest.fixture(autouse=True)
def fresh_connection(clean_db):
    db.reset()
    yield
    db.reset()


@pytest.fixture
def user():
    user_id = uuid.uuid4()
    db.execute("INSERT INTO users (id) VALUES (%s)", (user_id,))
    return user_id


def funded(user_id, credits):
    ledger.grant(user_id, credits, reason="test funding", source="test", ref=f"fund:{uuid.uuid4()}")
    return user_id


def concurrently(n, fn):
    """Run fn(i) in n threads, each on its own connection, released together.
    Returns each call's result or the exception it raised."""
    start = threading.Barrier(n)

    def worker(i):
        try:
            try:
                db.connection()  # connect before the start line
                start.wait(timeout=30)
            except Exception as exc:
                start.abort()  # a thread that cannot start frees the others now, not at the timeout
                return exc
            # Past the start line: fn's own exceptions (an expected Conflict) are results. They
            # must not abort the barrier: a thread released but not yet scheduled (a loaded
            # CPU) would then raise BrokenBarrierError instead of running fn at all.
            try:
                return fn(i)
            except Exception as exc:
                return exc
        finally:
            db.reset()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(worker, range(n)))


def ledger_rows(user_id):
    return db.execute("SELECT kind, amount, shortfall, source, ref FROM credit_ledger "
                      "WHERE user_id = %s ORDER BY id", (user_id,)).fetchall()


def test_grant_is_idempotent_on_source_and_ref(user):
    # When the same purchase is granted twice
    first = ledger.grant(user, 50, reason="credits_50", source="stripe", ref="evt_1")
    again = ledger.grant(user, 50, reason="credits_50", source="stripe", ref="evt_1")
    # Then it is applied once
    assert (first, again) == (True, False)
    assert ledger.balance(user) == 50
    assert [r["kind"] for r in ledger_rows(user)] == ["grant"]
    assert ledger.ledger_matches_balance(user)


def test_grant_to_an_unknown_user_is_not_found_and_writes_nothing():
    with pytest.raises(NotFound):
        ledger.grant(uuid.uuid4(), 5, reason="x", source="stripe", ref="evt_missing")
    assert db.execute("SELECT count(*) AS n FROM credit_ledger").fetchone()["n"] == 0


def test_grant_inside_a_rolled_back_transaction_leaves_nothing(user):
    with pytest.raises(RuntimeError), db.transaction() as conn:
        assert ledger.grant(user, 5, reason="x", source="paymob", ref="tx_9", conn=conn)
        raise RuntimeError("the webhook failed after granting")
    assert ledger.balance(user) == 0
    assert ledger_rows(user) == []
    # and the redelivery applies it
    assert ledger.grant(user, 5, reason="x", source="paymob", ref="tx_9")


@pytest.mark.parametrize("run", RUNS)
def test_the_same_grant_delivered_20_times_concurrently_is_applied_once(user, run):
    results = concurrently(20, lambda _: ledger.grant(user, 200, reason="credits_200",
                                                      source="revenuecat", ref=f"evt_{run}"))
    assert sorted(results, key=str) == [False] * 19 + [True]
    assert ledger.balance(user) == 200
    assert ledger.ledger_matches_balance(user)


@pytest.mark.parametrize("run", RUNS)
def test_50_concurrent_reservations_of_1_credit_from_10_exactly_10_succeed(user, run):
    funded(user, 10)
    results = concurrently(50, lambda i: ledger.reserve(user, 1, idempotency_key=f"gen-{run}-{i}"))
    reserved = [r for r in results if isinstance(r, ledger.Reservation)]
    refused = [r for r in results if isinstance(r, InsufficientCredits)]
    assert (len(reserved), len(refused)) == (10, 40)
    assert ledger.balance(user) == 0
    assert db.execute("SELECT count(*) AS n FROM credit_reservations WHERE user_id = %s",
                      (user,)).fetchone()["n"] == 10
    assert ledger.ledger_matches_balance(user)


def test_reserve_is_idempotent_on_its_key(user):
    funded(user, 10)
    first = ledger.reserve(user, 3, idempotency_key="req-1")
    again = ledger.reserve(user, 3, idempotency_key="req-1")
    assert again == first
    assert ledger.balance(user) == 7
    # A key reused for another amount is a conflict, and charges nothing
    with pytest.raises(Conflict):
        ledger.reserve(user, 4, idempotency_key="req-1")
    assert ledger.balance(user) == 7
    assert ledger.ledger_matches_balance(user)


@pytest.mark.parametrize("run", RUNS)
def test_concurrent_reservations_with_one_key_charge_once(user, run):
    funded(user, 10)
    results = concurrently(10, lambda _: ledger.reserve(user, 2, idempotency_key=f"retry-{run}"))
    assert all(isinstance(r, ledger.Reservation) for r in results), results
    assert len({r.id for r in results}) == 1
    assert ledger.balance(user) == 8
    assert ledger.ledger_matches_balance(user)


def test_short_balance_raises_and_writes_nothing(user):
    funded(user, 2)
    with pytest.raises(InsufficientCredits):
        ledger.reserve(user, 3, idempotency_key="too-much")
    assert ledger.balance(user) == 2
    assert [r["kind"] for r in ledger_rows(user)] == ["grant"]
    assert db.execute("SELECT count(*) AS n FROM credit_reservations").fetchone()["n"] == 0


def test_reserving_for_an_unknown_user_is_not_found():
    with pytest.raises(NotFound):
        ledger.reserve(uuid.uuid4(), 1, idempotency_key="k")


def test_settle_keeps_the_charge_and_writes_no_entry(user):
    funded(user, 5)
    res = ledger.reserve(user, 2, idempotency_key="gen-1")
    assert ledger.settle(res.id) is True
    assert ledger.settle(res.id) is False  # idempotent
    assert ledger.balance(user) == 3
    assert [r["kind"] for r in ledger_rows(user)] == ["grant", "reserve"]
    with pytest.raises(Conflict):
        ledger.refund(res.id)
    assert ledger.ledger_matches_balance(user)


def test_refund_twice_refunds_once(user):
    funded(user, 5)
    res = ledger.reserve(user, 2, idempotency_key="gen-1")
    assert ledger.refund(res.id) is True
    assert ledger.refund(res.id) is False
    assert ledger.balance(user) == 5
    assert [(r["kind"], r["amount"]) for r in ledger_rows(user)] == [
        ("grant", 5), ("reserve", -2), ("refund", 2)]
    with pytest.raises(Conflict):
        ledger.settle(res.id)
    assert ledger.ledger_matches_balance(user)


def test_unknown_reservation_is_not_found():
    with pytest.raises(NotFound):
        ledger.refund(uuid.uuid4())
    with pytest.raises(NotFound):
        ledger.settle(uuid.uuid4())


@pytest.mark.parametrize("run", RUNS)
def test_concurrent_refund_and_settle_race_ends_consistent(user, run):
    # Given 10 open reservations, each raced by 2 refunds and 2 settles at once
    funded(user, 10)
    reservations = [ledger.reserve(user, 1, idempotency_key=f"race-{run}-{i}") for i in range(10)]
    ops = [ledger.refund, ledger.refund, ledger.settle, ledger.settle]
    results = concurrently(40, lambda i: ops[i % 4](reservations[i // 4].id))
    # Then each reservation ended in exactly one state, chosen by exactly one winner
    for n, res in enumerate(reservations):
        outcome = results[4 * n: 4 * n + 4]
        status = db.execute("SELECT status FROM credit_reservations WHERE id = %s",
                            (res.id,)).fetchone()["status"]
        winner = 0 if status == "refunded" else 2
        assert outcome[winner] is True or outcome[winner + 1] is True
        assert outcome[winner: winner + 2].count(True) == 1
        assert all(isinstance(r, Conflict) for r in outcome[2 - winner: 4 - winner]), (status, outcome)
    refunded = db.execute("SELECT count(*) AS n FROM credit_reservations WHERE status = 'refunded'"
                          ).fetchone()["n"]
    assert ledger.balance(user) == refunded
    assert ledger.ledger_matches_balance(user)


def test_clawback_beyond_the_balance_takes_what_is_there_and_records_the_shortfall(user):
    funded(user, 5)
    assert ledger.clawback(user, 8, reason="refunded purchase", source="stripe", ref="ch_1") == (5, 3)
    assert ledger.balance(user) == 0
    assert ledger_rows(user)[-1] == {"kind": "clawback", "amount": -5, "shortfall": 3,
                                    "source": "stripe", "ref": "ch_1"}
    # Redelivered: the first outcome, nothing taken again
    assert ledger.clawback(user, 8, reason="refunded purchase", source="stripe", ref="ch_1") == (5, 3)
    # From an empty balance: all of it is shortfall
    assert ledger.clawback(user, 4, reason="refunded purchase", source="stripe", ref="ch_2") == (0, 4)
    assert ledger.balance(user) == 0
    assert ledger.ledger_matches_balance(user)


@pytest.mark.parametrize("run", RUNS)
def test_concurrent_clawback_and_spends_never_overdraw(user, run):
    funded(user, 10)
    work = [lambda: ledger.clawback(user, 6, reason="refund", source="paymob", ref=f"cb-{run}")] * 10 + [
        (lambda i=i: ledger.reserve(user, 1, idempotency_key=f"spend-{run}-{i}")) for i in range(10)]
    results = concurrently(20, lambda i: work[i]())
    clawbacks = results[:10]
    assert len(set(clawbacks)) == 1, clawbacks  # one outcome, whoever delivered it
    taken, shortfall = clawbacks[0]
    spent = sum(isinstance(r, ledger.Reservation) for r in results[10:])
    assert taken + shortfall == 6
    assert ledger.balance(user) == 10 - taken - spent >= 0
    assert ledger.ledger_matches_balance(user)


def test_the_database_refuses_a_negative_balance(user, database_url):
    funded(user, 1)
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE users SET credits = credits - 2 WHERE id = %s", (user,))


def test_the_database_refuses_ledger_entries_of_the_wrong_sign(user, database_url):
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO credit_ledger (user_id, amount, kind, reason, source, ref) "
                     "VALUES (%s, -5, 'grant', 'x', 'test', 'neg')", (user,))


def test_stale_reservations_lists_only_old_open_ones(user):
    funded(user, 10)
    old = ledger.reserve(user, 1, idempotency_key="old")
    settled_old = ledger.reserve(user, 1, idempotency_key="old-settled")
    ledger.reserve(user, 1, idempotency_key="new")
    ledger.settle(settled_old.id)
    db.execute("UPDATE credit_reservations SET created_at = now() - interval '2 hours' "
               "WHERE id = ANY(%s)", ([old.id, settled_old.id],))
    stale = ledger.stale_reservations(timedelta(hours=1), limit=10)
    assert [r.id for r in stale] == [old.id]
    assert ledger.refund(stale[0].id)
    assert ledger.ledger_matches_balance()
