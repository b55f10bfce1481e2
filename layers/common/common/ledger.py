"""The credits ledger: every change of a balance is one ``credit_ledger`` row.

Invariants (the database enforces the first two, the tests prove the third):

- ``users.credits >= 0`` (CHECK): no code path can overdraw, however it races.
- ``UNIQUE (source, ref)`` on the ledger: a grant, a clawback, a reservation's debit or
  its refund is written at most once, so every operation is idempotent on its reference.
- ``sum(credit_ledger.amount) = users.credits`` per user. A grant is a positive entry, a
  reservation a negative ``reserve`` entry written with the debit, a refund a positive
  ``refund`` entry written with the credit, a clawback a negative (or zero) entry;
  *settling writes no entry*: the credits already left the balance when reserved.
  So balances must only change through this module (seed balances with ``grant``).

Each function takes an optional ``conn`` to run inside the caller's transaction (so a
webhook's inbox row and its grant commit together); without one it opens
``common.db.transaction()``. A database error inside the caller's transaction aborts
that transaction: let it propagate.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from common import db
from common.errors import Conflict, InsufficientCredits, NotFound
from common.ids import as_uuid
from common.observability import traced

if TYPE_CHECKING:
    import psycopg

RESERVATION_SOURCE = "reservation"

# --- Queries ---------------------------------------------------------------------------

#: Ledger row first; the balance moves only when the row was new (one statement, so a
#: concurrent duplicate waits on the unique index and then does nothing).
GRANT = """
WITH entry AS (
    INSERT INTO credit_ledger (user_id, amount, kind, reason, source, ref)
    VALUES (%(user_id)s, %(amount)s, 'grant', %(reason)s, %(source)s, %(ref)s)
    ON CONFLICT (source, ref) DO NOTHING
    RETURNING user_id, amount
)
UPDATE users u SET credits = u.credits + e.amount, updated_at = now()
FROM entry e WHERE u.id = e.user_id
RETURNING u.credits
"""

RESERVATION_BY_KEY = """
SELECT id, user_id, amount, status, idempotency_key, created_at
FROM credit_reservations WHERE user_id = %(user_id)s AND idempotency_key = %(key)s
"""

#: The conditional debit decides: no row when the balance is short (concurrent spends
#: queue on the user row and re-check ``credits >= amount`` on its newest version), and
#: then nothing else is written either.
RESERVE = """
WITH debit AS (
    UPDATE users SET credits = credits - %(amount)s, updated_at = now()
    WHERE id = %(user_id)s AND credits >= %(amount)s
    RETURNING id
), res AS (
    INSERT INTO credit_reservations (user_id, amount, idempotency_key)
    SELECT id, %(amount)s, %(key)s FROM debit
    RETURNING id, user_id, amount, status, idempotency_key, created_at
), entry AS (
    INSERT INTO credit_ledger (user_id, amount, kind, reason, source, ref, reservation_id)
    SELECT user_id, -amount, 'reserve', %(reason)s, 'reservation', id::text || ':reserve', id FROM res
)
SELECT * FROM res
"""

USER_EXISTS = "SELECT 1 FROM users WHERE id = %(user_id)s"

SETTLE = """
UPDATE credit_reservations SET status = 'settled', resolved_at = now()
WHERE id = %(id)s AND status = 'reserved'
RETURNING id
"""

#: ``WHERE status = 'reserved'`` makes the transition happen once: a concurrent refund or
#: settle waits on the row lock, re-checks the status and matches nothing.
REFUND = """
WITH res AS (
    UPDATE credit_reservations SET status = 'refunded', resolved_at = now()
    WHERE id = %(id)s AND status = 'reserved'
    RETURNING id, user_id, amount
), credit AS (
    UPDATE users u SET credits = u.credits + r.amount, updated_at = now()
    FROM res r WHERE u.id = r.user_id
)
INSERT INTO credit_ledger (user_id, amount, kind, reason, source, ref, reservation_id)
SELECT user_id, amount, 'refund', %(reason)s, 'reservation', id::text || ':refund', id FROM res
RETURNING id
"""

RESERVATION_STATUS = "SELECT status FROM credit_reservations WHERE id = %(id)s"

LOCK_USER = "SELECT credits FROM users WHERE id = %(user_id)s FOR UPDATE"

CLAWBACK_ENTRY = """
INSERT INTO credit_ledger (user_id, amount, kind, reason, source, ref, shortfall)
VALUES (%(user_id)s, -%(taken)s, 'clawback', %(reason)s, %(source)s, %(ref)s, %(shortfall)s)
ON CONFLICT (source, ref) DO NOTHING
RETURNING id
"""

DEBIT = "UPDATE users SET credits = credits - %(amount)s, updated_at = now() WHERE id = %(user_id)s"

ENTRY_BY_REF = "SELECT amount, shortfall FROM credit_ledger WHERE source = %(source)s AND ref = %(ref)s"

BALANCE = "SELECT credits FROM users WHERE id = %(user_id)s"

STALE_RESERVATIONS = """
SELECT id, user_id, amount, status, idempotency_key, created_at
FROM credit_reservations
WHERE status = 'reserved' AND created_at < now() - %(older_than)s
ORDER BY created_at
LIMIT %(limit)s
"""

#: Users whose balance differs from the sum of their ledger entries.
MISMATCHES = """
SELECT count(*) AS n
FROM users u
LEFT JOIN (SELECT user_id, sum(amount) AS total FROM credit_ledger GROUP BY user_id) l
       ON l.user_id = u.id
