"""One bounded batch of each housekeeping purge, as named queries.

Every purge deletes at most ``limit`` rows per statement, chosen by walking the index on
the column that decides expiry (``ORDER BY`` that column, so the planner reads the
front of the index instead of scanning the table) and locked with ``FOR UPDATE SKIP
LOCKED``:

- the rows one statement deletes are locked for the length of that statement only (a
  few tens of milliseconds), so a concurrent upsert of a purged key waits at most that;
- two overlapping runs take disjoint rows instead of queueing on each other's;
- a row renewed by a concurrent upsert after the statement began is re-checked by the
  locking read (its new ``expires_at`` no longer matches) and survives.

The chosen rows are deleted by ``ctid`` (read and locked by the same statement, so it
cannot move), which works alike for the tables with one-column and composite keys.

Purging lives here only: one unbounded DELETE of 500k rows blocked an upsert for 2 s, and
a purge that selects without locking makes overlapping runs queue on the same rows and
delete a key renewed in between.

Payments and the credits ledger are never purged. Stale credit reservations are not
deleted either: they are refunded through ``common.ledger.refund`` (once, whatever the
concurrency: the refund itself only moves a reservation out of 'reserved').
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from common import db, ledger
from common.errors import Conflict, NotFound

# --- Queries ---------------------------------------------------------------------------

PURGE_CACHE = """
DELETE FROM cache_entries
 WHERE ctid = ANY(ARRAY(
       SELECT ctid FROM cache_entries
        WHERE expires_at <= now()
        ORDER BY expires_at
        LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED))
"""

COUNT_CACHE = """
SELECT count(*) AS n FROM (
    SELECT 1 FROM cache_entries WHERE expires_at <= now() LIMIT %(cap)s) s
"""

PURGE_IDEMPOTENCY = """
DELETE FROM idempotency_records
 WHERE ctid = ANY(ARRAY(
       SELECT ctid FROM idempotency_records
        WHERE expires_at < now()
        ORDER BY expires_at
        LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED))
"""

COUNT_IDEMPOTENCY = """
SELECT count(*) AS n FROM (
    SELECT 1 FROM idempotency_records WHERE expires_at < now() LIMIT %(cap)s) s
"""

PURGE_RATE_LIMITS = """
DELETE FROM rate_limit_windows
 WHERE ctid = ANY(ARRAY(
       SELECT ctid FROM rate_limit_windows
        WHERE window_start < now() - %(rate_limit_keep)s
        ORDER BY window_start
        LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED))
"""

COUNT_RATE_LIMITS = """
SELECT count(*) AS n FROM (
    SELECT 1 FROM rate_limit_windows WHERE window_start < now() - %(rate_limit_keep)s LIMIT %(cap)s) s
"""

#: Terminal deliveries (processed, ignored, and rejected: signed but not ours, no effect)
#: past the retention; walks webhook_inbox_terminal_received_idx (migration 0017).
#: Unfinished deliveries (received, unmatched, failed) are kept whatever their age, and
#: parked ones (a deleted account's, kept without body) too.
PURGE_INBOX = """
DELETE FROM webhook_inbox
 WHERE ctid = ANY(ARRAY(
       SELECT ctid FROM webhook_inbox
        WHERE status IN ('processed', 'ignored', 'rejected')
          AND received_at < now() - %(inbox_retention)s
        ORDER BY received_at
        LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED))
"""

COUNT_INBOX = """
SELECT count(*) AS n FROM (
    SELECT 1 FROM webhook_inbox
     WHERE status IN ('processed', 'ignored', 'rejected') AND received_at < now() - %(inbox_retention)s
     LIMIT %(cap)s) s
"""

#: Invites never used, some days after they expired (revoked ones too): walks
#: pair_invites_unused_expires_idx (migration 0012). Used invites stay with their pair.
PURGE_INVITES = """
DELETE FROM pair_invites
 WHERE ctid = ANY(ARRAY(
       SELECT ctid FROM pair_invites
        WHERE used_at IS NULL AND expires_at < now() - %(invite_keep)s
        ORDER BY expires_at
        LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED))
"""

COUNT_INVITES = """
SELECT count(*) AS n FROM (
    SELECT 1 FROM pair_invites WHERE used_at IS NULL AND expires_at < now() - %(invite_keep)s LIMIT %(cap)s) s
"""

#: Same condition as ledger.stale_reservations (credit_reservations_open_idx).
COUNT_STALE_RESERVATIONS = """
SELECT count(*) AS n FROM (
    SELECT 1 FROM credit_reservations
     WHERE status = 'reserved' AND created_at < now() - %(stale_after)s
     LIMIT %(cap)s) s
"""


# --- Batches ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """The retention settings the queries need."""

    stale_after: timedelta
    inbox_retention: timedelta
    rate_limit_keep: timedelta
    invite_keep: timedelta = timedelta(days=7)

    def params(self, **more: Any) -> dict[str, Any]:
        return {"stale_after": self.stale_after, "inbox_retention": self.inbox_retention,
                "rate_limit_keep": self.rate_limit_keep, "invite_keep": self.invite_keep, **more}


@dataclass(frozen=True)
class Purge:
    """One kind of expired row: a bounded DELETE and a capped count of what is left."""

    name: str
    delete: str
    count: str

    def batch(self, limits: Limits, limit: int) -> int:
        """Delete up to ``limit`` rows (one statement, its own transaction); how many."""
        return db.execute(self.delete, limits.params(limit=limit)).rowcount

    def remaining(self, limits: Limits, cap: int) -> int:
        return int(db.one_row(db.execute(self.count, limits.params(cap=cap), idempotent=True))["n"])


#: Report keys, in the order the job takes turns.
PURGES = (
    Purge("cache_entries", PURGE_CACHE, COUNT_CACHE),
    Purge("idempotency_records", PURGE_IDEMPOTENCY, COUNT_IDEMPOTENCY),
    Purge("rate_limit_windows", PURGE_RATE_LIMITS, COUNT_RATE_LIMITS),
    Purge("webhook_inbox", PURGE_INBOX, COUNT_INBOX),
    Purge("pair_invites", PURGE_INVITES, COUNT_INVITES),
)

RESERVATIONS = "credit_reservations"


def refund_stale(limits: Limits, limit: int) -> tuple[int, int]:
    """Refund up to ``limit`` stale reservations, oldest first: ``(seen, refunded)``.

    ``seen < limit`` means none is left. A reservation refunded or settled meanwhile (an
    overlapping run, or work that finished just now) is skipped: ``ledger.refund``
    returns False or raises Conflict, and nothing is credited twice.
    """
    stale = ledger.stale_reservations(limits.stale_after, limit=limit)
    refunded = 0
    for reservation in stale:
        try:
            refunded += ledger.refund(reservation.id, reason="stale reservation")
        except (Conflict, NotFound):
            continue
    return len(stale), refunded


def stale_remaining(limits: Limits, cap: int) -> int:
    return int(db.one_row(db.execute(COUNT_STALE_RESERVATIONS, limits.params(cap=cap), idempotent=True))["n"])

