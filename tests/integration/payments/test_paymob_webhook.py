"""paymob-webhook through its handler: verification against Paymob's published sample,
checkout -> paid -> credits once however often Paymob delivers, only signed fields
trusted, refunds that claw back what the balance allows, and refusals that store nothing."""

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from common import entitlements, ledger
from devkit import ROOT, fake_paymob
from devkit.lambdas import url_event
from tests.integration.payments.helpers import (
    PAYMOB_SECRET,
    balance,
    call,
    checkout,
    counts,
    inbox_of,
    invoke_concurrently,
    ledger_of,
    new_user,
    order,
    payments_of,
    paymob_event,
    rows,
    snapshot,
)

#: Paymob's published sample callback, as a Function URL event signed with Paymob's
#: published sample secret (events/paymob-webhook/published-sample.json).
PUBLISHED_EVENT = ROOT / "events" / "paymob-webhook" / "published-sample.json"
PUBLISHED_SECRET = "04DC1A9490B8CC2094C011FC055ADCDB"
#: The reference beside the project (shared/reference), when present.
REFERENCE = ROOT.parent / "shared" / "reference" / "paymob-sample-callback.json"


def sample() -> dict:
    """Paymob's published sample: secret, callback and hmac."""
    event = json.loads(PUBLISHED_EVENT.read_text())
    published = {"secret": PUBLISHED_SECRET, "callback": json.loads(event["body"]),
                 "expected_hmac": event["queryStringParameters"]["hmac"]}
    if REFERENCE.exists():  # the sample under events/ is the reference, verbatim
        reference = json.loads(REFERENCE.read_text())
        assert {k: reference[k] for k in published} == published
    return copy.deepcopy(published)


def buy(paymob, product="credits_50", currency=None, user=None):
    """A user who started a Paymob checkout: (user, order id, Paymob's order id, amount)."""
    user = user or new_user()
    body = {"product_id": product} | ({"currency": currency} if currency else {})
    status, started = checkout("/paymob", user, body)
    assert status == 201, started
    paymob_order = int(order(started["order_id"])["provider_order_id"])
    return user, started["order_id"], paymob_order, started["amount_minor"], started["currency"]


def deliver(callback, **kwargs):
    return call("paymob-webhook", paymob_event(callback, **kwargs))


# --- verification -----------------------------------------------------------------------


def test_the_published_sample_verifies_with_the_published_secret(monkeypatch):
    # Given Paymob's published secret
    ref = sample()
    monkeypatch.setenv("PAYMOB_HMAC_SECRET", ref["secret"])
    # When Paymob's published callback arrives with its published hmac
    status, body = deliver(ref["callback"], hmac_value=ref["expected_hmac"])
    # Then it is accepted; its order is not ours, so it is recorded as unmatched
    assert (status, body) == (200, {"status": "unmatched"})
    (payment,) = payments_of("paymob")
    assert (payment["provider_transaction_id"], payment["status"], payment["order_id"]) == (
        "192036465", "unmatched", None)
    assert payment["raw"] == ref["callback"]
    assert [(e["event_id"], e["status"]) for e in inbox_of("paymob")] == [("192036465:success", "unmatched")]


@pytest.mark.parametrize("change", [
    {"amount_cents": 100001}, {"currency": "USD"}, {"success": False}, {"pending": True},
    {"order": {"id": 217503755}}, {"id": 192036466}, {"is_refunded": True},
    {"source_data": {"pan": "2347", "type": "card", "sub_type": "MasterCard"}},
])
def test_a_changed_signed_field_is_refused_and_nothing_stored(monkeypatch, change):
    ref = sample()
    monkeypatch.setenv("PAYMOB_HMAC_SECRET", ref["secret"])
    ref["callback"]["obj"].update(change)
    before = snapshot()
    status, body = deliver(ref["callback"], hmac_value=ref["expected_hmac"])
    assert (status, body["error"]["code"]) == (401, "invalid_signature")
    assert snapshot() == before


