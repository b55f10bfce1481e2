"""revenuecat-webhook invoked as Lambda invokes it (template.yaml, Function URL events,
payload 2.0) on a real Postgres: each event type's effect on entitlements and credits,
exactly once however often it is delivered, the same end state in any order, refusals
that change nothing, and a database outage that loses nothing."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest

from common import config, db, entitlements, ledger
from devkit import ROOT, lambdas, seed
from tests.conftest import MUTABLE_TABLES

AUTH = "local-test-revenuecat-auth"
OLD_AUTH = "local-test-revenuecat-auth-previous"
MONTHLY = "com.example.journal.premium.monthly"  # plan: entitlement premium (migration 0004)
PACK = "com.example.photo.credits50"  # credit pack: 50 credits (migration 0004)
PLUS = "com.example.test.plus"  # plan with premium and 20 credits per period (inserted below)
MINUTE, DAY = 60_000, 86_400_000
NOW = int(time.time() * 1000)
BASE = NOW - 10 * DAY  # event clock: `at` minutes after this


@pytest.fixture(scope="module", autouse=True)
def test_catalog(database_url):
    """A plan that grants credits, and a mapped virtual currency (CRD: 1 credit each)."""
    statements = [
        "INSERT INTO products (id, kind, name, credits, entitlement_ids, period_days)"
        " VALUES ('test_plus', 'plan', 'Plus (test)', 20, '{premium}', 30) ON CONFLICT DO NOTHING",
        "INSERT INTO product_prices (product_id, provider, currency, amount_minor, provider_product_id)"
        f" VALUES ('test_plus', 'revenuecat', 'USD', 999, '{PLUS}') ON CONFLICT DO NOTHING",
        "INSERT INTO revenuecat_currencies (code, credits_per_unit) VALUES ('CRD', 1) ON CONFLICT DO NOTHING",
    ]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
    yield
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM products WHERE id = 'test_plus'")
        conn.execute("DELETE FROM revenuecat_currencies WHERE code = 'CRD'")


@pytest.fixture(scope="module", autouse=True)
def clean_once(database_url):
    """One clean database for the module: each test makes its own users and asserts on
    them (truncating before every test would cost more than all the tests)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(MUTABLE_TABLES)} RESTART IDENTITY CASCADE")


@pytest.fixture(autouse=True)
def webhook_env(database_url, monkeypatch):
    monkeypatch.setenv("REVENUECAT_WEBHOOK_AUTH", f"{AUTH},{OLD_AUTH}")
    monkeypatch.delenv("REVENUECAT_APPLY_SANDBOX", raising=False)
    db.reset()
    yield
    db.reset()


@pytest.fixture
def stage(monkeypatch):
    """Set STAGE for one test (settings are cached: cleared before and after)."""
    def set_stage(value):
        monkeypatch.setenv("STAGE", value)
        config.settings.cache_clear()
    yield set_stage
    monkeypatch.undo()
    config.settings.cache_clear()


# --- helpers ---------------------------------------------------------------------------


def user() -> uuid.UUID:
    user_id = uuid.uuid4()
    db.execute("INSERT INTO users (id) VALUES (%s)", (user_id,))
    return user_id


def pair(a, b):
    pair_id = db.execute("INSERT INTO pairs DEFAULT VALUES RETURNING id").fetchone()["id"]
    db.execute("INSERT INTO pair_members (pair_id, user_id) VALUES (%s, %s), (%s, %s)",
               (pair_id, a, pair_id, b))


