"""Payment records: one row per provider transaction (table ``payments``), with the
provider's full callback kept for audit. Written by the payment webhooks (and
``reconcile``, through the same apply code) in the transaction that applies the event.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from common import db

if TYPE_CHECKING:
    import psycopg

# --- Queries ---------------------------------------------------------------------------

#: One row per provider transaction; a later state of the same transaction (pending ->
#: paid, paid -> refunded) updates it and keeps the latest callback. A settled state is
#: never replaced by an open one (a late ``pending`` or a failed attempt of an invoice
#: that was then paid), so the row ends the same in any arrival order.
RECORD_PAYMENT = """
INSERT INTO payments AS pay (order_id, provider, provider_transaction_id, status, amount_minor, currency,
                             raw, kind, payment_intent_id, parent_transaction_id, note)
VALUES (%(order_id)s, %(provider)s, %(transaction_id)s, %(status)s, %(amount_minor)s, %(currency)s,
        %(raw)s, %(kind)s, %(payment_intent_id)s, %(parent_transaction_id)s, %(note)s)
ON CONFLICT (provider, provider_transaction_id) DO UPDATE SET
    order_id = coalesce(EXCLUDED.order_id, pay.order_id),
    status = EXCLUDED.status, amount_minor = EXCLUDED.amount_minor, currency = EXCLUDED.currency,
    raw = EXCLUDED.raw, kind = EXCLUDED.kind,
    payment_intent_id = coalesce(EXCLUDED.payment_intent_id, pay.payment_intent_id),
    parent_transaction_id = coalesce(EXCLUDED.parent_transaction_id, pay.parent_transaction_id),
    note = EXCLUDED.note, updated_at = now()
WHERE NOT (pay.status IN ('paid', 'refunded', 'voided') AND EXCLUDED.status IN ('pending', 'declined'))
"""

PAYMENT = """
SELECT order_id, provider_transaction_id, status, kind, amount_minor, currency, payment_intent_id
FROM payments WHERE provider = %(provider)s AND provider_transaction_id = %(transaction_id)s
"""

PAYMENT_BY_INTENT = """
SELECT order_id, provider_transaction_id, status, kind, amount_minor, currency, payment_intent_id
FROM payments WHERE provider = %(provider)s AND payment_intent_id = %(payment_intent_id)s
ORDER BY created_at LIMIT 1
"""


# --- API -------------------------------------------------------------------------------


def record(conn: psycopg.Connection[Any], *, provider: str, transaction_id: str,
           order_id: uuid.UUID | None, status: str, amount_minor: int, currency: str,
           raw: Any, kind: str = "payment", payment_intent_id: str | None = None,
           parent_transaction_id: str | None = None, note: str | None = None) -> None:
    """Store a provider transaction with its full callback (``raw``) for audit."""
    from psycopg.types.json import Jsonb

    params = {"order_id": order_id, "provider": provider, "transaction_id": str(transaction_id),
              "status": status, "amount_minor": amount_minor, "currency": currency, "raw": Jsonb(raw),
              "kind": kind, "payment_intent_id": payment_intent_id,
              "parent_transaction_id": parent_transaction_id, "note": note}
    db.execute_on(conn, RECORD_PAYMENT, params)


def get(conn: psycopg.Connection[Any], provider: str, transaction_id: str) -> dict[str, Any] | None:
    """The stored transaction (order, status, kind, amount), or None."""
    params = {"provider": provider, "transaction_id": str(transaction_id)}
    return db.execute_on(conn, PAYMENT, params).fetchone()


def by_intent(conn: psycopg.Connection[Any], provider: str, payment_intent_id: str) -> dict[str, Any] | None:
    """The first transaction stored for a Stripe payment intent, or None."""
    params = {"provider": provider, "payment_intent_id": payment_intent_id}
    return db.execute_on(conn, PAYMENT_BY_INTENT, params).fetchone()

