"""What a verified Paymob transaction callback does to our orders.

Only signed fields decide, and only when they are bound to our account: the signed
string has no separators, so a signed callback with digits moved from ``id`` to
``integration_id`` (or from ``order.id`` to ``owner``) still verifies. The integration id
must be one of ``PAYMOB_INTEGRATION_IDS`` (the numeric ones) and, where
``PAYMOB_MERCHANT_ID`` is set, ``owner`` must equal it; a callback that fails either is
``rejected``: no effect, an audit row, the metric ``PaymobCallbacksRejected``. Then the
order is found by the signed ``order.id`` (the intention order id checkout stored),
never by the unsigned ``merchant_order_id``; the signed ``amount_cents`` and
``currency`` must equal the order's. The unsigned ``is_refund`` /
``is_void`` only tell a refund child apart from another child (``has_parent_transaction``
is signed). Each state of a transaction is one inbox event (``<id>:<state>``), applied in
the same transaction as its effects.

- unknown order: payment recorded ``unmatched``.
- success, not pending, amounts match, order open: order paid, credits / plan delivered once.
- success, amounts differ: payment ``mismatch``, audit row, nothing given.
- success, order already paid: payment ``duplicate``, audit row (a double payment to refund).
- pending: payment ``pending``, order pending. Declined: order failed (unless paid).
- refund/void child, successful: credits taken back in proportion, shortfall recorded.
- parent flagged ``is_refunded`` / ``is_voided``: the rest of the order refunded, if this
  transaction paid it and no child refund was applied already.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from common import audit, config, orders, payment_records, webhooks
from common.errors import Misconfigured
from common.observability import logger, metrics
from common.providers.paymob_models import Transaction
from common.webhooks import Outcome

if TYPE_CHECKING:
    import psycopg

PROVIDER = "paymob"
EVENT_TYPE = "TRANSACTION"


def process(txn: Transaction, callback: dict[str, Any], *, headers: Any, raw: str | bytes) -> str:
    """Apply one verified callback exactly once; the answer's ``status``."""
    key = f"{txn.id}:{txn.state}"
    outcome = webhooks.deliver(PROVIDER, key, event_type=EVENT_TYPE, headers=headers, raw=raw,
                               apply=lambda conn: apply(conn, txn, callback, event_id=key))
    return outcome.status


def binding(txn: Transaction) -> str | None:
    """Why a signed transaction is not one of ours, or None when it is."""
    settings = config.settings()
    integrations = settings.paymob_integration_ids()
    if not integrations:
        # Our outage, loud but lossless: 503 with Retry-After, the callback kept as failed
        # (body and all) for a redelivery or reconcile to apply once the setting is fixed.
        logger.error("PAYMOB_INTEGRATION_IDS names no numeric integration id: paymob callbacks "
                     "are kept, not applied, until it does", extra={"setting": "PAYMOB_INTEGRATION_IDS"})
        raise Misconfigured("PAYMOB_INTEGRATION_IDS")
    if txn.integration_id not in integrations:
        return "integration_id not ours"
    if settings.PAYMOB_MERCHANT_ID and txn.owner != int(settings.PAYMOB_MERCHANT_ID):
        return "owner not our merchant"
    return None


def reject(conn: psycopg.Connection[Any], txn: Transaction, reason: str, *, event_id: str) -> Outcome:
    """A signed callback that fails a binding: no effect, kept as ``rejected``, audited."""
    audit.record(conn, PROVIDER, "callback_rejected", None, {
        "event_id": event_id, "reason": reason, "transaction_id": txn.id, "order_id": txn.order_id,
        "integration_id": txn.integration_id, "owner": txn.owner})
    metrics.add_metric(name="PaymobCallbacksRejected", unit=MetricUnit.Count, value=1)
    logger.warning("paymob callback rejected", extra={"reason": reason, "transaction_id": txn.id})
    return Outcome("rejected", "rejected", reason)


