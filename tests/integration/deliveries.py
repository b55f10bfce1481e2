"""Requests as the real callers make them, for tests that drive every function: a valid
bearer token for the client routes, a valid signature over exactly the bytes sent for the
webhooks, and the sample events of events/ made authentic for the test settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

from common import auth
from devkit import ROOT, fake_paymob, fake_stripe
from tests.integration.payments import helpers

PAYMOB_SECRET, STRIPE_SECRET = helpers.PAYMOB_SECRET, helpers.STRIPE_SECRET
REVENUECAT_AUTH = "test-revenuecat-webhook-auth"
#: What the webhooks need to verify deliveries (plus helpers.ENV for the rest).
WEBHOOK_ENV = {**helpers.ENV, "REVENUECAT_WEBHOOK_AUTH": REVENUECAT_AUTH}


def body_bytes(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return base64.b64decode(body)
    return body.encode("utf-8", "surrogatepass")


def sign(function: str, event: dict[str, Any]) -> None:
    """Make a webhook delivery authentic: the provider's signature over what is sent."""
    method = event["requestContext"]["http"]["method"]
    headers = event.setdefault("headers", {})
    query = event.get("queryStringParameters") or {}
    if function == "stripe-webhook":
        headers["stripe-signature"] = fake_stripe.signature(body_bytes(event), STRIPE_SECRET)
    elif function == "revenuecat-webhook":
        headers["authorization"] = REVENUECAT_AUTH
    elif function == "paymob-webhook" and method == "POST":
        try:
            callback = json.loads(body_bytes(event))
        except ValueError:
            return
        if isinstance(callback, dict) and isinstance(callback.get("obj"), dict):
            query["hmac"] = fake_paymob.hmac_for(callback["obj"], PAYMOB_SECRET)
    elif function == "paymob-webhook":
        from common.signing import paymob_response_message

        message = paymob_response_message(query).encode("utf-8", "surrogatepass")
        query["hmac"] = hmac.new(PAYMOB_SECRET.encode(), message, hashlib.sha512).hexdigest()
    if query:
        event["queryStringParameters"] = query


def authentic(function: str, event: dict[str, Any], user: uuid.UUID) -> dict[str, Any]:
    """A copy of ``event`` as its real caller would send it now: the client's bearer token
    for ``user``, or the webhook's signature."""
    event = json.loads(json.dumps(event))
    headers = event.setdefault("headers", {})
    if "authorization" in headers and function not in ("revenuecat-webhook",):
        headers["authorization"] = f"Bearer {auth.mint_token(user)}"
    sign(function, event)
    return event


def samples() -> list[tuple[str, str, dict[str, Any]]]:
    """(function, sample name, event) of every sample of every function."""
    return [(folder.name, path.stem, json.loads(path.read_text()))
            for folder in sorted(p for p in (ROOT / "events").iterdir() if p.is_dir())
            for path in sorted(folder.glob("*.json"))]
