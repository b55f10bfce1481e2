"""Starting a payment: an order of ours first, then the provider's checkout.

The order is committed before the provider is called. If the call fails, the order is
marked failed (``provider_error``) before the error is answered (502/504), so nothing
is half-created: either the client gets a usable checkout and the order is ``pending``
with the provider's ids, or the order is ``failed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from checkout import catalog, paymob, stripe_checkout
from checkout.models import (
    CheckoutIn,
    EntitlementOut,
    PaymobCheckoutIn,
    PaymobCheckoutOut,
    ProductsOut,
    RevenueCatSyncOut,
    StripeCheckoutOut,
)
from checkout.settings import settings
from common import config, entitlements, ledger, orders
from common.auth import Principal
from common.errors import BadGateway, ConfigError, Unavailable
from common.observability import logger


def list_products() -> ProductsOut:
    return ProductsOut(products=catalog.products())


def start_paymob(user: Principal, body: PaymobCheckoutIn) -> PaymobCheckoutOut:
    s = settings()
    secret_key = config.require_secret("PAYMOB_SECRET_KEY")
    methods = payment_methods(config.settings().PAYMOB_INTEGRATION_IDS)
    public_key = s.require("PAYMOB_PUBLIC_KEY")
    api_url = config.settings().PAYMOB_API_URL.rstrip("/")
    price = catalog.price(body.product_id, "paymob", body.currency or s.PAYMOB_CURRENCY)
    order = orders.create_order(user.user_id, price.id, "paymob", price.amount_minor, price.currency)
    billing = body.billing.model_dump() if body.billing else {}
    email = billing.get("email") or _email(user)
    payload: dict[str, Any] = {
        "amount": price.amount_minor,
        "currency": price.currency,
        "payment_methods": methods,
        "items": [{"name": price.name, "amount": price.amount_minor, "description": price.name,
                   "quantity": 1}],
        "billing_data": {"first_name": billing.get("first_name") or "NA",
                         "last_name": billing.get("last_name") or "NA",
                         "email": email or "NA", "phone_number": billing.get("phone_number") or "NA"},
        "special_reference": str(order.id),  # lands as merchant_order_id (unsigned: not trusted)
        "extras": {"order_id": str(order.id), "user_id": str(user.user_id), "product_id": price.id},
    }
    if s.PAYMOB_NOTIFICATION_URL:
        payload["notification_url"] = s.PAYMOB_NOTIFICATION_URL
    if s.PAYMOB_REDIRECTION_URL:
        payload["redirection_url"] = s.PAYMOB_REDIRECTION_URL
    intention = _or_fail(order, lambda: paymob.create_intention(
        api_url=api_url, secret_key=secret_key, timeout_s=s.PAYMOB_TIMEOUT_S, payload=payload))
    _attach(order, provider_order_id=str(intention.intention_order_id), checkout_id=intention.id)
    query = urlencode({"publicKey": public_key, "clientSecret": intention.client_secret})
    return PaymobCheckoutOut(order_id=order.id, intention_id=intention.id,
                             client_secret=intention.client_secret, public_key=public_key,
                             checkout_url=f"{api_url}/unifiedcheckout/?{query}",
                             amount_minor=order.amount_minor, currency=order.currency)


def start_stripe(user: Principal, body: CheckoutIn) -> StripeCheckoutOut:
    s = settings()
    config.require_secret("STRIPE_API_KEY")
    success_url, cancel_url = s.require("STRIPE_SUCCESS_URL"), s.require("STRIPE_CANCEL_URL")
    price = catalog.price(body.product_id, "stripe", body.currency or s.STRIPE_CURRENCY)
    order = orders.create_order(user.user_id, price.id, "stripe", price.amount_minor, price.currency)
    params = stripe_checkout.session_params(
        order, provider_price_id=price.provider_product_id, email=_email(user),
        success_url=success_url, cancel_url=cancel_url)
    session = _or_fail(order, lambda: stripe_checkout.create_session(
        params, idempotency_key=f"checkout-order-{order.id}"))
    _attach(order, provider_order_id=session.id, checkout_id=session.id)
    return StripeCheckoutOut(order_id=order.id, session_id=session.id, url=session.url,
                             amount_minor=order.amount_minor, currency=order.currency)


#: What the inbox stores as a sync's delivery headers.
SYNC_HEADERS = {"user-agent": "checkout", "x-reconcile-source": "POST /revenuecat/sync"}
#: Outcomes that did not apply a purchase now (reconcile.report.NOT_HEALED's meaning).
_NOT_APPLIED = frozenset({"duplicate", "unmatched"})


def sync_revenuecat(user: Principal) -> RevenueCatSyncOut:
    """The app reports a store purchase: ask RevenueCat about the caller (app user id =
    our user id, as the webhook maps it) and apply what it shows, as reconcile does (same
    inbox keys and claims: a later webhook is a duplicate, a repeated sync changes
    nothing). RevenueCat down or not configured: the user is queued for reconcile's next
    run and the answer is 503 with Retry-After, so nothing is lost."""
    from common.providers import revenuecat_subscribers as subscribers

    api_key = config.secret("REVENUECAT_API_KEY")
    try:
        if not api_key:
            logger.error("REVENUECAT_API_KEY is not set: purchases reported by the app wait for reconcile",
                         extra={"setting": "REVENUECAT_API_KEY"})
            raise subscribers.RevenueCatUnavailable("not configured")
        subscriber = subscribers.fetch(config.settings().REVENUECAT_API_URL.rstrip("/"), api_key,
                                       str(user.user_id), settings().REVENUECAT_TIMEOUT_S)
    except subscribers.RevenueCatUnavailable as exc:
        subscribers.queue_for_reconcile(user.user_id)
        logger.warning("revenuecat not asked; the user is queued for reconcile", extra={"error": str(exc)})
        raise Unavailable("the purchase could not be checked now; it is checked again shortly") from None
    outcomes = subscribers.heal(str(user.user_id), subscriber, SYNC_HEADERS)
    applied = sum(n for status, n in outcomes.items() if status not in _NOT_APPLIED)
    logger.info("revenuecat sync", extra={"outcomes": dict(outcomes)})
    held = entitlements.active_entitlements(user.user_id)
    return RevenueCatSyncOut(applied=applied, credits=ledger.balance(user.user_id),
                             entitlements=[EntitlementOut.model_validate(e) for e in held])


def payment_methods(integration_ids: str) -> list[int | str]:
    """The intention's ``payment_methods``: the layer's ``PAYMOB_INTEGRATION_IDS`` (the
    same setting that binds callbacks), ids as numbers, names as they are."""
    methods = [m.strip() for m in integration_ids.split(",") if m.strip()]
    if not methods:
        raise ConfigError("PAYMOB_INTEGRATION_IDS is not set")
    return [int(m) if m.isdigit() else m for m in methods]


def _or_fail[T](order: orders.Order, call: Callable[[], T]) -> T:
    """Run the provider call; on any failure mark the order failed, then re-raise."""
    try:
        return call()
    except Exception:
        orders.fail_order(order.id, "provider_error")
        raise


def _attach(order: orders.Order, *, provider_order_id: str, checkout_id: str) -> None:
    import psycopg

    try:
        attached = orders.attach_checkout(order.id, provider_order_id=provider_order_id,
                                            checkout_id=checkout_id)
    except psycopg.errors.UniqueViolation:
        attached = False  # the provider reused an order id we already hold: unusable
    if not attached:
        logger.error("provider checkout could not be attached", extra={"order_id": str(order.id)})
        orders.fail_order(order.id, "provider_error")
        raise BadGateway("the payment provider answered unexpectedly")


def _email(user: Principal) -> str | None:
    email = user.claims.get("email")
    return email if isinstance(email, str) and "@" in email else None
