"""Webhook authenticity: one constant-time HMAC verifier and the three providers' schemes.

- ``verify_hmac``: HMAC-SHA256/512, hex or base64, against every active secret, so a
  secret is rotated with no downtime (configure old and new, deploy, drop the old). The
  standard library's ``hmac``/``hashlib`` is the well-kept implementation here.
- Paymob: HMAC-SHA512 (hex) over 20 documented transaction fields, concatenated in the
  documented order, for the POST processed callback (``obj.*``, hmac in the query string)
  and the GET response callback (flat query keys). No timestamp is signed, so replays are
  stopped by the webhook inbox (unique ``obj.id``), not here.
- Stripe: the stripe SDK's ``WebhookSignature.verify_header`` with a tolerance (the replay
  window) on the raw body. ``stripe`` is a dependency of the stripe-webhook function, not
  of this layer: it is imported inside ``verify_stripe`` only (import cost, and functions
  that never call it need not bundle it).
- RevenueCat: no payload signature exists; the configured Authorization header value is
  compared in constant time, bare or as ``Bearer <value>``.

A rejection logs why (scheme, field set, null rendering, how many secrets were tried, the
first characters of the received signature), never a secret or a whole signature.
Secrets are passed in by the caller (``config.secret_list(...)``), which keeps this module
free of configuration and easy to test.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from common import safejson
from common.errors import AppError, SignatureError
from common.observability import logger

Algorithm = Literal["sha256", "sha512"]
Encoding = Literal["hex", "base64"]

_DIGESTS: dict[str, Callable[..., Any]] = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}

#: How many leading characters of a received signature a log line may show.
_PREFIX = 6


# --- the one verifier -------------------------------------------------------------------


def _keys(secrets: Sequence[str | bytes] | str | bytes) -> list[bytes]:
    """The non-empty secrets as bytes. A lone string is one secret, not its characters;
    an empty secret is dropped (an HMAC under an empty key is forgeable by anyone)."""
    if isinstance(secrets, str | bytes):
        secrets = [secrets]
    keys = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in secrets]
    return [k for k in keys if k]


def _decode(signature: object, encoding: Encoding) -> bytes | None:
    """The received signature's raw digest bytes, or None when it is malformed."""
    if not isinstance(signature, str) or not signature:
        return None
    try:
        if encoding == "hex":
            return bytes.fromhex(signature)  # accepts either case
        return base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):  # non-ASCII, bad characters, bad padding
        return None


def _matches(message: bytes, received: bytes, keys: list[bytes], algorithm: Algorithm) -> bool:
    digest = _DIGESTS[algorithm]
    # Every key is tried (no early exit), so timing does not tell which one matched.
    results = [hmac.compare_digest(hmac.new(k, message, digest).digest(), received) for k in keys]
    return any(results)


def _prefix(signature: object) -> str | None:
    return signature[:_PREFIX] if isinstance(signature, str) else None


def _rejected(scheme: str, reason: str, **details: Any) -> None:
    logger.warning("signature rejected", extra={"scheme": scheme, "reason": reason, **details})


def verify_hmac(
    message: bytes,
    signature: str,
    secrets: Sequence[str | bytes],
    *,
    algorithm: Algorithm,
    encoding: Encoding,
) -> bool:
    """True when ``signature`` is the HMAC of ``message`` under any of ``secrets``.

    Constant-time comparison of the raw digests; a malformed signature (bad hex/base64,
    wrong length, not a string) is False, never an exception.
    """
    if algorithm not in _DIGESTS or encoding not in ("hex", "base64"):
        raise ValueError(f"unsupported HMAC scheme {algorithm}/{encoding}")
    keys = _keys(secrets)
    received = _decode(signature, encoding)
    details = {"algorithm": algorithm, "encoding": encoding, "secrets_tried": len(keys),
               "received_prefix": _prefix(signature)}
    if not keys:
        logger.error("no active HMAC secret configured", extra={"scheme": "hmac", **details})
        return False
    if received is None:
        _rejected("hmac", "malformed or missing signature", **details)
        return False
    if not _matches(message, received, keys, algorithm):
        _rejected("hmac", "no secret matches", **details)
        return False
    return True


# --- Paymob -------------------------------------------------------------------------------

