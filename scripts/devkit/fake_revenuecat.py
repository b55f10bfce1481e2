"""A local HTTP server that speaks the part of RevenueCat's REST API the project uses,
``GET /v1/subscribers/{app_user_id}`` (Bearer secret API key), so reconcile's real HTTP
code path runs in tests and locally. A subscriber is what ``purchase`` recorded (its
subscriptions, non-subscription purchases and the entitlements they unlock), shaped like
RevenueCat's v1 answer; an unknown app user id is answered as RevenueCat does, an empty
subscriber. Tests script responses, delays and errors; every request is recorded.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import unquote

from devkit.fake_http import Default, FakeServer, Recorded, Scripted

SUBSCRIBER = "GET /v1/subscribers"
_SUBSCRIBER_PATH = re.compile(r"^/v1/subscribers/([^/?]+)$")


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass
class FakeRevenueCat(FakeServer):
    #: Per app user id: {"subscriptions": {product: {...}}, "non_subscriptions": {product: [...]},
    #: "entitlements": {id: {...}}}.
    subscribers: dict[str, dict[str, Any]] = field(default_factory=dict)

    methods: ClassVar[tuple[str, ...]] = ("GET",)

    def script(self, *responses: Scripted) -> None:
        """Queue answers for the next subscriber requests (errors, delays)."""
        self._queue(SUBSCRIBER, responses)

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.subscribers.clear()

    def purchase(self, app_user_id: str, product_id: str, *, transaction_id: str, purchased_ms: int,
                 expires_ms: int | None = None, entitlement_ids: tuple[str, ...] = (),
                 store: str = "app_store", sandbox: bool = False, original_ms: int | None = None) -> None:
        """A store purchase RevenueCat knows: a subscription period (``expires_ms`` set)
        or a one-time purchase (``expires_ms`` None)."""
        item = {"purchase_date": iso(purchased_ms),
                "original_purchase_date": iso(original_ms or purchased_ms), "store": store,
                "is_sandbox": sandbox, "store_transaction_id": transaction_id}
        with self.lock:
            subscriber = self.subscribers.setdefault(
                app_user_id, {"subscriptions": {}, "non_subscriptions": {}, "entitlements": {}})
            if expires_ms is None:
                subscriber["non_subscriptions"].setdefault(product_id, []).append(
                    {"id": transaction_id[:10], **item})
            else:
                subscriber["subscriptions"][product_id] = {
                    **item, "expires_date": iso(expires_ms), "period_type": "normal",
                    "ownership_type": "PURCHASED",
                    "unsubscribe_detected_at": None, "billing_issues_detected_at": None, "refunded_at": None,
                    "grace_period_expires_date": None, "auto_resume_date": None}
            for entitlement in entitlement_ids:
                subscriber["entitlements"][entitlement] = {
                    "product_identifier": product_id, "purchase_date": iso(purchased_ms),
                    "expires_date": iso(expires_ms), "grace_period_expires_date": None}

    def alias(self, app_user_id: str, original_app_user_id: str) -> None:
        """``app_user_id`` (an anonymous id) belongs to the customer first seen as
        ``original_app_user_id`` (after the app's logIn)."""
        with self.lock:
            subscriber = self.subscribers.setdefault(
                app_user_id, {"subscriptions": {}, "non_subscriptions": {}, "entitlements": {}})
            subscriber["original_app_user_id"] = original_app_user_id

    def route(self, request: Recorded) -> tuple[str | None, Default]:
        match = _SUBSCRIBER_PATH.match(request.path)
        if not match:
            return None, lambda _req: (404, {"code": 7259, "message": "Not found."})
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return None, lambda _req: (401, {"code": 7225, "message": "Invalid API key."})
        app_user_id = unquote(match.group(1))

        def subscriber(_request: Recorded) -> tuple[int, dict[str, Any]]:
            with self.lock:
                found = self.subscribers.get(app_user_id, {})
                original = found.get("original_app_user_id", app_user_id)
                body = {"original_app_user_id": original, "first_seen": iso(int(time.time() * 1000)),
                        "management_url": None, "other_purchases": {}, "subscriber_attributes": {},
                        "subscriptions": dict(found.get("subscriptions", {})),
                        "non_subscriptions": {product: list(items) for product, items
                                              in found.get("non_subscriptions", {}).items()},
                        "entitlements": dict(found.get("entitlements", {}))}
            return 200, {"request_date": iso(int(time.time() * 1000)),
                         "request_date_ms": int(time.time() * 1000), "subscriber": body}

        return SUBSCRIBER, subscriber
