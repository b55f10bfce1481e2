"""Webhook signatures: Paymob's published sample, Stripe through its SDK, RevenueCat's
shared header, the generic HMAC verifier, and logs that never show a secret."""

import base64
import copy
import hashlib
import hmac
import io
import json
import logging
import time
from pathlib import Path

import pytest

from common import signing
from common.errors import AppError, SignatureError
from common.observability import logger

SAMPLE = json.loads(Path("/work/shared/reference/paymob-sample-callback.json").read_text())
PAYMOB_SECRET = SAMPLE["secret"]
OBJ = SAMPLE["callback"]["obj"]
OTHER_SECRET = "rotating-secret-OTHER-5f3a9c"
STRIPE_SECRET = "stripe-endpoint-secret-7d1e0b"
STRIPE_OLD_SECRET = "stripe-endpoint-secret-old-42c8"


@pytest.fixture
def log_output():
    """Everything the logger emits in a test: the formatted JSON lines and, to prove the
    code itself never hands a secret to the logger, the raw records before redaction."""
    handler = logger.registered_handler
    stream = io.StringIO()
    previous = handler.setStream(stream)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    raw = Keep()
    underlying = logging.getLogger(logger.name)
    underlying.addHandler(raw)
    # Both views, as text: formatted lines, then each record's message and extra keys.
    yield lambda: stream.getvalue() + "\n".join(repr(vars(r)) for r in records)
    underlying.removeHandler(raw)
    handler.setStream(previous)


def response_query(obj=OBJ, hmac_value=SAMPLE["expected_hmac"], order_key="order"):
    """The GET response callback's query parameters for a transaction object: flat keys,
    dotted source_data keys, the order id under `order`, booleans as true/false text."""
    def text(v):
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    query = {k: text(v) for k, v in obj.items() if not isinstance(v, dict)}
    query.update({f"source_data.{k}": text(v) for k, v in obj["source_data"].items() if v is not None})
    query[order_key] = str(obj["order"]["id"])
    query["hmac"] = hmac_value
    return query


def paymob_sign(message: str, secret: str = PAYMOB_SECRET) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha512).hexdigest()


# --- Paymob -------------------------------------------------------------------------------


def test_paymob_published_sample_concatenation_and_hmac():
    # Given Paymob's published sample callback
    # When its signed string is built from obj
    message = signing.paymob_processed_message(OBJ)
    # Then it is the published concatenation, and its HMAC the published one
    assert message == SAMPLE["concatenated"]
    assert paymob_sign(message) == SAMPLE["expected_hmac"]
    assert signing.verify_paymob_processed(OBJ, SAMPLE["expected_hmac"], [PAYMOB_SECRET])


@pytest.mark.parametrize(("path", "value"), [
    ("amount_cents", 1), ("success", False), ("pending", True), ("id", 192036466),
    ("order.id", 217503755), ("source_data.pan", "0000"), ("created_at", "2024-06-13T11:33:44"),
])
def test_paymob_changed_signed_field_is_rejected(path, value):
    # Given the sample with one signed field changed
    obj = copy.deepcopy(OBJ)
    *parents, leaf = path.split(".")
    target = obj
    for p in parents:
        target = target[p]
    target[leaf] = value
    # Then the published HMAC no longer verifies
    assert not signing.verify_paymob_processed(obj, SAMPLE["expected_hmac"], [PAYMOB_SECRET])


def test_paymob_wrong_secret_is_rejected():
    assert not signing.verify_paymob_processed(OBJ, SAMPLE["expected_hmac"], [OTHER_SECRET])


@pytest.mark.parametrize("secrets", [[OTHER_SECRET, PAYMOB_SECRET], [PAYMOB_SECRET, OTHER_SECRET]])
def test_paymob_rotation_accepts_any_active_secret(secrets):
    # Given the new and the old secret both active, in either order
    assert signing.verify_paymob_processed(OBJ, SAMPLE["expected_hmac"], secrets)


