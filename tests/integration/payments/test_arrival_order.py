"""Arrival order and field shifting cannot change what a payment does.

Stripe: one subscription's events (checkout completed, two paid invoices, a failed one,
an update, the deletion; realistic times with same-second ties) are delivered in every
one of their 720 arrival orders, each order to a subscription of its own (one database),
through the webhook's handler; every order must end in the same state. Paymob: a callback whose
digits were moved between signed fields still verifies, and takes no effect."""

import itertools
import json
import math
import time
import uuid

import pytest

from common import db, ledger, orders
from devkit import fake_paymob, fake_stripe
from tests.integration.payments.helpers import (
    call,
    inbox_of,
    new_user,
    one,
    paymob_event,
    rows,
    stripe_event,
)

DAY = 24 * 3600
PRICE = 799
FIRST = "subscription_create"  # the first invoice's billing reason


def plan_order():
    """A user with a pending Stripe plan order, as checkout leaves it (without the HTTP
    round trip, which 720 runs need not repeat)."""
    user = new_user()
    order = orders.create_order(user, "premium_monthly", "stripe", PRICE, "USD")
    session_id = fake_stripe.new_id("cs")
    orders.attach_checkout(order.id, provider_order_id=session_id, checkout_id=session_id)
    metadata = {"order_id": str(order.id), "user_id": str(user), "product_id": "premium_monthly"}
    return user, order.id, session_id, metadata


def renewal_then_cancel(t0):
    """Bought at t0 (session and first invoice in the same second); the renewal fails at
    t1, is paid on retry at t2 in the same second the buyer asks to cancel at the period
    end; an agent deletes the subscription at t3."""
    t1, t2 = t0 + 30 * DAY, t0 + 33 * DAY
    t3 = t2 + 5 * DAY
    return [
        ("session", "checkout.session.completed", t0, {}),
        ("invoice 1 paid", "invoice.paid", t0, {"invoice": "in_1", "start": t0, "reason": FIRST}),
        ("invoice 2 failed", "invoice.payment_failed", t1, {"invoice": "in_2", "start": t1, "paid": False}),
        ("invoice 2 paid", "invoice.paid", t2, {"invoice": "in_2", "start": t1}),
        ("updated", "customer.subscription.updated", t2, {"start": t1, "cancel": True}),
        ("deleted", "customer.subscription.deleted", t3, {"start": t1, "status": "canceled"}),
    ]


def final_invoice_after_deletion(t0):
    """The issue's case: a renewal fails and the subscription goes past due (same second),
    an agent deletes it at t2, and the final invoice is paid one second later."""
    t1, t2 = t0 + 30 * DAY, t0 + 34 * DAY
    return [
        ("session", "checkout.session.completed", t0, {}),
        ("invoice 1 paid", "invoice.paid", t0, {"invoice": "in_1", "start": t0, "reason": FIRST}),
        ("invoice 2 failed", "invoice.payment_failed", t1, {"invoice": "in_2", "start": t1, "paid": False}),
        ("updated", "customer.subscription.updated", t1, {"start": t1, "status": "past_due"}),
        ("deleted", "customer.subscription.deleted", t2, {"start": t1, "status": "canceled"}),
        ("final invoice paid", "invoice.paid", t2 + 1, {"invoice": "in_3", "start": t1}),
    ]


def build(timeline, session_id, sub_id, metadata):
    """The signed deliveries of one subscription's timeline, and a map from the ids
    Stripe would assign (events, invoices) to the timeline's labels."""
    session = {"id": session_id, "object": "checkout.session", "mode": "subscription", "status": "open",
               "payment_status": "unpaid", "client_reference_id": metadata["user_id"], "metadata": metadata,
               "amount_total": PRICE, "currency": "usd"}
    invoices, labels, deliveries = {}, {}, []
    for label, kind, created, spec in timeline:
        if kind.startswith("checkout."):
            obj = fake_stripe.completed_session(session, subscription=sub_id)
        elif kind.startswith("invoice."):
            invoice_id = invoices.setdefault(spec["invoice"], fake_stripe.new_id("in"))
            labels[invoice_id] = spec["invoice"]
            obj = dict(fake_stripe.invoice(sub_id, metadata, amount=PRICE, currency="usd",
                                           period_start=spec["start"], period_end=spec["start"] + 30 * DAY,
                                           billing_reason=spec.get("reason", "subscription_cycle"),
                                           paid=spec.get("paid", True)), id=invoice_id)
        else:
            obj = fake_stripe.subscription(sub_id, metadata, status=spec.get("status", "active"),
                                           period_start=spec["start"], period_end=spec["start"] + 30 * DAY,
                                           cancel_at_period_end=spec.get("cancel", False))
        event = fake_stripe.event(kind, obj, created=created)
        labels[event["id"]] = label
        deliveries.append(stripe_event(event))
    labels[session_id] = "session"
    return deliveries, labels


