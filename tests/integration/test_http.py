"""The HTTP wiring end to end through a small resolver: the error envelope for every
failure, body limits, authentication with rate limits, Idempotency-Key, and CORS left
to the function URL."""

import base64
import json
import os
import threading
import time
import uuid

import jwt
import pytest
from pydantic import BaseModel, Field

from common import db, http, idempotency
from common.errors import Conflict, TooManyRequests, Unavailable
from devkit.cfn import functions, template
from devkit.lambdas import LambdaContext, url_event

LIMIT = 1024
app = http.make_resolver(max_body_bytes=LIMIT)
calls: list[str] = []


class ItemIn(BaseModel):
    name: str = Field(min_length=1)
    qty: int = Field(ge=1)


class ItemOut(BaseModel):
    id: str
    name: str


@app.post("/items")
def create_item(item: ItemIn) -> dict:
    return {"name": item.name, "qty": item.qty}


@app.get("/items/<item_id>")
def get_item(item_id: str) -> ItemOut:
    if item_id == "bad-output":
        return {"id": item_id}  # type: ignore[return-value]  # misses "name": our bug
    return ItemOut(id=item_id, name="x")


@app.post("/raw")
def raw() -> dict:
    return {"keys": sorted(app.current_event.json_body)}


@app.get("/boom")
def boom() -> dict:
    raise RuntimeError("database password is hunter2")


@app.get("/conflict")
def conflict() -> dict:
    raise Conflict("already settled")


@app.get("/busy")
def busy() -> dict:
    raise TooManyRequests(retry_after=7)


@app.get("/down")
def down() -> dict:
    raise Unavailable("try again shortly")


@app.get("/me")
def me() -> dict:
    user = http.current_user(app, route_limit=3)
    assert http.current_user(app) is user  # cached for the request: counted once
    return {"user_id": str(user.user_id)}


class Order(BaseModel):
    order: int


@app.post("/orders")
def create_order() -> Order:
    http.current_user(app)

    def work():
        calls.append("order")
        return Order(order=len(calls))

    return http.idempotent(app, work, model=Order)


@pytest.fixture(autouse=True)
def fresh(clean_db):
    db.reset()
    calls.clear()
    yield
    db.reset()


def token(user_id: uuid.UUID | None = None) -> str:
    now = int(time.time())
    claims = {"sub": str(user_id or uuid.uuid4()), "iat": now, "exp": now + 300}
    return jwt.encode(claims, os.environ["JWT_SECRET"], algorithm="HS256")


def call(method, path, *, context=None, **kwargs):
    response = app.resolve(url_event(method, path, **kwargs), context or LambdaContext("tests"))
    body = json.loads(response["body"]) if response.get("body") else None
    return response["statusCode"], body, response.get("headers", {})


def assert_envelope(body, code):
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# --- envelope and status codes -----------------------------------------------------------


def test_success_is_plain_json():
    assert call("POST", "/items", body={"name": "pen", "qty": 2})[:2] == (200, {"name": "pen", "qty": 2})


def test_unknown_route_is_404_envelope():
    status, body, _ = call("GET", "/nope")
    assert status == 404
    assert_envelope(body, "not_found")


def test_known_path_with_other_method_is_405_with_allow():
    status, body, headers = call("DELETE", "/items/1")
    assert status == 405 and headers["Allow"] == "GET"
    assert_envelope(body, "method_not_allowed")


def test_validation_error_is_422_with_fields_and_no_echo():
    status, body, _ = call("POST", "/items", body={"name": "", "qty": "SENTINEL-VALUE"})
    assert status == 422
    assert_envelope(body, "invalid_input")
    fields = {tuple(f["loc"]): f["msg"] for f in body["error"]["fields"]}
    assert set(fields) == {("body", "name"), ("body", "qty")}
    assert all(fields.values())
    assert "SENTINEL" not in json.dumps(body)


def test_missing_body_is_422():
    status, body, _ = call("POST", "/items")
    assert status == 422
    assert_envelope(body, "invalid_input")


@pytest.mark.parametrize("path", ["/items", "/raw"])
def test_malformed_json_is_400(path):
    status, body, _ = call("POST", path, raw_body='{"name": "pen",',
                           headers={"content-type": "application/json"})
    assert status == 400
    assert_envelope(body, "invalid_json")


@pytest.mark.parametrize("path", ["/items", "/raw"])
def test_body_that_is_not_utf8_is_400(path):
    # Given bytes that are not UTF-8, which Lambda delivers base64-encoded
    status, body, _ = call("POST", path, raw_body=b'{"name": "\xff\xfe"}',
                           headers={"content-type": "application/json"})
    assert status == 400
    assert_envelope(body, "invalid_json")


