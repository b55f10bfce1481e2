"""Orders of web purchases (Stripe, Paymob): made by ``checkout``, moved by the two
payment webhooks and ``reconcile``.

An order is made by checkout before the provider is called, attached to the provider's
checkout (Paymob intention order id, Stripe session id) and then moved by the webhooks:

    created -> pending -> paid -> refunded        created|pending -> failed -> pending|paid

(the database refuses any other move: trigger ``orders_status_transition``, 0006). What
an order buys is delivered by ``pay`` exactly once: credits through ``common.ledger.grant``
with the reference ``order:<id>``, plans as ``entitlements`` rows (source ``stripe`` or
``paymob``) recomputed from the user's plan orders by ``entitlements.sync_from_orders``.
Refunds (``refund``) take back the credits in proportion to the amount refunded, as far
as the balance allows (``ledger.clawback``), and record any shortfall (``common.audit``).

Every function that writes takes the caller's connection: a webhook's inbox row, its
payment row (``common.payment_records``) and its effects commit together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from common import audit, db, entitlements, ledger
from common.errors import AccountDeleted, NotFound
from common.observability import logger

if TYPE_CHECKING:
    import psycopg

# --- Queries ---------------------------------------------------------------------------

_ORDER_COLUMNS = """
    o.id, o.user_id, o.product_id, o.provider, o.status, o.amount_minor, o.currency,
    o.provider_order_id, o.provider_checkout_id, o.failure_code, o.paid_at, o.refunded_minor,
    o.period_end, o.subscription_id, o.subscription_status, o.cancel_at_period_end, o.state_at,
    o.state_event_id, o.created_at, p.kind AS product_kind, p.name AS product_name, p.credits,
    p.entitlement_ids, p.period_days
"""

CREATE_ORDER = f"""
WITH o AS (
    INSERT INTO orders (user_id, product_id, provider, amount_minor, currency)
    VALUES (%(user_id)s, %(product_id)s, %(provider)s, %(amount_minor)s, %(currency)s)
    RETURNING *
)
SELECT {_ORDER_COLUMNS} FROM o JOIN products p ON p.id = o.product_id
"""

#: The provider's checkout exists: the order waits for its payment.
ATTACH_CHECKOUT = """
UPDATE orders SET provider_order_id = %(provider_order_id)s, provider_checkout_id = %(checkout_id)s,
                  status = 'pending', updated_at = now()
WHERE id = %(id)s AND status = 'created'
RETURNING id
"""

FAIL_ORDER = """
UPDATE orders SET status = 'failed', failure_code = %(code)s, updated_at = now()
WHERE id = %(id)s AND status IN ('created', 'pending')
RETURNING id
"""

MARK_PENDING = """
UPDATE orders SET status = 'pending', failure_code = NULL, updated_at = now()
WHERE id = %(id)s AND status IN ('created', 'failed')
RETURNING id
"""

#: Paid once: a second payment of the same order matches nothing.
MARK_PAID = """
UPDATE orders SET status = 'paid', paid_at = now(), failure_code = NULL, updated_at = now(),
                  period_end = coalesce(%(period_end)s, period_end)
WHERE id = %(id)s AND status IN ('created', 'pending', 'failed')
RETURNING id
"""

_SELECT_ORDER = f"SELECT {_ORDER_COLUMNS} FROM orders o JOIN products p ON p.id = o.product_id"
LOCK_BY_ID = f"{_SELECT_ORDER} WHERE o.id = %(id)s FOR UPDATE OF o"
LOCK_BY_PROVIDER_ORDER = (f"{_SELECT_ORDER} WHERE o.provider = %(provider)s"
                          " AND o.provider_order_id = %(ref)s FOR UPDATE OF o")
LOCK_BY_SUBSCRIPTION = (f"{_SELECT_ORDER} WHERE o.provider = %(provider)s"
                        " AND o.subscription_id = %(ref)s FOR UPDATE OF o")
GET_ORDER = f"{_SELECT_ORDER} WHERE o.id = %(id)s"
#: An order of a deleted account belongs to its pseudonym (migration 0012).
ORDER_ACCOUNT_DELETED = "SELECT deleted_at IS NOT NULL AS deleted FROM users WHERE id = %(user_id)s"

#: A plan bought once (Paymob) runs from now, or from the end of the user's current
#: period of the same entitlement when that is later (buying again extends).
NEXT_PERIOD_END = """
SELECT greatest(now(), coalesce(max(o.period_end), now())) + make_interval(days => %(days)s) AS period_end
FROM orders o JOIN products p ON p.id = o.product_id
WHERE o.user_id = %(user_id)s AND o.provider = %(provider)s AND o.status = 'paid'
  AND o.id <> %(id)s AND p.entitlement_ids && %(entitlement_ids)s
