"""Stripe Checkout Sessions through the stripe SDK (``common.providers.stripe_client``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common import orders
from common.errors import BadGateway, GatewayTimeout
from common.observability import logger, traced
from common.providers.stripe_client import stripe_client


@dataclass(frozen=True)
class Session:
    id: str
    url: str


def recurring(period_days: int) -> dict[str, Any]:
    """Stripe's recurring interval for a plan's period."""
    if period_days in (365, 366):
        return {"interval": "year"}
    if period_days in (28, 29, 30, 31):
        return {"interval": "month"}
    if period_days % 7 == 0:
        return {"interval": "week", "interval_count": period_days // 7}
    return {"interval": "day", "interval_count": period_days}


def session_params(order: orders.Order, *, provider_price_id: str | None, email: str | None,
                   success_url: str, cancel_url: str) -> dict[str, Any]:
    """The Checkout Session: one line item from the catalog, ``client_reference_id`` = the
    user, our order id in the metadata of the session and of what it creates (payment
    intent or subscription), so every later event names the order."""
    metadata = {"order_id": str(order.id), "user_id": str(order.user_id), "product_id": order.product_id}
    if provider_price_id:
        line_item: dict[str, Any] = {"price": provider_price_id, "quantity": 1}
    else:
        price_data: dict[str, Any] = {"currency": order.currency.lower(), "unit_amount": order.amount_minor,
                                      "product_data": {"name": order.product_name}}
        if order.is_plan:
            price_data["recurring"] = recurring(order.period_days or 30)
        line_item = {"price_data": price_data, "quantity": 1}
    params: dict[str, Any] = {
        "mode": "subscription" if order.is_plan else "payment",
        "line_items": [line_item],
        "client_reference_id": str(order.user_id),
        "metadata": metadata,
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    if order.is_plan:
        params["subscription_data"] = {"metadata": metadata}
    else:
        params["payment_intent_data"] = {"metadata": metadata}
    if email:
        params["customer_email"] = email
    return params


@traced
def create_session(params: dict[str, Any], *, idempotency_key: str) -> Session:
    """Create the session; any Stripe error is BadGateway (502), a timeout GatewayTimeout (504)."""
    import requests
    import stripe

    try:
        session = stripe_client().v1.checkout.sessions.create(
            params=params, options={"idempotency_key": idempotency_key})  # type: ignore[arg-type]
    except stripe.APIConnectionError as exc:
        logger.warning("stripe checkout unreachable", extra={"error": type(exc.__cause__).__name__})
        if isinstance(exc.__cause__, requests.Timeout):
            raise GatewayTimeout("the payment provider did not answer in time") from None
        raise BadGateway("the payment provider could not be reached") from None
    except stripe.StripeError as exc:
        logger.warning("stripe checkout refused", extra={"status": exc.http_status, "stripe_code": exc.code,
                                                         "error": type(exc).__name__})
        raise BadGateway("the payment provider refused the payment") from None
    session_id, url = getattr(session, "id", None), getattr(session, "url", None)
    if not (isinstance(session_id, str) and session_id and isinstance(url, str) and url):
        raise BadGateway("the payment provider answered unexpectedly")
    return Session(id=session_id, url=url)
