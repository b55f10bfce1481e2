"""What a verified Stripe event does to our orders, exactly once (inbox key: ``event.id``).

Every field of a Stripe event is signed, so the order is found by our own metadata
(``metadata.order_id``, set by checkout on the session and on the subscription or
payment intent it creates) or by the subscription / payment intent already stored, and
the session's ``client_reference_id`` must be the order's user. Amount and currency
must equal the order's before anything is delivered.

- ``checkout.session.completed`` / ``.async_payment_succeeded``: paid (``payment_status``
  ``paid``) -> order paid, credits granted or plan started; ``unpaid`` -> pending.
- ``checkout.session.async_payment_failed`` / ``.expired`` -> order failed.
- ``invoice.paid``: the first invoice pays a plan order (it may come before the session
  event); every paid invoice moves the period end forward.
- ``invoice.payment_failed``: a renewal's makes the subscription past due (access until
  the period end); the first invoice's, incomplete.
- ``customer.subscription.updated`` / ``.deleted``: status, period end, cancel flag,
  never backwards; a deletion is final (``subscriptions``).
- ``charge.refunded``: credits taken back in proportion to the refunded total, as far as
  the balance allows; a fully refunded plan charge ends that plan's access.
- anything else: recorded, ``ignored``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from common import audit, entitlements, orders, payment_records, webhooks
from common.observability import logger
from common.providers import stripe_subscriptions as subscriptions
from common.providers.stripe_models import OBJECTS, Charge, Event, Invoice, Session, Subscription
from common.providers.stripe_subscriptions import Observation
from common.webhooks import Outcome

if TYPE_CHECKING:
    import psycopg

PROVIDER = "stripe"


def parse(event: dict[str, Any]) -> tuple[Event, Any]:
    """The typed event and its typed object (None for types not handled); raises
    pydantic's ValidationError."""
    ev = Event.model_validate(event)
    model = OBJECTS.get(ev.type)
    return ev, (model.model_validate(ev.data.object) if model else None)


def process(ev: Event, obj: Any, event: dict[str, Any], *, headers: Any, raw: bytes) -> str:
    """Apply one verified event exactly once; the answer's ``status``."""
    def apply(conn: psycopg.Connection[Any]) -> Outcome:
        handler = HANDLERS.get(ev.type)
        return handler(conn, ev, obj, event) if handler else Outcome.ignored("event type not handled")

    return webhooks.deliver(PROVIDER, ev.id, event_type=ev.type, headers=headers, raw=raw, apply=apply).status


# --- checkout sessions -----------------------------------------------------------------


def session_completed(conn: psycopg.Connection[Any], ev: Event, session: Session,
                      event: dict[str, Any]) -> Outcome:
    order = _session_order(conn, session)
    if order is None:
        return _unmatched(conn, session.id, session.amount_total, session.currency, event)
    record = _recorder(conn, order, session.id, session.amount_total, session.currency, event,
                       payment_intent_id=session.payment_intent)
    if session.payment_status not in ("paid", "no_payment_required"):
        record("pending")
        orders.mark_pending(conn, order)
        return Outcome("pending")
    if (session.amount_total, (session.currency or "").upper()) != (order.amount_minor, order.currency):
        return _mismatch(conn, order, record, ev, session.amount_total, session.currency)
    record("paid")
    if session.subscription:
        # The period comes with invoice.paid; when that has not arrived yet, ask the API.
        fetched = subscriptions.fetch(session.subscription) if order.period_end is None else None
        seen = Observation.of(fetched, ev.at) if fetched else Observation("active", ev.at)
        subscriptions.observe(conn, order, session.subscription, seen, event_id=ev.id)
        order = orders.reload(conn, order)
    if not orders.pay(conn, order, event_id=ev.id, at=ev.at):
        if order.is_plan:
            entitlements.sync_from_orders(conn, order.user_id, PROVIDER, event_id=ev.id, at=ev.at)
        return Outcome("already_paid")
    return Outcome("paid")