"""

SET_REFUNDED = """
UPDATE orders SET refunded_minor = %(total)s, updated_at = now(),
                  status = CASE WHEN %(total)s = amount_minor THEN 'refunded' ELSE status END
WHERE id = %(id)s
"""


# --- Types -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    id: uuid.UUID
    user_id: uuid.UUID
    product_id: str
    provider: str
    status: str  # created | pending | paid | failed | refunded
    amount_minor: int
    currency: str
    provider_order_id: str | None
    provider_checkout_id: str | None
    failure_code: str | None
    paid_at: datetime | None
    refunded_minor: int
    period_end: datetime | None
    subscription_id: str | None
    subscription_status: str | None
    cancel_at_period_end: bool
    state_at: datetime | None
    state_event_id: str | None
    created_at: datetime
    product_kind: str  # credit_pack | plan
    product_name: str
    credits: int
    entitlement_ids: list[str]
    period_days: int | None

    @property
    def is_plan(self) -> bool:
        return self.product_kind == "plan"

    @property
    def is_paid(self) -> bool:
        return self.status in ("paid", "refunded")


@dataclass(frozen=True)
class Refund:
    """What a refund did: the order's refunded total now, credits taken, and the part
    of the claw-back the balance could not cover."""

    refunded_minor: int
    taken: int
    shortfall: int


# --- Orders ----------------------------------------------------------------------------


def create_order(user_id: uuid.UUID, product_id: str, provider: str, amount_minor: int,
                 currency: str) -> Order:
    """A new order (status ``created``), committed before any provider is called, so a
    provider failure always has an order to mark failed."""
    params = {"user_id": user_id, "product_id": product_id, "provider": provider,
              "amount_minor": amount_minor, "currency": currency}
    with db.transaction() as conn:
        return Order(**db.one_row(db.execute_on(conn, CREATE_ORDER, params)))


def attach_checkout(order_id: uuid.UUID, *, provider_order_id: str, checkout_id: str) -> bool:
    """Store the provider's ids for the order and make it ``pending``."""
    params = {"id": order_id, "provider_order_id": provider_order_id, "checkout_id": checkout_id}
    with db.transaction() as conn:
        return db.execute_on(conn, ATTACH_CHECKOUT, params).fetchone() is not None


def fail_order(order_id: uuid.UUID, code: str, *, conn: psycopg.Connection[Any] | None = None) -> bool:
    """Mark a ``created`` or ``pending`` order failed; a paid order is left alone."""
    params = {"id": order_id, "code": code}
    if conn is not None:
        return db.execute_on(conn, FAIL_ORDER, params).fetchone() is not None
    with db.transaction() as c:
        return db.execute_on(c, FAIL_ORDER, params).fetchone() is not None


def mark_pending(conn: psycopg.Connection[Any], order: Order) -> bool:
    return db.execute_on(conn, MARK_PENDING, {"id": order.id}).fetchone() is not None


def get_order(order_id: uuid.UUID | str) -> Order:
    try:
        oid = order_id if isinstance(order_id, uuid.UUID) else uuid.UUID(str(order_id))
    except ValueError:
        raise NotFound("order not found") from None
    row = db.execute(GET_ORDER, {"id": oid}, idempotent=True).fetchone()
    if row is None:
        raise NotFound("order not found")
    return Order(**row)


