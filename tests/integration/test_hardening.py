"""Hardening, through the handlers as Lambda invokes them: hostile bodies refused before
and after auth, what Postgres cannot store refused, a connection the server dropped
replaced before the next request, a database outage answered 503 with Retry-After, a
vanished database host given up on within seconds, strict token times, and the local
runner taking a burst of clients."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from common import auth, config, db, ledger
from devkit import ROOT, fake_paymob, fake_stripe
from devkit.lambdas import invoke, url_event
from tests.integration import deliveries
from tests.integration.payments.conftest import _clear_settings

pytestmark = pytest.mark.usefixtures("s3_endpoint")

#: Under every route's size limit (16 KiB for checkout), past the recursion limit (1,000)
#: and Python's integer-digit limit (4,300).
DEEP = "[" * 7_000 + "]" * 7_000
LONG_NUMBER = '{"size": ' + "9" * 5_000 + "}"
HOSTILE = {"deep": DEEP, "deep_object": '{"a":' * 2_500 + "1" + "}" * 2_500, "long_number": LONG_NUMBER,
           "nan": '{"size": NaN}', "too_deep_for_us": "[" * 65 + "]" * 65}
#: Routes that parse a JSON body (each with and without a token).
JSON_ROUTES = [("process-image", "/uploads"), ("process-image", "/generations"),
               ("analyze-entry", "/entries"), ("checkout", "/paymob"), ("checkout", "/stripe")]


@pytest.fixture
def env(clean_db, monkeypatch) -> Iterator[None]:
    for name, value in deliveries.WEBHOOK_ENV.items():
        monkeypatch.setenv(name, value)
    _clear_settings()
    db.reset()
    yield
    monkeypatch.undo()
    _clear_settings()
    db.reset()


def user(credits: int = 0) -> uuid.UUID:
    user_id = uuid.uuid4()
    auth.ensure_user(user_id)
    if credits:
        ledger.grant(user_id, credits, reason="test", source="test", ref=f"test:{user_id}")
    return user_id


def bearer(user_id: uuid.UUID) -> dict[str, str]:
    return {"authorization": f"Bearer {auth.mint_token(user_id)}"}


def call(function: str, event: dict) -> tuple[int, dict | str, dict]:
    response = invoke(function, event)
    body = response.get("body") or "null"
    headers = response.get("headers") or {}
    is_json = headers.get("Content-Type", headers.get("content-type", "")).startswith("application/json")
    return response["statusCode"], json.loads(body) if is_json else body, headers


def counts() -> dict[str, int]:
    tables = ("journal_entries", "orders", "generations", "credit_reservations", "webhook_inbox",
              "payments", "idempotency_records")
    return {t: db.execute(f"SELECT count(*) AS n FROM {t}").fetchone()["n"] for t in tables}


# --- 1. parsing limits, before and after auth -----------------------------------------------


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("with_token", [False, True], ids=["no token", "token"])
@pytest.mark.parametrize(("function", "path"), JSON_ROUTES)
def test_hostile_json_is_a_400_envelope_with_or_without_a_token(env, log_text, function, path, with_token,
                                                                kind):
    headers = {"content-type": "application/json", **(bearer(user(5)) if with_token else {})}
    before = counts()
    status, body, _ = call(function, url_event("POST", path, raw_body=HOSTILE[kind], headers=headers))
    assert (status, body["error"]["code"]) == (400, "invalid_json")
    assert counts() == before
    assert "Traceback" not in log_text() and '"level":"ERROR"' not in log_text()


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_json_is_a_400_at_every_webhook(env, log_text, kind):
    raw = HOSTILE[kind]
    paymob = url_event("POST", "/", raw_body=raw, query={"hmac": "00" * 64})  # a bogus hmac
    stripe = url_event("POST", "/", raw_body=raw)
    deliveries.sign("stripe-webhook", stripe)  # correctly signed: parsed after verification
    revenuecat = url_event("POST", "/", raw_body=raw)
    deliveries.sign("revenuecat-webhook", revenuecat)
    for function, event in [("paymob-webhook", paymob), ("stripe-webhook", stripe),
                            ("revenuecat-webhook", revenuecat)]:
        status, body, _ = call(function, event)
        assert (status, body["error"]["code"]) == (400, "invalid_json"), function
    assert counts()["webhook_inbox"] == 0
    assert "Traceback" not in log_text()


# --- 2. NUL and unpaired surrogates ------------------------------------------------------------


@pytest.mark.parametrize("text", ["a\u0000b", "lone \ud800", "\udfff"])
@pytest.mark.parametrize(("function", "path", "body"), [
    ("analyze-entry", "/entries", lambda t: {"content": t}),
    ("analyze-entry", "/entries", lambda t: {"title": t, "content": "a quiet day"}),
    ("checkout", "/stripe", lambda t: {"product_id": t}),
    ("checkout", "/paymob", lambda t: {"product_id": f"credits_50{t}"}),
    ("process-image", "/generations", lambda t: {"tool_id": t, "params": {}, "source_key": "a.jpg"}),
])
def test_strings_postgres_cannot_store_are_a_400_and_change_nothing(env, function, path, body, text):
    before = counts()
    status, answer, _ = call(function, url_event("POST", path, raw_body=json.dumps(body(text)),
                                                 headers={"content-type": "application/json",
                                                          **bearer(user(5))}))
    assert (status, answer["error"]["code"]) == (400, "invalid_json")
    assert "NUL" in answer["error"]["message"]
    assert counts() == before


@pytest.mark.parametrize(("function", "path", "query"), [
    ("analyze-entry", "/entries/\u0000", None),
    ("process-image", "/generations/\ud800", None),
    ("checkout", "/products", {"currency": "\u0000"}),
])
def test_a_path_or_query_postgres_cannot_store_is_a_400(env, function, path, query):
    status, answer, _ = call(function, url_event("GET", path, query=query, headers=bearer(user())))
    assert (status, answer["error"]["code"]) == (400, "invalid_request")


# --- 4 and 5: a dropped connection, a database that refuses ----------------------------------


def _working_request(function: str, me: uuid.UUID) -> dict:
    """A request of ``function`` that reads or writes the database and answers 2xx."""
    client = {"process-image": ("GET", "/tools", None), "checkout": ("GET", "/products", None),
              "analyze-entry": ("POST", "/entries", {"content": "A calm walk by the river."})}
    if function in client:
        method, path, body = client[function]
        return url_event(method, path, body=body, headers=bearer(me))
    bodies = {
        # an order of no one's: recorded as unmatched
        "paymob-webhook": fake_paymob.transaction(987654, 100, "EGP", id=int(time.time() * 1000)),
        "stripe-webhook": fake_stripe.event("customer.created", {"id": "cus_1", "object": "customer"}),
        "revenuecat-webhook": {"api_version": "1.0", "event": {
            "type": "TEST", "id": str(uuid.uuid4()), "event_timestamp_ms": int(time.time() * 1000),
            "app_user_id": str(me)}},
    }
    event = url_event("POST", "/", raw_body=json.dumps(bodies[function]),
                      headers={"content-type": "application/json"})
    deliveries.sign(function, event)
    return event


URL_FUNCTIONS = ["process-image", "analyze-entry", "checkout", "paymob-webhook", "stripe-webhook",
                 "revenuecat-webhook"]


def _terminate_this_threads_backends() -> None:
    kept = (getattr(db._local, "conn", None), getattr(db._local, "lock_conn", None))
    pids = [c.info.backend_pid for c in kept if c is not None and not c.closed]
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(100):  # until the server has let them go
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone():
                break
            time.sleep(0.02)


def test_the_first_request_after_a_dropped_connection_succeeds(env):
    # Given a warm container (this process) that has served each function once
    me = user(5)
    for function in URL_FUNCTIONS:
        assert call(function, _working_request(function, me))[0] < 300, function
    for function in URL_FUNCTIONS:
        # When the server drops the container's connection between two invocations
        # (a failover, a proxy's idle timeout)
        _terminate_this_threads_backends()
        # Then the next request of every function answers 2xx, on a new connection
        status, body, _ = call(function, _working_request(function, me))
        assert status < 300, (function, status, body)


@pytest.fixture
def database_refusing(env, monkeypatch) -> Iterator[None]:
    """DATABASE_URL pointing at a port where nothing listens (connection refused)."""
    real = os.environ["DATABASE_URL"]
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/down")
    db.reset()
    yield
    monkeypatch.setenv("DATABASE_URL", real)
    db.reset()


def test_every_route_and_webhook_answers_503_with_retry_after_while_the_database_refuses(
        database_refusing, log_text):
    me = uuid.uuid4()
    answered = {}
    for function, name, sample in deliveries.samples():
        if function not in URL_FUNCTIONS:
            continue
        status, body, headers = call(function, deliveries.authentic(function, sample, me))
        answered[f"{function}/{name}"] = status
        if (function, name) == ("paymob-webhook", "response-callback"):
            assert status == 200  # the buyer's redirect page needs no database
            continue
        assert (status, body["error"]["code"]) == (503, "unavailable"), (function, name, body)
        assert int(headers["Retry-After"]) > 0
    assert len(answered) >= 30
    # Logged once per request, as a warning without a traceback
    lines = [json.loads(line) for line in log_text().splitlines() if line.startswith("{")]
    outages = [line for line in lines if line["message"] == "database unavailable"]
    assert len(outages) == len(answered) - 1
    assert all(line["level"] == "WARNING" and "exception" not in line for line in outages)
    assert "Traceback" not in log_text()


# --- 6. a database host that vanishes ----------------------------------------------------------------

#: Run in a network namespace: connects through a veth to a proxy in front of the test
#: database, signals, then (once the link is cut) times a query.
VANISH_CLIENT = """
import os, sys, time
from common import db
db.execute("SELECT 1")
print("connected", flush=True)
sys.stdin.readline()  # the link is cut
start = time.monotonic()
try:
    db.execute("SELECT 1", idempotent=False)
    print("answered", flush=True)