def rc(type_, app_user_id, *, at=0, **fields):
    """A webhook body shaped like RevenueCat's samples; ``at`` minutes after BASE."""
    app_user_id = str(app_user_id)
    event = {
        "id": str(uuid.uuid4()).upper(), "type": type_, "app_id": "app_test",
        "event_timestamp_ms": BASE + at * MINUTE,
        "app_user_id": app_user_id, "original_app_user_id": app_user_id, "aliases": [app_user_id],
        "product_id": MONTHLY, "entitlement_ids": ["premium"], "period_type": "NORMAL",
        "purchased_at_ms": BASE + at * MINUTE, "expiration_at_ms": NOW + 20 * DAY, "store": "APP_STORE",
        "environment": "PRODUCTION", "transaction_id": f"txn-{uuid.uuid4().hex[:12]}",
        "original_transaction_id": "otxn-1", "price": 7.99, "currency": "USD", "subscriber_attributes": {},
    }
    event.update(fields)
    return {"api_version": "1.0", "event": event}


def pack(app_user_id, **fields):
    """A 50-credit pack purchase (a one-time product: no entitlement, no expiry)."""
    return rc("NON_RENEWING_PURCHASE", app_user_id, **{
        "product_id": PACK, "entitlement_ids": None, "expiration_at_ms": None, **fields})


def transfer(from_ids, to_ids, *, at=0):
    return {"api_version": "1.0", "event": {
        "id": str(uuid.uuid4()).upper(), "type": "TRANSFER", "app_id": "app_test", "store": "APP_STORE",
        "environment": "PRODUCTION", "event_timestamp_ms": BASE + at * MINUTE,
        "transferred_from": [str(i) for i in from_ids], "transferred_to": [str(i) for i in to_ids]}}


def send(body=None, *, auth=AUTH, raw=None):
    event = lambdas.url_event("POST", "/", body=None if raw is not None else body, raw_body=raw,
                              headers={"Authorization": auth} if auth else {})
    response = lambdas.invoke("revenuecat-webhook", event)
    return response["statusCode"], json.loads(response["body"])


def ok(body, status="processed"):
    assert send(body) == (200, {"status": status, "event_id": body["event"]["id"]})


def ent(user_id, entitlement_id="premium"):
    return db.execute("SELECT * FROM entitlements WHERE user_id = %s AND entitlement_id = %s",
                      (user_id, entitlement_id)).fetchone()


def inbox_row(body):
    return db.execute("SELECT * FROM webhook_inbox WHERE provider = 'revenuecat' AND event_id = %s",
                      (body["event"]["id"],)).fetchone()


def ts(ms):
    return datetime.fromtimestamp(ms / 1000, UTC)


def count(table):
    return db.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]


def pending(body):
    return [r["app_user_id"] for r in db.execute(
        "SELECT p.app_user_id FROM revenuecat_pending p JOIN webhook_inbox w ON w.id = p.inbox_id"
        " WHERE w.event_id = %s ORDER BY 1", (body["event"]["id"],)).fetchall()]


# --- every event type --------------------------------------------------------------------


def test_initial_purchase_gives_the_user_and_their_pair_access_until_expiry():
    # Given a couple
    alice, bob = user(), user()
    pair(alice, bob)
    # When Alice's purchase arrives
    body = rc("INITIAL_PURCHASE", alice)
    ok(body)
    # Then she has premium until the expiry, and Bob through the pair
    row = ent(alice)
    expires_at = ts(body["event"]["expiration_at_ms"])
    assert (row["active"], row["will_renew"], row["expires_at"]) == (True, True, expires_at)
    assert (row["store"], row["environment"], row["product_id"], row["period_type"],
            row["last_event_type"]) == ("APP_STORE", "PRODUCTION", MONTHLY, "NORMAL", "INITIAL_PURCHASE")
    assert row["last_event_at"] == ts(body["event"]["event_timestamp_ms"])
    assert entitlements.has_entitlement(alice, "premium") and entitlements.has_entitlement(bob, "premium")
    # And the delivery is in the inbox, its Authorization header redacted
    stored = inbox_row(body)
    assert (stored["status"], stored["event_type"], stored["headers"]["authorization"]) == (
        "processed", "INITIAL_PURCHASE", "[redacted]")


@pytest.mark.parametrize("kind", ["RENEWAL", "UNCANCELLATION", "SUBSCRIPTION_EXTENDED", "REFUND_REVERSED",
                                  "TEMPORARY_ENTITLEMENT_GRANT"])