def test_multipart_body_without_boundary_is_415():
    status, body, _ = call("POST", "/items", raw_body='{"name": "pen", "qty": 1}',
                           headers={"content-type": "multipart/form-data"})
    assert status == 415
    assert_envelope(body, "unsupported_media_type")


@pytest.mark.parametrize("content_type", [
    "text/plain",
    # what `curl -d` sends: Powertools would parse it as a form and blame the whole text
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
])
def test_other_content_type_is_415(content_type):
    status, body, _ = call("POST", "/items", raw_body='{"name": "pen", "qty": 1}',
                           headers={"content-type": content_type})
    assert status == 415
    assert_envelope(body, "unsupported_media_type")
    assert "fields" not in body["error"] and "pen" not in json.dumps(body)


def test_json_with_parameters_is_accepted():
    status, body, _ = call("POST", "/items", raw_body='{"name": "pen", "qty": 1}',
                           headers={"content-type": "application/json; charset=utf-8"})
    assert (status, body) == (200, {"name": "pen", "qty": 1})


@pytest.mark.parametrize(("path", "code", "status"), [
    ("/conflict", "conflict", 409), ("/busy", "rate_limited", 429), ("/down", "unavailable", 503),
])
def test_app_errors_map_to_their_status_and_code(path, code, status):
    got, body, headers = call("GET", path)
    assert got == status
    assert_envelope(body, code)
    if status == 429:
        assert headers["Retry-After"] == "7"


def test_unexpected_exception_is_500_with_request_id_and_logged_not_echoed(caplog):
    context = LambdaContext("tests")
    status, body, _ = call("GET", "/boom", context=context)
    assert status == 500
    assert_envelope(body, "internal_error")
    assert context.aws_request_id in body["error"]["message"]
    assert "hunter2" not in json.dumps(body) and "RuntimeError" not in json.dumps(body)
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.levelname == "ERROR" and record.exc_info[0] is RuntimeError


def test_response_failing_its_model_is_500_not_422():
    status, body, _ = call("GET", "/items/bad-output")
    assert status == 500
    assert_envelope(body, "internal_error")


# --- body size ---------------------------------------------------------------------------


def _json_of_size(size: int) -> str:
    text = json.dumps({"name": "", "qty": 1})
    return json.dumps({"name": "x" * (size - len(text)), "qty": 1})


@pytest.mark.parametrize("path", ["/items", "/raw", "/nope"])
def test_body_over_the_limit_is_413_before_parsing(path):
    status, body, _ = call("POST", path, raw_body=_json_of_size(LIMIT + 1),
                           headers={"content-type": "application/json"})
    assert status == 413
    assert_envelope(body, "payload_too_large")


def test_base64_body_is_measured_decoded():
    headers = {"content-type": "application/json"}
    # Given bodies that Lambda delivers base64-encoded (4/3 longer than their bytes)
    at_limit = _json_of_size(LIMIT).encode()
    over = _json_of_size(LIMIT + 1).encode()
    assert len(base64.b64encode(at_limit)) > LIMIT
    # Then the limit applies to the decoded bytes
    assert call("POST", "/items", raw_body=at_limit, headers=headers)[0] == 200
    status, body, _ = call("POST", "/items", raw_body=over, headers=headers)
    assert status == 413
    assert_envelope(body, "payload_too_large")


def test_multibyte_text_is_measured_in_bytes():
    text = json.dumps({"name": "é" * 600, "qty": 1}, ensure_ascii=False)
    assert len(text) < LIMIT < len(text.encode())
    status, _, _ = call("POST", "/items", raw_body=text, headers={"content-type": "application/json"})
    assert status == 413


# --- authentication and rate limits ------------------------------------------------------


def test_no_token_is_401_with_bearer_challenge():
    status, body, headers = call("GET", "/me")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert_envelope(body, "unauthorized")


def test_bad_token_is_401():
    claims = {"sub": str(uuid.uuid4()), "exp": int(time.time()) + 60}
    forged = jwt.encode(claims, "another-secret-0123456789abcdef-0123", algorithm="HS256")
    status, body, _ = call("GET", "/me", headers={"authorization": f"Bearer {forged}"})
    assert status == 401
    assert_envelope(body, "unauthorized")


def test_authenticated_user_is_provisioned_and_rate_limited_per_route():
    user_id = uuid.uuid4()
    auth = {"authorization": f"Bearer {token(user_id)}"}
    # Given a route limited to 3 requests a minute, 3 calls pass
    for _ in range(3):
        status, body, _ = call("GET", "/me", headers=auth)
        assert (status, body) == (200, {"user_id": str(user_id)})
    assert db.execute("SELECT count(*) AS n FROM users WHERE id = %s", (user_id,)).fetchone()["n"] == 1
    # Then the 4th is 429 with the seconds until the window resets
    status, body, headers = call("GET", "/me", headers=auth)
    assert status == 429
    assert_envelope(body, "rate_limited")
    assert 1 <= int(headers["Retry-After"]) <= 60
    # And other users are not affected
    assert call("GET", "/me", headers={"authorization": f"Bearer {token()}"})[0] == 200