def end_state(user, order_id, labels):
    """What the events left, with Stripe's ids replaced by the timeline's labels."""
    order = one("SELECT status, subscription_status, period_end, cancel_at_period_end, state_at, "
                "state_event_id, refunded_minor FROM orders WHERE id = %s", order_id)
    order["state_event_id"] = labels[order["state_event_id"]]
    paid = sorted((labels[p["provider_transaction_id"]], p["status"], p["amount_minor"])
                  for p in rows("SELECT provider_transaction_id, status, amount_minor FROM payments "
                                "WHERE order_id = %s", order_id))
    ent = one("SELECT active, expires_at, will_renew, product_id, last_event_at, last_event_id "
              "FROM entitlements WHERE user_id = %s AND source = 'stripe'", user)
    ent["last_event_id"] = labels[ent["last_event_id"]]
    access = one("SELECT has_entitlement(%s, 'premium') AS ok", user)["ok"]
    credits = rows("SELECT kind, amount FROM credit_ledger WHERE user_id = %s ORDER BY id", user)
    return {"order": order, "payments": paid, "entitlement": ent, "access": access, "ledger": credits}


@pytest.fixture
def fast_commits():
    """4,320 deliveries commit 4,320 transactions: without waiting for each to reach the
    disk (durability is not what this test is about; every other setting is the real one)
    they take a few seconds instead of a minute. Session-level, undone after the test."""
    name = one("SELECT current_database() AS name")["name"]
    db.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    db.reset()
    yield
    db.execute(f'ALTER DATABASE "{name}" RESET synchronous_commit')
    db.reset()


@pytest.mark.parametrize(("timeline", "settled", "api_status"), [
    (renewal_then_cancel, 0, "canceled"),
    (final_invoice_after_deletion, 2, "active"),
])
def test_every_arrival_order_of_a_subscriptions_events_ends_in_the_same_state(
        stripe_api, timeline, settled, api_status, fast_commits):
    """All 720 orders of the first timeline, delivered late (the API, when the webhook
    re-fetches the subscription, has it canceled). The issue's case: the purchase
    delivered at once (the API has it active), then the 24 orders of the four events
    that decide how it ends."""
    t0 = int(time.time()) - 40 * DAY
    states = {}
    for rest in itertools.permutations(range(settled, 6)):
        arrival = (*range(settled), *rest)
        user, order_id, session_id, metadata = plan_order()
        sub_id = fake_stripe.new_id("sub")
        stripe_api.subscriptions[sub_id] = fake_stripe.subscription(
            sub_id, metadata, status=api_status, period_start=t0, period_end=t0 + 30 * DAY)
        deliveries, labels = build(timeline(t0), session_id, sub_id, metadata)
        for index in arrival:
            status, body = call("stripe-webhook", deliveries[index])
            assert status == 200, (arrival, index, body)
        states[arrival] = json.dumps(end_state(user, order_id, labels), default=str, sort_keys=True)
    distinct = set(states.values())
    assert len(states) == math.factorial(6 - settled)
    assert len(distinct) == 1, _differences(states)
    final = json.loads(distinct.pop())
    # A deleted subscription is over in every order: canceled, no access, paid once
    assert (final["order"]["status"], final["order"]["subscription_status"]) == ("paid", "canceled")
    assert final["access"] is False and final["entitlement"]["active"] is False
    assert ledger.ledger_matches_balance()


def _differences(states):
    """The first arrival order whose end differs from the in-order one, and how."""
    reference = json.loads(states[tuple(range(6))])
    for arrival, state in states.items():
        state = json.loads(state)
        if state != reference:
            return {"arrival": arrival, **{part: {"in order": reference[part], "this order": state[part]}
                                           for part in reference if reference[part] != state[part]}}
    return None


# --- Paymob: fields shifted under a valid HMAC --------------------------------------------


def paymob_order(paymob, digit_of):
    """A user with a pending Paymob order for 50 credits, and Paymob's own callback for
    its payment, whose ``digit_of(obj)`` (the digit to move) is not 0: a moved 0 would
    lead the other number, and JSON numbers drop leading zeros."""
    from tests.integration.payments.helpers import checkout, order

    while True:
        user = new_user()
        status, body = checkout("/paymob", user, {"product_id": "credits_50"})
        assert status == 201, body
        paymob_order_id = int(order(body["order_id"])["provider_order_id"])
        genuine = fake_paymob.transaction(paymob_order_id, body["amount_minor"], body["currency"],
                                          id=paymob.next_transaction_id())
        if digit_of(genuine["obj"]) != 0:
            return user, body["order_id"], genuine


