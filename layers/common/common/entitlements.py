"""Entitlements: what a user may use now, their own or shared by their pair.

An entitlement row (per user, entitlement id and source: RevenueCat, Stripe, Paymob) is
written by the payment webhooks; this module only reads. Both questions are answered by
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
from typing import TYPE_CHECKING, Any

from common import db
from common.ids import as_uuid

if TYPE_CHECKING:
    import psycopg

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


# --- Helpers ---------------------------------------------------------------------------


def _query(sql: str, params: dict[str, Any],
           conn: psycopg.Connection[Any] | None) -> psycopg.Cursor[dict[str, Any]]:
    if conn is None:
        return db.execute(sql, params, idempotent=True)
    return db.execute_on(conn, sql, params)