def lock_order(conn: psycopg.Connection[Any], *, order_id: uuid.UUID | str | None = None,
               provider: str | None = None, provider_order_id: str | None = None,
               subscription_id: str | None = None) -> Order | None:
    """The order, locked for this transaction (webhooks serialise on it), found by our id,
    by the provider's order id, or by its Stripe subscription; None when there is none.
    The order of a deleted account raises AccountDeleted: the webhook parks the event."""
    if order_id is not None:
        try:
            oid = order_id if isinstance(order_id, uuid.UUID) else uuid.UUID(str(order_id))
        except ValueError:
            return None
        row = db.execute_on(conn, LOCK_BY_ID, {"id": oid}).fetchone()
    elif provider_order_id is not None:
        params = {"provider": provider, "ref": provider_order_id}
        row = db.execute_on(conn, LOCK_BY_PROVIDER_ORDER, params).fetchone()
    elif subscription_id is not None:
        params = {"provider": provider, "ref": subscription_id}
        row = db.execute_on(conn, LOCK_BY_SUBSCRIPTION, params).fetchone()
    else:
        raise ValueError("lock_order needs an order id, a provider order id or a subscription id")
    if row is None:
        return None
    if db.one_row(db.execute_on(conn, ORDER_ACCOUNT_DELETED, {"user_id": row["user_id"]}))["deleted"]:
        raise AccountDeleted("the order's account has been deleted")
    return Order(**row)


def reload(conn: psycopg.Connection[Any], order: Order) -> Order:
    return Order(**db.one_row(db.execute_on(conn, LOCK_BY_ID, {"id": order.id})))


def next_period_end(conn: psycopg.Connection[Any], order: Order) -> datetime:
    """End of the period a one-off plan purchase buys (see NEXT_PERIOD_END)."""
    params = {"days": order.period_days or 0, "user_id": order.user_id, "provider": order.provider,
              "id": order.id, "entitlement_ids": order.entitlement_ids}
    end: datetime = db.one_row(db.execute_on(conn, NEXT_PERIOD_END, params))["period_end"]
    return end


def pay(conn: psycopg.Connection[Any], order: Order, *, event_id: str, at: datetime | None = None,
        period_end: datetime | None = None) -> bool:
    """Mark the order paid and deliver it, once: False (and nothing done) if it was
    already paid. Credits go through the ledger under ``order:<id>``; a plan's
    entitlements are recomputed (``period_end`` sets its access end)."""
    if db.execute_on(conn, MARK_PAID, {"id": order.id, "period_end": period_end}).fetchone() is None:
        return False
    if order.credits > 0:
        ledger.grant(order.user_id, order.credits, reason=f"purchase {order.product_id}",
                     source=order.provider, ref=f"order:{order.id}", conn=conn)
    if order.is_plan:
        entitlements.sync_from_orders(conn, order.user_id, order.provider, event_id=event_id, at=at)
    logger.info("order paid", extra={"order_id": str(order.id), "provider": order.provider,
                                     "product_id": order.product_id})
    return True


def refund(conn: psycopg.Connection[Any], order: Order, total_refunded_minor: int, *, ref: str,
           event_id: str, at: datetime | None = None) -> Refund | None:
    """Bring the order's refunded amount up to ``total_refunded_minor`` (capped at the
    order's amount; totals only grow, so a late or repeated refund event does nothing) and
    take back the credits in proportion, as far as the balance allows; the rest is the
    clawback's recorded shortfall. A full refund makes the order ``refunded`` and, for a
    plan, ends its access. ``ref`` names the clawback in the ledger (once per ref).
    None when nothing changed (not paid, or not more than already refunded)."""
    total = min(max(total_refunded_minor, 0), order.amount_minor)
    if not order.is_paid or total <= order.refunded_minor:
        return None
    claw = _credits_for(order, total) - _credits_for(order, order.refunded_minor)
    taken = shortfall = 0
    if claw > 0:
        taken, shortfall = ledger.clawback(order.user_id, claw, reason=f"refund {order.product_id}",
                                           source=order.provider, ref=ref, conn=conn)
    db.execute_on(conn, SET_REFUNDED, {"id": order.id, "total": total})
    if shortfall:
        audit.record(conn, order.provider, "refund_shortfall", order.id,
              {"credits": claw, "taken": taken, "shortfall": shortfall, "event_id": event_id})
        logger.warning("refund shortfall", extra={"order_id": str(order.id), "shortfall": shortfall})
    if order.is_plan:
        entitlements.sync_from_orders(conn, order.user_id, order.provider, event_id=event_id, at=at)
    return Refund(total, taken, shortfall)


def _credits_for(order: Order, minor: int) -> int:
    """Credits matching ``minor`` of the order's price, rounded up (a full refund is
    exactly the credits bought)."""
    if order.credits <= 0 or order.amount_minor <= 0:
        return 0
    return -(-order.credits * minor // order.amount_minor)

