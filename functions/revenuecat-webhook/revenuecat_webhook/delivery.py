"""One delivery of a RevenueCat event: the inbox row and every effect in one transaction,
then the replay of events that were waiting for this user.

Statuses (the inbox's, plus ``duplicate``): processed, ignored (TEST, unknown types,
sandbox where not applied, nothing to apply), unmatched (no user of ours yet: parked,
replayed later), parked (for a deleted account: the database refused its effects; kept
without its body, never applied), duplicate (already processed, ignored or parked:
counted only). A database
that cannot be reached raises ``Unavailable`` (503), so RevenueCat retries.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common import config, db, inbox
from common.errors import Unavailable, is_account_deleted
from common.observability import logger
from revenuecat_webhook import apply, events

PROVIDER = apply.PROVIDER
#: Events replayed after a live delivery for their user (the rest: scripts/replay-unmatched).
REPLAY_AFTER_DELIVERY = 50

# --- Queries ---------------------------------------------------------------------------

#: Unmatched events parked under this user's id or one of their aliases, oldest first.
PENDING_FOR_USER = """
SELECT DISTINCT w.id, w.event_id, w.headers, w.body
FROM revenuecat_pending p JOIN webhook_inbox w ON w.id = p.inbox_id
WHERE w.status = 'unmatched'
  AND p.app_user_id IN (SELECT %(user_text)s::text
                        UNION ALL SELECT app_user_id FROM revenuecat_aliases WHERE user_id = %(user_id)s)
ORDER BY w.id
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class Delivery:
    event_id: str
    status: str  # processed | ignored | unmatched | parked | duplicate
    reason: str | None = None
    user_id: uuid.UUID | None = None


def apply_sandbox() -> bool:
    """Whether SANDBOX events change state: ``REVENUECAT_APPLY_SANDBOX`` (true/false) when
    set, else every stage but prod."""
    value = os.environ.get("REVENUECAT_APPLY_SANDBOX", "").strip().lower()
    if value:
        return value in ("1", "true", "yes", "on")
    return config.settings().STAGE != "prod"


def deliver(webhook: events.Webhook, body: bytes | str, headers: Mapping[str, Any], *,
            replay_pending: bool = True) -> Delivery:
    """Record and apply one delivery exactly once; then, when it applied to a user,
    replay that user's waiting unmatched events (each in its own transaction)."""
    import psycopg

    event = webhook.event
    try:
        # Connect first: common.db.transaction() expects connect() to succeed (a failed
        # first connection there surfaces as UnboundLocalError, not OperationalError).
        db.connection()
        with db.transaction() as conn:
            if not inbox.record(conn, PROVIDER, event.id, headers=headers, body=body, signature_ok=True,
                                event_type=event.type):
                delivery = Delivery(event.id, "duplicate")
            else:
                outcome = apply.apply_event(conn, event, apply_sandbox=apply_sandbox())
                inbox.mark(conn, PROVIDER, event.id, outcome.status, error=outcome.reason)
                delivery = Delivery(event.id, outcome.status, outcome.reason, outcome.user_id)
    except psycopg.OperationalError as exc:
        # Unreachable, restarted, deadlock, timeout: nothing was committed; RevenueCat retries.
        logger.warning("database unavailable", extra={**events.summary(event), "error": type(exc).__name__})
        raise Unavailable("the database is unavailable; retry later") from None
    except Exception as exc:
        if is_account_deleted(exc):  # its user deleted their account: kept, never applied
            inbox.park(PROVIDER, event.id, event_type=event.type)
            logger.info("revenuecat event parked: account deleted", extra=events.summary(event))
            return Delivery(event.id, "parked", "account deleted")
        _record_failure(event, body, headers, exc)
        raise
    logger.info("revenuecat event", extra={**events.summary(event), "status": delivery.status,
                                           "reason": delivery.reason})
    if replay_pending and delivery.status == "processed" and delivery.user_id is not None:
        replay_for_user(delivery.user_id)
    return delivery


def replay_for_user(user_id: uuid.UUID, *, limit: int = REPLAY_AFTER_DELIVERY) -> Counter[str]:
    """Replay the unmatched events parked under this user's ids. Failures are logged and
    left unmatched (the script, or the user's next event, tries again)."""
    try:
        rows = db.execute(PENDING_FOR_USER, {"user_id": user_id, "user_text": str(user_id), "limit": limit},
                          idempotent=True).fetchall()
    except Exception:
        logger.exception("could not list pending events", extra={"user_id": str(user_id)})
        return Counter()
    return _replay(rows)


def replay_unmatched(*, limit: int = 1000) -> Counter[str]:
    """Replay every unmatched RevenueCat event (oldest first, up to ``limit``): those whose
    user is now known are applied, the others stay unmatched. Returns counts by status."""
    rows = [{"event_id": e.event_id, "headers": e.headers, "body": e.body}
            for e in inbox.unmatched(PROVIDER, limit=limit)]
    return _replay(rows)


def _replay(rows: list[dict[str, Any]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for row in rows:
        try:
            webhook = events.parse(row["body"])
            counts[deliver(webhook, row["body"], row["headers"] or {}, replay_pending=False).status] += 1
        except Exception:
            logger.exception("replay failed", extra={"event_id": row["event_id"]})
            counts["failed"] += 1
    return counts


def _record_failure(event: events.Event, body: bytes | str, headers: Mapping[str, Any],
                    exc: Exception) -> None:
    """Best effort: keep the failed delivery in the inbox as 'failed' (with the exception's
    class only) so it can be found; RevenueCat's retry processes it again."""
    try:
        with db.transaction() as conn:
            if inbox.record(conn, PROVIDER, event.id, headers=headers, body=body, signature_ok=True,
                            event_type=event.type):
                inbox.mark(conn, PROVIDER, event.id, "failed", error=type(exc).__name__)
    except Exception:
        logger.warning("could not record the failed delivery", extra={"event_id": event.id})