except Exception as exc:
    print(f"failed {type(exc).__name__} {time.monotonic() - start:.1f}", flush=True)
"""


def _proxy(listen: tuple[str, int], target: dict) -> socket.socket:
    """A TCP proxy from ``listen`` to the test database, one thread per direction."""
    server = socket.create_server(listen)

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection((target["host"], int(target["port"])))
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return server


def _can_make_network_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and subprocess.run(
        ["ip", "netns", "list"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_make_network_namespaces(), reason="needs root and iproute2 (network namespaces)")
def test_a_vanished_database_host_fails_within_seconds(database_url):
    # Given a client whose database is reached over a link that can be cut (a veth pair
    # into a network namespace, a proxy in front of the test database)
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    if not info.get("host", "").startswith(("127.", "localhost")):
        pytest.skip("the test database is not on TCP localhost")
    ns, veth = f"pgvanish{os.getpid() % 10000}", f"pv{os.getpid() % 10000}"
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True)  # noqa: E731
    run("ip", "netns", "add", ns)
    proxy = None
    try:
        run("ip", "link", "add", f"{veth}a", "type", "veth", "peer", "name", f"{veth}b")
        run("ip", "link", "set", f"{veth}b", "netns", ns)
        run("ip", "addr", "add", "10.213.7.1/30", "dev", f"{veth}a")
        run("ip", "link", "set", f"{veth}a", "up")
        run("ip", "netns", "exec", ns, "ip", "addr", "add", "10.213.7.2/30", "dev", f"{veth}b")
        run("ip", "netns", "exec", ns, "ip", "link", "set", f"{veth}b", "up")
        proxy = _proxy(("10.213.7.1", 0), {"host": info["host"], "port": info.get("port", 5432)})
        url = psycopg.conninfo.make_conninfo(database_url, host="10.213.7.1", port=proxy.getsockname()[1])
        env = {**os.environ, "DATABASE_URL": url, "DB_DEAD_PEER_TIMEOUT_S": "3", "PYTHONPATH": str(ROOT)}
        client = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", VANISH_CLIENT], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdout.readline().strip() == "connected"
        # When the host vanishes: the link goes down on the far side, packets are lost
        run("ip", "link", "set", f"{veth}a", "down")
        client.stdin.write("go\n")
        client.stdin.flush()
        # Then the statement fails within seconds (not at the Lambda timeout)
        outcome = client.stdout.readline().split()
        client.wait(timeout=30)
        assert outcome[:2] == ["failed", "OperationalError"], outcome
        assert float(outcome[2]) < 10
    finally:
        if proxy is not None:
            proxy.close()
        subprocess.run(["ip", "link", "del", f"{veth}a"], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_connections_carry_keepalives_and_a_user_timeout(env, monkeypatch):
    monkeypatch.setenv("DB_DEAD_PEER_TIMEOUT_S", "9")
    config.settings.cache_clear()
    db.reset()
    params = db.connection().info.get_parameters()
    assert (params["keepalives"], params["keepalives_idle"], params["tcp_user_timeout"]) == ("1", "3", "9000")


# --- 7. token times -----------------------------------------------------------------------------------


def _token(claims: dict) -> str:
    import jwt

    return jwt.encode(claims, config.secret_list("JWT_SECRET")[0], algorithm="HS256")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_time_claim_sent_as_a_string_is_refused(env, claim):
    now = int(time.time())
    claims = {"sub": str(user()), "exp": now + 600, "nbf": now - 10, "iat": now}
    claims[claim] = str(claims[claim])
    status, body, _ = call("checkout", url_event("GET", "/products",
                                                 headers={"authorization": f"Bearer {_token(claims)}"}))
    assert (status, body["error"]["code"]) == (401, "unauthorized")


def test_an_optional_upper_bound_on_token_lifetime(env, monkeypatch):
    me, now = user(), int(time.time())
    day_token = _token({"sub": str(me), "iat": now, "exp": now + 86_400})
    hour_token = _token({"sub": str(me), "iat": now, "exp": now + 3_600})

    def status(token: str) -> int:
        headers = {"authorization": f"Bearer {token}"}
        return call("checkout", url_event("GET", "/products", headers=headers))[0]

    assert status(day_token) == 200  # off by default
    monkeypatch.setenv("JWT_MAX_LIFETIME_S", "7200")
    config.settings.cache_clear()
    assert (status(day_token), status(hour_token)) == (401, 200)