def session_failed(conn: psycopg.Connection[Any], ev: Event, session: Session,
                   event: dict[str, Any]) -> Outcome:
    order = _session_order(conn, session)
    if order is None:
        return _unmatched(conn, session.id, session.amount_total, session.currency, event)
    if ev.type.endswith("async_payment_failed"):
        _recorder(conn, order, session.id, session.amount_total, session.currency, event,
                  payment_intent_id=session.payment_intent)("declined")
        code = "declined"
    else:
        code = "expired"
    failed = orders.fail_order(order.id, code, conn=conn)
    return Outcome(code) if failed else Outcome.ignored("order no longer open")


def _session_order(conn: psycopg.Connection[Any], session: Session) -> orders.Order | None:
    order_id = session.metadata.get("order_id")
    order = orders.lock_order(conn, order_id=order_id) if order_id else None
    if order is None or order.provider != PROVIDER:
        return None
    if session.client_reference_id not in (None, str(order.user_id)) \
            or order.provider_order_id not in (None, session.id):
        logger.warning("stripe session does not match its order", extra={"order_id": str(order.id)})
        return None
    return order


# --- invoices and subscriptions ----------------------------------------------------------


def invoice_paid(conn: psycopg.Connection[Any], ev: Event, invoice: Invoice,
                 event: dict[str, Any]) -> Outcome:
    order = _subscription_order(conn, invoice.subscription_id, invoice.metadata)
    if order is None:
        return _unmatched(conn, invoice.id, invoice.amount_paid, invoice.currency, event)
    record = _recorder(conn, order, invoice.id, invoice.amount_paid, invoice.currency, event,
                       payment_intent_id=invoice.intent)
    first = not order.is_paid
    if first and (invoice.amount_paid, invoice.currency.upper()) != (order.amount_minor, order.currency):
        return _mismatch(conn, order, record, ev, invoice.amount_paid, invoice.currency)
    record("paid")
    seen = Observation("active", ev.at, subscriptions.time_of(invoice.period_end))
    subscriptions.observe(conn, order, invoice.subscription_id, seen, event_id=ev.id)
    order = orders.reload(conn, order)
    if first and order.status != "refunded" and orders.pay(conn, order, event_id=ev.id, at=ev.at):
        return Outcome("paid")
    entitlements.sync_from_orders(conn, order.user_id, PROVIDER, event_id=ev.id, at=ev.at)
    return Outcome("renewed")


def invoice_failed(conn: psycopg.Connection[Any], ev: Event, invoice: Invoice,
                   event: dict[str, Any]) -> Outcome:
    order = _subscription_order(conn, invoice.subscription_id, invoice.metadata)
    if order is None:
        return _unmatched(conn, invoice.id, invoice.amount_paid, invoice.currency, event)
    _recorder(conn, order, invoice.id, invoice.amount_paid, invoice.currency, event,
              payment_intent_id=invoice.intent)("declined")
    # The first invoice failing leaves the subscription incomplete; a renewal's, past due.
    # Its billing reason says which, whatever arrived before it.
    first = invoice.billing_reason == "subscription_create" if invoice.billing_reason else not order.is_paid
    status = "incomplete" if first else "past_due"
    subscriptions.observe(conn, order, invoice.subscription_id, Observation(status, ev.at), event_id=ev.id)
    entitlements.sync_from_orders(conn, order.user_id, PROVIDER, event_id=ev.id, at=ev.at)
    return Outcome("payment_failed")


def subscription_changed(conn: psycopg.Connection[Any], ev: Event, sub: Subscription,
                         event: dict[str, Any]) -> Outcome:
    order = _subscription_order(conn, sub.id, sub.metadata)
    if order is None:
        return Outcome.unmatched("unknown subscription")
    status = "canceled" if ev.type.endswith(".deleted") else sub.status
    seen = Observation.of(sub, ev.at, status)
    verdict = subscriptions.observe(conn, order, sub.id, seen, event_id=ev.id)
    entitlements.sync_from_orders(conn, order.user_id, PROVIDER, event_id=ev.id, at=ev.at)
    return Outcome("updated" if verdict == "apply" else "stale")