#: The signed fields of a transaction callback, in the documented order (Paymob's
#: spelling ``error_occured``). Nothing else is signed: not merchant_order_id, is_live,
#: data.*, payment_key_claims.*, refunded_amount_cents, is_refund, is_void.
PAYMOB_FIELDS = (
    "amount_cents", "created_at", "currency", "error_occured", "has_parent_transaction", "id",
    "integration_id", "is_3d_secure", "is_auth", "is_capture", "is_refunded",
    "is_standalone_payment", "is_voided", "order.id", "owner", "pending", "source_data.pan",
    "source_data.sub_type", "source_data.type", "success",
)

#: How a null signed value is rendered. Undocumented by Paymob: client libraries use ""
#: (tried first); "null" (JSON) and "None" (Python's str) are the other plausible readings.
#: They are tried only when a signed field is actually null, and the log says which one
#: verified, so the uncertainty can be settled from production logs.
PAYMOB_NULL_RENDERINGS = ("", "null", "None")


def _paymob_render(value: Any) -> str | None:
    """A signed value as text: booleans true/false, numbers in decimal, strings as sent;
    None stays None (rendered later, see PAYMOB_NULL_RENDERINGS)."""
    if value is None:
        return None
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _paymob_lookup(obj: Mapping[str, Any], path: str) -> Any:
    if path == "order.id" and not isinstance(obj.get("order"), Mapping):
        return obj.get("order")  # some payloads carry the order as its bare id
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _processed_values(obj: Mapping[str, Any]) -> list[str | None]:
    return [_paymob_render(_paymob_lookup(obj, f)) for f in PAYMOB_FIELDS]


def _response_key(field: str, query: Mapping[str, str]) -> str:
    if field != "order.id":
        return field
    # Real redirect URLs use `order`; newer docs say `order_id`.
    return "order" if "order" in query or "order_id" not in query else "order_id"


def _response_values(query: Mapping[str, str]) -> list[str | None]:
    # Values arrive as text, already URL-decoded: used as sent. An absent key is a null.
    return [query.get(_response_key(f, query)) for f in PAYMOB_FIELDS]


def _join(values: list[str | None], null: str = "") -> str:
    return "".join(null if v is None else v for v in values)


def paymob_processed_message(obj: Mapping[str, Any]) -> str:
    """The signed string of a POST processed callback's ``obj`` (nulls rendered as "")."""
    return _join(_processed_values(obj))


def paymob_response_message(query: Mapping[str, str]) -> str:
    """The signed string of a GET response callback's query parameters (absent keys as "")."""
    return _join(_response_values(query))


def _verify_paymob(flavour: str, values: list[str | None], signature: object,
                   secrets: Sequence[str | bytes]) -> bool:
    keys = _keys(secrets)
    received = _decode(signature, "hex")
    null_fields = [f for f, v in zip(PAYMOB_FIELDS, values, strict=True) if v is None]
    renderings = PAYMOB_NULL_RENDERINGS if null_fields else PAYMOB_NULL_RENDERINGS[:1]
    details = {"flavour": flavour, "fields": f"paymob-{len(PAYMOB_FIELDS)}", "secrets_tried": len(keys),
               "null_fields": null_fields, "received_prefix": _prefix(signature)}
    if not keys:
        logger.error("no active Paymob HMAC secret configured", extra={"scheme": "paymob", **details})
        return False
    if received is None or len(received) != hashlib.sha512().digest_size:
        _rejected("paymob", "malformed or missing hmac", **details)
        return False
    for null in renderings:
        # surrogatepass: a lone surrogate in a forged body must fail the match, not raise.
        if _matches(_join(values, null).encode("utf-8", "surrogatepass"), received, keys, "sha512"):
            if null_fields:
                logger.info("paymob hmac verified with null signed fields",
                            extra={"scheme": "paymob", **details, "null_rendering": repr(null)})
            return True
    _rejected("paymob", "no secret matches", **details,
              null_renderings_tried=[repr(n) for n in renderings])
    return False


def verify_paymob_processed(obj: Mapping[str, Any], hmac_value: str | None,
                            secrets: Sequence[str | bytes]) -> bool:
    """The POST processed callback: ``obj`` from the JSON body, ``hmac`` from the query."""
    return _verify_paymob("processed", _processed_values(obj), hmac_value, secrets)


def verify_paymob_response(query: Mapping[str, str], secrets: Sequence[str | bytes]) -> bool:
    """The GET response (browser redirect) callback: every value, hmac included, from the
    query string. Shown to the user's browser: never grant anything on its strength."""
    return _verify_paymob("response", _response_values(query), query.get("hmac"), secrets)


# --- Stripe -------------------------------------------------------------------------------


