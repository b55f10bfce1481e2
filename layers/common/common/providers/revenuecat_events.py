"""RevenueCat webhook bodies as pydantic models.

``{"api_version": "1.0", "event": {...}}``. Known fields are typed (a wrong type is a
body that is not a RevenueCat event: 400); unknown fields are kept (``extra="allow"``)
and unknown event types are accepted, because RevenueCat adds both without notice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common import safejson
from common.errors import AppError

#: Event types that give access until ``expiration_at_ms``.
GRANTING = frozenset({
    "INITIAL_PURCHASE", "RENEWAL", "UNCANCELLATION", "SUBSCRIPTION_EXTENDED", "REFUND_REVERSED",
    "TEMPORARY_ENTITLEMENT_GRANT", "NON_RENEWING_PURCHASE",
})
#: Known types that are recorded and change no access.
NO_ACCESS_CHANGE = frozenset({
    "SUBSCRIPTION_PAUSED", "PRODUCT_CHANGE", "INVOICE_ISSUANCE", "EXPERIMENT_ENROLLMENT",
    "SUBSCRIBER_ALIAS",
})
KNOWN = GRANTING | NO_ACCESS_CHANGE | {
    "TEST", "CANCELLATION", "EXPIRATION", "BILLING_ISSUE", "TRANSFER", "VIRTUAL_CURRENCY_TRANSACTION",
}
#: cancel_reason of a CANCELLATION that is a refund (Apple/Google customer support).
REFUND_REASON = "CUSTOMER_SUPPORT"
ANONYMOUS_PREFIX = "$RCAnonymousID:"

#: Epoch milliseconds, up to the last one of year 9999 (datetime's limit).
Millis = Annotated[int, Field(ge=0, le=253_402_300_799_999)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Currency(_Open):
    code: str
    name: str | None = None


class Adjustment(_Open):
    amount: int  # negative when currency was spent
    currency: Currency


class Event(_Open):
    id: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=100)
    event_timestamp_ms: Millis
    app_id: str | None = None
    app_user_id: str | None = None
    original_app_user_id: str | None = None
    aliases: list[str] | None = None
    product_id: str | None = None
    entitlement_ids: list[str] | None = None
    entitlement_id: str | None = None  # deprecated single id, still sent
    period_type: str | None = None
    purchased_at_ms: Millis | None = None
    expiration_at_ms: Millis | None = None
    grace_period_expiration_at_ms: Millis | None = None
    store: str | None = None
    environment: str | None = None
    purchase_environment: str | None = None  # VIRTUAL_CURRENCY_TRANSACTION's name for it
    cancel_reason: str | None = None
    expiration_reason: str | None = None
    transaction_id: str | None = None
    original_transaction_id: str | None = None
    price: float | None = None
    currency: str | None = None
    transferred_from: list[str] | None = None
    transferred_to: list[str] | None = None
    adjustments: list[Adjustment] | None = None
    virtual_currency_transaction_id: str | None = None

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.event_timestamp_ms / 1000, UTC)  # always sent

    @property
    def expires_at(self) -> datetime | None:
        return ms(self.expiration_at_ms)

    @property
    def env(self) -> str | None:
        return self.environment or self.purchase_environment

    @property
    def is_refund(self) -> bool:
        return self.type == "CANCELLATION" and self.cancel_reason == REFUND_REASON

    def app_user_ids(self) -> list[str]:
        """The ids that may name the customer, in resolution order, without repeats."""
        ids = [self.app_user_id, self.original_app_user_id, *(self.aliases or ())]
        return list(dict.fromkeys(i for i in ids if i))


class Webhook(_Open):
    api_version: str | None = None
    event: Event


def ms(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def parse(body: bytes | str) -> Webhook:
    """The webhook body, or AppError 400 ``invalid_event`` when it is not one (bad JSON
    within ``common.safejson``'s limits, no ``event`` object, a known field of the wrong
    type). Strings that text columns cannot hold are replaced (the header was verified:
    the event must still apply). The message names the failing fields only, never their
    values."""
    data = safejson.loads(body, strings="replace")
    try:
        return Webhook.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})[:5]
        raise AppError(f"not a RevenueCat event: invalid {', '.join(fields) or 'body'}",
                       code="invalid_event") from None


def summary(event: Event) -> dict[str, Any]:
    """What a log line may say about an event (no subscriber attributes, no prices)."""
    return {"event_id": event.id, "event_type": event.type, "environment": event.env,
            "store": event.store, "product_id": event.product_id}