def test_a_callback_with_digits_moved_between_signed_fields_takes_no_effect(paymob):
    user, order_id, genuine = paymob_order(paymob, lambda obj: obj["id"] % 10)
    obj = genuine["obj"]
    # The last digit of the transaction id moved to the front of the integration id: the
    # signed string (no separators) is unchanged, so the HMAC still verifies
    forged = json.loads(json.dumps(genuine))
    forged["obj"]["id"] = obj["id"] // 10
    forged["obj"]["integration_id"] = int(f"{obj['id'] % 10}{obj['integration_id']}")
    assert fake_paymob.hmac_for(forged["obj"], "s") == fake_paymob.hmac_for(obj, "s")
    assert call("paymob-webhook", paymob_event(forged)) == (200, {"status": "rejected"})
    assert one("SELECT status FROM orders WHERE id = %s", uuid.UUID(order_id))["status"] == "pending"
    assert one("SELECT credits FROM users WHERE id = %s", user)["credits"] == 0
    assert rows("SELECT 1 FROM payments") == []
    (inbox,) = inbox_of("paymob")
    assert (inbox["event_id"], inbox["status"], inbox["last_error"]) == (
        f"{forged['obj']['id']}:success", "rejected", "integration_id not ours")
    (audit,) = rows("SELECT action, details FROM audit_log WHERE actor = 'paymob'")
    assert (audit["action"], audit["details"]["reason"]) == ("callback_rejected", "integration_id not ours")
    # Then Paymob's own callback pays the order once: no double payment to refund
    assert call("paymob-webhook", paymob_event(genuine)) == (200, {"status": "paid"})
    assert one("SELECT credits FROM users WHERE id = %s", user)["credits"] == 50
    assert [p["status"] for p in rows("SELECT status FROM payments")] == ["paid"]
    assert rows("SELECT 1 FROM audit_log WHERE action = 'double_payment'") == []


def test_a_callback_for_another_merchant_is_rejected_where_the_merchant_is_set(paymob, monkeypatch):
    from common import config

    user, _order_id, genuine = paymob_order(paymob, lambda obj: obj["order"]["id"] % 10)
    obj = genuine["obj"]
    # The order id's last digit moved to the front of the owner: also an unchanged HMAC
    forged = json.loads(json.dumps(genuine))
    forged["obj"]["order"]["id"] = obj["order"]["id"] // 10
    forged["obj"]["owner"] = int(f"{obj['order']['id'] % 10}{obj['owner']}")
    assert fake_paymob.hmac_for(forged["obj"], "s") == fake_paymob.hmac_for(obj, "s")
    monkeypatch.setenv("PAYMOB_MERCHANT_ID", str(obj["owner"]))
    config.settings.cache_clear()
    assert call("paymob-webhook", paymob_event(forged)) == (200, {"status": "rejected"})
    assert inbox_of("paymob")[0]["last_error"] == "owner not our merchant"
    assert call("paymob-webhook", paymob_event(genuine)) == (200, {"status": "paid"})
    assert one("SELECT credits FROM users WHERE id = %s", user)["credits"] == 50


def test_no_numeric_integration_id_is_our_outage_503_and_the_callback_is_kept(paymob, monkeypatch, caplog):
    from common import config
    from devkit.lambdas import invoke

    user, order_id, genuine = paymob_order(paymob, lambda obj: 1)  # any order will do
    # Given a deployment whose PAYMOB_INTEGRATION_IDS holds names only
    monkeypatch.setenv("PAYMOB_INTEGRATION_IDS", "card")
    config.settings.cache_clear()
    # When Paymob's genuine callback arrives: 503 with Retry-After (it may retry), nothing applied
    response = invoke("paymob-webhook", paymob_event(genuine))
    assert response["statusCode"] == 503 and int(response["headers"]["Retry-After"]) > 0
    assert json.loads(response["body"])["error"]["code"] == "unavailable"
    assert one("SELECT credits FROM users WHERE id = %s", user)["credits"] == 0
    # ...an error log names the setting, and the body is kept in the inbox to apply later
    assert any(r.levelname == "ERROR" and "PAYMOB_INTEGRATION_IDS names no numeric" in r.getMessage()
               for r in caplog.records)
    (kept,) = inbox_of("paymob")
    assert (kept["status"], kept["last_error"]) == ("failed", "Misconfigured")
    assert json.loads(bytes(kept["body"])) == genuine
    # Then once configured, the redelivery (or reconcile) pays the order once
    monkeypatch.setenv("PAYMOB_INTEGRATION_IDS", "4097558")
    config.settings.cache_clear()
    assert call("paymob-webhook", paymob_event(genuine)) == (200, {"status": "paid"})
    assert call("paymob-webhook", paymob_event(genuine)) == (200, {"status": "duplicate"})
    assert one("SELECT credits FROM users WHERE id = %s", user)["credits"] == 50
    assert one("SELECT status FROM orders WHERE id = %s", order_id)["status"] == "paid"
