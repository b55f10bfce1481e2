"""reconcile, invoked as Lambda invokes it, against the providers' local fakes (the real
stripe SDK and HTTP paths): a payment whose webhook never came is healed by one run
exactly as the webhook would have done it, a second run changes nothing, the webhook
arriving afterwards is a duplicate, and a run racing the webhook grants once (20 times
over). Provider errors leave the cursor where it was; the run stops before its deadline."""

import json
import time
import uuid
from datetime import UTC, datetime

import pytest

from common import db, ledger
from devkit import fake_paymob, fake_stripe, lambdas
from devkit.fake_http import Scripted
from tests.integration.payments.helpers import (
    balance,
    call,
    checkout,
    inbox_of,
    invoke_together,
    ledger_of,
    new_user,
    one,
    order,
    payments_of,
    paymob_event,
    rows,
    snapshot,
    stripe_event,
)

MONTHLY = "com.example.journal.premium.monthly"  # plan: premium (migration 0004)
PACK = "com.example.photo.credits50"  # 50 credits (migration 0004)
RC_AUTH = "local-test-revenuecat-auth"
DAY_MS = 86_400_000


@pytest.fixture(autouse=True)
def reconcile_now(monkeypatch):
    """The tests' events are seconds old: heal them without waiting for the webhooks."""
    monkeypatch.setenv("RECONCILE_MIN_AGE_S", "0")


def reconcile(*providers, timeout_s=None):
    event = {"providers": list(providers)} if providers else {}
    return lambdas.invoke("reconcile", event, timeout_s=timeout_s)


def healed(report, provider):
    return report[provider]["healed"]


def cursor(provider):
    row = one("SELECT position FROM reconcile_cursors WHERE provider = %s", provider)
    return row and row["position"]


# --- Stripe ------------------------------------------------------------------------------


def stripe_purchase(stripe_api):
    """A user who paid a Stripe checkout for 50 credits: Stripe created the event (the
    events API lists it); whether its webhook arrives is up to the test."""
    user = new_user()
    status, body = checkout("/stripe", user, {"product_id": "credits_50"})
    assert status == 201, body
    event = fake_stripe.event("checkout.session.completed",
                              fake_stripe.completed_session(stripe_api.sessions[body["session_id"]]))
    stripe_api.publish(event)
    return user, body["order_id"], event


def what_a_payment_did(user, order_id, provider):
    """The effects of one payment, without its ids (to compare a heal with a delivery)."""
    stored = order(order_id)
    (payment,) = [p for p in payments_of(provider) if str(p["order_id"]) == str(order_id)]
    return {"order": (stored["status"], stored["failure_code"], stored["refunded_minor"]),
            "ledger": [(e["kind"], e["amount"], e["source"], e["ref"] == f"order:{order_id}")
                       for e in ledger_of(user)],
            "payment": (payment["status"], payment["amount_minor"], payment["currency"], payment["kind"])}


def test_a_lost_stripe_event_is_healed_once_as_if_delivered(stripe_api):
    # One purchase's webhook arrives; another's never does
    delivered_user, delivered_order, delivered = stripe_purchase(stripe_api)
    assert call("stripe-webhook", stripe_event(delivered)) == (200, {"status": "paid"})
    user, order_id, lost = stripe_purchase(stripe_api)
    # One run heals the lost one; the delivered one is a duplicate
    report = reconcile("stripe")
    assert report["stripe"]["outcomes"] == {"paid": 1, "duplicate": 1}
    assert healed(report, "stripe") == 1 and report["stripe"]["complete"]
    assert what_a_payment_did(user, order_id, "stripe") == what_a_payment_did(
        delivered_user, delivered_order, "stripe")
    assert balance(user) == 50
    inbox = {e["event_id"]: e for e in inbox_of("stripe")}
    assert inbox[lost["id"]]["status"] == "processed"
    assert inbox[lost["id"]]["headers"]["x-reconcile-source"] == "GET /v1/events"
    assert json.loads(bytes(inbox[lost["id"]]["body"]))["id"] == lost["id"]
    # A second run changes nothing
    before = snapshot()
    again = reconcile("stripe")
    # (the cursor moved: at most the last second is read again, as duplicates; whether that
    # second still holds one of the two events depends on when the run started)
    assert healed(again, "stripe") == 0 and set(again["stripe"]["outcomes"]) <= {"duplicate"}
    assert snapshot() == before
    # The webhook arriving afterwards is a duplicate
    assert call("stripe-webhook", stripe_event(lost)) == (200, {"status": "duplicate"})
    assert snapshot() == before and balance(user) == 50
    assert ledger.ledger_matches_balance()


