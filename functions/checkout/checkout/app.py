"""checkout: the web catalog and the start of a payment (routes of its function URL).

    GET  /products   the purchasable products with their web prices
    POST /paymob     {product_id, currency?, billing?} -> Paymob intention (client secret, checkout URL)
    POST /stripe     {product_id, currency?}           -> Stripe Checkout Session URL
    POST /revenuecat/sync  (no body) the app bought in the store: RevenueCat asked now,
                     the purchase applied once -> the caller's credits and entitlements

Every route needs a user JWT; the POSTs honour Idempotency-Key. Provider failures answer
502 (504 on timeout) with the order marked failed. The webhooks complete the payment.
The sync lives here, not in account: it is a payment provider's call with payment
secrets, the end of a store purchase as the others start a web one. RevenueCat down: 503
with Retry-After, and the user is queued for reconcile.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from pydantic import BaseModel

from checkout import logic
from checkout.models import (
    CheckoutIn,
    PaymobCheckoutIn,
    PaymobCheckoutOut,
    ProductsOut,
    RevenueCatSyncOut,
    StripeCheckoutOut,
)
from common import http

#: Starting a checkout costs a provider call: a tighter limit than the default.
CHECKOUT_LIMIT_PER_MINUTE = 20

app = http.make_resolver(max_body_bytes=16 * 1024)


@app.get("/products")
def products() -> ProductsOut:
    http.current_user(app)
    return logic.list_products()


@app.post("/paymob", status_code=201)
def paymob(body: PaymobCheckoutIn) -> Response[PaymobCheckoutOut]:
    user = http.current_user(app, route_limit=CHECKOUT_LIMIT_PER_MINUTE)
    return _created(http.idempotent(app, lambda: logic.start_paymob(user, body), model=PaymobCheckoutOut,
                                    user=user))


@app.post("/stripe", status_code=201)
def stripe(body: CheckoutIn) -> Response[StripeCheckoutOut]:
    user = http.current_user(app, route_limit=CHECKOUT_LIMIT_PER_MINUTE)
    return _created(http.idempotent(app, lambda: logic.start_stripe(user, body), model=StripeCheckoutOut,
                                    user=user))


@app.post("/revenuecat/sync")
def revenuecat_sync() -> RevenueCatSyncOut:
    user = http.current_user(app, route_limit=CHECKOUT_LIMIT_PER_MINUTE)
    return http.idempotent(app, lambda: logic.sync_revenuecat(user), model=RevenueCatSyncOut, user=user,
                           payload={})


def _created(body: BaseModel) -> Response[Any]:
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON,
                    body=body.model_dump(mode="json"))


handler = http.make_handler(app)
