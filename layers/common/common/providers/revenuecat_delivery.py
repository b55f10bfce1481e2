"""One delivery of a RevenueCat event through the shared webhook pipeline
(``common.webhooks``: the inbox row and every effect in one transaction), then the replay
of events that were waiting for this user.

Statuses (the inbox's, plus ``duplicate``): processed, ignored (TEST, unknown types,
sandbox where not applied, nothing to apply), unmatched (no user of ours yet: parked,
replayed later), parked (for a deleted account: kept without its body, never applied),
duplicate (already processed, ignored or parked: counted only). A database
that cannot be reached answers 503 (the HTTP layer), so RevenueCat retries.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from common import config, db, inbox, webhooks
from common.observability import logger
from common.providers import revenuecat_apply as apply
from common.providers import revenuecat_events as events

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


def apply_sandbox() -> bool:
    """Whether SANDBOX events change state: ``REVENUECAT_APPLY_SANDBOX`` (true/false) when
    set, else every stage but prod."""
    value = os.environ.get("REVENUECAT_APPLY_SANDBOX", "").strip().lower()
    if value:
        return value in ("1", "true", "yes", "on")
    return config.settings().STAGE != "prod"


def deliver(webhook: events.Webhook, body: bytes | str, headers: Mapping[str, Any], *,
            replay_pending: bool = True) -> webhooks.Outcome:
    """Record and apply one delivery exactly once; then, when it applied to a user,
    replay that user's waiting unmatched events (each in its own transaction)."""
    event = webhook.event
    sandbox = apply_sandbox()
    outcome = webhooks.deliver(PROVIDER, event.id, event_type=event.type, headers=headers, raw=body,
                               apply=lambda conn: apply.apply_event(conn, event, apply_sandbox=sandbox))
    logger.info("revenuecat event", extra={**events.summary(event), "status": outcome.status,
                                           "reason": outcome.note})
    if replay_pending and outcome.status == "processed" and outcome.user_id is not None:
        replay_for_user(outcome.user_id)
    return outcome


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