def _subscription_order(conn: psycopg.Connection[Any], subscription_id: str | None,
                        metadata: dict[str, str]) -> orders.Order | None:
    order = None
    if subscription_id:
        order = orders.lock_order(conn, provider=PROVIDER, subscription_id=subscription_id)
    if order is None and metadata.get("order_id"):
        order = orders.lock_order(conn, order_id=metadata["order_id"])
        if order is not None and (order.provider != PROVIDER or not order.is_plan
                                  or order.subscription_id not in (None, subscription_id)):
            logger.warning("stripe subscription does not match its order", extra={"order_id": str(order.id)})
            return None
    return order


# --- refunds ---------------------------------------------------------------------------------


def charge_refunded(conn: psycopg.Connection[Any], ev: Event, charge: Charge,
                    event: dict[str, Any]) -> Outcome:
    intent = charge.payment_intent
    paid = payment_records.by_intent(conn, PROVIDER, intent) if intent else None
    order_id = paid["order_id"] if paid else charge.metadata.get("order_id")
    order = orders.lock_order(conn, order_id=order_id) if order_id else None
    if order is None or order.provider != PROVIDER:
        return _unmatched(conn, charge.id, charge.amount_refunded, charge.currency, event, kind="refund")
    record = _recorder(conn, order, charge.id, charge.amount_refunded, charge.currency, event,
                       payment_intent_id=charge.payment_intent, kind="refund",
                       parent=paid["provider_transaction_id"] if paid else None)
    if charge.currency.upper() != order.currency:
        return _mismatch(conn, order, record, ev, charge.amount_refunded, charge.currency)
    record("refunded")
    # A plan's charges are its periods: a fully refunded one ends the plan's access.
    total = (order.amount_minor if charge.refunded else 0) if order.is_plan else charge.amount_refunded
    result = orders.refund(conn, order, total, ref=f"refund:{charge.id}:{charge.amount_refunded}",
                             event_id=ev.id, at=ev.at)
    if result is None:
        return Outcome.ignored("nothing to refund")
    return Outcome("refunded")


# --- helpers ---------------------------------------------------------------------------------


def _recorder(conn: psycopg.Connection[Any], order: orders.Order, transaction_id: str, amount: int | None,
              currency: str | None, event: dict[str, Any], *, payment_intent_id: str | None,
              kind: str = "payment", parent: str | None = None) -> Callable[..., None]:
    def record(status: str, note: str | None = None) -> None:
        payment_records.record(conn, provider=PROVIDER, transaction_id=transaction_id, order_id=order.id,
                                status=status, amount_minor=amount or 0,
                                currency=(currency or order.currency).upper(), raw=event, kind=kind,
                                payment_intent_id=payment_intent_id, parent_transaction_id=parent, note=note)
    return record


def _unmatched(conn: psycopg.Connection[Any], transaction_id: str, amount: int | None, currency: str | None,
               event: dict[str, Any], *, kind: str = "payment") -> Outcome:
    payment_records.record(conn, provider=PROVIDER, transaction_id=transaction_id, order_id=None,
                            status="unmatched", amount_minor=amount or 0, currency=(currency or "").upper(),
                            raw=event, kind=kind)
    logger.warning("stripe event for an unknown order", extra={"transaction_id": transaction_id})
    return Outcome.unmatched("unknown order")


def _mismatch(conn: psycopg.Connection[Any], order: orders.Order, record: Callable[..., None], ev: Event,
              amount: int | None, currency: str | None) -> Outcome:
    record("mismatch", note="amount_mismatch")
    audit.record(conn, PROVIDER, "amount_mismatch", order.id, {
        "event_id": ev.id, "expected": [order.amount_minor, order.currency],
        "received": [amount, (currency or "").upper()]})
    logger.warning("stripe amount mismatch", extra={"order_id": str(order.id), "event_id": ev.id})
    return Outcome.ignored("amount_mismatch", status="mismatch")


HANDLERS: dict[str, Callable[[Any, Event, Any, dict[str, Any]], Outcome]] = {
    "checkout.session.completed": session_completed,
    "checkout.session.async_payment_succeeded": session_completed,
    "checkout.session.async_payment_failed": session_failed,
    "checkout.session.expired": session_failed,
    "invoice.paid": invoice_paid,
    "invoice.payment_failed": invoice_failed,
    "customer.subscription.updated": subscription_changed,
    "customer.subscription.deleted": subscription_changed,
    "charge.refunded": charge_refunded,
}
