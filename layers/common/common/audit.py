"""The audit log: what a provider sent that needed a person's eye (an amount mismatch, a
double payment, a refund the balance could not cover, a callback that failed a binding),
written in the caller's transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common import db

if TYPE_CHECKING:
    import psycopg

AUDIT = """
INSERT INTO audit_log (actor, action, subject, details)
VALUES (%(actor)s, %(action)s, %(subject)s, %(details)s)
"""


def record(conn: psycopg.Connection[Any], actor: str, action: str, subject: Any,
           details: dict[str, Any]) -> None:
    """One audit row: ``actor`` the provider, ``subject`` usually the order id (None: none)."""
    from psycopg.types.json import Jsonb

    db.execute_on(conn, AUDIT, {"actor": actor, "action": action,
                                "subject": None if subject is None else str(subject),
                                "details": Jsonb(details)})
