"""A plan order's Stripe subscription state: the same whatever order its events arrive in.

Stripe delivers events late, twice and out of order. Each observation of a subscription
(a subscription event, a paid or failed invoice) carries the event's ``created`` time,
Stripe's own clock; the order keeps the time of the state it applied (``state_at``). The
state kept is the greatest observation by these rules, so any arrival order ends in it:

- ``canceled`` and ``incomplete_expired`` are final in Stripe (a resubscription is a new
  subscription id): a final status wins over any other, older or newer (a last invoice
  created a second after the deletion cannot reopen it);
- otherwise the later event wins; a status from an older event is ignored (``stale``);
- the same second with a different status is a ``tie``: the subscription is re-fetched
  from the API (``GET /v1/subscriptions/{id}``) and its current state applied. Without
  an API key (local runs), or for a subscription the API does not know, the tie goes to
  the later status in the lifecycle (``RANK``);
- the same second and status: the greater event id is recorded (``state_event_id``);
- the period end only grows (``greatest``), whatever the event's age;
- ``cancel_at_period_end`` is known from subscription objects only and kept with its own
  event time (``cancel_flag_at``): the latest value wins, ``true`` on a same-second tie.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from common import config, orders
from common.errors import Unavailable
from common.observability import logger
from common.providers.stripe_client import stripe_client
from common.providers.stripe_models import Subscription

if TYPE_CHECKING:
    import psycopg

TERMINAL = frozenset({"canceled", "incomplete_expired"})
#: Lifecycle order, for ties that cannot be settled by the API.
RANK = {"incomplete": 0, "trialing": 1, "active": 2, "past_due": 3, "unpaid": 4, "paused": 4,
        "canceled": 5, "incomplete_expired": 5}

Verdict = Literal["apply", "stale", "tie"]

#: Period end forward only; the status and its time only when applied (the event id of
#: an equal state only when greater); the cancel flag by its own time.
SET_STATE = """
UPDATE orders SET
    subscription_id = coalesce(subscription_id, %(subscription_id)s::text),
    period_end = CASE WHEN %(period_end)s::timestamptz IS NULL THEN period_end
                      ELSE greatest(period_end, %(period_end)s::timestamptz) END,
    subscription_status = CASE WHEN %(apply)s::boolean THEN %(status)s::text ELSE subscription_status END,
    state_event_id = CASE WHEN NOT %(apply)s::boolean THEN state_event_id
                          WHEN subscription_status = %(status)s::text AND state_at = %(at)s::timestamptz
                          THEN greatest(state_event_id, %(event_id)s::text)
                          ELSE %(event_id)s::text END,
    state_at = CASE WHEN %(apply)s::boolean THEN %(at)s::timestamptz ELSE state_at END,
    cancel_at_period_end = CASE
        WHEN %(cancel)s::boolean IS NOT NULL AND (cancel_flag_at IS NULL
             OR (%(at)s::timestamptz, %(cancel)s::boolean) > (cancel_flag_at, cancel_at_period_end))
        THEN %(cancel)s::boolean ELSE cancel_at_period_end END,
    cancel_flag_at = CASE WHEN %(cancel)s::boolean IS NULL THEN cancel_flag_at
                          ELSE greatest(cancel_flag_at, %(at)s::timestamptz) END,
    updated_at = now()
WHERE id = %(id)s
"""


@dataclass(frozen=True)
class Observation:
    status: str
    at: datetime
    period_end: datetime | None = None
    cancel_at_period_end: bool | None = None  # None: not known from this event

    @classmethod
    def of(cls, sub: Subscription, at: datetime, status: str | None = None) -> Observation:
        return cls(status or sub.status, at, time_of(sub.period_end), sub.cancel_at_period_end)


def decide(stored_status: str | None, stored_at: datetime | None, status: str, at: datetime) -> Verdict:
    """Whether an observation at ``at`` replaces the stored state (see the module docstring)."""
    if stored_status is None or stored_at is None:
        return "apply"
    if (stored_status in TERMINAL) != (status in TERMINAL):
        return "apply" if status in TERMINAL else "stale"
    if at != stored_at:
        return "apply" if at > stored_at else "stale"
    return "apply" if status == stored_status else "tie"


def observe(conn: psycopg.Connection[Any], order: orders.Order, subscription_id: str | None,
            seen: Observation, *,
            event_id: str) -> str:
    """Apply what an event says about the order's subscription; the verdict."""
    verdict = decide(order.subscription_status, order.state_at, seen.status, seen.at)
    if verdict == "tie":
        fetched = fetch(subscription_id or order.subscription_id)
        if fetched is not None:
            seen = Observation.of(fetched, seen.at)
            verdict = "apply"
        else:
            verdict = "apply" if RANK.get(seen.status, 0) > RANK.get(order.subscription_status or "", 0) \
                else "stale"
        logger.info("subscription state tie", extra={"order_id": str(order.id), "resolved": verdict,
                                                      "refetched": fetched is not None})
    conn.execute(SET_STATE, {
        "id": order.id, "subscription_id": subscription_id, "period_end": seen.period_end,
        "apply": verdict == "apply", "status": seen.status, "cancel": seen.cancel_at_period_end,
        "at": seen.at, "event_id": event_id})
    if verdict == "stale":
        logger.info("older subscription state ignored",
                    extra={"order_id": str(order.id), "event_id": event_id})
    return verdict


def fetch(subscription_id: str | None) -> Subscription | None:
    """The subscription as the API has it now; None without an API key or when Stripe
    does not know it. A transient API failure is Unavailable (503): Stripe retries."""
    if not subscription_id or not config.secret("STRIPE_API_KEY"):
        return None
    import stripe

    try:
        found = stripe_client().v1.subscriptions.retrieve(subscription_id)
    except stripe.InvalidRequestError as exc:
        logger.warning("subscription not found at Stripe", extra={"stripe_code": exc.code})
        return None
    except stripe.StripeError as exc:
        logger.warning("subscription re-fetch failed", extra={"error": type(exc).__name__})
        raise Unavailable("Stripe is unavailable; retry") from None
    return Subscription.model_validate(found.to_dict(recursive=True))


def time_of(epoch: int | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)