def test_paymob_hmac_case_does_not_matter():
    assert signing.verify_paymob_processed(OBJ, SAMPLE["expected_hmac"].upper(), [PAYMOB_SECRET])


@pytest.mark.parametrize("order_key", ["order", "order_id"])
def test_paymob_response_callback_flavour(order_key):
    # Given the GET redirect's flat query string for the sample transaction
    query = response_query(order_key=order_key)
    # Then its signed string is the published one and it verifies
    assert signing.paymob_response_message(query) == SAMPLE["concatenated"]
    assert signing.verify_paymob_response(query, [PAYMOB_SECRET])
    # And a changed amount does not
    assert not signing.verify_paymob_response({**query, "amount_cents": "1"}, [PAYMOB_SECRET])


def test_paymob_response_prefers_order_over_order_id():
    query = {**response_query(), "order_id": "999"}
    assert signing.verify_paymob_response(query, [PAYMOB_SECRET])


def test_paymob_response_without_hmac_is_rejected():
    query = response_query()
    del query["hmac"]
    assert not signing.verify_paymob_response(query, [PAYMOB_SECRET])


def test_paymob_unsigned_fields_may_change():
    # Given the sample with fields Paymob does not sign changed or added
    obj = copy.deepcopy(OBJ)
    obj["merchant_order_id"] = "special-reference-123"
    obj["order"]["merchant_order_id"] = "special-reference-123"
    obj["is_refund"] = True
    obj["data"] = {"message": "Approved"}
    # Then the published HMAC still verifies
    assert signing.verify_paymob_processed(obj, SAMPLE["expected_hmac"], [PAYMOB_SECRET])


def test_paymob_order_given_as_bare_id():
    obj = {**OBJ, "order": OBJ["order"]["id"]}
    assert signing.paymob_processed_message(obj) == SAMPLE["concatenated"]


@pytest.mark.parametrize("null", ["", "null", "None"])
def test_paymob_null_signed_field_renderings_are_all_handled(null, log_output):
    # Given a transaction whose card type is null, signed with one reading of null
    obj = copy.deepcopy(OBJ)
    obj["source_data"]["sub_type"] = None
    signature = paymob_sign(SAMPLE["concatenated"].replace("MasterCard", null))
    # Then it verifies, and the log says which rendering did
    assert signing.verify_paymob_processed(obj, signature, [PAYMOB_SECRET])
    assert f'"null_rendering":"{null!r}"' in log_output().replace(" ", "")


# --- Stripe -------------------------------------------------------------------------------