def test_granting_events_give_access_until_their_expiry(kind):
    # Given an expired subscription
    alice = user()
    ok(rc("INITIAL_PURCHASE", alice, expiration_at_ms=NOW - DAY))
    ok(rc("EXPIRATION", alice, at=1, expiration_at_ms=NOW - DAY))
    assert not entitlements.has_entitlement(alice, "premium")
    # When a newer granting event arrives
    body = rc(kind, alice, at=2, expiration_at_ms=NOW + 40 * DAY)
    ok(body)
    # Then access is back until its expiry
    row = ent(alice)
    assert (row["active"], row["expires_at"], row["last_event_type"]) == (True, ts(NOW + 40 * DAY), kind)
    assert entitlements.has_entitlement(alice, "premium")


def test_expiry_never_moves_backwards_on_a_newer_grant():
    alice = user()
    ok(rc("INITIAL_PURCHASE", alice, expiration_at_ms=NOW + 40 * DAY))
    ok(rc("RENEWAL", alice, at=1, expiration_at_ms=NOW + 20 * DAY))
    assert ent(alice)["expires_at"] == ts(NOW + 40 * DAY)


def test_cancellation_keeps_access_until_expiry_and_stops_renewal():
    alice = user()
    ok(rc("INITIAL_PURCHASE", alice))
    ok(rc("CANCELLATION", alice, at=1, cancel_reason="UNSUBSCRIBE"))
    row = ent(alice)
    assert (row["active"], row["will_renew"], row["expires_at"]) == (True, False, ts(NOW + 20 * DAY))
    assert entitlements.has_entitlement(alice, "premium")


def test_a_refunded_subscription_ends_access_now():
    alice, bob = user(), user()
    pair(alice, bob)
    ok(rc("INITIAL_PURCHASE", alice))
    body = rc("CANCELLATION", alice, at=5, cancel_reason="CUSTOMER_SUPPORT", price=-7.99)
    ok(body)
    row = ent(alice)
    assert (row["active"], row["will_renew"], row["expires_at"]) == (False, False, ts(BASE + 5 * MINUTE))
    assert not entitlements.has_entitlement(alice, "premium")
    assert not entitlements.has_entitlement(bob, "premium")


def test_a_refunded_pack_claws_back_its_credits_as_far_as_the_balance_allows():
    # Given a 50-credit pack of which 30 credits were spent
    alice = user()
    purchase = pack(alice, transaction_id="txn-pack-1")
    ok(purchase)
    spend = ledger.reserve(alice, 30, idempotency_key="generation-1")
    ledger.settle(spend.id)
    # When the pack is refunded
    ok(rc("CANCELLATION", alice, at=1, product_id=PACK, entitlement_ids=None, expiration_at_ms=None,
          transaction_id="txn-pack-1", cancel_reason="CUSTOMER_SUPPORT", price=-4.99))
    # Then the 20 left are taken back, the 30 spent are recorded as shortfall, never a negative balance
    assert ledger.balance(alice) == 0
    entry = db.execute("SELECT amount, shortfall, kind FROM credit_ledger"
                       " WHERE ref = 'refund:txn-pack-1'").fetchone()
    assert entry == {"amount": -20, "shortfall": 30, "kind": "clawback"}
    assert ledger.ledger_matches_balance(alice)


def test_billing_issue_keeps_access_through_the_grace_period():
    alice = user()
    ok(rc("INITIAL_PURCHASE", alice, expiration_at_ms=NOW - MINUTE))
    assert not entitlements.has_entitlement(alice, "premium")
    ok(rc("BILLING_ISSUE", alice, at=1, expiration_at_ms=NOW - MINUTE,
          grace_period_expiration_at_ms=NOW + 5 * DAY))
    assert ent(alice)["expires_at"] == ts(NOW + 5 * DAY)
    assert entitlements.has_entitlement(alice, "premium")


