"""stripe-webhook through its handler: signed events complete checkouts once, plans follow
their subscription without ever moving backwards, refunds claw back what the balance
allows, and refused deliveries store nothing."""

import json
import time
import uuid
from datetime import UTC, datetime

import pytest

from common import entitlements, ledger
from devkit import fake_stripe
from tests.integration.payments.helpers import (
    STRIPE_SECRET,
    balance,
    call,
    checkout,
    entitlement,
    inbox_of,
    invoke_concurrently,
    ledger_of,
    new_user,
    order,
    payments_of,
    rows,
    snapshot,
    stripe_event,
)

DAY = 24 * 3600


def start(stripe_api, product="credits_50"):
    """A user who started a Stripe checkout: (user, order id, the session Stripe made)."""
    user = new_user()
    status, body = checkout("/stripe", user, {"product_id": product})
    assert status == 201, body
    return user, body["order_id"], stripe_api.sessions[body["session_id"]]


def deliver(event, **kwargs):
    return call("stripe-webhook", stripe_event(event, **kwargs))


def completed(session, type="checkout.session.completed", created=None, **fields):
    return fake_stripe.event(type, fake_stripe.completed_session(session, **fields), created=created)


def at(epoch):
    return datetime.fromtimestamp(epoch, UTC)


# --- credit packs ------------------------------------------------------------------------


def test_checkout_then_session_completed_grants_the_credits_once(stripe_api):
    user, order_id, session = start(stripe_api)
    event = completed(session)
    assert deliver(event) == (200, {"status": "paid"})
    assert deliver(event) == (200, {"status": "duplicate"})
    assert (order(order_id)["status"], balance(user)) == ("paid", 50)
    assert ledger_of(user) == [{"kind": "grant", "amount": 50, "shortfall": 0, "source": "stripe",
                                "ref": f"order:{order_id}"}]
    (payment,) = payments_of("stripe")
    assert (payment["provider_transaction_id"], payment["status"], payment["payment_intent_id"]) == (
        session["id"], "paid", event["data"]["object"]["payment_intent"])
    assert payment["raw"] == event
    assert [(e["event_id"], e["status"], e["attempts"]) for e in inbox_of("stripe")] == [
        (event["id"], "processed", 2)]


def test_twenty_concurrent_deliveries_grant_once(stripe_api):
    import stripe  # noqa: F401 - imported before forking, so the 20 processes start warm

    user, _, session = start(stripe_api)
    statuses = invoke_concurrently("stripe-webhook", stripe_event(completed(session)), 20)
    assert statuses == [200] * 20
    assert balance(user) == 50
    assert [e["kind"] for e in ledger_of(user)] == ["grant"]
    assert inbox_of("stripe")[0]["attempts"] == 20
    assert ledger.ledger_matches_balance()


def test_an_amount_or_currency_mismatch_grants_nothing(stripe_api):
    user, order_id, session = start(stripe_api)
    assert deliver(completed(session, amount_total=1)) == (200, {"status": "mismatch"})
    other_user, other_order, other_session = start(stripe_api)
    assert deliver(completed(other_session, currency="eur")) == (200, {"status": "mismatch"})
    assert balance(user) == balance(other_user) == 0
    assert {order(order_id)["status"], order(other_order)["status"]} == {"pending"}
    assert [p["status"] for p in payments_of("stripe")] == ["mismatch", "mismatch"]
    assert len(rows("SELECT 1 FROM audit_log WHERE action = 'amount_mismatch'")) == 2


def test_a_session_of_another_user_or_an_unknown_order_is_unmatched(stripe_api):
    user, order_id, session = start(stripe_api)
    unmatched = (200, {"status": "unmatched"})
    assert deliver(completed(session, client_reference_id=str(uuid.uuid4()))) == unmatched
    assert deliver(completed(session, metadata={"order_id": str(uuid.uuid4())})) == unmatched
    assert deliver(completed(session, metadata={"order_id": "not-a-uuid"})) == unmatched
    assert deliver(completed(session, metadata={})) == unmatched
    assert (order(order_id)["status"], balance(user)) == ("pending", 0)
    assert {e["status"] for e in inbox_of("stripe")} == {"unmatched"}


def test_an_async_payment_is_pending_then_paid_or_failed(stripe_api):
    user, order_id, session = start(stripe_api)
    assert deliver(completed(session, payment_status="unpaid")) == (200, {"status": "pending"})
    assert (order(order_id)["status"], balance(user)) == ("pending", 0)
    succeeded = completed(session, "checkout.session.async_payment_succeeded")
    assert deliver(succeeded) == (200, {"status": "paid"})
    assert balance(user) == 50
    _other_user, other_order, other_session = start(stripe_api)
    failed = completed(other_session, "checkout.session.async_payment_failed", payment_status="unpaid")
    assert deliver(failed) == (200, {"status": "declined"})
    assert (order(other_order)["status"], order(other_order)["failure_code"]) == ("failed", "declined")


