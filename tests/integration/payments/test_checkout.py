"""checkout through its handler, against the Paymob and Stripe fakes: orders are made
before the provider is called and end pending (usable checkout) or failed (provider
error), never half-made."""

import json
import uuid

import pytest

from devkit import fake_stripe
from devkit.fake_openai import Scripted
from tests.integration.payments.helpers import checkout, counts, new_user, order, rows, snapshot


def test_products_need_a_token_and_list_web_prices():
    # Given no token / a user
    status, body = checkout("/products", None, method="GET")
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    # When the user asks for the catalog
    status, body = checkout("/products", new_user(), method="GET")
    # Then every product has its Stripe and Paymob prices, no store prices
    assert status == 200
    products = {p["id"]: p for p in body["products"]}
    assert set(products) == {"credits_50", "credits_200", "premium_monthly", "premium_yearly"}
    assert {(p["provider"], p["currency"], p["amount_minor"]) for p in products["credits_50"]["prices"]} == {
        ("paymob", "AED", 1900), ("paymob", "EGP", 25000), ("stripe", "USD", 499)}
    assert products["premium_monthly"]["entitlement_ids"] == ["premium"]


def test_paymob_checkout_creates_an_order_then_an_intention(paymob):
    # Given a user
    user = new_user()
    # When they start a Paymob payment for 50 credits
    status, body = checkout("/paymob", user, {"product_id": "credits_50"})
    # Then the intention was asked for the catalog's amount, our order id as reference
    assert status == 201, body
    (request,) = paymob.requests
    assert request.headers["authorization"] == "Token egy_sk_test_local_0000000000"
    sent = request.json()
    assert (sent["amount"], sent["currency"], sent["payment_methods"]) == (25000, "EGP", [4097558])
    assert sent["special_reference"] == body["order_id"]
    assert sent["items"] == [{"name": "50 credits", "amount": 25000, "description": "50 credits",
                              "quantity": 1}]
    assert set(sent["billing_data"]) >= {"first_name", "last_name", "email", "phone_number"}
    # And the order waits for its payment under Paymob's order id
    intention = paymob.intentions[int(order(body["order_id"])["provider_order_id"])]
    stored = order(body["order_id"])
    assert (stored["status"], stored["user_id"], stored["amount_minor"], stored["currency"]) == (
        "pending", user, 25000, "EGP")
    assert stored["provider_checkout_id"] == intention["id"] == body["intention_id"]
    # And the client gets what Unified Checkout needs
    assert body["client_secret"] == intention["client_secret"]
    assert body["public_key"] == "egy_pk_test_local_0000000000"
    assert body["checkout_url"] == (f"{paymob.base_url}/unifiedcheckout/"
                                    f"?publicKey=egy_pk_test_local_0000000000"
                                    f"&clientSecret={intention['client_secret']}")


def test_paymob_checkout_in_another_currency_and_refusals(paymob):
    user = new_user()
    status, body = checkout("/paymob", user, {"product_id": "credits_50", "currency": "aed"})
    assert (status, body["amount_minor"], body["currency"]) == (201, 1900, "AED")
    # A product not sold in that currency, an unknown product: nothing is created
    before = counts()
    status, body = checkout("/paymob", user, {"product_id": "credits_200", "currency": "AED"})
    assert (status, body["error"]["code"]) == (422, "invalid_input")
    status, body = checkout("/paymob", user, {"product_id": "credits_9999"})
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert counts() == before and len(paymob.requests) == 1


@pytest.mark.parametrize(("payload", "status", "code"), [
    ({}, 422, "invalid_input"),                                            # missing product_id
    ({"product_id": 50}, 422, "invalid_input"),                            # wrong type
    ({"product_id": "credits_50", "currency": "EURO"}, 422, "invalid_input"),
    ({"product_id": "credits_50", "price": 1}, 422, "invalid_input"),      # unknown field
    ("{not json", 400, "invalid_json"),
    ("x" * 20_000, 413, "payload_too_large"),
])
def test_bad_checkout_requests_change_nothing(paymob, payload, status, code):
    user = new_user()
    before = snapshot()
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    got, body = checkout("/paymob", user, raw_body=raw)
    assert (got, body["error"]["code"]) == (status, code)
    assert snapshot() == before and paymob.requests == []


def test_checkout_without_a_token_is_401_and_creates_nothing(paymob):
    before = counts()
    status, body = checkout("/paymob", None, {"product_id": "credits_50"})
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert counts() == before and paymob.requests == []