def test_expiration_ends_access():
    alice = user()
    ok(rc("INITIAL_PURCHASE", alice))
    ok(rc("EXPIRATION", alice, at=1, expiration_reason="UNSUBSCRIBE", expiration_at_ms=NOW - MINUTE))
    row = ent(alice)
    assert (row["active"], row["will_renew"], row["expires_at"]) == (False, False, ts(NOW - MINUTE))
    assert not entitlements.has_entitlement(alice, "premium")


@pytest.mark.parametrize("kind", ["SUBSCRIPTION_PAUSED", "PRODUCT_CHANGE", "INVOICE_ISSUANCE",
                                  "EXPERIMENT_ENROLLMENT", "SUBSCRIBER_ALIAS"])
def test_informational_events_are_recorded_and_change_no_access(kind):
    alice = user()
    ok(rc("INITIAL_PURCHASE", alice))
    before = ent(alice)
    body = rc(kind, alice, at=1, expiration_at_ms=NOW - DAY, new_product_id=PLUS)
    ok(body)
    assert ent(alice) == before
    assert inbox_row(body)["status"] == "processed"


def test_transfer_moves_entitlements_to_the_new_user():
    alice, bob = user(), user()
    ok(rc("INITIAL_PURCHASE", alice))
    ok(transfer([alice, "$RCAnonymousID:aaaa"], [bob], at=1))
    assert ent(alice) is None
    assert ent(bob)["active"] and entitlements.has_entitlement(bob, "premium")


def test_a_pack_grants_credits_once_per_store_transaction():
    # Given a 50-credit pack bought once, delivered under two event ids (RevenueCat re-sent it)
    alice = user()
    first = pack(alice, transaction_id="txn-pack-2")
    again = pack(alice, at=1, transaction_id="txn-pack-2")
    ok(first)
    ok(again, "duplicate")  # the transaction was claimed by the first
    # Then it granted 50 credits once, and no entitlement
    assert ledger.balance(alice) == 50
    assert ent(alice) is None
    # And a second purchase (another transaction) grants again
    ok(pack(alice, at=2))
    assert ledger.balance(alice) == 100


def test_a_temporary_grant_then_its_purchase_grants_credits_once():
    alice = user()
    ok(rc("TEMPORARY_ENTITLEMENT_GRANT", alice, product_id=PLUS, transaction_id="txn-plus-1",
          expiration_at_ms=NOW + DAY))
    assert entitlements.has_entitlement(alice, "premium") and ledger.balance(alice) == 0
    ok(rc("INITIAL_PURCHASE", alice, at=1, product_id=PLUS, transaction_id="txn-plus-1"))
    # the same purchase under a new event id: claimed already
    ok(rc("INITIAL_PURCHASE", alice, at=2, product_id=PLUS, transaction_id="txn-plus-1"), "duplicate")
    assert ledger.balance(alice) == 20
    ok(rc("RENEWAL", alice, at=3, product_id=PLUS, transaction_id="txn-plus-2"))
    assert ledger.balance(alice) == 40


def test_virtual_currency_adjustments_move_the_balance_when_mapped():
    alice = user()

    def vc(amount, code="CRD", at=0):
        return rc("VIRTUAL_CURRENCY_TRANSACTION", alice, at=at, environment=None,
                  purchase_environment="PRODUCTION",
                  virtual_currency_transaction_id=f"vctx-{uuid.uuid4().hex[:8]}",
                  adjustments=[{"amount": amount, "currency": {"code": code, "name": code}}])

    ok(vc(100))
    ok(vc(-30, at=1))
    assert ledger.balance(alice) == 70
    ok(vc(500, code="GEM", at=2), status="ignored")  # not mapped
    assert ledger.balance(alice) == 70
    assert ledger.ledger_matches_balance(alice)


def test_test_events_and_unknown_types_are_recorded_and_ignored():
    alice = user()
    test_event = rc("TEST", alice)
    new_type = rc("SOMETHING_NEW_2027", alice, brand_new_field={"x": 1})
    ok(test_event, status="ignored")
    ok(new_type, status="ignored")
    assert ent(alice) is None
    assert inbox_row(new_type)["event_type"] == "SOMETHING_NEW_2027"


