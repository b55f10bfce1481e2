"""A Paymob transaction callback's ``obj``, typed strictly: a value of the wrong JSON type
is refused (422), never coerced. The HMAC covers 20 fields (``common.signing``); the
others, marked unsigned below, are only hints."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OrderRef(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    id: int = Field(gt=0)


class Transaction(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    # Signed.
    id: int = Field(gt=0)
    amount_cents: int = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    created_at: str
    success: bool
    pending: bool
    is_refunded: bool
    is_voided: bool
    is_auth: bool
    is_capture: bool
    has_parent_transaction: bool
    order: OrderRef | int
    # Signed, and bound to our account (``callbacks.binding``): without the binding, digits
    # moved between ``id`` and ``integration_id`` (or ``order.id`` and ``owner``), which sit
    # side by side in the separator-less signed string, would keep the HMAC valid.
    integration_id: int | None = None
    owner: int | None = None
    # Unsigned: which kind of child transaction this is, and its parent.
    is_refund: bool = False
    is_void: bool = False
    parent_transaction: int | None = None

    @property
    def order_id(self) -> int:
        return self.order.id if isinstance(self.order, OrderRef) else self.order

    @property
    def state(self) -> str:
        """The transaction's state by its signed flags; with ``id`` it keys the inbox, so
        each state of one transaction (pending, then paid, then refunded) counts once."""
        if self.is_voided:
            return "voided"
        if self.is_refunded:
            return "refunded"
        if self.pending:
            return "pending"
        return "success" if self.success else "declined"
