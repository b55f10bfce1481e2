r"""A local HTTP server that speaks the part of Paymob's API the project uses, the
Intention API (``POST /v1/intention/``), so checkout's real HTTP code path runs in tests
and locally, and the transaction inquiry reconcile uses (``POST /api/auth/tokens`` with
the API key, then ``POST /api/ecommerce/orders/transaction_inquiry`` with that token:
the order's transaction as ``record``\ed, or 404). Tests script responses, delays and
errors; every request is recorded.

It also serves the buyer's side: Unified Checkout's URL (``GET /unifiedcheckout/?publicKey
=…&clientSecret=…``, the ``checkout_url`` that checkout answers) is a local page with the
order and buttons to pay, decline or pay a wrong amount (``devkit.checkout_pages``); each
sends the processed callback, signed with ``hmac_secret``, to the intention's
``notification_url`` (the paymob-webhook URL), as Paymob does.

Also builds what Paymob sends back: a transaction processed callback for an intention
(the shape of Paymob's published sample) and its HMAC, computed with the layer's own
``common.signing.paymob_processed_message`` (one definition of the signed string).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from devkit import checkout_pages
from devkit.fake_http import Default, FakeServer, Page, Recorded, Scripted

INTENTION_PATH = "/v1/intention/"
AUTH_PATH = "/api/auth/tokens"
INQUIRY_PATH = "/api/ecommerce/orders/transaction_inquiry"
CHECKOUT_PATH = "/unifiedcheckout/"
PAY_PATH = "/unifiedcheckout/pay"
#: The merchant (``owner``) and card integration the fake's callbacks carry.
OWNER = 302852
INTEGRATION_ID = 4097558


class ClockIds:
    """Increasing ids that no later run of the fake repeats: the time in microseconds, or
    one more than the last id when that is later. Orders and transactions are kept in the
    database across restarts (``.local/pgdata``), so ids counted from a fixed start
    collided with the previous run's (the order's unique ``provider_order_id`` answered
    502, a transaction id the inbox had seen answered ``duplicate``). Far above the
    sample events' ids (Paymob's published 217503754, the demo order 217503760), and below
    2**53, so JavaScript reads them exactly."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __next__(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return self._last


@dataclass
class Checkout:
    """What the checkout page needs of an intention: where Paymob calls back."""

    intention: dict[str, Any]
    notification_url: str | None
    redirection_url: str | None


