"""A local HTTP server that speaks the parts of Stripe's API the project uses, so the
real ``stripe`` SDK code path runs in tests and locally: ``POST /v1/checkout/sessions``
(form-encoded, like the SDK sends it) and ``GET /v1/subscriptions/{id}``. Tests script
responses and errors per route; every request is recorded (form bodies decoded into
nested dicts).

Also builds what Stripe sends back: events around a session (checkout, invoice,
subscription, refund) and their ``Stripe-Signature`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from devkit.fake_http import Default, FakeServer, Recorded, Scripted

SESSIONS = "POST /v1/checkout/sessions"
SUBSCRIPTION = "GET /v1/subscriptions"
_SUBSCRIPTION_PATH = re.compile(r"^/v1/subscriptions/([^/?]+)")


def error(status: int, message: str, *, type: str = "invalid_request_error",
          code: str | None = None) -> Scripted:
    """A scripted Stripe error answer (``{"error": {...}}``)."""
    return Scripted(status=status, body={"error": {"type": type, "message": message, "code": code}})


def _error_answer(status: int, message: str) -> Default:
    return lambda _request: (status, error(status, message).body)


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``a[b][0][c]=v`` form pairs (Stripe's encoding) as nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(node: Any) -> Any:
        if isinstance(node, dict):
            if node and all(k.isdigit() for k in node):
                return [lists(node[k]) for k in sorted(node, key=int)]
            return {k: lists(v) for k, v in node.items()}
        return node

    return lists(root)


@dataclass
class FakeStripe(FakeServer):
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)

    methods: ClassVar[tuple[str, ...]] = ("GET", "POST")

    def script(self, route: str, *responses: Scripted) -> None:
        """Queue responses for ``route`` (``SESSIONS`` or ``SUBSCRIPTION``), used in order."""
        self._queue(route, responses)

    def calls(self, route: str) -> list[Recorded]:
        method, prefix = route.split(" ", 1)
        return [r for r in self.requests if r.headers.get(":method") == method and r.path.startswith(prefix)]

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.sessions.clear()
            self.subscriptions.clear()

    def route(self, request: Recorded) -> tuple[str | None, Default]:
        if request.headers[":method"] == "POST":
            if not request.headers.get("authorization", "").startswith("Bearer "):
                return None, _error_answer(401, "You did not provide an API key.")
            if request.path.split("?")[0] != "/v1/checkout/sessions":
                return None, _error_answer(404, "Unrecognized request URL")
            return SESSIONS, self.create_session
        match = _SUBSCRIPTION_PATH.match(request.path)
        if not match:
            return None, _error_answer(404, "Unrecognized request URL")
        sub_id = match.group(1)

        def subscription(_request: Recorded) -> tuple[int, dict[str, Any]]:
            found = self.subscriptions.get(sub_id)
            if found is None:
                missing = error(404, f"No such subscription: '{sub_id}'", code="resource_missing")
                return missing.status, missing.body
            return 200, found

        return SUBSCRIPTION, subscription

    def response_headers(self) -> dict[str, str]:
        return {"request-id": f"req_{secrets.token_hex(7)}"}

    def create_session(self, request: Recorded) -> tuple[int, dict[str, Any]]:
        """The default answer: an open Checkout Session built from the request."""
        params = form(request)
        items = params.get("line_items", [])
        amount = sum(int(i.get("price_data", {}).get("unit_amount", 0)) * int(i.get("quantity", 1))
                     for i in items)
        currency = next((i["price_data"]["currency"] for i in items if "price_data" in i), "usd")
        session_id = f"cs_test_{secrets.token_hex(16)}"
        now = int(time.time())
        session = {
            "id": session_id, "object": "checkout.session", "livemode": False,
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "mode": params.get("mode", "payment"), "status": "open", "payment_status": "unpaid",
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata", {}), "customer_email": params.get("customer_email"),
            "amount_subtotal": amount, "amount_total": amount, "currency": currency,
            "success_url": params.get("success_url"), "cancel_url": params.get("cancel_url"),
            "created": now, "expires_at": now + 24 * 3600,
            "payment_intent": None, "subscription": None, "customer": None, "invoice": None,
        }
        with self.lock:
            self.sessions[session_id] = session
        return 200, session


def form(request: Recorded) -> dict[str, Any]:
    """A recorded form-encoded request body as nested dicts and lists."""
    return unflatten(parse_qsl(request.body.decode(), keep_blank_values=True))


# --- What Stripe sends back -----------------------------------------------------------

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_test_{next(_ids):06d}{secrets.token_hex(6)}"


def event(type: str, obj: dict[str, Any], *, created: int | None = None,
          id: str | None = None) -> dict[str, Any]:
    """A Stripe event (API version 2025+ shapes) carrying ``obj``."""
    return {
        "id": id or new_id("evt"), "object": "event", "api_version": "2025-03-31.basil",
        "created": int(time.time()) if created is None else created, "livemode": False,
        "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
        "type": type, "data": {"object": obj},
    }


def completed_session(session: dict[str, Any], *, payment_status: str = "paid",
                      subscription: str | None = None, payment_intent: str | None = None,
                      **fields: Any) -> dict[str, Any]:
    """``session`` as Stripe shows it once the buyer finished checkout."""
    done = dict(session, status="complete", payment_status=payment_status, customer=new_id("cus"))
    if done["mode"] == "subscription":
        done["subscription"] = subscription or new_id("sub")
        done["invoice"] = new_id("in")
    else:
        done["payment_intent"] = payment_intent or new_id("pi")
    done.update(fields)
    return done


def subscription(sub_id: str, metadata: dict[str, Any], *, status: str = "active", period_start: int,
                 period_end: int, cancel_at_period_end: bool = False, **fields: Any) -> dict[str, Any]:
    """A subscription object; the period lives on its item (API 2025-03-31 and later)."""
    obj = {
        "id": sub_id, "object": "subscription", "status": status, "metadata": metadata,
        "cancel_at_period_end": cancel_at_period_end, "customer": new_id("cus"),
        "created": period_start, "start_date": period_start,
        "canceled_at": None, "ended_at": None, "livemode": False,
        "items": {"object": "list", "data": [{
            "id": new_id("si"), "object": "subscription_item",
            "current_period_start": period_start, "current_period_end": period_end}]},
    }
    obj.update(fields)
    return obj


def invoice(sub_id: str, metadata: dict[str, Any], *, amount: int, currency: str, period_start: int,
            period_end: int, billing_reason: str = "subscription_create", paid: bool = True,
            payment_intent: str | None = None) -> dict[str, Any]:
    """An invoice of a subscription (API 2025-03-31 shape: the subscription under
    ``parent.subscription_details``, the period on the line)."""
    return {
        "id": new_id("in"), "object": "invoice", "status": "paid" if paid else "open",
        "billing_reason": billing_reason, "currency": currency.lower(),
        "amount_due": amount, "amount_paid": amount if paid else 0, "amount_remaining": 0 if paid else amount,
        "customer": new_id("cus"), "livemode": False,
        "period_start": period_start, "period_end": period_start,
        "parent": {"type": "subscription_details", "quote_details": None,
                   "subscription_details": {"subscription": sub_id, "metadata": metadata}},
        "lines": {"object": "list", "data": [{
            "id": new_id("il"), "object": "line_item", "amount": amount, "currency": currency.lower(),
            "period": {"start": period_start, "end": period_end}}]},
        "payments": {"object": "list", "data": [{
            "object": "invoice_payment", "status": "paid" if paid else "open",
            "payment": {"type": "payment_intent", "payment_intent": payment_intent or new_id("pi")}}]},
    }


def charge(payment_intent: str, *, amount: int, currency: str, amount_refunded: int,
           metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A charge of ``payment_intent`` with ``amount_refunded`` refunded so far."""
    return {
        "id": new_id("ch"), "object": "charge", "amount": amount, "amount_captured": amount,
        "amount_refunded": amount_refunded, "refunded": amount_refunded >= amount,
        "currency": currency.lower(), "payment_intent": payment_intent, "paid": True,
        "status": "succeeded", "metadata": metadata or {}, "livemode": False,
    }


def signature(payload: bytes | str, secret: str, *, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header for ``payload``: ``t=<unix>,v1=<hex>``, where v1 is
    HMAC-SHA256(secret, "<t>.<payload>") (Stripe's documented scheme; the SDK only
    verifies, it has no public signer)."""
    t = int(time.time()) if timestamp is None else timestamp
    body = payload if isinstance(payload, bytes) else payload.encode()
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={v1}"