def stripe_header(payload: bytes, secret: str = STRIPE_SECRET, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={v1}"


STRIPE_EVENT = json.dumps({"id": "evt_1", "type": "invoice.paid",
                           "data": {"object": {"id": "in_1"}}}).encode()


def test_stripe_valid_signature_returns_plain_dict():
    event = signing.verify_stripe(STRIPE_EVENT, stripe_header(STRIPE_EVENT), [STRIPE_SECRET])
    assert type(event) is dict
    assert event["data"]["object"]["id"] == "in_1"


def test_stripe_timestamp_beyond_tolerance_is_rejected(log_output):
    old = int(time.time()) - 301
    with pytest.raises(SignatureError) as err:
        signing.verify_stripe(STRIPE_EVENT, stripe_header(STRIPE_EVENT, t=old), [STRIPE_SECRET])
    assert err.value.status == 401 and err.value.code == "invalid_signature"
    assert "tolerance" in log_output()


def test_stripe_timestamp_within_custom_tolerance_is_accepted():
    old = int(time.time()) - 301
    signing.verify_stripe(STRIPE_EVENT, stripe_header(STRIPE_EVENT, t=old), [STRIPE_SECRET], tolerance=600)


def test_stripe_tampered_body_is_rejected():
    header = stripe_header(STRIPE_EVENT)
    with pytest.raises(SignatureError):
        signing.verify_stripe(STRIPE_EVENT.replace(b"in_1", b"in_2"), header, [STRIPE_SECRET])


@pytest.mark.parametrize("header", [None, "", "garbage", "t=1", "v1=abc"])
def test_stripe_missing_or_malformed_header_is_rejected(header):
    with pytest.raises(SignatureError):
        signing.verify_stripe(STRIPE_EVENT, header, [STRIPE_SECRET])


def test_stripe_rotated_secrets():
    # Given the endpoint's secret rolled: old and new both active
    secrets = [STRIPE_SECRET, STRIPE_OLD_SECRET]
    # Then an event signed with either verifies
    signing.verify_stripe(STRIPE_EVENT, stripe_header(STRIPE_EVENT, STRIPE_OLD_SECRET), secrets)
    signing.verify_stripe(STRIPE_EVENT, stripe_header(STRIPE_EVENT, STRIPE_SECRET), secrets)
    # And so does a header carrying one v1 per secret, as Stripe sends during a roll
    t = int(time.time())
    both = stripe_header(STRIPE_EVENT, STRIPE_OLD_SECRET, t) + "," + \
        stripe_header(STRIPE_EVENT, STRIPE_SECRET, t).split(",")[1]
    signing.verify_stripe(STRIPE_EVENT, both, [STRIPE_SECRET])
    # But not with a secret no longer active
    with pytest.raises(SignatureError):
        signing.verify_stripe(STRIPE_EVENT, stripe_header(STRIPE_EVENT, STRIPE_OLD_SECRET), [STRIPE_SECRET])


def test_stripe_without_secret_is_rejected():
    with pytest.raises(SignatureError):
        signing.verify_stripe(STRIPE_EVENT, stripe_header(STRIPE_EVENT), [])


def test_stripe_replay_check_cannot_be_switched_off():
    with pytest.raises(ValueError):
        signing.verify_stripe(STRIPE_EVENT, stripe_header(STRIPE_EVENT), [STRIPE_SECRET], tolerance=0)


def test_stripe_verifies_a_base64_lambda_body():
    # Given a function URL event whose body Lambda base64-encoded (non-ASCII content)
    payload = json.dumps({"id": "evt_2", "type": "customer.created",
                          "data": {"object": {"name": "Zoë Ünal"}}}, ensure_ascii=False).encode()
    event = {"body": base64.b64encode(payload).decode(), "isBase64Encoded": True}
    # When the raw body is recovered and verified
    body = signing.raw_body(event)
    # Then it is the bytes that were signed
    assert body == payload
    assert signing.verify_stripe(body, stripe_header(payload), [STRIPE_SECRET])["id"] == "evt_2"


def test_raw_body_plain_missing_and_invalid():
    assert signing.raw_body({"body": "{\"a\": \"é\"}", "isBase64Encoded": False}) == '{"a": "é"}'.encode()
    assert signing.raw_body({}) == b""
    with pytest.raises(AppError) as err:
        signing.raw_body({"body": "not base64!", "isBase64Encoded": True})
    assert err.value.status == 400


# --- RevenueCat ---------------------------------------------------------------------------

RC_VALUE = "rc-webhook-auth-value-9b2f"


@pytest.mark.parametrize(("header", "ok"), [
    (RC_VALUE, True),
    (f"Bearer {RC_VALUE}", True),
    (f"bearer {RC_VALUE}", True),
    (f"Bearer {RC_VALUE}x", False),
    ("rc-webhook-auth-value-0000", False),
    ("Bearer ", False),
    ("", False),
    (None, False),
])
def test_revenuecat_authorization_header(header, ok):
    assert signing.verify_revenuecat(header, [RC_VALUE]) is ok


def test_revenuecat_rotation_and_no_configuration():
    assert signing.verify_revenuecat(RC_VALUE, ["new-value-abcdef", RC_VALUE])
    assert not signing.verify_revenuecat(RC_VALUE, [])
    assert not signing.verify_revenuecat("", [""])


# --- the generic verifier -----------------------------------------------------------------

MESSAGE = b"the signed bytes"


def sign(secret: str, algorithm: str, encoding: str) -> str:
    digest = hmac.new(secret.encode(), MESSAGE, getattr(hashlib, algorithm)).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_hmac_schemes_verify_and_reject(algorithm, encoding):
    good = sign(OTHER_SECRET, algorithm, encoding)
    kw = {"algorithm": algorithm, "encoding": encoding}
    assert signing.verify_hmac(MESSAGE, good, [OTHER_SECRET], **kw)
    assert signing.verify_hmac(MESSAGE, good, [b"new-secret-bytes", OTHER_SECRET.encode()], **kw)
    assert not signing.verify_hmac(MESSAGE + b"!", good, [OTHER_SECRET], **kw)
    assert not signing.verify_hmac(MESSAGE, good, ["not-the-secret"], **kw)
    assert not signing.verify_hmac(MESSAGE, good, [], **kw)


def test_hmac_other_algorithm_does_not_verify():
    assert not signing.verify_hmac(MESSAGE, sign(OTHER_SECRET, "sha256", "hex"), [OTHER_SECRET],
                                   algorithm="sha512", encoding="hex")


def test_hmac_a_lone_string_is_one_secret():
    good = sign(OTHER_SECRET, "sha256", "hex")
    assert signing.verify_hmac(MESSAGE, good, OTHER_SECRET, algorithm="sha256", encoding="hex")


def test_hmac_empty_secret_never_verifies():
    forged = hmac.new(b"", MESSAGE, hashlib.sha256).hexdigest()
    assert not signing.verify_hmac(MESSAGE, forged, [""], algorithm="sha256", encoding="hex")


@pytest.mark.parametrize("encoding", ["hex", "base64"])
@pytest.mark.parametrize("bad", [None, "", "zz", "abc", "abc=", "é" * 64, "a" * 63, "00" * 31, 12345])
def test_hmac_malformed_signature_is_false_not_an_error(encoding, bad):
    assert signing.verify_hmac(MESSAGE, bad, [OTHER_SECRET], algorithm="sha256", encoding=encoding) is False


# --- logs ---------------------------------------------------------------------------------


def test_rejections_log_why_but_never_secrets_or_full_signatures(log_output):
    # Given failed verifications under every scheme
    paymob_sig = paymob_sign("forged", OTHER_SECRET)
    signing.verify_paymob_processed(OBJ, paymob_sig, [PAYMOB_SECRET, OTHER_SECRET + "x"])
    signing.verify_paymob_response(response_query(hmac_value=paymob_sig), [PAYMOB_SECRET])
    stripe_sig = stripe_header(STRIPE_EVENT, STRIPE_OLD_SECRET)
    with pytest.raises(SignatureError):
        signing.verify_stripe(STRIPE_EVENT, stripe_sig, [STRIPE_SECRET])
    signing.verify_revenuecat(f"Bearer {RC_VALUE}-wrong", [RC_VALUE])
    hmac_sig = sign("attacker", "sha256", "base64")
    signing.verify_hmac(MESSAGE, hmac_sig, [OTHER_SECRET], algorithm="sha256", encoding="base64")
    out = log_output()
    # Then each rejection is explained: scheme, field set, secrets tried, signature prefix
    for fragment in ("paymob", "paymob-20", "processed", "response", "stripe", "revenuecat", "hmac",
                     "secrets_tried", paymob_sig[:6]):
        assert fragment in out
    # And no secret, configured value or whole signature appears, formatted or raw
    stripe_v1 = stripe_sig.split("v1=")[1]
    for leaked in (PAYMOB_SECRET, OTHER_SECRET, STRIPE_SECRET, STRIPE_OLD_SECRET, RC_VALUE,
                   paymob_sig, paymob_sig[:12], stripe_v1[:12], hmac_sig, hmac_sig[:12]):
        assert leaked not in out