def test_sandbox_events_are_recorded_but_change_nothing_in_prod(stage):
    alice = user()
    stage("prod")
    body = rc("INITIAL_PURCHASE", alice, environment="SANDBOX")
    ok(body, status="ignored")
    assert ent(alice) is None and inbox_row(body)["status"] == "ignored"


def test_sandbox_events_apply_outside_prod_or_when_enabled(stage, monkeypatch):
    alice, bob = user(), user()
    ok(rc("INITIAL_PURCHASE", alice, environment="SANDBOX"))  # stage "test"
    stage("prod")
    monkeypatch.setenv("REVENUECAT_APPLY_SANDBOX", "true")
    ok(rc("INITIAL_PURCHASE", bob, environment="SANDBOX"))
    assert ent(alice)["environment"] == ent(bob)["environment"] == "SANDBOX"


def test_either_configured_authorization_value_is_accepted_bare_or_as_bearer():
    alice = user()
    assert send(rc("TEST", alice), auth=f"Bearer {OLD_AUTH}")[0] == 200
    assert send(rc("TEST", alice), auth=AUTH)[0] == 200


# --- unmatched events and replay -------------------------------------------------------


def test_an_anonymous_purchase_waits_for_its_user_and_the_next_event_replays_it():
    # Given a pack bought before logging in (an anonymous RevenueCat id)
    anonymous = "$RCAnonymousID:8069238d6049ce87cc529853916d624c"
    purchase = pack(anonymous)
    ok(purchase, status="unmatched")
    assert pending(purchase) == [anonymous]
    # When the user logs in and RevenueCat's next event names both ids
    alice = user()
    ok(rc("SUBSCRIBER_ALIAS", alice, at=1, original_app_user_id=anonymous, aliases=[anonymous, str(alice)]))
    # Then the waiting purchase was applied to her, once
    assert ledger.balance(alice) == 50
    assert inbox_row(purchase)["status"] == "processed"
    assert pending(purchase) == []
    ok(rc("RENEWAL", alice, at=2))  # nothing left to replay
    assert ledger.balance(alice) == 50


def test_replay_script_applies_events_whose_user_now_exists(clean_db):
    # Given a purchase for a user id that had no users row yet
    future_user = uuid.uuid4()
    body = rc("INITIAL_PURCHASE", future_user)
    ok(body, status="unmatched")
    db.execute("INSERT INTO users (id) VALUES (%s)", (future_user,))
    # When the replay command runs
    env = {**os.environ, "DATABASE_URL": os.environ["DATABASE_URL"]}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "replay-unmatched")], env=env,
                         capture_output=True, text=True, timeout=60)
    # Then the purchase took effect
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"processed": 1}
    assert entitlements.has_entitlement(future_user, "premium")
    assert inbox_row(body)["status"] == "processed"


# --- exactly once, any order -------------------------------------------------------------


def _concurrently(n, fn):
    barrier = threading.Barrier(n)

    def run(i):
        try:
            barrier.wait()
            return fn(i)
        finally:
            db.reset()  # each thread had its own connection

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_one_event_delivered_20_times_at_once_takes_effect_once():
    # Given a pack purchase; all deliveries are identical, so the shared resolver object
    # seeing another thread's copy of the event changes nothing
    alice = user()
    body = pack(alice)
    # When it arrives 20 times at once
    results = _concurrently(20, lambda _: send(body))
    # Then every delivery got 200, one applied it, and the credits were granted once
    assert all(status == 200 for status, _ in results)
    assert sorted(r["status"] for _, r in results) == ["duplicate"] * 19 + ["processed"]
    assert ledger.balance(alice) == 50
    assert inbox_row(body)["attempts"] == 20
    assert ledger.ledger_matches_balance()


