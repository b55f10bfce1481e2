r"""A local HTTP server that speaks the parts of Stripe's API the project uses, so the
real ``stripe`` SDK code path runs in tests and locally: ``POST /v1/checkout/sessions``
(form-encoded, like the SDK sends it), ``GET /v1/subscriptions/{id}`` and ``GET
/v1/events`` (the events ``publish``\ed, newest first, filtered by ``created`` and
``types``, paginated with ``limit`` and ``starting_after``: what reconcile reads). Tests script
responses and errors per route; every request is recorded (form bodies decoded into
nested dicts).

Also builds what Stripe sends back: events around a session (checkout, invoice,
subscription, refund) and their ``Stripe-Signature`` header.

And serves the buyer's side: a session's ``url`` is the fake's own Checkout page
(``GET /c/pay/{session id}``) with the order and buttons to pay, decline or pay a wrong
amount (``devkit.checkout_pages``). Each sends the event Stripe would, signed with
``webhook_secret``, to ``webhook_url`` (the runner sets both: stripe-webhook's secret and
URL): ``checkout.session.completed`` (for a plan, with a subscription the fake's API then
knows), ``checkout.session.async_payment_failed``, or ``checkout.session.completed`` with
another ``amount_total``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from devkit import checkout_pages
from devkit.fake_http import Default, FakeServer, Page, Recorded, Scripted

SESSIONS = "POST /v1/checkout/sessions"
SUBSCRIPTION = "GET /v1/subscriptions"
EVENTS = "GET /v1/events"
_SUBSCRIPTION_PATH = re.compile(r"^/v1/subscriptions/([^/?]+)")
_PAGE_PATH = re.compile(r"^/c/pay/([A-Za-z0-9_]+)$")
_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}


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
    #: The events Stripe has created (``publish``), served by ``GET /v1/events``.
    events: list[dict[str, Any]] = field(default_factory=list)
    #: The create-session parameters (line items, subscription metadata) by session id.
    session_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Where the checkout pages send events, and what they sign them with.
    webhook_url: str | None = None
    webhook_secret: str | None = None

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
            self.session_params.clear()
            self.events.clear()

    def publish(self, *events: dict[str, Any]) -> None:
        """Events Stripe created: the events API lists them from now on."""
        with self.lock:
            self.events.extend(events)

    def route(self, request: Recorded) -> tuple[str | None, Default]:
        page = _PAGE_PATH.match(request.path.split("?")[0])
        if page:  # the buyer's browser: no API key
            session_id = page.group(1)
            if request.headers[":method"] == "POST":
                return None, lambda req: self.pay(session_id, req)
            return None, lambda _req: self.checkout_page(session_id)
        if request.headers[":method"] == "POST":
            if not request.headers.get("authorization", "").startswith("Bearer "):
                return None, _error_answer(401, "You did not provide an API key.")
            if request.path.split("?")[0] != "/v1/checkout/sessions":
                return None, _error_answer(404, "Unrecognized request URL")
            return SESSIONS, self.create_session
        if request.path.split("?")[0] == "/v1/events":
            if not request.headers.get("authorization", "").startswith("Bearer "):
                return None, _error_answer(401, "You did not provide an API key.")
            return EVENTS, self.list_events
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

    def list_events(self, request: Recorded) -> tuple[int, dict[str, Any]]:
        """``GET /v1/events``: newest first, as Stripe lists them."""
        query = unflatten(parse_qsl(request.path.partition("?")[2], keep_blank_values=True))
        created = query.get("created", {})
        types = query.get("types") or ([query["type"]] if query.get("type") else None)
        limit = min(int(query.get("limit", 10)), 100)
        with self.lock:
            found = sorted(self.events, key=lambda e: (e["created"], e["id"]), reverse=True)
        found = [e for e in found
                 if (types is None or e["type"] in types)
                 and ("gte" not in created or e["created"] >= int(created["gte"]))
                 and ("gt" not in created or e["created"] > int(created["gt"]))
                 and ("lte" not in created or e["created"] <= int(created["lte"]))
                 and ("lt" not in created or e["created"] < int(created["lt"]))]
        if after := query.get("starting_after"):
            ids = [e["id"] for e in found]
            found = found[ids.index(after) + 1:] if after in ids else []
        return 200, {"object": "list", "url": "/v1/events", "has_more": len(found) > limit,
                     "data": found[:limit]}

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
            "url": f"{self.base_url}/c/pay/{session_id}",  # the local checkout page
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
            self.session_params[session_id] = params
        return 200, session

    # --- the buyer's side: Stripe Checkout, locally -----------------------------------------

    def _rows(self, session: dict[str, Any]) -> list[tuple[str, str, str]]:
        params = self.session_params.get(session["id"], {})
        names = []
        for item in params.get("line_items", []):
            product = item.get("price_data", {}).get("product_data", {}).get("name") or item.get("price", "?")
            names.append(f"{product} x {item.get('quantity', 1)}")
        return [("items", "Items", ", ".join(names) or "-"),
                ("amount", "Amount", checkout_pages.money(session["amount_total"], session["currency"])),
                ("mode", "Mode", session["mode"]),
                ("merchant-order", "Merchant order", str(session["metadata"].get("order_id", "-"))),
                ("session", "Checkout Session", session["id"]),
                ("email", "Email", str(session.get("customer_email") or "-"))]

    def checkout_page(self, session_id: str) -> tuple[int, Page]:
        with self.lock:
            session = self.sessions.get(session_id)
        if session is None:
            return 404, checkout_pages.not_found("Stripe", "No Checkout Session has this id.")
        return 200, checkout_pages.checkout_page("Stripe", action=f"/c/pay/{session_id}", hidden={},
                                                 rows=self._rows(session), webhook_url=self.webhook_url)

    def pay(self, session_id: str, request: Recorded) -> tuple[int, Page]:
        """A button: the session's event, signed, sent to ``webhook_url``."""
        outcome = dict(parse_qsl(request.body.decode(errors="replace"))).get("outcome", "")
        with self.lock:
            session = self.sessions.get(session_id)
            params = self.session_params.get(session_id, {})
        if session is None or outcome not in checkout_pages.OUTCOMES:
            return 404, checkout_pages.not_found("Stripe", "No such Checkout Session or button.")
        rows = self._rows(session)
        if not (self.webhook_url and self.webhook_secret):
            missing = "the webhook URL" if not self.webhook_url else "STRIPE_WEBHOOK_SECRET"
            return 200, checkout_pages.result_page("Stripe", outcome, [], rows=rows, return_url=None,
                                                   error=f"Nothing sent: {missing} is not known to the fake.")
        if outcome == "decline":
            kind = "checkout.session.async_payment_failed"
            obj, back = completed_session(session, payment_status="unpaid"), session.get("cancel_url")
        else:
            fields: dict[str, Any] = {}
            if outcome == "wrong_amount":
                wrong = checkout_pages.wrong_amount(session["amount_total"])
                fields = {"amount_total": wrong, "amount_subtotal": wrong}
            elif session["mode"] == "subscription":
                fields["subscription"] = self._subscribe(params)
            kind, obj = "checkout.session.completed", completed_session(session, **fields)
            back = (session.get("success_url") or "").replace("{CHECKOUT_SESSION_ID}", session_id) or None
        created = event(kind, obj)
        self.publish(created)  # the events API lists it, whether or not the webhook gets it
        payload = json.dumps(created).encode()
        delivery = checkout_pages.send(self.webhook_url, payload,
                                       {"stripe-signature": signature(payload, self.webhook_secret)}, kind)
        return 200, checkout_pages.result_page("Stripe", outcome, [delivery], rows=rows, return_url=back)

    def _subscribe(self, params: dict[str, Any]) -> str:
        """A subscription for a plan's session, known to the fake's API from now on (the
        webhook fetches it for its period)."""
        price = (params.get("line_items") or [{}])[0].get("price_data", {})
        recurring = price.get("recurring") or {"interval": "month", "interval_count": "1"}
        days = _DAYS.get(recurring.get("interval", "month"), 30) * int(recurring.get("interval_count") or 1)
        sub_id, now = new_id("sub"), int(time.time())
        metadata = params.get("subscription_data", {}).get("metadata", {})
        with self.lock:
            self.subscriptions[sub_id] = subscription(sub_id, metadata, period_start=now,
                                                      period_end=now + days * 24 * 3600)
        return sub_id


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
