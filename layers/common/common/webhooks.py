"""One pipeline for every provider event: record it in the inbox, apply it, mark it, in
one transaction.

Each payment webhook verifies its delivery, types the event, and hands this module the
function that applies it::

    outcome = webhooks.deliver("stripe", event.id, event_type=event.type, headers=headers,
                               raw=raw, apply=lambda conn: apply_event(conn, event))

The inbox row (``common.inbox``) and the event's effects commit or roll back together, so
an event takes effect once however often, and in whatever order, it arrives. What can go
wrong, and what the provider is told:

- a duplicate of a processed, ignored or parked event: nothing applied, ``duplicate`` (200);
- an event for a deleted account (the database refuses its effects, or the order it
  names belongs to one: ``errors.is_account_deleted``): rolled back, kept in the inbox as
  ``parked`` without its body, never applied, ``parked`` (200);
- the database unreachable or failing for now (``db.is_outage``): nothing committed, the
  error propagates and the HTTP layer answers 503 with Retry-After, so the provider
  retries; nothing is recorded (there is nowhere to record it);
- any other error: rolled back, then the delivery is kept in the inbox as ``failed`` with
  the error's class (so it can be found), and the error propagates (500): the provider's
  retry processes it again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common import db, inbox
from common.errors import is_account_deleted
from common.observability import logger, metrics, traced

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class Outcome:
    """What applying one event did."""

    status: str  # the answer to the provider, for logs and tests: paid, processed, ...
    inbox: str | None = "processed"  # the inbox status stored; None: left as it was (a duplicate)
    note: str | None = None  # why ignored or unmatched: the inbox row's last_error
    user_id: uuid.UUID | None = None  # the user the event applied to, when one did

    @classmethod
    def ignored(cls, note: str, *, status: str = "ignored", user_id: uuid.UUID | None = None) -> Outcome:
        return cls(status, "ignored", note, user_id)

    @classmethod
    def unmatched(cls, note: str, *, status: str = "unmatched") -> Outcome:
        return cls(status, "unmatched", note)


DUPLICATE = Outcome("duplicate", None)
PARKED = Outcome("parked", None, "account deleted")


@traced
def deliver(provider: str, event_id: str, *, event_type: str | None, headers: Mapping[str, Any],
            raw: bytes | str, apply: Callable[[psycopg.Connection[Any]], Outcome]) -> Outcome:
    """Record, apply and mark one verified event exactly once (see the module docstring)."""
    try:
        with db.transaction() as conn:
            if not inbox.record(conn, provider, event_id, headers=headers, body=raw, signature_ok=True,
                                event_type=event_type):
                outcome = DUPLICATE
            else:
                outcome = apply(conn)
                inbox.mark(conn, provider, event_id, outcome.inbox or "processed", error=outcome.note)
    except Exception as exc:
        if is_account_deleted(exc):
            inbox.park(provider, event_id, event_type=event_type)
            logger.info("webhook event parked: account deleted", extra={"provider": provider,
                                                                        "event_id": event_id})
            _count(PARKED)
            return PARKED
        if not db.is_outage(exc):
            record_failure(provider, event_id, headers=headers, raw=raw, event_type=event_type, error=exc)
            _count(None)
        raise
    logger.info("webhook event applied", extra={"provider": provider, "event_id": event_id,
                                                "event_type": event_type, "outcome": outcome.status,
                                                "note": outcome.note})
    _count(outcome)
    return outcome


#: The metric each outcome counts (Powertools, unit Count; the service dimension names the
#: provider's function): the dashboard's webhook outcomes per provider.
_METRICS = {"processed": "WebhookApplied", "ignored": "WebhookIgnored", "unmatched": "WebhookUnmatched",
            "parked": "WebhookParked", "rejected": "WebhookRejected", None: "WebhookDuplicate"}


def _count(outcome: Outcome | None) -> None:
    from aws_lambda_powertools.metrics import MetricUnit

    name = "WebhookFailed" if outcome is None else _METRICS.get(
        "parked" if outcome is PARKED else outcome.inbox, "WebhookApplied")
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


def record_failure(provider: str, event_id: str, *, headers: Mapping[str, Any], raw: bytes | str,
                   event_type: str | None, error: BaseException) -> None:
    """After an event's transaction rolled back on an unexpected error: keep the delivery
    in the inbox as ``failed`` (the error's class only), unless it finished meanwhile.
    Best effort: this must not hide the error."""
    try:
        with db.transaction() as conn:
            if inbox.record(conn, provider, event_id, headers=headers, body=raw, signature_ok=True,
                            event_type=event_type):
                inbox.mark(conn, provider, event_id, "failed", error=type(error).__name__)
    except Exception:  # the database may be what failed
        logger.warning("could not record the failed delivery", extra={"provider": provider,
                                                                      "event_id": event_id})
