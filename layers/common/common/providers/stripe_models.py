"""The parts of Stripe's event and objects this function reads, typed strictly (a value
of the wrong JSON type is 422, never coerced); everything else is kept as sent.

Both API generations are read: since 2025-03-31 an invoice names its subscription under
``parent.subscription_details`` and its payment intents under ``payments``, and a
subscription's period lives on its items; before, ``invoice.subscription``,
``invoice.payment_intent`` and ``subscription.current_period_end``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Stripe(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class EventData(_Stripe):
    object: dict[str, Any]


class Event(_Stripe):
    id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=100)
    created: int = Field(gt=0)
    data: EventData

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.created, UTC)


class Session(_Stripe):
    id: str
    mode: str
    payment_status: str
    amount_total: int | None = None
    currency: str | None = None
    client_reference_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    payment_intent: str | None = None
    subscription: str | None = None


class Period(_Stripe):
    start: int
    end: int


class InvoiceLine(_Stripe):
    period: Period | None = None


class InvoiceLines(_Stripe):
    data: list[InvoiceLine] = Field(default_factory=list)


class SubscriptionDetails(_Stripe):
    subscription: str | None = None
    metadata: dict[str, str] | None = None


class InvoiceParent(_Stripe):
    subscription_details: SubscriptionDetails | None = None


class PaymentRef(_Stripe):
    payment_intent: str | None = None


class InvoicePayment(_Stripe):
    payment: PaymentRef | None = None


class InvoicePayments(_Stripe):
    data: list[InvoicePayment] = Field(default_factory=list)


class Invoice(_Stripe):
    id: str
    amount_paid: int
    currency: str
    billing_reason: str | None = None
    lines: InvoiceLines = Field(default_factory=InvoiceLines)
    parent: InvoiceParent | None = None
    payments: InvoicePayments | None = None
    # Before API 2025-03-31:
    subscription: str | None = None
    subscription_details: SubscriptionDetails | None = None
    payment_intent: str | None = None

    @property
    def _details(self) -> SubscriptionDetails | None:
        return (self.parent.subscription_details if self.parent else None) or self.subscription_details

    @property
    def subscription_id(self) -> str | None:
        return (self._details.subscription if self._details else None) or self.subscription

    @property
    def metadata(self) -> dict[str, str]:
        return (self._details.metadata if self._details else None) or {}

    @property
    def period_end(self) -> int | None:
        ends = [line.period.end for line in self.lines.data if line.period]
        return max(ends) if ends else None

    @property
    def intent(self) -> str | None:
        for item in self.payments.data if self.payments else []:
            if item.payment and item.payment.payment_intent:
                return item.payment.payment_intent
        return self.payment_intent


class SubscriptionItem(_Stripe):
    current_period_end: int | None = None


class SubscriptionItems(_Stripe):
    data: list[SubscriptionItem] = Field(default_factory=list)


class Subscription(_Stripe):
    id: str
    status: str
    metadata: dict[str, str] = Field(default_factory=dict)
    cancel_at_period_end: bool = False
    items: SubscriptionItems | None = None
    current_period_end: int | None = None  # before API 2025-03-31

    @property
    def period_end(self) -> int | None:
        ends = [i.current_period_end for i in (self.items.data if self.items else []) if i.current_period_end]
        return max(ends) if ends else self.current_period_end


class Charge(_Stripe):
    id: str
    amount: int
    amount_refunded: int
    currency: str
    refunded: bool
    payment_intent: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


#: The object model each handled event type carries.
OBJECTS: dict[str, type[_Stripe]] = {
    "checkout.session.completed": Session,
    "checkout.session.async_payment_succeeded": Session,
    "checkout.session.async_payment_failed": Session,
    "checkout.session.expired": Session,
    "invoice.paid": Invoice,
    "invoice.payment_failed": Invoice,
    "customer.subscription.updated": Subscription,
    "customer.subscription.deleted": Subscription,
    "charge.refunded": Charge,
}
