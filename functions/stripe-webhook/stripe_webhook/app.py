"""stripe-webhook: Stripe's events, at the root of its function URL.

    POST /   a Stripe event, signed in the Stripe-Signature header

The raw body is verified with ``STRIPE_WEBHOOK_SECRET`` (one or two active secrets while
rolling, timestamps older than 300 s refused): a failure is 400, Stripe's convention,
and nothing is stored. The verified event is typed (422 for wrong types) and applied
once (``events.process``). 200 for processed, duplicate, ignored and unmatched events;
5xx only when something transient failed, so Stripe retries.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from pydantic import ValidationError

from common import config, http, signing
from common.errors import SignatureError
from common.providers import stripe_events as events

#: Stripe events are rarely over a few tens of kilobytes.
MAX_BODY_BYTES = 256 * 1024
TOLERANCE_S = 300

app = http.make_resolver(max_body_bytes=MAX_BODY_BYTES)


@app.post("/")
def webhook() -> Response[dict[str, Any]]:  # a Response on every path: the 422 envelope is one
    request = app.current_event
    raw = signing.raw_body(request.raw_event)
    try:
        event = signing.verify_stripe(raw, request.headers.get("stripe-signature"),
                                      config.secret_list("STRIPE_WEBHOOK_SECRET"), tolerance=TOLERANCE_S)
    except SignatureError:
        raise SignatureError("signature verification failed", status=400) from None
    try:
        ev, obj = events.parse(event)
    except ValidationError as exc:
        return _invalid(exc)
    status = events.process(ev, obj, event, headers=request.headers, raw=raw)
    return Response(200, content_types.APPLICATION_JSON, {"status": status})


def _invalid(exc: ValidationError) -> Response[dict[str, Any]]:
    # Locations and messages only: the values are not echoed.
    fields: list[dict[str, Any]] = [{"loc": ["body", *err["loc"]], "msg": err["msg"]} for err in exc.errors()]
    return http.error_response(422, "invalid_input", "the event is invalid", fields=fields)


handler = http.make_handler(app)
