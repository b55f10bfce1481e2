"""RevenueCat's subscriber, ``GET /v1/subscribers/{app_user_id}`` (Bearer
``REVENUECAT_API_KEY``), and each purchase it lists applied as its webhook event would be
(``common.providers.revenuecat_delivery``). Used by reconcile (users who may be missing a
purchase) and by checkout's ``POST /revenuecat/sync`` (the app reporting a purchase).

Each active subscription's latest transaction becomes an ``INITIAL_PURCHASE`` (or
``RENEWAL`` when it is not the original purchase) and each non-renewing purchase a
``NON_RENEWING_PURCHASE``, keyed ``reconcile:<store transaction id>`` in the inbox; the
transaction is claimed by whichever of the webhook, reconcile and a sync applies it first
(``revenuecat_claims``), the others are duplicates (a transaction already claimed is not
even recorded). Refunded or expired subscriptions are left to their events. For a parked
event's id, the subscriber's ``original_app_user_id`` naming one of our users teaches
that alias, and the user's parked events are replayed.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from common import db
from common.observability import traced
from common.providers import revenuecat_apply, revenuecat_delivery, revenuecat_events

CLAIMED = "SELECT transaction_id FROM revenuecat_claims WHERE transaction_id = ANY(%(ids)s)"


class RevenueCatUnavailable(Exception):
    """RevenueCat answered an error or did not answer in time."""


def heal(app_user_id: str, subscriber: dict[str, Any], headers: Mapping[str, str]) -> Counter[str]:
    """Apply every purchase the subscriber shows, through the inbox; the outcomes counted."""
    outcomes: Counter[str] = Counter()
    user_id = _our_user(app_user_id, subscriber)
    if user_id is None:
        outcomes["unmatched"] += 1
        return outcomes
    if app_user_id != str(user_id):  # a parked event's id: now known, its events apply
        outcomes.update(revenuecat_delivery.replay_for_user(user_id))
    bodies = purchases(str(user_id), subscriber)
    claimed = _claimed([body["event"]["transaction_id"] for body in bodies])
    for body in bodies:
        if body["event"]["transaction_id"] in claimed:
            outcomes["duplicate"] += 1  # applied already (by its webhook): not even recorded
            continue
        webhook = revenuecat_events.Webhook.model_validate(body)
        raw = json.dumps(body, separators=(",", ":")).encode()
        outcomes[revenuecat_delivery.deliver(webhook, raw, headers).status] += 1
    return outcomes


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


#: Users whose purchase could not be checked (RevenueCat down during a sync): reconcile
#: asks about them first, and removes them once asked (migration 0017).
QUEUE = """
INSERT INTO revenuecat_sync_queue (user_id) VALUES (%(user_id)s)
ON CONFLICT (user_id) DO NOTHING
"""


def queue_for_reconcile(user_id: uuid.UUID) -> None:
    """Leave the user for the next reconcile run to ask RevenueCat about."""
    db.execute(QUEUE, {"user_id": user_id}, idempotent=True)
