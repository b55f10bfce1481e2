"""RevenueCat: ``GET /v1/subscribers/{app_user_id}`` (Bearer ``REVENUECAT_API_KEY``) for
the users who may be missing a purchase, and each purchase it lists applied as its
webhook event would be (``common.providers.revenuecat_delivery``).

Whom: users with RevenueCat entitlements expiring within ``RECONCILE_REVENUECAT_WINDOW_S``
(or expired as long ago: a renewal's webhook may be lost), and the app user ids of
parked (unmatched) events; ``RECONCILE_BATCH`` a run, up to half of it for parked ids (a
random sample of each when there are more: every one gets its turn, without state).

What: each active subscription's latest transaction becomes an ``INITIAL_PURCHASE`` (or
``RENEWAL`` when it is not the original purchase) and each non-renewing purchase a
``NON_RENEWING_PURCHASE``, keyed ``reconcile:<store transaction id>`` in the inbox; the
transaction is claimed by whichever of the webhook and reconcile applies it first
(``revenuecat_claims``), the other is a duplicate (reconcile does not even record a
transaction already claimed). Refunded or expired subscriptions are
left to their events. For a parked event's id, the subscriber's ``original_app_user_id``
naming one of our users teaches that alias, and the user's parked events are replayed.
A RevenueCat error or timeout stops the RevenueCat part of the run.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from common import config, db
from common.observability import logger, traced
from common.providers import revenuecat_apply, revenuecat_delivery, revenuecat_events
from reconcile.report import Deadline, Report

if TYPE_CHECKING:
    from reconcile.settings import ReconcileSettings

PROVIDER = "revenuecat"
HEADERS = {"user-agent": "reconcile", "x-reconcile-source": "GET /v1/subscribers"}

EXPIRING = """
SELECT user_id::text AS app_user_id
FROM entitlements
WHERE source = 'revenuecat' AND expires_at IS NOT NULL
  AND expires_at BETWEEN now() - make_interval(secs => %(window)s)
                     AND now() + make_interval(secs => %(window)s)
GROUP BY user_id
ORDER BY random()  -- more candidates than a batch: every one gets its turn, without state
LIMIT %(limit)s
"""
PARKED = """
SELECT p.app_user_id
FROM revenuecat_pending p JOIN webhook_inbox w ON w.id = p.inbox_id
WHERE w.status = 'unmatched'
GROUP BY p.app_user_id
ORDER BY random()
LIMIT %(limit)s
"""

CLAIMED = "SELECT transaction_id FROM revenuecat_claims WHERE transaction_id = ANY(%(ids)s)"


class RevenueCatUnavailable(Exception):
    """RevenueCat answered an error or did not answer in time."""


def run(deadline: Deadline, settings: ReconcileSettings) -> Report:
    report = Report(PROVIDER)
    api_key = config.secret("REVENUECAT_API_KEY")
    if not api_key:
        return report.stop("REVENUECAT_API_KEY is not set")
    # Up to half the batch for parked ids, the rest for expiring entitlements.
    parked = [r["app_user_id"] for r in db.execute(
        PARKED, {"limit": (settings.RECONCILE_BATCH + 1) // 2}, idempotent=True).fetchall()]
    params = {"window": settings.RECONCILE_REVENUECAT_WINDOW_S,
              "limit": settings.RECONCILE_BATCH - len(parked)}
    ids = [r["app_user_id"] for r in db.execute(EXPIRING, params, idempotent=True).fetchall()] + parked
    base = config.settings().REVENUECAT_API_URL.rstrip("/")
    for app_user_id in list(dict.fromkeys(ids))[:settings.RECONCILE_BATCH]:
        if deadline.passed():
            return report.stop("deadline")
        try:
            subscriber = fetch(base, api_key, app_user_id, settings.RECONCILE_HTTP_TIMEOUT_S)
        except RevenueCatUnavailable as exc:
            logger.warning("revenuecat subscriber not fetched; retried next run", extra={"error": str(exc)})
            return report.stop("revenuecat unavailable", error=True)
        report.checked += 1
        heal(app_user_id, subscriber, report)
    return report


def heal(app_user_id: str, subscriber: dict[str, Any], report: Report) -> None:
    """Apply every purchase the subscriber shows, through the inbox."""
    user_id = _our_user(app_user_id, subscriber)
    if user_id is None:
        report.outcomes["unmatched"] += 1
        return
    if app_user_id != str(user_id):  # a parked event's id: now known, its events apply
        report.outcomes.update(revenuecat_delivery.replay_for_user(user_id))
    bodies = purchases(str(user_id), subscriber)
    claimed = _claimed([body["event"]["transaction_id"] for body in bodies])
    for body in bodies:
        if body["event"]["transaction_id"] in claimed:
            report.outcomes["duplicate"] += 1  # applied already (by its webhook): not even recorded
            continue
        webhook = revenuecat_events.Webhook.model_validate(body)
        raw = json.dumps(body, separators=(",", ":")).encode()
        report.outcomes[revenuecat_delivery.deliver(webhook, raw, HEADERS).status] += 1


def purchases(app_user_id: str, subscriber: dict[str, Any]) -> list[dict[str, Any]]:
    """The webhook bodies the subscriber's purchases stand for."""
    now = datetime.now(UTC)
    by_product: dict[str, list[str]] = {}
    for entitlement_id, entitlement in (subscriber.get("entitlements") or {}).items():
        by_product.setdefault(entitlement.get("product_identifier") or "", []).append(entitlement_id)
    bodies = []
    for product_id, sub in (subscriber.get("subscriptions") or {}).items():
        expires = _time(sub.get("expires_date"))
        if sub.get("refunded_at") or not sub.get("store_transaction_id") or (expires and expires <= now):
            continue
        first = sub.get("purchase_date") == sub.get("original_purchase_date")
        bodies.append(_body(app_user_id, subscriber, "INITIAL_PURCHASE" if first else "RENEWAL", product_id,
                            sub, expires, by_product.get(product_id, [])))
    for product_id, items in (subscriber.get("non_subscriptions") or {}).items():
        for item in items:
            if item.get("store_transaction_id"):
                bodies.append(_body(app_user_id, subscriber, "NON_RENEWING_PURCHASE", product_id, item, None,
                                    by_product.get(product_id, [])))
    return bodies