def test_different_events_of_one_user_at_once_all_apply():
    alice = user()
    bodies = [pack(alice, at=i) for i in range(10)]
    results = _concurrently(10, lambda i: send(bodies[i]))
    assert [r[0] for r in results] == [200] * 10
    assert ledger.balance(alice) == 500
    assert ledger.ledger_matches_balance()


def _expiration_then_renewal(a, b):
    return [rc("EXPIRATION", a, at=1, expiration_at_ms=NOW - DAY),
            rc("RENEWAL", a, at=2, expiration_at_ms=NOW + 30 * DAY)]


def _renewal_then_expiration(a, b):
    return [rc("RENEWAL", a, at=1, expiration_at_ms=NOW - MINUTE),
            rc("EXPIRATION", a, at=2, expiration_at_ms=NOW - MINUTE)]


def _cancellation_then_uncancellation(a, b):
    return [rc("CANCELLATION", a, at=1, cancel_reason="UNSUBSCRIBE"), rc("UNCANCELLATION", a, at=2)]


def _uncancellation_then_cancellation(a, b):
    return [rc("UNCANCELLATION", a, at=1), rc("CANCELLATION", a, at=2, cancel_reason="UNSUBSCRIBE")]


def _purchase_then_transfer(a, b):
    return [rc("INITIAL_PURCHASE", a, at=1, product_id=PLUS), transfer([a], [b], at=2)]


def _purchase_then_refund(a, b):
    txn = f"txn-{uuid.uuid4().hex[:12]}"  # store transaction ids are unique: one per run
    return [pack(a, at=1, transaction_id=txn),
            rc("CANCELLATION", a, at=2, product_id=PACK, entitlement_ids=None, expiration_at_ms=None,
               transaction_id=txn, cancel_reason="CUSTOMER_SUPPORT")]


ORDERED_PAIRS = {  # chronological pairs -> (has premium: a, b), credits of a
    "expiration, then renewal": (_expiration_then_renewal, (True, False), 0),
    "renewal, then expiration": (_renewal_then_expiration, (False, False), 0),
    "cancellation, then uncancellation": (_cancellation_then_uncancellation, (True, False), 0),
    "uncancellation, then cancellation": (_uncancellation_then_cancellation, (True, False), 0),
    "initial purchase, then transfer": (_purchase_then_transfer, (False, True), 20),
    "pack purchase, then refund": (_purchase_then_refund, (False, False), 0),
}

STATE = """
SELECT user_id, entitlement_id, source, expires_at, active, will_renew, store, environment, product_id,
       period_type, last_event_at, last_event_id, last_event_type
FROM entitlements WHERE user_id = ANY(%(ids)s)
"""


def _run_in_order(build, order, with_purchase):
    a, b = user(), user()
    if with_purchase:
        ok(rc("INITIAL_PURCHASE", a, at=0))
    bodies = build(a, b)
    for i in order:
        assert send(bodies[i])[0] == 200
    role = {a: "a", b: "b"}
    name = {body["event"]["id"]: f"event {i}" for i, body in enumerate(bodies)}
    rows = [{**r, "user_id": role[r["user_id"]], "last_event_id": name.get(r["last_event_id"], "purchase")}
            for r in db.execute(STATE, {"ids": [a, b]}).fetchall()]
    access = tuple(entitlements.has_entitlement(u, "premium") for u in (a, b))
    return sorted(rows, key=lambda r: (r["user_id"], r["entitlement_id"])), access, ledger.balance(a)


@pytest.mark.parametrize("pair_name", list(ORDERED_PAIRS))
def test_a_pair_of_events_ends_in_the_same_state_in_either_order(pair_name):
    build, access, credits = ORDERED_PAIRS[pair_name]
    with_purchase = "purchase" not in pair_name  # the subscription the pair acts on
    # When the pair arrives in order, and (for other users) in reverse order
    in_order = _run_in_order(build, [0, 1], with_purchase)
    reversed_ = _run_in_order(build, [1, 0], with_purchase)
    # Then both end in the same state: the chronologically later event decides
    assert in_order == reversed_
    assert in_order[1:] == (access, credits)
    assert ledger.ledger_matches_balance()