# --- Idempotency-Key ---------------------------------------------------------------------


def _order(key, user_id, body=None, **kwargs):
    headers = {"authorization": f"Bearer {token(user_id)}"}
    if key is not None:
        headers["idempotency-key"] = key
    return call("POST", "/orders", body=body or {"sku": "a"}, headers=headers, **kwargs)


def test_retry_with_same_key_replays_the_first_response():
    user_id = uuid.uuid4()
    first = _order("k-1", user_id)
    second = _order("k-1", user_id)
    assert first[:2] == second[:2] == (200, {"order": 1})
    assert calls == ["order"]
    # The replay says so (Stripe's header); a fresh answer has no such header
    assert second[2][http.REPLAYED_HEADER] == "true"
    assert http.REPLAYED_HEADER not in first[2]
    assert http.REPLAYED_HEADER not in _order(None, user_id)[2]


def test_without_key_every_request_runs():
    user_id = uuid.uuid4()
    _order(None, user_id)
    _order(None, user_id)
    assert calls == ["order", "order"]


def test_keys_are_scoped_per_user():
    _order("k-1", uuid.uuid4())
    _order("k-1", uuid.uuid4())
    assert calls == ["order", "order"]


def test_same_key_different_body_is_422():
    user_id = uuid.uuid4()
    _order("k-1", user_id, {"sku": "a"})
    status, body, _ = _order("k-1", user_id, {"sku": "b"})
    assert status == 422
    assert_envelope(body, "idempotency_key_reused")
    assert calls == ["order"]


def test_invalid_key_is_400():
    status, body, _ = _order("has spaces", uuid.uuid4())
    assert status == 400
    assert_envelope(body, "invalid_idempotency_key")


def test_retry_while_first_is_running_is_409():
    user_id = uuid.uuid4()
    # Given the first request is still running (started through the same scope the
    # route uses: "<user> <service>:<METHOD> <path>")
    started = threading.Event()

    def first():
        def work():
            started.set()
            time.sleep(0.5)
            return Order(order=1)

        idempotency.run_idempotent(f"{user_id} tests:POST /orders", "k-1", {"sku": "a"}, work, model=Order,
                                   lambda_context=LambdaContext("tests"))
        db.reset()

    thread = threading.Thread(target=first)
    thread.start()
    started.wait(5)
    # When the client retries with the same key
    status, body, headers = _order("k-1", user_id)
    thread.join()
    # Then it is told to come back later, and the route's work did not run
    assert status == 409 and headers["Retry-After"] == "1"
    assert_envelope(body, "request_in_progress")
    assert calls == []
    # And once the first completed, the retry gets its response
    assert _order("k-1", user_id)[:2] == (200, {"order": 1})


# --- CORS: the function URL's job --------------------------------------------------------


def test_resolver_adds_no_cors_headers():
    for method, path in [("POST", "/items"), ("GET", "/nope"), ("OPTIONS", "/items")]:
        _, _, headers = call(method, path, body={"name": "a", "qty": 1},
                             headers={"origin": "https://app.example.com"})
        assert not [h for h in headers if h.lower().startswith("access-control-")]


def test_routes_cannot_turn_cors_on():
    with pytest.raises(ValueError, match="function URL"):
        app.get("/with-cors", cors=True)


def test_function_urls_in_the_template_configure_cors():
    # Browser-facing URLs allow the configured origins and the headers clients send;
    # webhook URLs are called by providers' servers and allow no browser origin.
    client_facing = {"account", "process-image", "analyze-entry", "checkout"}
    for spec in functions().values():
        if not spec.has_url:
            continue
        url = template()["Resources"][spec.logical_id]["Properties"]["FunctionUrlConfig"]
        cors = url.get("Cors")
        if spec.name not in client_facing:
            assert cors is None, spec.name
            continue
        assert cors and cors.get("AllowOrigins") == {"Ref": "AllowedOrigins"}, spec.name
        allowed = {h.lower() for h in cors.get("AllowHeaders", [])}
        assert {"authorization", "content-type", "idempotency-key"} <= allowed, spec.name
        exposed = {h.lower() for h in cors.get("ExposeHeaders", [])}
        assert {"retry-after", http.REPLAYED_HEADER.lower()} <= exposed, spec.name


def test_make_handler_wraps_resolve():
    handler = http.make_handler(app)
    response = handler(url_event("POST", "/items", body={"name": "pen", "qty": 1}), LambdaContext("tests"))
    assert response["statusCode"] == 200