@dataclass
class FakePaymob(FakeServer):
    intentions: dict[int, dict[str, Any]] = field(default_factory=dict)  # by intention_order_id
    checkouts: dict[str, Checkout] = field(default_factory=dict)  # by client_secret
    #: What the checkout page signs callbacks with (the runner sets paymob-webhook's).
    hmac_secret: str | None = None
    #: Each Paymob order's latest transaction ``obj`` (``record``), for the inquiry.
    transactions: dict[int, dict[str, Any]] = field(default_factory=dict)
    _tokens: set[str] = field(default_factory=set)
    _order_ids: ClockIds = field(default_factory=ClockIds)
    _transaction_ids: ClockIds = field(default_factory=ClockIds)

    methods: ClassVar[tuple[str, ...]] = ("GET", "POST")

    def script(self, *responses: Scripted) -> None:
        """Queue responses for the next intention requests, used in order."""
        self._queue(INTENTION_PATH, responses)

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.intentions.clear()
            self.checkouts.clear()
            self.transactions.clear()

    def record(self, callback: dict[str, Any]) -> None:
        """A transaction Paymob processed (its callback body): the inquiry answers it."""
        with self.lock:
            self.transactions[int(callback["obj"]["order"]["id"])] = callback["obj"]

    def script_inquiry(self, *responses: Scripted) -> None:
        """Queue answers for the next transaction inquiries (errors, delays)."""
        self._queue(INQUIRY_PATH, responses)

    def route(self, request: Recorded) -> tuple[str | None, Default]:
        path, method = request.path.split("?")[0], request.headers[":method"]
        if (method, path) == ("GET", CHECKOUT_PATH):
            return None, self.checkout_page
        if (method, path) == ("POST", PAY_PATH):
            return None, self.pay
        if (method, path) == ("POST", AUTH_PATH):
            return None, self.auth_token
        if (method, path) == ("POST", INQUIRY_PATH):
            return INQUIRY_PATH, self.inquiry
        if (method, path) != ("POST", INTENTION_PATH):
            return None, lambda _req: (404, {"detail": "Not found."})
        return INTENTION_PATH, self.create_intention

    def create_intention(self, request: Recorded) -> tuple[int, dict[str, Any]]:
        """The default answer: an intention like Paymob's (201), remembered by order id."""
        if not request.headers.get("authorization", "").startswith("Token "):
            return 401, {"detail": "Authentication credentials were not provided."}
        try:
            body = request.json()
        except ValueError:
            return 400, {"detail": "JSON parse error"}
        missing = [k for k in ("amount", "currency", "payment_methods", "billing_data") if k not in body]
        if missing:
            return 400, {k: ["This field is required."] for k in missing}
        order_id = next(self._order_ids)
        intention = {
            "id": f"pi_test_{secrets.token_hex(12)}",
            "client_secret": f"egy_csk_test_{secrets.token_hex(16)}",
            "intention_order_id": order_id,
            "special_reference": body.get("special_reference"),
            "amount": body["amount"],
            "currency": body["currency"],
            "status": "intended",
            "created": datetime.now(UTC).isoformat(),
            "payment_methods": [{"integration_id": m if isinstance(m, int) else INTEGRATION_ID,
                                 "name": None, "method_type": "online", "currency": body["currency"],
                                 "live": False, "use_cvc_with_moto": False} for m in body["payment_methods"]],
            "payment_keys": [{"integration": m if isinstance(m, int) else INTEGRATION_ID,
                              "key": secrets.token_hex(24), "gateway_type": "VPC", "iframe_id": None,
                              "order_id": order_id, "redirection_url": body.get("redirection_url"),
                              "save_card": False} for m in body["payment_methods"]],
            "intention_detail": {"amount": body["amount"], "currency": body["currency"],
                                 "items": body.get("items", []), "billing_data": body["billing_data"]},
            "extras": {"creation_extras": body.get("extras"), "confirmation_extras": None},
            "confirmed": False,
            "object": "paymentintention",
        }
        with self.lock:
            self.intentions[order_id] = intention
            self.checkouts[intention["client_secret"]] = Checkout(
                intention, body.get("notification_url"), body.get("redirection_url"))
        return 201, intention

    def auth_token(self, request: Recorded) -> tuple[int, dict[str, Any]]:
        try:
            api_key = request.json().get("api_key")
        except (ValueError, AttributeError):
            api_key = None
        if not api_key:
            return 400, {"api_key": ["This field is required."]}
        token = f"ZXlK{secrets.token_hex(24)}"
        with self.lock:
            self._tokens.add(token)
        return 201, {"token": token, "profile": {"id": OWNER}}

    def inquiry(self, request: Recorded) -> tuple[int, dict[str, Any]]:
        """The order's latest transaction, like the processed callback's ``obj``."""
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        with self.lock:
            known = token in self._tokens
        if not known:
            return 401, {"detail": "Authentication credentials were not provided."}
        try:
            order_id = int(request.json()["order_id"])
        except (ValueError, KeyError, TypeError):
            return 400, {"order_id": ["A valid integer is required."]}
        with self.lock:
            found = self.transactions.get(order_id)
        return (200, found) if found else (404, {"detail": "Not found."})

    def next_transaction_id(self) -> int:
        return next(self._transaction_ids)

    # --- the buyer's side: Unified Checkout, locally ----------------------------------------

    def _rows(self, intention: dict[str, Any]) -> list[tuple[str, str, str]]:
        detail = intention["intention_detail"]
        billing = detail.get("billing_data") or {}
        items = ", ".join(str(i.get("name")) for i in detail.get("items") or []) or "-"
        name = " ".join(str(billing.get(k) or "") for k in ("first_name", "last_name")).strip()
        return [("items", "Items", items),
                ("amount", "Amount", checkout_pages.money(intention["amount"], intention["currency"])),
                ("merchant-order", "Merchant order", str(intention.get("special_reference") or "-")),
                ("paymob-order", "Paymob order", str(intention["intention_order_id"])),
                ("billed-to", "Billed to", f"{name} <{billing.get('email', '')}>")]

    def checkout_page(self, request: Recorded) -> tuple[int, Page]:
        query = parse_qs(urlsplit(request.path).query)
        secret = (query.get("clientSecret") or [""])[0]
        with self.lock:
            checkout = self.checkouts.get(secret)
        if checkout is None:
            return 404, checkout_pages.not_found("Paymob", "No intention has this client secret.")
        return 200, checkout_pages.checkout_page(
            "Paymob", action=PAY_PATH, hidden={"clientSecret": secret}, rows=self._rows(checkout.intention),
            webhook_url=checkout.notification_url)

    def pay(self, request: Recorded) -> tuple[int, Page]:
        """A button: the processed callback for the intention, signed, sent to its
        notification URL; the result page links to the response callback (the redirect)."""
        form = dict(parse_qsl(request.body.decode(errors="replace")))
        outcome = form.get("outcome", "")
        with self.lock:
            checkout = self.checkouts.get(form.get("clientSecret", ""))
        if checkout is None or outcome not in checkout_pages.OUTCOMES:
            return 404, checkout_pages.not_found("Paymob", "No such intention or button.")
        intention, rows = checkout.intention, self._rows(checkout.intention)
        if not (self.hmac_secret and checkout.notification_url):
            missing = "PAYMOB_HMAC_SECRET" if not self.hmac_secret else "the intention's notification_url"
            return 200, checkout_pages.result_page("Paymob", outcome, [], rows=rows, return_url=None,
                                                   error=f"Nothing sent: {missing} is not known to the fake.")
        amount = intention["amount"]
        if outcome == "wrong_amount":
            amount = checkout_pages.wrong_amount(amount)
        callback = transaction(intention["intention_order_id"], amount, intention["currency"],
                               id=self.next_transaction_id(), success=outcome != "decline",
                               merchant_order_id=intention.get("special_reference"))
        self.record(callback)  # the inquiry knows it, whether or not the callback arrives
        signed = hmac_for(callback["obj"], self.hmac_secret)
        url = checkout.notification_url
        url += ("&" if "?" in url else "?") + urlencode({"hmac": signed})
        delivery = checkout_pages.send(url, json.dumps(callback).encode(), {}, "processed callback")
        back = None
        if checkout.redirection_url:
            query = urlencode(response_query(callback["obj"], self.hmac_secret))
            back = checkout.redirection_url + ("&" if "?" in checkout.redirection_url else "?") + query
        return 200, checkout_pages.result_page("Paymob", outcome, [delivery], rows=rows, return_url=back)


