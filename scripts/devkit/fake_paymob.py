"""A local HTTP server that speaks the part of Paymob's API the project uses, the
Intention API (``POST /v1/intention/``), so checkout's real HTTP code path runs in tests
and locally. Tests script responses, delays and errors; every request is recorded.

Also builds what Paymob sends back: a transaction processed callback for an intention
(the shape of Paymob's published sample) and its HMAC, computed with the layer's own
``common.signing.paymob_processed_message`` (one definition of the signed string).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devkit.fake_http import Default, FakeServer, Recorded, Scripted

INTENTION_PATH = "/v1/intention/"
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
class FakePaymob(FakeServer):
    intentions: dict[int, dict[str, Any]] = field(default_factory=dict)  # by intention_order_id
    _order_ids: ClockIds = field(default_factory=ClockIds)
    _transaction_ids: ClockIds = field(default_factory=ClockIds)

    def script(self, *responses: Scripted) -> None:
        """Queue responses for the next intention requests, used in order."""
        self._queue(INTENTION_PATH, responses)

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.intentions.clear()

    def route(self, request: Recorded) -> tuple[str | None, Default]:
        if request.path.split("?")[0] != INTENTION_PATH:
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
        return 201, intention

    def next_transaction_id(self) -> int:
        return next(self._transaction_ids)


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
