"""Round trips to Postgres on the hot paths, counted on the wire (libpq's trace,
devkit.pgtrace): a process-image cache hit is at most two (the request's admission: rate
limit and user row; then the cache entry, the balance and the catalog's version), and
one with ``source_etag`` or on a sealed upload (the lookup goes in the admission's
statement); every authenticated request's admission is one."""

from __future__ import annotations

import json
import os
import uuid

import psycopg
import pytest

from common import auth, db, ledger, storage
from devkit.lambdas import invoke, url_event
from devkit.pgtrace import round_trips


@pytest.fixture(autouse=True)
def _env(clean_db, s3_endpoint):
    storage.reset()
    yield
    db.reset()


def _post(user_id: uuid.UUID, body: dict) -> tuple[int, dict]:
    headers = {"authorization": f"Bearer {auth.mint_token(user_id)}"}
    response = invoke("process-image", url_event("POST", "/generations", body=body, headers=headers))
    return response["statusCode"], json.loads(response["body"])


def _source(user_id: uuid.UUID) -> tuple[str, str]:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.linear_gradient("L").resize((64, 48)).convert("RGB").save(out, "JPEG")
    key = storage.user_key(user_id, "uploads", "photo.jpg")
    return key, storage.put(os.environ["UPLOADS_BUCKET"], key, out.getvalue(), "image/jpeg").etag


@pytest.fixture
def cached_request() -> tuple[uuid.UUID, dict]:
    user_id = uuid.uuid4()
    auth.ensure_user(user_id)
    ledger.grant(user_id, 20, reason="test credits", source="test", ref=str(uuid.uuid4()))
    key, etag = _source(user_id)
    body = {"tool_id": "blur", "params": {"radius": 2}, "source_key": key}
    assert _post(user_id, body)[0] == 201
    for _ in range(2):  # warm: connection, catalog snapshot, each path's statements prepared
        assert _post(user_id, body)[0] == 200
        assert _post(user_id, {**body, "source_etag": etag})[0] == 200
    return user_id, {**body, "source_etag": etag}


@pytest.mark.parametrize("case", ["source_etag", "no_source_etag", "sealed_upload"])
def test_a_cache_hit_makes_at_most_two_round_trips(cached_request, case, monkeypatch):
    user_id, body = cached_request
    if case != "source_etag":
        body = {k: v for k, v in body.items() if k != "source_etag"}  # an S3 HEAD, no database
    if case == "sealed_upload":  # its form expired long ago: a HEAD remembers it, then no S3 call
        from process_image import generations  # the function's code, on the path once invoked

        monkeypatch.setattr(generations, "SEAL_MARGIN_S", -10**6)
        monkeypatch.setattr(generations, "_sealed", type(generations._sealed)())
        assert _post(user_id, body)[0] == 200
        assert len(generations._sealed) == 1
    with round_trips() as trips:
        status, answer = _post(user_id, body)
    assert status == 200 and answer["cached"] and answer["balance"] == 20 - 1, answer
    # with the ETag known before the admission, the lookup goes in the admission's statement
    assert trips.count <= (2 if case == "no_source_etag" else 1), trips.messages


def test_a_catalog_change_takes_effect_on_the_next_request(cached_request, database_url):
    user_id, body = cached_request
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE tools SET enabled = false WHERE id = 'blur'")
        try:
            status, answer = _post(user_id, body)
            assert status == 422 and answer["error"]["code"] == "unknown_tool", answer
        finally:
            conn.execute("UPDATE tools SET enabled = true WHERE id = 'blur'")
    status, answer = _post(user_id, body)  # enabled again: the snapshot is read again
    assert status == 200 and answer["cached"], answer
    with psycopg.connect(database_url, autocommit=True) as conn:  # a new price, charged at once
        price = conn.execute("SELECT credit_cost FROM tools WHERE id = 'blur'").fetchone()[0]
        conn.execute("UPDATE tools SET credit_cost = %s WHERE id = 'blur'", (price + 2,))
        try:
            status, answer = _post(user_id, {**body, "params": {"radius": 3}})  # a miss
            assert status == 201 and answer["credits_charged"] == price + 2, answer
        finally:
            conn.execute("UPDATE tools SET credit_cost = %s WHERE id = 'blur'", (price,))
    from process_image import catalog  # the function's code, on the path once invoked

    catalog.refresh()


def test_admission_is_one_round_trip_and_throttles_before_provisioning(monkeypatch):
    from common.errors import TooManyRequests

    user_id = uuid.uuid4()
    claims = {"sub": str(user_id), "email": f"{user_id}@example.com"}
    principal = auth.Principal(user_id=user_id, claims=claims)
    db.execute("SELECT 1")
    with round_trips() as trips:
        assert auth.admit(principal, "test:GET /x", limit=1) is True
    assert trips.count == 1, trips.messages
    assert auth.admit(principal, "test:GET /x", limit=5) is False  # made already
    stranger = auth.Principal(user_id=uuid.uuid4(), claims={})
    auth.admit(stranger, "test:GET /y", limit=1)
    db.execute("DELETE FROM users WHERE id = %s", (stranger.user_id,))
    with pytest.raises(TooManyRequests):
        auth.admit(stranger, "test:GET /y", limit=1)
    assert db.execute("SELECT 1 FROM users WHERE id = %s", (stranger.user_id,)).fetchone() is None


def test_admission_inside_a_transaction_leaves_its_commit_synchronous():
    user_id = uuid.uuid4()
    with db.transaction() as conn:
        auth.admit(auth.Principal(user_id=user_id, claims={}), "test:GET /z", limit=5)
        assert conn.execute("SHOW synchronous_commit").fetchone()["synchronous_commit"] == "on"
    db.execute("SELECT 1")
    auth.admit(auth.Principal(user_id=user_id, claims={}), "test:GET /z", limit=5)  # alone: asynchronous
    assert db.execute("SHOW synchronous_commit").fetchone()["synchronous_commit"] == "on"  # and only then


def test_admission_along_reads_in_its_statement_and_refuses_as_admission_does():
    from common.errors import TooManyRequests

    principal = auth.Principal(user_id=uuid.uuid4(), claims={})
    queries, params = {"twice": "SELECT %(n)s::int * 2"}, {"n": 21}
    db.execute("SELECT 1")
    with round_trips() as trips:
        assert auth.admit_along(principal, "test:POST /a", queries, params, limit=2) == {"twice": 42}
    assert trips.count == 1, trips.messages
    assert auth.admit_along(principal, "test:POST /a", queries, params, limit=2) == {"twice": 42}
    with pytest.raises(TooManyRequests):
        auth.admit_along(principal, "test:POST /a", queries, params, limit=2)
    with pytest.raises(ValueError):  # the admission's own names
        auth.admit_along(principal, "test:POST /a", {"hits": "SELECT 1"}, {}, limit=2)
    with pytest.raises(ValueError):
        auth.admit_along(principal, "test:POST /a", queries, {"id": 1}, limit=2)


def test_a_throttled_caller_is_refused_before_its_request_is_checked(cached_request, monkeypatch):
    from common.config import settings

    user_id, body = cached_request
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "1")
    settings.cache_clear()
    try:
        for bad in ({**body, "tool_id": "no-such-tool"}, {**body, "params": {"radius": -1}}):
            status, answer = _post(user_id, bad)  # the window holds the fixture's requests
            assert status == 429, answer
        status, answer = _post(user_id, body)  # a hit too
        assert status == 429, answer
    finally:
        monkeypatch.delenv("RATE_LIMIT_PER_MINUTE")
        settings.cache_clear()
