"""Entitlements: what a user may use now, their own or shared by their pair.

An entitlement row (per user, entitlement id and source: RevenueCat, Stripe, Paymob) is
written by the payment webhooks: RevenueCat's by its events
(``common.providers.revenuecat_apply``), the web ones recomputed from the user's orders
(``sync_from_orders``, called by ``common.orders``). Both questions are answered by
the database (migration 0005): the view ``active_entitlements`` and the SQL function
``has_entitlement(user_id, entitlement_id)``, so a report or another language can ask
the same thing the same way.

- Active means ``active`` (not revoked: refunded, expired, transferred away) and
  ``expires_at`` NULL (no expiry) or in the future, by the database clock.
- Couples: a member of a pair may use every active entitlement of the other member
  (``owner = 'pair'``), besides their own (``owner = 'self'``).

Usage (analyze-entry, for example)::

    if not entitlements.has_entitlement(user.user_id, "premium"):
        raise PaymentRequired("this needs Premium")
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from common import db
from common.ids import as_uuid

if TYPE_CHECKING:
    import psycopg

#: Stripe subscription statuses that give access until the period end.
ACCESS_STATUSES = ("active", "trialing", "past_due")

# --- Queries ---------------------------------------------------------------------------

HAS_ENTITLEMENT = "SELECT has_entitlement(%(user_id)s, %(entitlement_id)s) AS ok"

#: One row per (entitlement, source, owner): a user holding "premium" whose partner also
#: holds it sees two rows. The latest expiry first within an entitlement.
ACTIVE_ENTITLEMENTS = """
SELECT entitlement_id, source, expires_at, owner
FROM active_entitlements
WHERE user_id = %(user_id)s
ORDER BY entitlement_id, owner DESC, expires_at DESC NULLS FIRST, source
"""

#: The user's entitlements from one provider, recomputed from all their plan orders
#: there: active while some paid order grants it (its subscription, if any, in an access
#: status) until the latest period end. Recomputing, rather than patching, keeps two
#: plans of one user right whatever order their events arrive in. ``expires_at`` is never
#: NULL here (NULL means "no expiry"). The last event is the one whose subscription state
#: the orders hold (the latest by time, then id), else the calling event: like the rest of
#: the row, recomputed, so the same in any arrival order.
SYNC_FROM_ORDERS = """
WITH plan_orders AS (
    SELECT o.user_id, e.entitlement_id, o.product_id, o.period_end, o.state_at, o.state_event_id,
           o.status = 'paid' AND coalesce(o.subscription_status, 'active') = ANY(%(access)s) AS grants,
           o.subscription_id IS NOT NULL AND NOT o.cancel_at_period_end AS renews
    FROM orders o
    JOIN products p ON p.id = o.product_id
    CROSS JOIN LATERAL unnest(p.entitlement_ids) AS e(entitlement_id)
    WHERE o.user_id = %(user_id)s AND o.provider = %(provider)s AND p.kind = 'plan'
      AND o.status IN ('paid', 'refunded') AND o.period_end IS NOT NULL
), per_entitlement AS (
    SELECT user_id, entitlement_id,
           bool_or(grants) AS active,
           coalesce(max(period_end) FILTER (WHERE grants), max(period_end)) AS expires_at,
           bool_or(grants AND renews) AS will_renew,
           (array_agg(product_id ORDER BY grants DESC, period_end DESC))[1] AS product_id,
           max(state_at) AS state_at,
           (array_agg(state_event_id ORDER BY state_at DESC NULLS LAST, state_event_id DESC))[1]
               AS state_event_id
    FROM plan_orders GROUP BY user_id, entitlement_id
)
INSERT INTO entitlements AS ent (user_id, entitlement_id, source, expires_at, active, will_renew,
                                 store, environment, product_id, last_event_at, last_event_id, updated_at)
SELECT user_id, entitlement_id, %(provider)s, expires_at, active, will_renew,
       'web', %(environment)s, product_id, coalesce(state_at, %(at)s, now()),
       CASE WHEN state_at IS NULL THEN %(event_id)s ELSE state_event_id END, now()
FROM per_entitlement
ON CONFLICT (user_id, entitlement_id, source) DO UPDATE SET
    expires_at = EXCLUDED.expires_at, active = EXCLUDED.active, will_renew = EXCLUDED.will_renew,
    store = EXCLUDED.store, environment = EXCLUDED.environment, product_id = EXCLUDED.product_id,
    last_event_at = EXCLUDED.last_event_at, last_event_id = EXCLUDED.last_event_id, updated_at = now()
"""


# --- API -------------------------------------------------------------------------------


def has_entitlement(user_id: uuid.UUID | str, entitlement_id: str, *,
                    conn: psycopg.Connection[Any] | None = None) -> bool:
    """True when the user, or the other member of their pair, has ``entitlement_id``
    active now. An unknown user simply has nothing (False); a malformed id is
    InvalidInput. ``conn`` runs the query in the caller's transaction."""
    params = {"user_id": as_uuid(user_id), "entitlement_id": entitlement_id}
    return bool(db.one_row(_query(HAS_ENTITLEMENT, params, conn))["ok"])


def active_entitlements(user_id: uuid.UUID | str, *,
                        conn: psycopg.Connection[Any] | None = None) -> list[dict[str, Any]]:
    """The user's usable entitlements now: dicts with ``entitlement_id``, ``source``,
    ``expires_at`` (None = no expiry) and ``owner`` ('self' or 'pair')."""
    return _query(ACTIVE_ENTITLEMENTS, {"user_id": as_uuid(user_id)}, conn).fetchall()


def sync_from_orders(conn: psycopg.Connection[Any], user_id: uuid.UUID, provider: str, *,
                     event_id: str | None = None, at: datetime | None = None) -> None:
    """Recompute the user's entitlements from ``provider`` (Stripe, Paymob) from their plan
    orders, in the caller's transaction (see SYNC_FROM_ORDERS)."""
    from common.config import settings

    params = {"user_id": user_id, "provider": provider, "access": list(ACCESS_STATUSES),
              "event_id": event_id, "at": at, "environment": settings().STAGE}
    db.execute_on(conn, SYNC_FROM_ORDERS, params)


# --- Helpers ---------------------------------------------------------------------------


def _query(sql: str, params: dict[str, Any],
           conn: psycopg.Connection[Any] | None) -> psycopg.Cursor[dict[str, Any]]:
    if conn is None:
        return db.execute(sql, params, idempotent=True)
    return db.execute_on(conn, sql, params)