def test_a_stripe_run_racing_the_webhook_grants_once(stripe_api):
    import stripe  # noqa: F401 - imported before forking, so both processes start warm

    for _ in range(20):
        user, order_id, event = stripe_purchase(stripe_api)
        webhook, run = invoke_together(("stripe-webhook", stripe_event(event)),
                                       ("reconcile", {"providers": ["stripe"]}))
        assert webhook == 200 and run["stripe"]["errors"] == 0, (webhook, run)
        assert balance(user) == 50 and order(order_id)["status"] == "paid"
        assert [e["kind"] for e in ledger_of(user)] == ["grant"]
        assert call("stripe-webhook", stripe_event(event))[1] == {"status": "duplicate"}
    assert ledger.ledger_matches_balance()


def test_a_stripe_error_leaves_the_cursor_where_it_was(stripe_api):
    user, _order_id, _event = stripe_purchase(stripe_api)
    assert healed(reconcile("stripe"), "stripe") == 1
    position = cursor("stripe")
    later_user, _later_order, _later = stripe_purchase(stripe_api)
    # Stripe fails (the SDK's retry too): nothing applied, the cursor unmoved
    stripe_api.script(fake_stripe.EVENTS, *[fake_stripe.error(500, "boom", type="api_error")] * 2)
    failed = reconcile("stripe")
    assert (failed["stripe"]["errors"], failed["stripe"]["complete"]) == (1, False)
    assert cursor("stripe") == position and balance(later_user) == 0
    # The next good run heals it
    assert healed(reconcile("stripe"), "stripe") == 1 and balance(later_user) == 50 and balance(user) == 50


def test_the_run_stops_before_its_deadline(stripe_api):
    user, _order_id, _event = stripe_purchase(stripe_api)
    # Less time left than the margin (15 s): nothing is started, nothing changes
    report = reconcile(timeout_s=5)
    assert {p: (r["complete"], r["note"]) for p, r in report.items()} == {
        "stripe": (False, "deadline"), "paymob": (False, "deadline"), "revenuecat": (False, "deadline")}
    assert balance(user) == 0 and cursor("stripe") is None


# --- Paymob ------------------------------------------------------------------------------


def paymob_purchase(paymob):
    """A user who paid a Paymob checkout for 50 credits: Paymob processed the
    transaction (the inquiry answers it); whether its callback arrives is up to the test."""
    user = new_user()
    status, body = checkout("/paymob", user, {"product_id": "credits_50"})
    assert status == 201, body
    paymob_order = int(order(body["order_id"])["provider_order_id"])
    callback = fake_paymob.transaction(paymob_order, body["amount_minor"], body["currency"],
                                       id=paymob.next_transaction_id())
    paymob.record(callback)
    return user, body["order_id"], callback


def test_a_lost_paymob_callback_is_healed_once_as_if_delivered(paymob):
    delivered_user, delivered_order, delivered = paymob_purchase(paymob)
    assert call("paymob-webhook", paymob_event(delivered)) == (200, {"status": "paid"})
    user, order_id, lost = paymob_purchase(paymob)
    report = reconcile("paymob")
    assert report["paymob"]["outcomes"] == {"paid": 1} and healed(report, "paymob") == 1
    assert what_a_payment_did(user, order_id, "paymob") == what_a_payment_did(
        delivered_user, delivered_order, "paymob")
    assert order(order_id)["reconciled_at"] is not None
    before = snapshot()
    assert healed(reconcile("paymob"), "paymob") == 0  # nothing pending any more
    assert snapshot() == before
    assert call("paymob-webhook", paymob_event(lost)) == (200, {"status": "duplicate"})
    assert snapshot() == before and balance(user) == 50
    assert rows("SELECT 1 FROM audit_log WHERE action = 'double_payment'") == []


def test_an_abandoned_paymob_checkout_is_no_heal(paymob):
    # Given a checkout the buyer never paid: Paymob knows no transaction for its order
    user = new_user()
    status, body = checkout("/paymob", user, {"product_id": "credits_50"})
    assert status == 201, body
    # Then a run asks about it, and counts nothing healed (the heals alarm stays quiet)
    report = reconcile("paymob")
    assert report["paymob"]["outcomes"] == {"no_transaction": 1} and healed(report, "paymob") == 0
    assert order(body["order_id"])["status"] == "pending" and balance(user) == 0