@pytest.mark.parametrize(("scripted", "status", "code"), [
    (Scripted(status=500, body={"detail": "Internal error"}), 502, "provider_error"),
    (Scripted(status=400, body={"amount": ["Ensure this value is greater than 0."]}), 502, "provider_error"),
    (Scripted(status=201, body={"id": "pi_test_x", "intention_order_id": 5}), 502, "provider_error"),
    (Scripted(status=201, body={"id": "pi_test_x", "client_secret": "c", "intention_order_id": "5"}),
     502, "provider_error"),
    (Scripted(delay=1.0, body={}), 504, "provider_timeout"),
])
def test_a_paymob_failure_is_an_error_envelope_and_a_failed_order(paymob, monkeypatch, scripted, status,
                                                                  code):
    # Given Paymob fails (or is too slow for a 0.3 s timeout)
    monkeypatch.setenv("PAYMOB_TIMEOUT_S", "0.3")
    from checkout.settings import settings
    settings.cache_clear()
    paymob.script(scripted)
    user = new_user()
    # When the user starts a payment
    got, body = checkout("/paymob", user, {"product_id": "credits_50"})
    # Then the answer is the envelope and the order is failed, with no provider ids
    assert (got, body["error"]["code"]) == (status, code)
    assert set(body) == {"error"}
    (stored,) = rows("SELECT * FROM orders WHERE user_id = %s", user)
    assert (stored["status"], stored["failure_code"], stored["provider_order_id"]) == (
        "failed", "provider_error", None)


def test_an_idempotency_key_makes_one_order_and_one_intention(paymob):
    user = new_user()
    key = str(uuid.uuid4())
    first = checkout("/paymob", user, {"product_id": "credits_50"}, key=key)
    again = checkout("/paymob", user, {"product_id": "credits_50"}, key=key)
    assert first[0] == again[0] == 201 and first[1] == again[1]
    assert len(paymob.requests) == 1
    assert len(rows("SELECT id FROM orders WHERE user_id = %s", user)) == 1
    other = checkout("/paymob", user, {"product_id": "credits_200"}, key=key)
    assert (other[0], other[1]["error"]["code"]) == (422, "idempotency_key_reused")


def test_stripe_checkout_for_credits_is_a_payment_session(stripe_api):
    user = new_user()
    status, body = checkout("/stripe", user, {"product_id": "credits_50"})
    assert status == 201, body
    (request,) = stripe_api.calls(fake_stripe.SESSIONS)
    assert request.headers["authorization"] == "Bearer sk_test_local_0000000000"
    assert request.headers["idempotency-key"] == f"checkout-order-{body['order_id']}"
    sent = fake_stripe.form(request)
    assert sent["mode"] == "payment"
    assert sent["client_reference_id"] == str(user)
    assert sent["line_items"] == [{"price_data": {"currency": "usd", "unit_amount": "499",
                                                  "product_data": {"name": "50 credits"}}, "quantity": "1"}]
    metadata = {"order_id": body["order_id"], "user_id": str(user), "product_id": "credits_50"}
    assert sent["metadata"] == sent["payment_intent_data"]["metadata"] == metadata
    session = stripe_api.sessions[body["session_id"]]
    assert body["url"] == session["url"]
    stored = order(body["order_id"])
    assert (stored["status"], stored["provider_order_id"], stored["amount_minor"], stored["currency"]) == (
        "pending", session["id"], 499, "USD")


def test_stripe_checkout_for_a_plan_is_a_subscription_session(stripe_api):
    user = new_user()
    status, body = checkout("/stripe", user, {"product_id": "premium_yearly"})
    assert status == 201, body
    sent = fake_stripe.form(stripe_api.calls(fake_stripe.SESSIONS)[0])
    assert sent["mode"] == "subscription"
    assert sent["line_items"][0]["price_data"]["recurring"] == {"interval": "year"}
    assert sent["subscription_data"]["metadata"]["order_id"] == body["order_id"]
    assert "payment_intent_data" not in sent


def test_a_stripe_error_is_502_and_a_failed_order(stripe_api):
    stripe_api.script(fake_stripe.SESSIONS, fake_stripe.error(400, "Invalid currency: xyz"))
    user = new_user()
    status, body = checkout("/stripe", user, {"product_id": "credits_50"})
    assert (status, body["error"]["code"]) == (502, "provider_error")
    (stored,) = rows("SELECT * FROM orders WHERE user_id = %s", user)
    assert (stored["status"], stored["failure_code"]) == ("failed", "provider_error")


def test_a_restarted_paymob_fake_never_reuses_an_order_kept_in_the_database(monkeypatch):
    from devkit import fake_paymob
    from tests.integration.payments.conftest import _clear_settings

    user = new_user()
    orders, transactions = [], []
    # Given two runs of make dev, one after the other, on the same database
    for _run in range(2):
        fake = fake_paymob.FakePaymob().start()
        try:
            monkeypatch.setenv("PAYMOB_API_URL", fake.base_url)
            _clear_settings()
            # When each run starts Paymob checkouts (a burst) and pays with transaction ids
            for _ in range(3):
                status, body = checkout("/paymob", user, {"product_id": "credits_50"})
                # Then every one is created: no Paymob order id of the first run comes back
                assert status == 201, body
                orders.append(int(order(body["order_id"])["provider_order_id"]))
            transactions += [fake.next_transaction_id() for _ in range(3)]
        finally:
            fake.stop()
    # And the ids only grow, across runs too
    assert orders == sorted(set(orders)) and transactions == sorted(set(transactions))
    assert max(orders) < 2**53