# --- refusals and outages ------------------------------------------------------------------


def _wrong_type(field, value):
    body = rc("INITIAL_PURCHASE", uuid.uuid4())
    body["event"][field] = value
    return json.dumps(body)


REFUSED = {
    "wrong auth header": (dict(auth="not-the-value"), 401),
    "missing auth header": (dict(auth=None), 401),
    "truncated JSON": (dict(raw=json.dumps(rc("INITIAL_PURCHASE", uuid.uuid4()))[:-20]), 400),
    "2 MB body": (dict(raw=json.dumps({"api_version": "1.0", "event": {"id": "x", "pad": "x" * 2 * 10**6}})),
                  413),
    "event is a string": (dict(raw='{"api_version": "1.0", "event": "INITIAL_PURCHASE"}'), 400),
    "event is a list": (dict(raw='{"api_version": "1.0", "event": [{"id": "x"}]}'), 400),
    "no event": (dict(raw='{"api_version": "1.0"}'), 400),
    "body is a list": (dict(raw="[]"), 400),
    "timestamp is text": (dict(raw=_wrong_type("event_timestamp_ms", "yesterday")), 400),
    "expiry is an object": (dict(raw=_wrong_type("expiration_at_ms", {"ms": 1})), 400),
    "aliases is a string": (dict(raw=_wrong_type("aliases", "$RCAnonymousID:1")), 400),
    "id is a number": (dict(raw=_wrong_type("id", 12345)), 400),
    "timestamp out of range": (dict(raw=_wrong_type("event_timestamp_ms", 10**20)), 400),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_requests_change_nothing(case):
    kwargs, expected = REFUSED[case]
    alice = user()
    body = pack(alice)
    tables = ("webhook_inbox", "entitlements", "credit_ledger", "revenuecat_pending", "revenuecat_aliases")
    before = [count(t) for t in tables]
    status, answer = send(body, **kwargs)
    assert status == expected
    assert set(answer["error"]) == {"code", "message"}
    assert [count(t) for t in tables] == before
    assert ledger.balance(alice) == 0


def test_database_unavailable_answers_503_and_the_same_delivery_succeeds_later(monkeypatch):
    # Given a purchase, and a database that cannot be reached
    alice = user()
    body = rc("INITIAL_PURCHASE", alice, product_id=PLUS)
    real_url = os.environ["DATABASE_URL"]
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/unreachable")
    db.reset()
    config.settings.cache_clear()
    # When RevenueCat delivers it: 503 (RevenueCat retries)
    status, answer = send(body)
    assert (status, answer["error"]["code"]) == (503, "unavailable")
    # When the database is back and RevenueCat retries the same delivery: applied once
    monkeypatch.setenv("DATABASE_URL", real_url)
    db.reset()
    config.settings.cache_clear()
    ok(body)
    assert entitlements.has_entitlement(alice, "premium") and ledger.balance(alice) == 20
    ok(body, status="duplicate")


# --- the sample events ---------------------------------------------------------------------


def test_every_sample_event_is_accepted(database_url, monkeypatch):
    # Given the demo users (a pair) that the samples name, and the samples' Authorization value
    monkeypatch.setenv("REVENUECAT_WEBHOOK_AUTH", "local-revenuecat-webhook-auth")
    seed.seed(database_url)
    samples = sorted((ROOT / "events" / "revenuecat-webhook").glob("*.json"))
    assert len(samples) >= 19
    statuses = {}
    for path in samples:
        response = lambdas.invoke("revenuecat-webhook", json.loads(path.read_text()))
        assert response["statusCode"] == 200, (path.name, response["body"])
        statuses[path.stem] = json.loads(response["body"])["status"]
    assert statuses["test"] == "ignored"
    assert statuses["initial-purchase"] == statuses["transfer"] == "processed"
    assert ledger.ledger_matches_balance()
