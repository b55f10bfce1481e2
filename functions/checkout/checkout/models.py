"""Checkout's request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import ConfigDict, Field

from common.http import ApiModel

_CURRENCY = r"^[A-Za-z]{3}$"


class CheckoutIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    product_id: str = Field(min_length=1, max_length=64)
    #: ISO 4217; default: the provider's account currency (PAYMOB_CURRENCY / STRIPE_CURRENCY).
    currency: str | None = Field(default=None, pattern=_CURRENCY)


class BillingIn(ApiModel):
    """Paymob requires billing data; what the client does not give is sent as "NA"."""

    model_config = ConfigDict(extra="forbid")

    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    email: str | None = Field(default=None, max_length=254)
    phone_number: str | None = Field(default=None, max_length=32)


class PaymobCheckoutIn(CheckoutIn):
    billing: BillingIn | None = None


class Price(ApiModel):
    provider: str
    currency: str
    amount_minor: int


class Product(ApiModel):
    id: str
    kind: str
    name: str
    credits: int
    entitlement_ids: list[str]
    period_days: int | None
    prices: list[Price]


class ProductsOut(ApiModel):
    products: list[Product]


class PaymobCheckoutOut(ApiModel):
    order_id: uuid.UUID
    intention_id: str
    client_secret: str
    public_key: str
    checkout_url: str
    amount_minor: int
    currency: str


class StripeCheckoutOut(ApiModel):
    order_id: uuid.UUID
    session_id: str
    url: str
    amount_minor: int
    currency: str


class EntitlementOut(ApiModel):
    entitlement_id: str
    source: str  # revenuecat | stripe | paymob
    expires_at: datetime | None  # None: lifetime
    owner: str  # self | pair (the partner's)


class RevenueCatSyncOut(ApiModel):
    """The caller's state after the sync: what they may use now."""

    #: Purchases this sync applied (0 when their webhooks, or an earlier sync, had already).
    applied: int
    credits: int
    entitlements: list[EntitlementOut]