# --- What Paymob sends back -------------------------------------------------------------


def transaction(order_id: int, amount_cents: int, currency: str, *, id: int, success: bool = True,
                pending: bool = False, merchant_order_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A processed callback body ``{"type": "TRANSACTION", "obj": {...}}`` for Paymob's
    order ``order_id``, shaped like Paymob's published sample. ``fields`` override or add
    ``obj`` keys (``is_refunded=True``, ``has_parent_transaction=True``, ``is_refund=True``...)."""
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    obj: dict[str, Any] = {
        "id": id,
        "pending": pending,
        "amount_cents": amount_cents,
        "success": success,
        "is_auth": False,
        "is_capture": False,
        "is_standalone_payment": True,
        "is_voided": False,
        "is_refunded": False,
        "is_3d_secure": True,
        "integration_id": INTEGRATION_ID,
        "has_parent_transaction": False,
        "order": {"id": order_id, "created_at": now, "amount_cents": amount_cents, "currency": currency,
                  "merchant_order_id": merchant_order_id,
                  "paid_amount_cents": amount_cents if success else 0},
        "created_at": now,
        "currency": currency,
        "source_data": {"pan": "2346", "type": "card", "tenure": None, "sub_type": "MasterCard"},
        "error_occured": False,
        "owner": OWNER,
        "is_refund": False,
        "is_void": False,
        "refunded_amount_cents": 0,
        "merchant_order_id": merchant_order_id,
        "data": {"message": "Approved" if success else "Declined"},
    }
    obj.update(fields)
    return {"type": "TRANSACTION", "obj": obj}


def hmac_for(obj: Mapping[str, Any], secret: str) -> str:
    """The ``?hmac=`` Paymob puts on a processed callback for ``obj``: HMAC-SHA512, hex."""
    from common.signing import paymob_processed_message

    message = paymob_processed_message(obj).encode("utf-8", "surrogatepass")
    return hmac.new(secret.encode(), message, hashlib.sha512).hexdigest()


def response_query(obj: Mapping[str, Any], secret: str) -> dict[str, str]:
    """The GET response callback's query string for ``obj`` (the browser redirect): the
    signed fields flattened (``order`` for the order id, dotted ``source_data.*``), as
    text, with their hmac."""
    from common.signing import PAYMOB_FIELDS, paymob_response_message

    def text(value: Any) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    query: dict[str, str] = {}
    for name in PAYMOB_FIELDS:
        if name == "order.id":
            query["order"] = text(obj["order"]["id"])
        elif name.startswith("source_data."):
            query[name] = text(obj["source_data"][name.split(".", 1)[1]])
        else:
            query[name] = text(obj[name])
    query["merchant_order_id"] = text(obj.get("merchant_order_id") or "")
    query["txn_response_code"] = "APPROVED" if obj["success"] else "DECLINED"
    message = paymob_response_message(query).encode()
    query["hmac"] = hmac.new(secret.encode(), message, hashlib.sha512).hexdigest()
    return query