def test_a_wrong_or_missing_secret_or_hmac_is_refused(monkeypatch):
    ref = sample()
    before = snapshot()
    monkeypatch.setenv("PAYMOB_HMAC_SECRET", "not-the-published-secret")
    assert deliver(ref["callback"], hmac_value=ref["expected_hmac"])[0] == 401
    monkeypatch.setenv("PAYMOB_HMAC_SECRET", ref["secret"])
    assert deliver(ref["callback"], hmac_value="")[0] == 401
    assert deliver(ref["callback"], hmac_value=ref["expected_hmac"][:-2])[0] == 401
    assert deliver(ref["callback"], hmac_value="zz" * 64)[0] == 401
    assert snapshot() == before


def test_unsigned_fields_do_not_take_part_in_verification(monkeypatch):
    # merchant_order_id, is_refund, data.* are not signed: changing them keeps the hmac valid,
    # which is why nothing is decided on them alone.
    ref = sample()
    monkeypatch.setenv("PAYMOB_HMAC_SECRET", ref["secret"])
    ref["callback"]["obj"].update({"merchant_order_id": "forged", "data": {"message": "x"}})
    assert deliver(ref["callback"], hmac_value=ref["expected_hmac"])[0] == 200


def test_a_secret_rotation_accepts_old_and_new(monkeypatch, paymob):
    _user, _order_id, paymob_order, amount, currency = buy(paymob)
    monkeypatch.setenv("PAYMOB_HMAC_SECRET", f"new-paymob-secret,{PAYMOB_SECRET}")
    callback = fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id())
    assert deliver(callback, secret=PAYMOB_SECRET) == (200, {"status": "paid"})


# --- checkout -> paid -> credits ----------------------------------------------------------


def test_checkout_then_a_paid_callback_grants_the_credits_once(paymob):
    # Given a user who started a checkout
    user, order_id, paymob_order, amount, currency = buy(paymob)
    txn = paymob.next_transaction_id()
    callback = fake_paymob.transaction(paymob_order, amount, currency, id=txn, merchant_order_id=order_id)
    # When Paymob reports the payment, then again (a retry)
    assert deliver(callback) == (200, {"status": "paid"})
    assert deliver(callback) == (200, {"status": "duplicate"})
    # Then the order is paid and the credits were granted once, through the ledger
    stored = order(order_id)
    assert (stored["status"], stored["paid_at"] is not None) == ("paid", True)
    assert balance(user) == 50
    assert ledger_of(user) == [{"kind": "grant", "amount": 50, "shortfall": 0, "source": "paymob",
                                "ref": f"order:{order_id}"}]
    (payment,) = payments_of("paymob")
    assert (payment["status"], payment["order_id"], payment["amount_minor"], payment["raw"]) == (
        "paid", uuid.UUID(order_id), 25000, callback)
    (event,) = inbox_of("paymob")
    assert (event["event_id"], event["status"], event["attempts"]) == (f"{txn}:success", "processed", 2)
    assert ledger.ledger_matches_balance(user)


def test_twenty_concurrent_deliveries_grant_once(paymob):
    # Given a paid callback, delivered 20 times at the same moment by 20 processes
    user, _order_id, paymob_order, amount, currency = buy(paymob)
    callback = fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id())
    statuses = invoke_concurrently("paymob-webhook", paymob_event(callback), 20)
    # Then all are answered 200 and exactly one grant happened
    assert statuses == [200] * 20
    assert balance(user) == 50
    assert [e["kind"] for e in ledger_of(user)] == ["grant"]
    assert inbox_of("paymob")[0]["attempts"] == 20
    assert len(payments_of("paymob")) == 1
    assert ledger.ledger_matches_balance()


def test_pending_then_paid_is_applied_for_each_state(paymob):
    user, order_id, paymob_order, amount, currency = buy(paymob)
    txn = paymob.next_transaction_id()
    pending = fake_paymob.transaction(paymob_order, amount, currency, id=txn, success=False, pending=True)
    assert deliver(pending) == (200, {"status": "pending"})
    assert (order(order_id)["status"], balance(user)) == ("pending", 0)
    paid = fake_paymob.transaction(paymob_order, amount, currency, id=txn)
    assert deliver(paid) == (200, {"status": "paid"})
    assert (order(order_id)["status"], balance(user)) == ("paid", 50)
    assert [p["status"] for p in payments_of("paymob")] == ["paid"]  # one transaction, latest state