def spend(user, amount):
    ledger.settle(ledger.reserve(user, amount, idempotency_key=str(uuid.uuid4())).id)


def test_a_refund_after_spending_leaves_zero_and_records_the_shortfall(stripe_api):
    # Given 50 credits bought with Stripe and 30 spent
    user, order_id, session = start(stripe_api)
    paid = completed(session)
    deliver(paid)
    spend(user, 30)
    intent = paid["data"]["object"]["payment_intent"]
    # When the charge is refunded in part (40%), then in full
    partial = fake_stripe.charge(intent, amount=499, currency="usd", amount_refunded=200)
    assert deliver(fake_stripe.event("charge.refunded", partial)) == (200, {"status": "refunded"})
    assert balance(user) == 0  # ceil(50 * 200 / 499) = 21 credits due, 20 there
    full = dict(partial, amount_refunded=499, refunded=True)
    assert deliver(fake_stripe.event("charge.refunded", full)) == (200, {"status": "refunded"})
    # And the partial refund's event arrives again, late
    assert deliver(fake_stripe.event("charge.refunded", partial))[1]["status"] == "ignored"
    # Then the balance never went negative, and what could not be taken is recorded
    assert balance(user) == 0
    clawbacks = [e for e in ledger_of(user) if e["kind"] == "clawback"]
    assert [(e["amount"], e["shortfall"]) for e in clawbacks] == [(-20, 1), (0, 29)]
    assert (order(order_id)["status"], order(order_id)["refunded_minor"]) == ("refunded", 499)
    assert ledger.ledger_matches_balance(user)


def test_a_refund_of_an_unknown_charge_is_unmatched(stripe_api):
    charge = fake_stripe.charge("pi_test_unknown", amount=499, currency="usd", amount_refunded=499)
    assert deliver(fake_stripe.event("charge.refunded", charge)) == (200, {"status": "unmatched"})


# --- plans: subscriptions ----------------------------------------------------------------


def plan(stripe_api, product="premium_monthly"):
    user, order_id, session = start(stripe_api, product)
    sub_id = fake_stripe.new_id("sub")
    metadata = {"order_id": order_id, "user_id": str(user), "product_id": product}
    return user, order_id, session, sub_id, metadata


def test_invoice_paid_before_checkout_completed_starts_the_plan_once(stripe_api):
    user, order_id, session, sub_id, metadata = plan(stripe_api)
    now = int(time.time())
    invoice = fake_stripe.invoice(sub_id, metadata, amount=799, currency="usd", period_start=now,
                                  period_end=now + 30 * DAY)
    # invoice.paid first: the order is found by the subscription's metadata and paid
    assert deliver(fake_stripe.event("invoice.paid", invoice, created=now)) == (200, {"status": "paid"})
    assert entitlements.has_entitlement(user, "premium")
    ent = entitlement(user, "stripe")
    assert (ent["expires_at"], ent["active"], ent["will_renew"], ent["product_id"]) == (
        at(now + 30 * DAY), True, True, "premium_monthly")
    # then the session: already paid, nothing granted twice, nothing changes
    session_event = completed(session, subscription=sub_id, created=now)
    assert deliver(session_event) == (200, {"status": "already_paid"})
    stored = order(order_id)
    assert (stored["status"], stored["subscription_id"], stored["subscription_status"]) == (
        "paid", sub_id, "active")
    assert entitlement(user, "stripe")["expires_at"] == at(now + 30 * DAY)
    assert balance(user) == 0 and stripe_api.calls(fake_stripe.SUBSCRIPTION) == []


def test_checkout_completed_first_takes_the_period_from_the_subscription(stripe_api):
    user, _order_id, session, sub_id, metadata = plan(stripe_api)
    now = int(time.time())
    stripe_api.subscriptions[sub_id] = fake_stripe.subscription(sub_id, metadata, period_start=now,
                                                                period_end=now + 30 * DAY)
    assert deliver(completed(session, subscription=sub_id, created=now)) == (200, {"status": "paid"})
    assert len(stripe_api.calls(fake_stripe.SUBSCRIPTION)) == 1
    assert entitlement(user, "stripe")["expires_at"] == at(now + 30 * DAY)
    # The renewal a month later moves the period forward
    renewal = fake_stripe.invoice(sub_id, metadata, amount=799, currency="usd", period_start=now + 30 * DAY,
                                  period_end=now + 60 * DAY, billing_reason="subscription_cycle")
    assert deliver(fake_stripe.event("invoice.paid", renewal, created=now + 30 * DAY)) == (
        200, {"status": "renewed"})
    assert entitlement(user, "stripe")["expires_at"] == at(now + 60 * DAY)
    assert [p["status"] for p in payments_of("stripe")] == ["paid", "paid"]


