"""A purchase clicked through in a real browser, as a developer does under `make dev`:
checkout answers the fake's local checkout page, whose buttons send the provider's signed
webhook to the runner; the result shows in the user's balance and entitlements."""

from __future__ import annotations

import uuid
from typing import Any

from tests.e2e.conftest import Local


def me(local: Local, user: uuid.UUID) -> dict[str, Any]:
    status, body = local.call("GET", "/account/me", user=user)
    assert status == 200, body
    return body


def start(local: Local, provider: str, user: uuid.UUID, product: str) -> dict[str, Any]:
    status, order = local.call("POST", f"/checkout/{provider}", user=user, body={"product_id": product})
    assert status == 201, order
    return order


def click(page: Any, button: str) -> str:
    """Press a checkout button; the webhook's answer shown on the result page."""
    page.click(f"#{button}")
    result = page.locator("#result")
    assert result.get_attribute("data-status") == "200", page.content()
    return page.locator(".webhook-answer").inner_text()


def test_paymob_checkout_page_pays_declines_and_refuses_a_wrong_amount(local: Local, page: Any) -> None:
    user = uuid.uuid4()
    before = me(local, user)["balance"]
    # Given a Paymob checkout: its URL is the fake's local page, showing the order
    order = start(local, "paymob", user, "credits_50")
    assert order["checkout_url"].startswith(local.services.paymob.base_url)
    page.goto(order["checkout_url"])
    assert page.locator("#amount").inner_text() == "250.00 EGP"
    assert page.locator("#merchant-order").inner_text() == order["order_id"]
    # When the buyer declines, then the webhook records it and nothing is granted
    assert '"declined"' in click(page, "decline")
    assert me(local, user)["balance"] == before
    # When they retry on the same order and pay, then the credits arrive
    page.go_back()
    assert '"paid"' in click(page, "pay")
    assert me(local, user)["balance"] == before + 50
    # And the way back is Paymob's signed redirect, whose page says paid
    page.click("#return")
    assert page.locator("h1").inner_text() == "Payment received"
    # A wrong amount on another order is refused by the webhook: nothing granted
    other = start(local, "paymob", user, "credits_50")
    page.goto(other["checkout_url"])
    assert '"mismatch"' in click(page, "wrong_amount")
    assert me(local, user)["balance"] == before + 50


def test_stripe_checkout_page_pays_a_pack_and_a_plan(local: Local, page: Any) -> None:
    user = uuid.uuid4()
    before = me(local, user)
    # Given a Stripe Checkout Session: its url is the fake's local page
    order = start(local, "stripe", user, "credits_200")
    assert order["url"] == f"{local.services.stripe.base_url}/c/pay/{order['session_id']}"
    page.goto(order["url"])
    assert page.locator("#amount").inner_text() == f"{order['amount_minor'] / 100:.2f} USD"
    # A wrong amount is refused; paying the right one grants the pack
    assert '"mismatch"' in click(page, "wrong_amount")
    assert me(local, user)["balance"] == before["balance"]
    page.go_back()
    assert '"paid"' in click(page, "pay")
    assert me(local, user)["balance"] == before["balance"] + 200
    # A plan: declined first (nothing), then another session paid: premium from Stripe
    declined = start(local, "stripe", user, "premium_monthly")
    page.goto(declined["url"])
    assert '"declined"' in click(page, "decline")
    assert not me(local, user)["entitlements"]
    plan = start(local, "stripe", user, "premium_monthly")
    page.goto(plan["url"])
    assert '"paid"' in click(page, "pay")
    entitlements = me(local, user)["entitlements"]
    assert [(e["entitlement_id"], e["source"]) for e in entitlements] == [("premium", "stripe")]