def test_a_declined_payment_fails_the_order_and_a_retry_can_pay_it(paymob):
    user, order_id, paymob_order, amount, currency = buy(paymob)
    declined = fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id(),
                                       success=False)
    assert deliver(declined) == (200, {"status": "declined"})
    assert (order(order_id)["status"], order(order_id)["failure_code"]) == ("failed", "declined")
    assert balance(user) == 0
    paid = fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id())
    assert deliver(paid) == (200, {"status": "paid"})
    assert (order(order_id)["status"], order(order_id)["failure_code"], balance(user)) == ("paid", None, 50)


@pytest.mark.parametrize(("amount_delta", "currency"), [(-100, None), (1, None), (0, "AED")])
def test_an_amount_or_currency_mismatch_grants_nothing_and_is_recorded(paymob, amount_delta, currency):
    user, order_id, paymob_order, amount, order_currency = buy(paymob)
    callback = fake_paymob.transaction(paymob_order, amount + amount_delta, currency or order_currency,
                                       id=paymob.next_transaction_id())
    assert deliver(callback) == (200, {"status": "mismatch"})
    assert (order(order_id)["status"], balance(user)) == ("pending", 0)
    (payment,) = payments_of("paymob")
    assert (payment["status"], payment["note"]) == ("mismatch", "amount_mismatch")
    (audit,) = rows("SELECT * FROM audit_log WHERE action = 'amount_mismatch'")
    assert audit["subject"] == order_id
    assert inbox_of("paymob")[0]["status"] == "ignored"


def test_the_order_is_found_by_the_signed_order_id_not_merchant_order_id(paymob):
    # Given someone else's order id in the unsigned merchant_order_id of a genuine callback
    user, order_id, paymob_order, amount, currency = buy(paymob)
    callback = fake_paymob.transaction(paymob_order + 1000, amount, currency, id=paymob.next_transaction_id(),
                                       merchant_order_id=order_id)
    # Then it does not pay our order
    assert deliver(callback) == (200, {"status": "unmatched"})
    assert (order(order_id)["status"], balance(user)) == ("pending", 0)


def test_a_second_payment_of_a_paid_order_is_recorded_not_granted(paymob):
    user, _order_id, paymob_order, amount, currency = buy(paymob)
    for expected in ("paid", "duplicate_payment"):
        callback = fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id())
        assert deliver(callback) == (200, {"status": expected})
    assert balance(user) == 50
    assert [p["status"] for p in payments_of("paymob")] == ["paid", "duplicate"]
    assert len(rows("SELECT 1 FROM audit_log WHERE action = 'double_payment'")) == 1


# --- refunds ------------------------------------------------------------------------------


def spend(user, amount):
    reservation = ledger.reserve(user, amount, idempotency_key=str(uuid.uuid4()))
    ledger.settle(reservation.id)


def test_a_refund_after_spending_leaves_zero_and_records_the_shortfall(paymob):
    # Given 50 credits bought and 30 spent
    user, order_id, paymob_order, amount, currency = buy(paymob)
    paid_txn = paymob.next_transaction_id()
    assert deliver(fake_paymob.transaction(paymob_order, amount, currency, id=paid_txn))[0] == 200
    spend(user, 30)
    # When Paymob reports the full refund (a child transaction)
    refund = fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id(),
                                     has_parent_transaction=True, is_refund=True, parent_transaction=paid_txn)
    assert deliver(refund) == (200, {"status": "refunded"})
    assert deliver(refund) == (200, {"status": "duplicate"})
    # Then the 20 left were taken, the missing 30 recorded, the balance is not negative
    assert balance(user) == 0
    assert ledger_of(user)[-1] == {"kind": "clawback", "amount": -20, "shortfall": 30, "source": "paymob",
                                   "ref": f"refund:{refund['obj']['id']}"}
    assert (order(order_id)["status"], order(order_id)["refunded_minor"]) == ("refunded", amount)
    (audit,) = rows("SELECT details FROM audit_log WHERE action = 'refund_shortfall'")
    assert audit["details"]["shortfall"] == 30
    # And the parent's later "is_refunded" callback takes nothing more
    parent = fake_paymob.transaction(paymob_order, amount, currency, id=paid_txn, is_refunded=True)
    assert deliver(parent)[1]["status"] == "ignored"
    assert balance(user) == 0 and ledger.ledger_matches_balance(user)