def raw_body(event: Mapping[str, Any]) -> bytes:
    """The request body of a function URL / API Gateway event as the bytes that were sent
    (base64-decoded when ``isBase64Encoded``): what signatures are computed over."""
    body = event.get("body")
    if body is None:
        return b""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (ValueError, binascii.Error):
            raise AppError("request body is not valid base64", code="bad_request") from None
    # surrogatepass: an event string holding a lone surrogate cannot have been sent as
    # UTF-8; its bytes then fail every signature instead of raising here.
    return body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)


def _stripe_header_facts(sig_header: str | None) -> dict[str, Any]:
    """What a log line may say about a Stripe-Signature header (for diagnosis only; the
    SDK does the verification): the timestamp's age, how many v1 signatures, a prefix."""
    facts: dict[str, Any] = {"header_present": bool(sig_header)}
    if not sig_header:
        return facts
    items = [part.split("=", 1) for part in sig_header.split(",")]
    v1 = [kv[1] for kv in items if len(kv) == 2 and kv[0].strip() == "v1"]
    ts = next((kv[1] for kv in items if len(kv) == 2 and kv[0].strip() == "t"), None)
    facts["v1_count"] = len(v1)
    facts["received_prefix"] = _prefix(v1[0]) if v1 else None
    if ts is not None and ts.strip().isdigit():
        facts["timestamp_age_s"] = int(time.time()) - int(ts)
    return facts


def verify_stripe(payload: bytes, sig_header: str | None, secrets: Sequence[str], *,
                  tolerance: int = 300) -> dict[str, Any]:
    """The verified Stripe event as a plain dict (``safejson.loads`` of the payload).

    ``payload`` is the raw body (see ``raw_body``). Each active secret is tried with the
    SDK's ``WebhookSignature.verify_header(..., tolerance=...)``: any ``v1`` signature
    must match and the timestamp must be at most ``tolerance`` seconds old. Raises
    ``SignatureError`` otherwise.
    """
    import stripe  # the stripe-webhook function's dependency; heavy, so imported on use

    if tolerance <= 0:  # the SDK treats a falsy tolerance as "no replay check"
        raise ValueError("tolerance must be a positive number of seconds")
    keys = [s for s in ([secrets] if isinstance(secrets, str) else secrets) if s and s.strip()]
    if not keys:
        logger.error("no active Stripe webhook secret configured", extra={"scheme": "stripe"})
        raise SignatureError("signature verification failed")
    reasons: list[str] = []
    verified = False
    for key in keys:
        try:
            stripe.WebhookSignature.verify_header(payload, sig_header, key, tolerance=tolerance)
        except stripe.SignatureVerificationError as exc:
            # The SDK's messages name the failed check and carry no secret or signature.
            reason = str(exc.user_message or exc)[:100]
            if reason not in reasons:
                reasons.append(reason)
            continue
        except UnicodeDecodeError:
            reasons.append("body is not UTF-8")
            break
        verified = True
        break
    if not verified:
        _rejected("stripe", "; ".join(reasons), secrets_tried=len(keys), tolerance_s=tolerance,
                  **_stripe_header_facts(sig_header))
        raise SignatureError("signature verification failed")
    # Signed by Stripe, so applied whatever its strings hold: what text columns cannot
    # store is replaced (the verified bytes themselves are kept by the inbox).
    event = safejson.loads(payload, strings="replace")
    if not isinstance(event, dict):
        raise AppError("event body is not a JSON object", code="bad_request")
    return event


# --- RevenueCat ---------------------------------------------------------------------------


def verify_revenuecat(header_value: str | None, expected: Sequence[str]) -> bool:
    """True when the Authorization header equals one of the configured values, bare or
    as ``Bearer <value>`` (constant-time; every configured value is compared)."""
    keys = _keys(expected)
    if not keys:
        logger.error("no RevenueCat authorization value configured", extra={"scheme": "revenuecat"})
        return False
    if not header_value:
        _rejected("revenuecat", "missing Authorization header", secrets_tried=len(keys))
        return False
    received = header_value.strip().encode("utf-8")
    bearer = received[7:].strip() if received[:7].lower() == b"bearer " else None
    results = [hmac.compare_digest(received, k) for k in keys]
    if bearer is not None:
        results += [hmac.compare_digest(bearer, k) for k in keys]
    if any(results):
        return True
    _rejected("revenuecat", "Authorization header matches no configured value",
              secrets_tried=len(keys), bearer_form=bearer is not None, received_length=len(received))
    return False