@traced
def fetch(base: str, api_key: str, app_user_id: str, timeout: float) -> dict[str, Any]:
    import requests

    url = f"{base}/v1/subscribers/{quote(app_user_id, safe='')}"
    try:
        response = requests.get(url, headers={"authorization": f"Bearer {api_key}"}, timeout=(3, timeout))
    except requests.RequestException as exc:
        raise RevenueCatUnavailable(type(exc).__name__) from None
    if not response.ok:
        raise RevenueCatUnavailable(f"HTTP {response.status_code}")
    try:
        subscriber = response.json()["subscriber"]
    except (ValueError, KeyError, TypeError):
        raise RevenueCatUnavailable("not a subscriber") from None
    if not isinstance(subscriber, dict):
        raise RevenueCatUnavailable("not a subscriber")
    return subscriber


def _claimed(transaction_ids: list[str]) -> set[str]:
    if not transaction_ids:
        return set()
    rows = db.execute(CLAIMED, {"ids": transaction_ids}, idempotent=True).fetchall()
    return {row["transaction_id"] for row in rows}


def _our_user(app_user_id: str, subscriber: dict[str, Any]) -> uuid.UUID | None:
    """Our user named by the app user id or the subscriber's original id; that user
    learns the other as an alias (so parked events find them)."""
    ids = list(dict.fromkeys(i for i in (app_user_id, subscriber.get("original_app_user_id")) if i))
    with db.transaction() as conn:
        user_id = revenuecat_apply.resolve(conn, ids)
        if user_id is not None:
            revenuecat_apply.learn_aliases(conn, user_id, ids)
    return user_id


def _body(app_user_id: str, subscriber: dict[str, Any], kind: str, product_id: str, item: dict[str, Any],
          expires: datetime | None, entitlement_ids: list[str]) -> dict[str, Any]:
    transaction_id = item["store_transaction_id"]
    purchased = _ms(_time(item.get("purchase_date")))
    return {"api_version": "1.0", "event": {
        "id": f"reconcile:{transaction_id}", "type": kind, "event_timestamp_ms": purchased,
        "app_user_id": app_user_id, "original_app_user_id": subscriber.get("original_app_user_id"),
        "product_id": product_id, "entitlement_ids": entitlement_ids or None,
        "period_type": (item.get("period_type") or "normal").upper() if expires else None,
        "purchased_at_ms": purchased, "expiration_at_ms": _ms(expires),
        "store": (item.get("store") or "").upper() or None,
        "environment": "SANDBOX" if item.get("is_sandbox") else "PRODUCTION",
        "transaction_id": transaction_id, "original_transaction_id": transaction_id}}


def _time(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ms(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)