def test_a_partial_refund_takes_credits_in_proportion(paymob):
    user, order_id, paymob_order, amount, currency = buy(paymob)
    paid_txn = paymob.next_transaction_id()
    deliver(fake_paymob.transaction(paymob_order, amount, currency, id=paid_txn))
    half = fake_paymob.transaction(paymob_order, amount // 2, currency, id=paymob.next_transaction_id(),
                                   has_parent_transaction=True, is_refund=True, parent_transaction=paid_txn)
    assert deliver(half) == (200, {"status": "refunded"})
    assert balance(user) == 25
    assert (order(order_id)["status"], order(order_id)["refunded_minor"]) == ("paid", amount // 2)


def test_a_refund_reported_only_on_the_parent_refunds_the_order(paymob):
    user, order_id, paymob_order, amount, currency = buy(paymob)
    paid_txn = paymob.next_transaction_id()
    deliver(fake_paymob.transaction(paymob_order, amount, currency, id=paid_txn))
    voided = fake_paymob.transaction(paymob_order, amount, currency, id=paid_txn, is_voided=True)
    assert deliver(voided) == (200, {"status": "voided"})
    assert (balance(user), order(order_id)["status"]) == (0, "refunded")
    assert [p["status"] for p in payments_of("paymob")] == ["voided"]


# --- plans ---------------------------------------------------------------------------------


def test_a_plan_bought_with_paymob_is_an_entitlement_that_a_second_purchase_extends(paymob):
    user, order_id, paymob_order, amount, currency = buy(paymob, "premium_monthly")
    deliver(fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id()))
    assert entitlements.has_entitlement(user, "premium")
    first_end = order(order_id)["period_end"]
    assert abs(first_end - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)
    # A second month starts where the first ends
    _, second_id, second_order, *_ = buy(paymob, "premium_monthly", user=user)
    deliver(fake_paymob.transaction(second_order, amount, currency, id=paymob.next_transaction_id()))
    assert order(second_id)["period_end"] - first_end == timedelta(days=30)
    (ent,) = rows("SELECT * FROM entitlements WHERE user_id = %s", user)
    assert (ent["source"], ent["active"], ent["expires_at"], ent["will_renew"]) == (
        "paymob", True, order(second_id)["period_end"], False)
    assert balance(user) == 0


def test_a_refunded_plan_ends_its_access(paymob):
    user, order_id, paymob_order, amount, currency = buy(paymob, "premium_monthly")
    paid_txn = paymob.next_transaction_id()
    deliver(fake_paymob.transaction(paymob_order, amount, currency, id=paid_txn))
    deliver(fake_paymob.transaction(paymob_order, amount, currency, id=paid_txn, is_refunded=True))
    assert not entitlements.has_entitlement(user, "premium")
    assert order(order_id)["status"] == "refunded"


# --- refusals ------------------------------------------------------------------------------


def signed(callback):
    return paymob_event(callback)


@pytest.mark.parametrize(("make", "status", "code"), [
    (lambda c: paymob_event(c, raw_body="{not json"), 400, "invalid_json"),
    (lambda c: paymob_event(c, raw_body="[1, 2]"), 400, "malformed_callback"),
    (lambda c: paymob_event(c, raw_body=json.dumps({"type": "TRANSACTION"})), 400, "malformed_callback"),
    (lambda c: paymob_event(c, raw_body=json.dumps({"type": "TRANSACTION", "obj": [1]})), 400,
     "malformed_callback"),
    (lambda c: url_event("POST", "/", raw_body=b"\xff\xfe\x00garbage"), 400, "invalid_json"),
    (lambda c: paymob_event(c, raw_body=json.dumps(c) + " " * 70_000), 413, "payload_too_large"),
    (lambda c: paymob_event(c, hmac_value=None) | {"queryStringParameters": {}, "rawQueryString": ""}, 401,
     "invalid_signature"),
])
def test_malformed_or_oversize_callbacks_change_nothing(paymob, make, status, code):
    _user, _order_id, paymob_order, amount, currency = buy(paymob)
    callback = fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id())
    before = snapshot()
    got, body = call("paymob-webhook", make(callback))
    assert (got, body["error"]["code"]) == (status, code)
    assert snapshot() == before