def test_a_paymob_run_racing_the_callback_grants_once(paymob):
    for _ in range(20):
        user, order_id, callback = paymob_purchase(paymob)
        webhook, run = invoke_together(("paymob-webhook", paymob_event(callback)),
                                       ("reconcile", {"providers": ["paymob"]}))
        assert webhook == 200 and run["paymob"]["errors"] == 0, (webhook, run)
        assert balance(user) == 50 and order(order_id)["status"] == "paid"
        assert [e["kind"] for e in ledger_of(user)] == ["grant"]
    assert rows("SELECT 1 FROM audit_log WHERE action = 'double_payment'") == []
    assert ledger.ledger_matches_balance()


def test_an_inquiry_answer_is_bound_like_a_callback(paymob):
    user, order_id, callback = paymob_purchase(paymob)
    callback["obj"]["integration_id"] = 999  # not one of ours
    paymob.record(callback)
    report = reconcile("paymob")
    assert report["paymob"]["outcomes"] == {"rejected": 1} and healed(report, "paymob") == 1
    assert order(order_id)["status"] == "pending" and balance(user) == 0
    assert inbox_of("paymob")[0]["status"] == "rejected"


def test_a_paymob_error_or_timeout_leaves_the_order_to_be_asked_first_next_time(paymob, monkeypatch):
    user, order_id, _callback = paymob_purchase(paymob)
    paymob.script_inquiry(Scripted(status=502, body={"detail": "bad gateway"}))
    failed = reconcile("paymob")
    assert (failed["paymob"]["errors"], failed["paymob"]["complete"]) == (1, False)
    assert order(order_id)["reconciled_at"] is None and balance(user) == 0
    monkeypatch.setenv("RECONCILE_HTTP_TIMEOUT_S", "0.5")
    paymob.script_inquiry(Scripted(status=200, body={}, delay=1.5))
    timed_out = reconcile("paymob")
    assert (timed_out["paymob"]["errors"], timed_out["paymob"]["note"]) == (1, "paymob unavailable")
    assert order(order_id)["reconciled_at"] is None and balance(user) == 0
    monkeypatch.delenv("RECONCILE_HTTP_TIMEOUT_S")
    assert healed(reconcile("paymob"), "paymob") == 1 and balance(user) == 50


# --- RevenueCat --------------------------------------------------------------------------


def rc_event(type_, user, *, transaction_id, product_id, at_ms, expires_ms=None, entitlements=("premium",)):
    return {"api_version": "1.0", "event": {
        "id": str(uuid.uuid4()).upper(), "type": type_, "app_id": "app_test", "event_timestamp_ms": at_ms,
        "app_user_id": str(user), "original_app_user_id": str(user), "aliases": [str(user)],
        "product_id": product_id, "entitlement_ids": list(entitlements) or None, "period_type": "NORMAL",
        "purchased_at_ms": at_ms, "expiration_at_ms": expires_ms, "store": "APP_STORE",
        "environment": "PRODUCTION", "transaction_id": transaction_id, "original_transaction_id": "otxn",
        "price": 7.99, "currency": "USD", "subscriber_attributes": {}}}


def rc_send(body):
    event = lambdas.url_event("POST", "/", body=body, headers={"Authorization": RC_AUTH})
    return event


def subscriber_renewed(revenuecat_api):
    """A subscriber whose premium expires within the hour (its first purchase delivered),
    who renewed and bought a 50-credit pack: RevenueCat knows both, their webhooks are
    up to the test."""
    user = new_user()
    now = int(time.time() * 1000)
    first = rc_event("INITIAL_PURCHASE", user, transaction_id=f"t-{uuid.uuid4().hex[:10]}",
                     product_id=MONTHLY, at_ms=now - 30 * DAY_MS, expires_ms=now + 3_600_000)
    assert call("revenuecat-webhook", rc_send(first))[0] == 200
    renewal = rc_event("RENEWAL", user, transaction_id=f"t-{uuid.uuid4().hex[:10]}", product_id=MONTHLY,
                       at_ms=now - 60_000, expires_ms=now + 30 * DAY_MS)
    pack = rc_event("NON_RENEWING_PURCHASE", user, transaction_id=f"t-{uuid.uuid4().hex[:10]}",
                    product_id=PACK, at_ms=now - 30_000, entitlements=())
    revenuecat_api.purchase(str(user), MONTHLY, transaction_id=renewal["event"]["transaction_id"],
                            purchased_ms=now - 60_000, expires_ms=now + 30 * DAY_MS,
                            original_ms=now - 30 * DAY_MS, entitlement_ids=("premium",))
    revenuecat_api.purchase(str(user), PACK, transaction_id=pack["event"]["transaction_id"],
                            purchased_ms=now - 30_000)
    return user, renewal, pack


def premium(user):
    return one("SELECT active, expires_at FROM entitlements WHERE user_id = %s AND source = 'revenuecat'",
               user)


