"""Property: no input answers 5xx, and a refused request changes nothing.

Every route of every function with a URL (read from template.yaml and each function's
resolver, so a new route is covered without touching this file) is driven, as Lambda
invokes it, with arbitrary bodies (random JSON, random bytes, hostile JSON: deep nesting,
huge numbers, NUL, unpaired surrogates, NaN, oversize) and with the function's own sample
events mutated at one leaf, arbitrary content types, headers and query strings, with and
without a valid token, and for webhooks with and without a valid signature over exactly
the bytes sent. Asserted for every request: no 5xx; every 4xx carries the error
envelope; a 4xx leaves every table as it was (rate-limit counters aside: a refused
request still counts against its caller).

The run is derandomised (the same cases on every run, so CI is stable); set
``ANY_INPUT_EXAMPLES`` to run more.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from common import auth, config, db, ledger
from devkit import cfn, fake_openai, fake_paymob, fake_revenuecat, fake_stripe, lambdas, openapi
from tests.integration import deliveries
from tests.integration.payments.conftest import _clear_settings

pytestmark = pytest.mark.usefixtures("s3_endpoint")

EXAMPLES = int(os.environ.get("ANY_INPUT_EXAMPLES", "1200"))
USERS = [uuid.UUID(int=0xA11 << 64 | n) for n in range(40)]
ANALYSIS = {"mood": "calm", "sentiment": 0.1, "emotions": [{"label": "calm", "intensity": 0.5}],
            "tags": ["day"], "summary": "A quiet day.", "safety_flag": False}
#: Tables a refused request must leave unchanged: every one but the rate-limit counters.
EXCLUDED = ("rate_limit_windows",)


# --- what is driven ----------------------------------------------------------------------------


def _routes() -> list[tuple[str, str, str]]:
    """(function, method, path rule) of every route of every function with a URL."""
    found = []
    for name, spec in sorted(cfn.functions().items()):
        if spec.has_url:
            app = openapi.resolver(name)
            found += [(name, r.method, r.path) for r in app._static_routes + app._dynamic_routes]
    return found


ROUTES = _routes()
SAMPLES: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in ROUTES}
for _function, _name, _event in deliveries.samples():
    SAMPLES.setdefault(_function, []).append(_event)

# --- strategies ----------------------------------------------------------------------------------

text = st.text(max_size=40)
nasty_strings = st.sampled_from([
    "\x00", "a\x00b", "\ud800", "x\udfff", "\ufffe", "💥", " ", "", "A" * 5000, "../../etc/passwd",
    "users/x/uploads/../../a.jpg", "'; DROP TABLE users; --",
])
nasty_numbers = st.sampled_from([10**4000, -(10**70), 2**63, -(2**63) - 1, 1e308, -0.0, 0.1, 2**53 + 1])
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                   text, nasty_strings, nasty_numbers)
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.one_of(text, nasty_strings), inner, max_size=4), max_leaves=12)
HOSTILE_BODIES = [
    "[" * 20_000 + "]" * 20_000,
    '{"a":' * 5_000 + "1" + "}" * 5_000,
    "1" * 5_000,
    '{"product_id": ' + "9" * 4_500 + "}",
    '{"tool_id": "resize", "params": {"width": ' + "7" * 400 + "}}",
    "NaN", '{"x": Infinity}', '{"x": 1e999}',
    '{"content": "\\u0000"}', '{"title": "a", "content": "\\ud800"}', '{"tool_id": "\\u0000"}',
    '{"product_id": "credits_100\\u0000"}', '"\\ud800\\udc00\\ud800"',
    "{" * 70 + "}" * 70, "[" * 65 + "]" * 65,
    " " * (7 * 1024 * 1024),
    "\ufeff{}", "{}garbage", "", "null", "[]", '""',
]


def _set_leaf(value: Any, path: list[int], new: Any) -> Any:
    """``value`` with the leaf that ``path`` picks (indices taken modulo each container's
    size) replaced by ``new(leaf)``."""
    if not path or not isinstance(value, dict | list) or not value:
        return new(value)
    if isinstance(value, list):
        i = path[0] % len(value)
        return [*value[:i], _set_leaf(value[i], path[1:], new), *value[i + 1:]]
    key = sorted(value)[path[0] % len(value)]
    return {**value, key: _set_leaf(value[key], path[1:], new)}


def _sample_body(sample: dict[str, Any]) -> str:
    raw = sample["body"]
    return base64.b64decode(raw).decode("utf-8", "replace") if sample.get("isBase64Encoded") else raw


@st.composite
def bodies(draw: st.DrawFn, function: str) -> str | bytes | None:
    """A body: text, or bytes (sent base64-encoded)."""
    samples = [_sample_body(s) for s in SAMPLES[function] if s.get("body")]
    kinds = ["json", "bytes", "hostile", "none"] + ["sample", "any_leaf", "string_leaf"] * bool(samples)
    kind = draw(st.sampled_from(kinds))
    if kind == "json":
        return json.dumps(draw(json_values))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "hostile":
        return draw(st.sampled_from(HOSTILE_BODIES))
    if kind == "none":
        return None
    body = draw(st.sampled_from(samples))
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    if kind == "sample":
        return body
    path = draw(st.lists(st.integers(0, 50), max_size=6))
    if kind == "any_leaf":  # any value in place of one leaf: mostly refused
        value = draw(json_values)
        mutated = _set_leaf(parsed, path, lambda _old: value)
    else:  # a string leaf given hostile characters: a signed event must still apply
        extra = draw(nasty_strings)
        mutated = _set_leaf(parsed, path, lambda old: old + extra if isinstance(old, str) else old)
    return json.dumps(mutated, ensure_ascii=draw(st.booleans()))


CONTENT_TYPES = st.one_of(st.none(), st.sampled_from([
    "application/json", "application/json; charset=utf-8", "text/plain", "multipart/form-data",
    "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "application/xml", "*/*",
    "application/json; charset=latin-1", "",
]), text)


def _token(user: uuid.UUID, kind: str) -> str | None:
    now = int(time.time())
    if kind == "valid":
        return f"Bearer {auth.mint_token(user)}"
    if kind == "string_exp":
        import jwt

        claims = {"sub": str(user), "exp": str(now + 600), "iat": now}
        return f"Bearer {jwt.encode(claims, config.secret_list('JWT_SECRET')[0], algorithm='HS256')}"
    if kind == "expired":
        return f"Bearer {auth.mint_token(user, ttl_s=-3600)}"
    if kind == "garbage":
        return "Bearer not.a.token"
    return None


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    function, method, rule = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    path = "/".join(draw(st.one_of(text, nasty_strings, st.just(str(uuid.uuid4()))))
                    if part.startswith("<") else part for part in rule.split("/"))
    body = draw(bodies(function))
    headers = draw(st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12),
                                   st.one_of(text, nasty_strings), max_size=3))
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        headers["content-type"] = content_type
    if draw(st.booleans()):
        headers["idempotency-key"] = draw(st.one_of(st.just(str(uuid.uuid4())), text))
    query = draw(st.dictionaries(st.one_of(text, nasty_strings), st.one_of(text, nasty_strings), max_size=3))
    kinds = ["valid", "valid", "valid", "none", "garbage", "expired", "string_exp"]
    token = _token(draw(st.sampled_from(USERS)), draw(st.sampled_from(kinds)))
    if token:
        headers["authorization"] = token
    sign = draw(st.integers(0, 3)) > 0
    event = lambdas.url_event(method, path, headers=headers)
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = base64.b64encode(body).decode() if isinstance(body, bytes) else body
        event["isBase64Encoded"] = isinstance(body, bytes)
    if sign:
        deliveries.sign(function, event)
    event["rawQueryString"] = urlencode(event.get("queryStringParameters") or {}, encoding="utf-8",
                                        errors="surrogatepass")
    return function, event


# --- the state a refused request must not change ----------------------------------------------


def _fingerprint_sql() -> str:
    tables = [r["tablename"] for r in db.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '\\_yoyo%%'"
        " AND tablename NOT LIKE 'yoyo%%' ORDER BY tablename").fetchall() if r["tablename"] not in EXCLUDED]
    parts = [f"SELECT '{t}' AS t, count(*) AS n, coalesce(sum(hashtextextended(x::text, 0)), 0) AS h "
             f"FROM {t} x" for t in tables]
    return " UNION ALL ".join(parts)


@pytest.fixture(scope="module")
def world(database_url, _openai_server):
    """Fakes for every provider, the settings every function reads, users with credits."""
    paymob, stripe_fake = fake_paymob.FakePaymob().start(), fake_stripe.FakeStripe().start()
    revenuecat = fake_revenuecat.FakeRevenueCat().start()
    env = {
        **deliveries.WEBHOOK_ENV, "PAYMOB_API_URL": paymob.base_url,
        "STRIPE_API_BASE": stripe_fake.base_url, "REVENUECAT_API_URL": revenuecat.base_url,
        "OPENAI_API_KEY": "sk-test-any-input",
        "OPENAI_BASE_URL": _openai_server.base_url, "RATE_LIMIT_PER_MINUTE": "100000",
        "ANALYZE_RATE_LIMIT_PER_MINUTE": "100000",
    }
    # The analysis the fake answers by default (analyze-entry's structured output); other
    # chat completions (face analysis, photo descriptions) get the fake's own default.
    default_chat = fake_openai.DEFAULTS["/v1/chat/completions"]

    def chat(request):
        schema = ((request.json().get("response_format") or {}).get("json_schema") or {}).get("name")
        if schema == "AnalysisCore":
            return 200, fake_openai.chat_completion(ANALYSIS)
        return default_chat(request)

    fake_openai.DEFAULTS["/v1/chat/completions"] = chat
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _clear_settings()
    with db.transaction() as conn:
        conn.execute("TRUNCATE users, webhook_inbox, cache_entries, idempotency_records, audit_log CASCADE")
    for user in USERS:
        auth.ensure_user(user)
        ledger.grant(user, 50, reason="any-input", source="test", ref=f"any-input:{user}")
    yield _fingerprint_sql()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _clear_settings()
    fake_openai.DEFAULTS["/v1/chat/completions"] = default_chat
    paymob.stop()
    stripe_fake.stop()
    revenuecat.stop()


def _state(sql: str) -> dict[str, tuple[int, int]]:
    return {r["t"]: (r["n"], r["h"]) for r in db.execute(sql).fetchall()}


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(case=requests())
def test_no_input_answers_5xx_and_a_refused_request_changes_nothing(world, case):
    function, request = case
    before = _state(world)
    response = lambdas.invoke(function, request)
    status = response["statusCode"]
    event(f"{function} {status}")  # pytest --hypothesis-show-statistics prints the spread
    where = f"{function} {request['requestContext']['http']['method']} {request['rawPath']!r}"
    assert status < 500, f"{where} answered {status}: {response.get('body', '')[:300]}"
    if status >= 400:
        body = json.loads(response["body"])
        assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str), where
        assert _state(world) == before, f"{where} answered {status} but changed the database"


def test_every_function_with_a_url_is_driven():
    assert {r[0] for r in ROUTES} == {n for n, s in cfn.functions().items() if s.has_url}
    assert len(ROUTES) >= 10
