"""paymob-webhook: Paymob's transaction callbacks, at the root of its function URL.

    POST /   processed callback {"type": "TRANSACTION", "obj": {...}}, ?hmac=<hex>
    GET  /   response callback (the buyer's browser, redirected): a status page only

Verification first, with ``PAYMOB_HMAC_SECRET`` (comma-separated while rotating): a
missing or wrong hmac is 401 and nothing is stored. Then the signed callback is typed
(422 for wrong types) and applied once (``callbacks.process``). 200 for processed,
duplicate, ignored and unmatched callbacks; 5xx only when something transient failed,
so Paymob retries.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from pydantic import ValidationError

from common import config, http, safejson, signing
from common.errors import AppError, SignatureError
from common.observability import logger
from common.providers import paymob_callbacks as callbacks
from common.providers.paymob_models import Transaction

#: Paymob's callbacks are a few kilobytes.
MAX_BODY_BYTES = 64 * 1024

app = http.make_resolver(max_body_bytes=MAX_BODY_BYTES)


@app.post("/")
def processed() -> Response[dict[str, Any]]:  # a Response on every path: the 422 envelope is one
    event = app.current_event
    raw = signing.raw_body(event.raw_event)
    # Strings kept exactly as sent until the HMAC over them is checked.
    callback = safejson.loads(raw, strings="keep")
    if not (isinstance(callback, dict) and isinstance(callback.get("type"), str)
            and isinstance(callback.get("obj"), dict)):
        raise AppError("expected {\"type\": ..., \"obj\": {...}}", code="malformed_callback")
    if callback["type"] != callbacks.EVENT_TYPE:
        # TOKEN and DELIVERY_STATUS callbacks are signed differently and not used here.
        logger.info("paymob callback type ignored", extra={"callback_type": callback["type"][:40]})
        return _ok({"status": "ignored"})
    hmac_value = (event.query_string_parameters or {}).get("hmac")
    secrets = config.secret_list("PAYMOB_HMAC_SECRET")
    if not signing.verify_paymob_processed(callback["obj"], hmac_value, secrets):
        raise SignatureError("signature verification failed")
    # Signed: applied whatever its strings hold; what text columns cannot store is
    # replaced (the inbox keeps the verified bytes).
    callback = safejson.clean(callback)
    try:
        txn = Transaction.model_validate(callback["obj"])
    except ValidationError as exc:
        return _invalid(exc)
    return _ok({"status": callbacks.process(txn, callback, headers=event.headers, raw=raw)})


@app.get("/")
def response_callback() -> Response[Any]:  # HTML or JSON: no response model
    query = dict(app.current_event.query_string_parameters or {})
    if not signing.verify_paymob_response(query, config.secret_list("PAYMOB_HMAC_SECRET")):
        raise SignatureError("signature verification failed")
    if query.get("success") == "true" and query.get("pending") == "false":
        status, title, text = "paid", "Payment received", "Your purchase appears in the app shortly."
    elif query.get("pending") == "true":
        status, title, text = "pending", "Payment pending", "Your payment is being processed."
    else:
        status, title, text = "declined", "Payment not completed", "Your payment did not go through."
    if "text/html" not in app.current_event.headers.get("accept", ""):
        return Response(200, content_types.APPLICATION_JSON, {"status": status})
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>{text}</p></body></html>")
    return Response(200, "text/html; charset=utf-8", page)


def _ok(body: dict[str, Any]) -> Response[dict[str, Any]]:
    return Response(200, content_types.APPLICATION_JSON, body)


def _invalid(exc: ValidationError) -> Response[dict[str, Any]]:
    # Locations and messages only: the values are not echoed.
    fields: list[dict[str, Any]] = [{"loc": ["body", "obj", *err["loc"]], "msg": err["msg"]}
                                    for err in exc.errors()]
    return http.error_response(422, "invalid_input", "the callback is invalid", fields=fields)


handler = http.make_handler(app)