def expiry(body):
    return datetime.fromtimestamp(body["event"]["expiration_at_ms"] / 1000, UTC)


def test_lost_revenuecat_purchases_are_healed_once_as_if_delivered(revenuecat_api, monkeypatch):
    # A subscriber whose renewal and pack webhooks were delivered...
    delivered_user, delivered_renewal, delivered_pack = subscriber_renewed(revenuecat_api)
    assert call("revenuecat-webhook", rc_send(delivered_renewal))[1]["status"] == "processed"
    assert call("revenuecat-webhook", rc_send(delivered_pack))[1]["status"] == "processed"
    # ...and one whose webhooks never came
    user, renewal, pack = subscriber_renewed(revenuecat_api)
    report = reconcile("revenuecat")
    # (the first subscriber's entitlement, renewed, is no longer about to expire)
    assert report["revenuecat"]["checked"] == 1 and report["revenuecat"]["outcomes"] == {"processed": 2}
    assert healed(report, "revenuecat") == 2
    assert (balance(user), premium(user)["active"]) == (balance(delivered_user), True) == (50, True)
    assert premium(user)["expires_at"] == expiry(renewal)
    assert premium(delivered_user)["expires_at"] == expiry(delivered_renewal)
    assert [(e["kind"], e["amount"]) for e in ledger_of(user)] == [
        (e["kind"], e["amount"]) for e in ledger_of(delivered_user)]
    # A second run, looking at both subscribers, changes nothing
    monkeypatch.setenv("RECONCILE_REVENUECAT_WINDOW_S", str(40 * 86400))
    before = snapshot()
    again = reconcile("revenuecat")
    assert (again["revenuecat"]["checked"], again["revenuecat"]["outcomes"]) == (2, {"duplicate": 4})
    assert snapshot() == before
    # The webhooks arriving afterwards are duplicates
    for body in (renewal, pack):
        assert call("revenuecat-webhook", rc_send(body))[1]["status"] == "duplicate"
    assert balance(user) == 50 and premium(user)["expires_at"] == expiry(renewal)
    assert ledger.ledger_matches_balance()


def test_a_revenuecat_run_racing_the_webhooks_grants_once(revenuecat_api):
    for _ in range(20):
        user, renewal, pack = subscriber_renewed(revenuecat_api)
        first, second, run = invoke_together(("revenuecat-webhook", rc_send(renewal)),
                                             ("revenuecat-webhook", rc_send(pack)),
                                             ("reconcile", {"providers": ["revenuecat"]}))
        assert (first, second, run["revenuecat"]["errors"]) == (200, 200, 0), (first, second, run)
        assert balance(user) == 50 and premium(user)["active"]
        assert [e["kind"] for e in ledger_of(user)] == ["grant"]
        # out of the next runs' window
        db.execute("UPDATE entitlements SET expires_at = now() - interval '10 days' WHERE user_id = %s",
                   (user,))
    assert ledger.ledger_matches_balance()


def test_a_parked_event_applies_once_when_reconcile_learns_its_user(revenuecat_api):
    # An anonymous purchase before the app logged in: no user of ours, parked
    user, anonymous = new_user(), f"$RCAnonymousID:{uuid.uuid4().hex}"
    now = int(time.time() * 1000)
    purchase = rc_event("NON_RENEWING_PURCHASE", anonymous, transaction_id=f"t-{uuid.uuid4().hex[:10]}",
                        product_id=PACK, at_ms=now - 60_000, entitlements=())
    assert call("revenuecat-webhook", rc_send(purchase))[1]["status"] == "unmatched"
    # RevenueCat knows the anonymous id is our user (logIn), and the purchase
    revenuecat_api.purchase(anonymous, PACK, transaction_id=purchase["event"]["transaction_id"],
                            purchased_ms=now - 60_000)
    revenuecat_api.alias(anonymous, str(user))
    report = reconcile("revenuecat")
    # The parked event applied (replayed), the subscriber's copy of it is a duplicate
    assert report["revenuecat"]["outcomes"] == {"processed": 1, "duplicate": 1}
    assert balance(user) == 50
    assert healed(reconcile("revenuecat"), "revenuecat") == 0 and balance(user) == 50


def test_a_revenuecat_error_stops_its_part_and_changes_nothing(revenuecat_api):
    user, _renewal, _pack = subscriber_renewed(revenuecat_api)
    revenuecat_api.script(Scripted(status=500, body={"message": "down"}))
    failed = reconcile("revenuecat")
    assert (failed["revenuecat"]["errors"], failed["revenuecat"]["complete"]) == (1, False)
    assert balance(user) == 0
    assert healed(reconcile("revenuecat"), "revenuecat") == 2 and balance(user) == 50