def apply(conn: psycopg.Connection[Any], txn: Transaction, callback: dict[str, Any], *,
          event_id: str) -> Outcome:
    """What a verified transaction does (the webhook's callback, or reconcile's inquiry)."""
    if reason := binding(txn):
        return reject(conn, txn, reason, event_id=event_id)
    order = orders.lock_order(conn, provider=PROVIDER, provider_order_id=str(txn.order_id))

    def record(status: str, *, kind: str = "payment", note: str | None = None) -> None:
        payment_records.record(
            conn, provider=PROVIDER, transaction_id=str(txn.id), order_id=order.id if order else None,
            status=status, amount_minor=txn.amount_cents, currency=txn.currency, raw=callback, kind=kind,
            parent_transaction_id=None if txn.parent_transaction is None else str(txn.parent_transaction),
            note=note)

    if order is None:
        record("unmatched")
        logger.warning("paymob callback for an unknown order", extra={"paymob_order_id": txn.order_id})
        return Outcome.unmatched("unknown order")

    if txn.has_parent_transaction and (txn.is_refund or txn.is_void):
        return _refund_child(conn, txn, order, record, event_id)
    if txn.is_refunded or txn.is_voided:
        return _refunded_parent(conn, txn, order, record, event_id)
    if txn.has_parent_transaction:
        record("ignored", note="child transaction")
        return Outcome.ignored("child transaction")
    if txn.pending:
        record("pending")
        orders.mark_pending(conn, order)
        return Outcome("pending")
    if not txn.success:
        record("declined")
        orders.fail_order(order.id, "declined", conn=conn)
        return Outcome("declined")
    if (txn.amount_cents, txn.currency) != (order.amount_minor, order.currency):
        record("mismatch", note="amount_mismatch")
        audit.record(conn, PROVIDER, "amount_mismatch", order.id, {
            "transaction_id": txn.id, "expected": [order.amount_minor, order.currency],
            "received": [txn.amount_cents, txn.currency]})
        logger.warning("paymob amount mismatch", extra={"order_id": str(order.id), "transaction_id": txn.id})
        return Outcome.ignored("amount_mismatch", status="mismatch")
    if order.is_paid:
        record("duplicate", note="order already paid")
        audit.record(conn, PROVIDER, "double_payment", order.id, {"transaction_id": txn.id})
        logger.warning("paymob order paid twice", extra={"order_id": str(order.id), "transaction_id": txn.id})
        return Outcome("duplicate_payment")
    record("paid")
    period_end = orders.next_period_end(conn, order) if order.is_plan else None
    orders.pay(conn, order, event_id=event_id, period_end=period_end)
    return Outcome("paid")


def _refund_child(conn: psycopg.Connection[Any], txn: Transaction, order: orders.Order,
                  record: Callable[..., None], event_id: str) -> Outcome:
    """A refund or void transaction of its own: its signed amount is what went back."""
    status = "voided" if txn.is_void else "refunded"
    if not txn.success or txn.pending:
        record("declined", kind="refund")
        return Outcome.ignored("refund not successful")
    if txn.currency != order.currency:
        record("mismatch", kind="refund", note="currency_mismatch")
        return Outcome.ignored("currency_mismatch", status="mismatch")
    record(status, kind="refund")
    total = order.amount_minor if txn.is_void else order.refunded_minor + txn.amount_cents
    result = orders.refund(conn, order, total, ref=f"refund:{txn.id}", event_id=event_id)
    if result is None:
        return Outcome.ignored("nothing to refund")
    return Outcome(status)


def _refunded_parent(conn: psycopg.Connection[Any], txn: Transaction, order: orders.Order,
                     record: Callable[..., None],
                     event_id: str) -> Outcome:
    """The paying transaction again, now flagged refunded/voided (signed). Its refunded
    amount is not signed: a refund already applied from its child stands for it;
    otherwise the order is refunded in full."""
    status = "voided" if txn.is_voided else "refunded"
    before = payment_records.get(conn, PROVIDER, str(txn.id))
    record(status)
    if before is None or before["status"] not in ("paid", "refunded", "voided"):
        return Outcome.ignored("transaction did not pay the order")
    if order.refunded_minor > 0:
        return Outcome.ignored("refund already applied")
    result = orders.refund(conn, order, order.amount_minor, ref=f"refund:{txn.id}", event_id=event_id)
    if result is None:
        return Outcome.ignored("nothing to refund")
    return Outcome(status)