def test_subscription_state_never_moves_backwards(stripe_api):
    user, order_id, _session, sub_id, metadata = plan(stripe_api)
    t0 = int(time.time())
    sub = fake_stripe.subscription(sub_id, metadata, period_start=t0, period_end=t0 + 30 * DAY)
    invoice = fake_stripe.invoice(sub_id, metadata, amount=799, currency="usd", period_start=t0,
                                  period_end=t0 + 30 * DAY)
    deliver(fake_stripe.event("invoice.paid", invoice, created=t0))
    # The buyer cancels at the period end (t0+10), and then the subscription ends (t0+20)
    canceling = dict(sub, cancel_at_period_end=True)
    ended = dict(sub, status="canceled", ended_at=t0 + 20)
    updated = fake_stripe.event("customer.subscription.updated", canceling, created=t0 + 10)
    deleted = fake_stripe.event("customer.subscription.deleted", ended, created=t0 + 20)
    # Delivered out of order: the deletion first, then the older update and an older "active"
    assert deliver(deleted) == (200, {"status": "updated"})
    assert deliver(updated) == (200, {"status": "stale"})
    older_active = fake_stripe.event("customer.subscription.updated", sub, created=t0 + 5)
    assert deliver(older_active) == (200, {"status": "stale"})
    late_invoice = fake_stripe.event("invoice.paid", dict(invoice, id=fake_stripe.new_id("in")),
                                     created=t0 + 15)
    deliver(late_invoice)
    # Then the subscription stays canceled and the plan gives no access
    stored = order(order_id)
    assert (stored["subscription_status"], stored["state_at"]) == ("canceled", at(t0 + 20))
    assert not entitlements.has_entitlement(user, "premium")
    assert entitlement(user, "stripe")["active"] is False


def test_an_older_event_never_shortens_the_period(stripe_api):
    user, _order_id, _session, sub_id, metadata = plan(stripe_api)
    t0 = int(time.time())
    second = fake_stripe.subscription(sub_id, metadata, period_start=t0 + 30 * DAY, period_end=t0 + 60 * DAY)
    first = fake_stripe.subscription(sub_id, metadata, period_start=t0, period_end=t0 + 30 * DAY)
    invoice = fake_stripe.invoice(sub_id, metadata, amount=799, currency="usd", period_start=t0,
                                  period_end=t0 + 30 * DAY)
    deliver(fake_stripe.event("invoice.paid", invoice, created=t0))
    deliver(fake_stripe.event("customer.subscription.updated", second, created=t0 + 100))
    assert deliver(fake_stripe.event("customer.subscription.updated", first, created=t0 + 50)) == (
        200, {"status": "stale"})
    assert entitlement(user, "stripe")["expires_at"] == at(t0 + 60 * DAY)


def test_a_tie_is_settled_by_re_fetching_the_subscription(stripe_api, monkeypatch):
    user, order_id, _session, sub_id, metadata = plan(stripe_api)
    t0 = int(time.time())
    invoice = fake_stripe.invoice(sub_id, metadata, amount=799, currency="usd", period_start=t0,
                                  period_end=t0 + 30 * DAY)
    deliver(fake_stripe.event("invoice.paid", invoice, created=t0))
    # A failed retry and its success in the same second: the API says it is active
    stripe_api.subscriptions[sub_id] = fake_stripe.subscription(sub_id, metadata, period_start=t0,
                                                                period_end=t0 + 30 * DAY)
    failed = fake_stripe.invoice(sub_id, metadata, amount=799, currency="usd", period_start=t0,
                                 period_end=t0 + 30 * DAY, paid=False, billing_reason="subscription_cycle")
    deliver(fake_stripe.event("invoice.payment_failed", failed, created=t0))
    assert len(stripe_api.calls(fake_stripe.SUBSCRIPTION)) == 1
    assert order(order_id)["subscription_status"] == "active"
    # Without an API key the tie goes to the later lifecycle status, whatever the arrival order
    monkeypatch.delenv("STRIPE_API_KEY")
    failed_again = dict(failed, id=fake_stripe.new_id("in"))
    deliver(fake_stripe.event("invoice.payment_failed", failed_again, created=t0))
    assert order(order_id)["subscription_status"] == "past_due"
    assert entitlements.has_entitlement(user, "premium")  # past due: access until the period end


