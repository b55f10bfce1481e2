"""Stripe: the events API since a stored cursor, each event applied exactly as the
webhook applies it (``common.providers.stripe_events``, same inbox key: the event id).

``GET /v1/events`` with ``created`` between the cursor and now minus
``RECONCILE_MIN_AGE_S``, only the types the webhook handles, 100 a page (the SDK pages
with ``starting_after``; Stripe lists newest first and keeps 30 days). The events are
applied oldest first. The cursor (``reconcile_cursors``, the ``created`` time read up
to) moves only over events read and applied: a Stripe error or timeout while listing
leaves it where it was; stopping at the deadline, or on an event that failed, leaves it
at the last event applied (``created >=``: that second is read again, as duplicates).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from common import config
from common.observability import logger, traced
from common.providers import stripe_events
from common.providers.stripe_client import stripe_client
from reconcile import cursors
from reconcile.report import Deadline, Report

if TYPE_CHECKING:
    from reconcile.settings import ReconcileSettings

PROVIDER = "stripe"
#: Stripe keeps events 30 days; an hour less, so a page read at the edge is still there.
MAX_LOOKBACK_S = 30 * 86400 - 3600
PAGE = 100
#: What the inbox stores as the delivery's headers.
HEADERS = {"user-agent": "reconcile", "x-reconcile-source": "GET /v1/events"}


def run(deadline: Deadline, settings: ReconcileSettings) -> Report:
    report = Report(PROVIDER)
    if not config.secret("STRIPE_API_KEY"):
        return report.stop("STRIPE_API_KEY is not set")
    now = int(time.time())
    until = now - settings.RECONCILE_MIN_AGE_S
    since = cursors.get(PROVIDER)
    since = max(since if since is not None else now - settings.RECONCILE_STRIPE_FIRST_LOOKBACK_S,
                now - MAX_LOOKBACK_S)
    if since > until:
        return report
    listed = _list(since, until, deadline, report)
    if listed is None:
        return report
    last_applied = None
    for event in sorted(listed, key=lambda e: (e["created"], e["id"])):
        if deadline.passed():
            report.stop("deadline")
            break
        try:
            status = _apply(event)
        except ValidationError:
            # Stripe's own event, not of the shape the webhook reads: never applicable,
            # so not a reason to stop here forever (logged by type only).
            logger.warning("stripe event not applicable", extra={"event_type": event.get("type")})
            report.outcomes["invalid"] += 1
            continue
        except Exception as exc:
            logger.warning("stripe event not applied; retried next run",
                           extra={"event_id": event["id"], "error": type(exc).__name__})
            report.stop("an event failed", error=True)
            break
        report.outcomes[status] += 1
        last_applied = event["created"]
    if report.complete:
        cursors.put(PROVIDER, until)
    elif last_applied is not None:
        cursors.put(PROVIDER, last_applied)
    return report


@traced
def _list(since: int, until: int, deadline: Deadline, report: Report) -> list[dict[str, Any]] | None:
    """Every event in the window, or None (cursor unchanged) when the listing failed or
    could not finish before the deadline (pages come newest first: a partial listing
    would skip older events)."""
    import stripe

    params: Any = {"created": {"gte": since, "lte": until},
                              "types": sorted(stripe_events.HANDLERS), "limit": PAGE}
    events: list[dict[str, Any]] = []
    try:
        for event in stripe_client().v1.events.list(params).auto_paging_iter():
            events.append(event.to_dict(recursive=True))
            report.checked += 1
            if report.checked % PAGE == 0 and deadline.passed():
                report.stop("deadline while listing")
                return None
    except stripe.StripeError as exc:
        logger.warning("stripe events not listed; retried next run", extra={"error": type(exc).__name__})
        report.stop("stripe unavailable", error=True)
        return None
    return events


def _apply(event: dict[str, Any]) -> str:
    ev, obj = stripe_events.parse(event)
    raw = json.dumps(event, separators=(",", ":")).encode()
    return stripe_events.process(ev, obj, event, headers=HEADERS, raw=raw)