@pytest.mark.parametrize("change", [
    {"amount_cents": "25000"},        # a string where Paymob sends a number (same signed text!)
    {"success": "true"},
    {"pending": None},
    {"id": True},
    {"order": {"id": "x"}},
    {"currency": "egp"},
    {"is_refund": "no"},              # unsigned, still typed
])
def test_wrong_types_in_a_signed_callback_are_422_and_change_nothing(paymob, change):
    _user, _order_id, paymob_order, amount, currency = buy(paymob)
    callback = fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id())
    callback["obj"].update(change)
    before = snapshot()
    status, body = call("paymob-webhook", signed(callback))
    assert (status, body["error"]["code"]) == (422, "invalid_input")
    assert all("input" not in f for f in body["error"]["fields"])
    assert snapshot() == before


def test_a_missing_field_is_422(paymob):
    _user, _order_id, paymob_order, amount, currency = buy(paymob)
    callback = fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id())
    del callback["obj"]["success"]
    before = snapshot()
    status, body = call("paymob-webhook", signed(callback))
    assert (status, body["error"]["code"]) == (422, "invalid_input")
    assert ["body", "obj", "success"] in [f["loc"] for f in body["error"]["fields"]]
    assert snapshot() == before


def test_other_callback_types_are_acknowledged_and_not_stored():
    before = counts()
    token_callback = url_event("POST", "/", body={"type": "TOKEN", "obj": {"token": "x"}})
    status, body = call("paymob-webhook", token_callback)
    assert (status, body) == (200, {"status": "ignored"})
    assert counts() == before


# --- the browser's response callback -------------------------------------------------------


def test_the_response_callback_shows_a_status_and_grants_nothing(paymob):
    user, _order_id, paymob_order, amount, currency = buy(paymob)
    obj = fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id())["obj"]
    query = fake_paymob.response_query(obj, PAYMOB_SECRET)
    before = snapshot()
    assert call("paymob-webhook", url_event("GET", "/", query=query)) == (200, {"status": "paid"})
    status, page = call("paymob-webhook", url_event("GET", "/", query=query, headers={"accept": "text/html"}))
    assert status == 200 and "Payment received" in page
    tampered = query | {"amount_cents": "1"}
    status, body = call("paymob-webhook", url_event("GET", "/", query=tampered))
    assert (status, body["error"]["code"]) == (401, "invalid_signature")
    assert snapshot() == before and balance(user) == 0


# --- signed callbacks carrying what text columns cannot hold ----------------------------------


@pytest.mark.parametrize("where", ["unsigned", "signed"])
def test_a_signed_callback_with_nul_pays_its_order_once(paymob, where):
    # Given a callback whose strings hold NUL: in an unsigned field (data.message), or in a
    # signed one (source_data.pan), the hmac computed over exactly those characters
    user, order_id, paymob_order, amount, currency = buy(paymob)
    callback = fake_paymob.transaction(paymob_order, amount, currency, id=paymob.next_transaction_id())
    if where == "unsigned":
        callback["obj"]["data"]["message"] = "Appro\u0000ved"
    else:
        callback["obj"]["source_data"]["pan"] = "23\u000046"
    raw = json.dumps(callback)  # "\u0000" escapes, as Paymob's JSON would carry them
    # When it is delivered, then redelivered twice
    answers = [deliver(callback, raw_body=raw) for _ in range(3)]
    # Then the order is paid once, the credits granted once, and the inbox keeps the bytes
    assert answers == [(200, {"status": "paid"})] + [(200, {"status": "duplicate"})] * 2
    assert (order(order_id)["status"], balance(user)) == ("paid", 50)
    assert len(ledger_of(user)) == 1
    [kept] = inbox_of("paymob")
    assert kept["body"] == raw.encode() and kept["status"] == "processed"