def test_a_fully_refunded_plan_charge_ends_access(stripe_api):
    user, order_id, _session, sub_id, metadata = plan(stripe_api)
    now = int(time.time())
    invoice = fake_stripe.invoice(sub_id, metadata, amount=799, currency="usd", period_start=now,
                                  period_end=now + 30 * DAY)
    deliver(fake_stripe.event("invoice.paid", invoice))
    intent = invoice["payments"]["data"][0]["payment"]["payment_intent"]
    refund = fake_stripe.charge(intent, amount=799, currency="usd", amount_refunded=799)
    assert deliver(fake_stripe.event("charge.refunded", refund)) == (200, {"status": "refunded"})
    assert order(order_id)["status"] == "refunded"
    assert not entitlements.has_entitlement(user, "premium")


# --- refusals --------------------------------------------------------------------------------


def test_bad_signatures_are_400_and_store_nothing(stripe_api, monkeypatch):
    _user, _order_id, session = start(stripe_api)
    event = completed(session)
    before = snapshot()
    assert deliver(event, secret="whsec_someone_else")[0] == 400
    assert deliver(event, timestamp=int(time.time()) - 301)[0] == 400  # replayed: too old
    signed_other = stripe_event(event)
    signed_other["body"] = signed_other["body"].replace('"amount_total": 499', '"amount_total": 1')
    status, body = call("stripe-webhook", signed_other)
    assert (status, body["error"]["code"]) == (400, "invalid_signature")
    unsigned = stripe_event(event)
    del unsigned["headers"]["stripe-signature"]
    assert call("stripe-webhook", unsigned)[0] == 400
    assert snapshot() == before
    # While rolling the secret, both verify
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"whsec_new_secret_value,{STRIPE_SECRET}")
    assert deliver(event) == (200, {"status": "paid"})


@pytest.mark.parametrize(("mutate", "status", "code"), [
    (lambda e: "{not json", 400, "invalid_json"),
    (lambda e: json.dumps(dict(e, created=str(e["created"]))), 422, "invalid_input"),
    (lambda e: json.dumps({k: v for k, v in e.items() if k != "type"}), 422, "invalid_input"),
    (lambda e: json.dumps(dict(e, data={"object": {k: v for k, v in e["data"]["object"].items()
                                                   if k != "payment_status"}})), 422, "invalid_input"),
    (lambda e: json.dumps(dict(e, data={"object": dict(e["data"]["object"], amount_total="499")})), 422,
     "invalid_input"),
    (lambda e: json.dumps(e) + " " * 300_000, 413, "payload_too_large"),
])
def test_malformed_signed_events_change_nothing(stripe_api, mutate, status, code):
    _user, _order_id, session = start(stripe_api)
    raw = mutate(completed(session))
    before = snapshot()
    got, body = call("stripe-webhook", stripe_event({}, raw_body=raw))
    assert (got, body["error"]["code"]) == (status, code)
    assert snapshot() == before


def test_other_event_types_are_recorded_and_acknowledged():
    event = fake_stripe.event("customer.created", {"id": "cus_test_1", "object": "customer"})
    assert deliver(event) == (200, {"status": "ignored"})
    assert [(e["event_type"], e["status"]) for e in inbox_of("stripe")] == [("customer.created", "ignored")]


# --- signed events carrying what text columns cannot hold ---------------------------------------


@pytest.mark.parametrize("text", ["Zo\u0000ë", "lone \ud800 surrogate"])
def test_a_signed_event_with_nul_or_a_lone_surrogate_pays_its_order_once(stripe_api, text):
    # Given a session completed event whose customer name holds NUL or an unpaired
    # surrogate (unsigned by us, signed by Stripe: every byte of the body is)
    user, order_id, session = start(stripe_api)
    event = completed(session, customer_details={"name": text, "email": "z@example.com"})
    raw = json.dumps(event)
    # When it is delivered, then redelivered twice
    answers = [deliver({}, raw_body=raw) for _ in range(3)]
    # Then the order is paid once and the inbox keeps the exact bytes that were signed
    assert answers == [(200, {"status": "paid"})] + [(200, {"status": "duplicate"})] * 2
    assert (order(order_id)["status"], balance(user)) == ("paid", 50)
    assert len(ledger_of(user)) == 1
    [kept] = inbox_of("stripe")
    assert kept["body"] == raw.encode() and kept["status"] == "processed"
    [payment] = payments_of("stripe")
    assert "\ufffd" in json.dumps(payment["raw"], ensure_ascii=False)  # stored as U+FFFD