WHERE (%(user_id)s::uuid IS NULL OR u.id = %(user_id)s::uuid)
  AND u.credits <> coalesce(l.total, 0)
"""


# --- API -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    user_id: uuid.UUID
    amount: int
    status: str  # reserved | settled | refunded
    idempotency_key: str
    created_at: datetime


@traced
def grant(user_id: uuid.UUID | str, amount: int, *, reason: str, source: str, ref: str,
          conn: psycopg.Connection[Any] | None = None) -> bool:
    """Add ``amount`` credits once per ``(source, ref)``. True if applied now, False if
    that reference was already applied. The user row must exist (NotFound otherwise)."""
    import psycopg

    params = {"user_id": as_uuid(user_id), "amount": _positive(amount), "reason": reason,
              "source": source, "ref": ref}
    with _transaction(conn) as c:
        try:
            return db.execute_on(c, GRANT, params).fetchone() is not None
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound("user not found") from None


@traced
def reserve(user_id: uuid.UUID | str, amount: int, *, idempotency_key: str,
            reason: str = "reservation", conn: psycopg.Connection[Any] | None = None) -> Reservation:
    """Take ``amount`` credits from the balance for work about to run.

    The same ``idempotency_key`` (per user) returns the reservation made the first time,
    whatever its status now; reusing it for another amount is a Conflict. A short
    balance raises InsufficientCredits and writes nothing.
    """
    import psycopg

    params = {"user_id": as_uuid(user_id), "amount": _positive(amount), "key": idempotency_key,
              "reason": reason}
    with _transaction(conn) as c:
        row = db.execute_on(c, RESERVATION_BY_KEY, params).fetchone()
        if row is None:
            try:
                with c.transaction():  # a savepoint: a lost race undoes only this statement
                    row = db.execute_on(c, RESERVE, params).fetchone()
            except psycopg.errors.UniqueViolation:
                # A concurrent request with the same key committed first: return its result.
                row = db.execute_on(c, RESERVATION_BY_KEY, params).fetchone()
            if row is None:
                if db.execute_on(c, USER_EXISTS, params).fetchone() is None:
                    raise NotFound("user not found")
                raise InsufficientCredits("not enough credits")
        reservation = Reservation(**row)
    if reservation.amount != params["amount"]:
        raise Conflict("idempotency key already used for a different amount")
    return reservation


@traced
def settle(reservation_id: uuid.UUID | str, conn: psycopg.Connection[Any] | None = None) -> bool:
    """Mark the reservation as spent (no balance change, no ledger entry). True if settled
    now, False if it already was; a refunded reservation cannot be settled (Conflict)."""
    params = {"id": as_uuid(reservation_id)}
    with _transaction(conn) as c:
        if db.execute_on(c, SETTLE, params).fetchone() is not None:
            return True
        return _resolved(c, params, expected="settled")


@traced
def refund(reservation_id: uuid.UUID | str, *, reason: str = "refund",
           conn: psycopg.Connection[Any] | None = None) -> bool:
    """Give a reserved amount back (status, balance and a ``refund`` entry in one
    statement). True if refunded now, False if it already was; a settled reservation
    cannot be refunded (Conflict): give credits back with ``grant`` instead."""
    params = {"id": as_uuid(reservation_id), "reason": reason}
    with _transaction(conn) as c:
        if db.execute_on(c, REFUND, params).fetchone() is not None:
            return True
        return _resolved(c, params, expected="refunded")


@traced
def clawback(user_id: uuid.UUID | str, amount: int, *, reason: str, source: str, ref: str,
             conn: psycopg.Connection[Any] | None = None) -> tuple[int, int]:
    """Take back up to ``amount`` credits (a refunded purchase): as much as the balance
    holds, never below zero; the rest is recorded as the entry's ``shortfall``. Returns
    ``(taken, shortfall)``; a repeated ``(source, ref)`` returns the first outcome."""
    params: dict[str, Any] = {"user_id": as_uuid(user_id), "reason": reason, "source": source, "ref": ref}
    amount = _positive(amount)
    with _transaction(conn) as c:
        # The user row lock serialises clawbacks and spends of this user, so the amount
        # taken is computed from a balance nobody else can change before commit.
        row = db.execute_on(c, LOCK_USER, params).fetchone()
        if row is None:
            raise NotFound("user not found")
        taken = min(row["credits"], amount)
        params |= {"taken": taken, "shortfall": amount - taken}
        if db.execute_on(c, CLAWBACK_ENTRY, params).fetchone() is None:
            first = db.one_row(db.execute_on(c, ENTRY_BY_REF, params))  # the clawback already made
            return -int(first["amount"]), int(first["shortfall"])
        db.execute_on(c, DEBIT, {"user_id": params["user_id"], "amount": taken})
        return taken, amount - taken


def balance(user_id: uuid.UUID | str) -> int:
    row = db.execute(BALANCE, {"user_id": as_uuid(user_id)}, idempotent=True).fetchone()
    if row is None:
        raise NotFound("user not found")
    return int(row["credits"])


def stale_reservations(older_than: timedelta, limit: int = 100) -> list[Reservation]:
    """Reservations still open after ``older_than`` (work that died): oldest first, for
    the cleanup job to ``refund``."""
    rows = db.execute(STALE_RESERVATIONS, {"older_than": older_than, "limit": limit},
                      idempotent=True).fetchall()
    return [Reservation(**row) for row in rows]


def ledger_matches_balance(user_id: uuid.UUID | str | None = None) -> bool:
    """True when every balance (or this user's) equals the sum of its ledger entries."""
    params = {"user_id": None if user_id is None else as_uuid(user_id)}
    return bool(db.one_row(db.execute(MISMATCHES, params, idempotent=True))["n"] == 0)


# --- Helpers ---------------------------------------------------------------------------


@contextmanager
def _transaction(conn: psycopg.Connection[Any] | None) -> Iterator[psycopg.Connection[Any]]:
    if conn is not None:
        yield conn
    else:
        with db.transaction() as c:
            yield c


def _resolved(conn: psycopg.Connection[Any], params: dict[str, Any], *, expected: str) -> bool:
    """After a transition matched nothing: False if already ``expected``, else why not."""
    row = db.execute_on(conn, RESERVATION_STATUS, params).fetchone()
    if row is None:
        raise NotFound("reservation not found")
    if row["status"] != expected:
        raise Conflict(f"reservation is {row['status']}")
    return False


def _positive(amount: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError("amount must be a positive integer")
    return amount
