"""The local runner (the devkit.runner package) against a small template of its own in tmp_path: an
echo function behind a function URL, a scheduled one, a layer. Real worker processes,
real HTTP; no dependency on the project's functions."""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devkit import runner as rt
from devkit import schedules, seed
from devkit.runner.banner import curl_examples, sample_route
from devkit.runner.function_url import request_event
from devkit.runner.server import MAX_PAYLOAD, Server

SECRET = "from-env-file-secret-0123456789abcdef"
TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev}
  Origins: {Type: CommaDelimitedList, Default: "https://app.example.com"}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Globals:
  Function:
    Runtime: python3.13
    Timeout: 1
    Layers: [!Ref SharedLayer]
    Environment:
      Variables:
        STAGE: !Ref Stage
        UPLOADS_BUCKET: !Ref UploadsBucket
        BUCKET_ARN: !GetAtt UploadsBucket.Arn
        MODE: !If [IsProd, strict, relaxed]
        LABEL: !Join ["-", [!Ref "AWS::Region", !Sub "${Stage}-x"]]
        SECRET_PARAM: !Sub /backend/${Stage}/SECRET
Resources:
  SharedLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: layer/}
    Metadata: {BuildMethod: python3.13}
  UploadsBucket: {Type: AWS::S3::Bucket}
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/echo/
      Handler: app.handler
      FunctionUrlConfig:
        AuthType: NONE
        Cors: {AllowOrigins: !Ref Origins, AllowMethods: [GET, POST], MaxAge: 60}
      Environment:
        Variables:
          SELF_URL: !GetAtt EchoFunctionUrl.FunctionUrl
  TickFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/tick/
      Handler: app.handler
      Timeout: 5
      Events:
        EveryMinute:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(1 minute)
            Input: '{"job": "tick", "limit": 10}'
        Nightly:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: cron(30 2 * * ? *)
            ScheduleExpressionTimezone: Europe/Berlin
            Input: '{"job": "nightly"}'
"""

ECHO = """\
import base64, json, os, time
import shared

def handler(event, context):
    path = event["rawPath"]
    if path == "/sleep":
        time.sleep(5)
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/respond":
        return {"statusCode": 201, "headers": {"x-answer": "42", "content-type": "image/png"},
                "cookies": ["s=1; HttpOnly", "t=2"], "isBase64Encoded": True,
                "body": base64.b64encode(b"\\x89PNG-bytes").decode()}
    if path == "/plain":
        return {"ok": True}
    if path == "/malformed":
        return {"statusCode": "teapot"}
    if path == "/nap":
        time.sleep(0.3)
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps({
        "event": event, "pid": os.getpid(), "version": VERSION, "shared": shared.NAME,
        "remaining_ms": context.get_remaining_time_in_millis(), "function": context.function_name,
        "env": {k: os.environ.get(k) for k in ("STAGE", "UPLOADS_BUCKET", "BUCKET_ARN", "MODE", "LABEL",
                                               "SECRET_PARAM", "SELF_URL", "FROM_ENV_FILE", "JWT_SECRET")}})}

VERSION = 1
"""

TICK = """\
import os

def handler(event, context):
    return {"received": event, "pid": os.getpid()}
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A template with two functions, a layer and an env file, in tmp_path."""
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    for name, code in (("echo", ECHO), ("tick", TICK)):
        (tmp_path / "functions" / name).mkdir(parents=True)
        (tmp_path / "functions" / name / "app.py").write_text(code)
    (tmp_path / "layer" / "shared").mkdir(parents=True)
    (tmp_path / "layer" / "shared" / "__init__.py").write_text('NAME = "layer-v1"\n')
    (tmp_path / "env.local.json").write_text(json.dumps({
        "Parameters": {"JWT_SECRET": SECRET},
        "EchoFunction": {"FROM_ENV_FILE": "yes"},
        "TemplateParameters": {"Stage": "local"},
    }))
    events = tmp_path / "events" / "echo"
    events.mkdir(parents=True)
    sample = request_event("POST", "/items", "a=1", [("content-type", "application/json"),
                                                        ("authorization", "Bearer sample")], b'{"n": 1}')
    (events / "create.json").write_text(json.dumps(sample))
    return tmp_path


@pytest.fixture
def served(app: Path):
    lines: list[str] = []
    runner = rt.Runner(app / "template.yaml", env_file=app / "env.local.json", port=0,
                       services_env={"DATABASE_URL": "postgresql://unused@127.0.0.1:1/x"}, sink=lines.append)
    runner.start(run_schedules=False)
    runner.worker_log = lines  # type: ignore[attr-defined]
    yield runner
    runner.stop()


Response = tuple[int, dict[str, str], list[tuple[str, str]], bytes]


def request(runner: rt.Runner, method: str, path: str, body: bytes | None = None,
            headers: list[tuple[str, str]] | None = None) -> Response:
    """(status, headers by lower-case name, raw headers, body) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", runner.port, timeout=10)
    conn.putrequest(method, path, skip_accept_encoding=True)
    for name, value in headers or []:
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(len(body or b"")))
    conn.endheaders(body or None)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.getheaders(), data


def echo(runner: rt.Runner, path: str = "/", **kwargs) -> dict:
    status, _, _, data = request(runner, kwargs.pop("method", "GET"), "/echo" + path, **kwargs)
    assert status == 200, data
    return json.loads(data)


def test_request_becomes_a_function_url_event(served: rt.Runner) -> None:
    # Given a request with a path, a repeated query key, repeated headers and cookies
    status, headers, _, data = request(served, "GET", "/echo/users/42?tag=a&tag=b&q=x%20y", headers=[
        ("X-Custom-Header", "one"), ("X-Custom-Header", "two"), ("Cookie", "session=abc; theme=dark"),
        ("User-Agent", "tests/1.0")])
    # When the function echoes its event
    assert status == 200
    event = json.loads(data)["event"]
    # Then it is payload 2.0 with the path after the function name, the raw query string
    # and its parsed form, lower-cased joined headers, cookies apart, a request context
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/users/42"
    assert event["rawQueryString"] == "tag=a&tag=b&q=x%20y"
    assert event["queryStringParameters"] == {"tag": "a,b", "q": "x y"}
    assert event["headers"]["x-custom-header"] == "one,two"
    assert all(k == k.lower() for k in event["headers"]) and "cookie" not in event["headers"]
    assert event["cookies"] == ["session=abc", "theme=dark"]
    ctx = event["requestContext"]
    assert ctx["http"] == {"method": "GET", "path": "/users/42", "protocol": "HTTP/1.1",
                           "sourceIp": "127.0.0.1", "userAgent": "tests/1.0"}
    assert ctx["requestId"] == headers["x-amzn-requestid"]
    datetime.strptime(ctx["time"], "%d/%b/%Y:%H:%M:%S %z")
    assert abs(ctx["timeEpoch"] / 1000 - time.time()) < 60
    assert event["isBase64Encoded"] is False and "body" not in event


def test_binary_bodies_are_base64_and_text_bodies_are_not(served: rt.Runner) -> None:
    # Given a PNG body and a JSON body
    png = b"\x89PNG\r\n\x1a\n\x00\x01binary"
    binary = echo(served, "/upload", method="POST", body=png,
                  headers=[("Content-Type", "image/png")])["event"]
    text = echo(served, "/items", method="POST", body=b'{"a": "\xc3\xa9"}',
                headers=[("Content-Type", "application/json; charset=utf-8")])["event"]
    # Then the binary one arrives base64-encoded, the text one as it was sent
    assert binary["isBase64Encoded"] is True and base64.b64decode(binary["body"]) == png
    assert text["isBase64Encoded"] is False and json.loads(text["body"]) == {"a": "é"}


def test_responses_are_mapped_back_to_http(served: rt.Runner) -> None:
    # A full response: status, headers, cookies, base64 body
    status, headers, raw_headers, data = request(served, "GET", "/echo/respond")
    assert status == 201 and headers["x-answer"] == "42" and headers["content-type"] == "image/png"
    assert [v for k, v in raw_headers if k.lower() == "set-cookie"] == ["s=1; HttpOnly", "t=2"]
    assert data == b"\x89PNG-bytes"
    # A bare value: 200 with the value as JSON
    status, headers, _, data = request(served, "GET", "/echo/plain")
    assert (status, headers["content-type"], json.loads(data)) == (200, "application/json", {"ok": True})
    # A malformed response is the function's error: 502
    status, headers, _, _ = request(served, "GET", "/echo/malformed")
    assert status == 502 and headers["x-amzn-errortype"] == "Runtime.InvalidResponse"


def test_function_environment_comes_from_the_template_env_file_and_services(served: rt.Runner) -> None:
    body = echo(served)
    # Then parameters, pseudo parameters, conditions, bucket refs and the URL are resolved,
    # SSM references are dropped, the env file wins over the services' defaults
    assert body["env"] == {
        "STAGE": "local", "UPLOADS_BUCKET": "local-uploads", "BUCKET_ARN": "arn:aws:s3:::local-uploads",
        "MODE": "relaxed", "LABEL": "us-east-1-local-x", "SECRET_PARAM": None,
        "SELF_URL": f"{served.base_url}/echo/", "FROM_ENV_FILE": "yes", "JWT_SECRET": SECRET,
    }
    assert body["shared"] == "layer-v1" and body["function"] == "echo"
    assert 0 < body["remaining_ms"] <= 1000  # the template's Timeout: 1


def test_warm_worker_is_reused_and_logged(served: rt.Runner, caplog: pytest.LogCaptureFixture) -> None:
    # Given a first (cold) request
    with caplog.at_level(logging.INFO, logger="devkit.runner"):
        first = echo(served, "/a")
        second = echo(served, "/b?x=1")
    # Then the second runs in the same process, and each request logs one line
    assert first["pid"] == second["pid"]
    lines = [r.getMessage() for r in caplog.records if r.name == "devkit.runner"]
    assert len(lines) == 2
    assert lines[0].startswith("function=echo method=GET route=/a status=200 duration_ms=")
    assert lines[0].endswith("cold=true")
    assert lines[1].startswith("function=echo method=GET route=/b status=200")  # no query: may hold secrets
    assert lines[1].endswith("cold=false")


def test_concurrent_requests_get_workers_of_their_own_and_stop_kills_them(served: rt.Runner) -> None:
    # Given two requests in flight at once
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(echo(served, "/nap"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # Then each ran in its own process, as Lambda scales out
    pids = {r["pid"] for r in results}
    assert len(pids) == 2
    # And stopping the runner ends every worker it started
    served.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_code_change_gives_a_cold_start(served: rt.Runner, app: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    before = echo(served)
    # When the handler changes
    handler = app / "functions" / "echo" / "app.py"
    handler.write_text(ECHO.replace("VERSION = 1", "VERSION = 2"))
    after = echo(served)
    # Then a new process runs the new code
    assert after["pid"] != before["pid"] and after["version"] == 2
    # And a change to the layer also restarts it
    (app / "layer" / "shared" / "__init__.py").write_text('NAME = "layer-v2"\n')
    with caplog.at_level(logging.INFO, logger="devkit.runner"):
        relayered = echo(served)
    assert relayered["pid"] != after["pid"] and relayered["shared"] == "layer-v2"
    assert caplog.records[-1].getMessage().endswith("cold=true")


def test_an_import_error_answers_502_until_fixed(served: rt.Runner, app: Path) -> None:
    handler = app / "functions" / "echo" / "app.py"
    handler.write_text("import not_a_module\n")
    status, headers, _, _ = request(served, "GET", "/echo/")
    assert status == 502 and headers["x-amzn-errortype"] == "Runtime.ImportModuleError"
    handler.write_text(ECHO)
    assert echo(served)["version"] == 1


def test_a_handler_exception_answers_502_and_keeps_the_worker(served: rt.Runner) -> None:
    pid = echo(served)["pid"]
    status, headers, _, data = request(served, "GET", "/echo/boom")
    assert status == 502 and json.loads(data) == {"Message": "Internal Server Error"}
    assert headers["x-amzn-errortype"] == "RuntimeError"
    assert echo(served)["pid"] == pid  # Lambda keeps the environment after a handled error
    assert any("RuntimeError: boom" in line for line in served.worker_log)  # type: ignore[attr-defined]


def test_a_timeout_kills_the_worker_and_answers_504(served: rt.Runner) -> None:
    pid = echo(served)["pid"]
    # When the handler overruns its 1 s timeout
    started = time.monotonic()
    status, _, _, data = request(served, "GET", "/echo/sleep")
    # Then the runner answers when the timeout passes, not when the handler would finish
    assert status == 504 and json.loads(data) == {"Message": "Endpoint request timed out"}
    assert time.monotonic() - started < 3
    # And the next request gets a fresh process
    assert echo(served)["pid"] != pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_schedule_runs_on_demand_with_its_input(served: rt.Runner) -> None:
    # When the schedule is run through the runner's endpoint
    status, _, _, data = request(served, "POST", "/_schedules/tick")
    # Then the function got the schedule's Input as its event
    body = json.loads(data)
    assert status == 200 and body["status"] == "ok"
    assert body["result"]["received"] == {"job": "tick", "limit": 10}
    # And another schedule of the function can be chosen, or the event overridden
    _, _, _, data = request(served, "POST", "/_schedules/tick?schedule=Nightly")
    assert json.loads(data)["result"]["received"] == {"job": "nightly"}
    _, _, _, data = request(served, "POST", "/_invoke/tick", body=b'{"job": "manual"}')
    assert json.loads(data)["result"]["received"] == {"job": "manual"}
    # An unknown function is a 404, a function without a URL is not served over HTTP
    assert request(served, "POST", "/_schedules/echo")[0] == 404
    assert request(served, "GET", "/tick/")[0] == 404


def test_schedules_are_parsed_and_fire_when_due(served: rt.Runner, caplog: pytest.LogCaptureFixture) -> None:
    # Given the schedules the runner read from the template
    status, _, _, data = request(served, "GET", "/_schedules")
    listed = {s["schedule"]: s for s in json.loads(data)}
    assert status == 200 and listed["EveryMinute"]["expression"] == "rate(1 minute)"
    rate_next = datetime.fromisoformat(listed["EveryMinute"]["next_run"])
    assert timedelta(seconds=50) < rate_next - datetime.now(UTC) <= timedelta(seconds=60)
    nightly = datetime.fromisoformat(listed["Nightly"]["next_run"])
    assert (nightly.hour, nightly.minute, nightly.utcoffset()) in {(2, 30, timedelta(hours=1)),
                                                                   (2, 30, timedelta(hours=2))}
    # When the clock passes the rate schedule's time
    with caplog.at_level(logging.INFO, logger="devkit.runner"):
        for thread in served.scheduler.run_pending(rate_next + timedelta(seconds=1)):
            thread.join(10)
    # Then it ran once with its Input and is due again a minute later
    runs = [r.getMessage() for r in caplog.records if "method=SCHEDULE" in r.getMessage()]
    assert len(runs) == 1 and "function=tick" in runs[0] and "route=EveryMinute status=200" in runs[0]
    entry = next(e for e in served.scheduler.entries if e.schedule.name == "EveryMinute")
    assert entry.next_run == rate_next + timedelta(seconds=61)


def test_schedule_expressions() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday

    def next_run(expression: str) -> datetime | None:
        return schedules.parse(expression).next_after(start)

    assert next_run("rate(5 minutes)") == start + timedelta(minutes=5)
    assert next_run("rate(1 day)") == start + timedelta(days=1)
    # AWS day-of-week is 1-7 = SUN-SAT: 6#3 is the third Friday, 6L the last one
    assert next_run("cron(0 12 ? * 6#3 *)") == datetime(2026, 1, 16, 12, tzinfo=UTC)
    assert next_run("cron(0 12 ? * 6L *)") == datetime(2026, 1, 30, 12, tzinfo=UTC)
    assert next_run("cron(15 3 1 * ? 2027)") == datetime(2027, 1, 1, 3, 15, tzinfo=UTC)
    assert next_run("at(2026-03-01T10:00:00)") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    for bad in ("rate(0 minutes)", "cron(0 12 * * *)", "cron(0 12 * * * *)", "every day"):
        with pytest.raises(schedules.ScheduleError):
            schedules.parse(bad)


def test_cors_preflight_unknown_routes_and_payload_limit(served: rt.Runner) -> None:
    status, headers, _, _ = request(served, "OPTIONS", "/echo/x", headers=[
        ("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "POST")])
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example.com"
    assert headers["access-control-allow-methods"] == "GET,POST" and headers["access-control-max-age"] == "60"
    _, headers, _, _ = request(served, "GET", "/echo/", headers=[("Origin", "https://evil.example.com")])
    assert "access-control-allow-origin" not in headers
    assert request(served, "GET", "/nope/")[0] == 404
    assert request(served, "TRACE", "/echo/")[0] == request(served, "QUERY", "/echo/")[0] == 200  # any method
    status, _, _, _ = request(served, "POST", "/echo/", body=b"x" * (MAX_PAYLOAD + 1))
    assert status == 413


def test_examples_give_one_curl_per_sampled_route_and_schedules(served: rt.Runner, app: Path) -> None:
    lines = curl_examples(served)
    # A function with samples gets one example per route, named after its sample
    assert f"# echo POST /items: {app}/events/echo/create.json" in lines
    assert f'curl -s {served.base_url}/echo/ -H "Authorization: Bearer $TOKEN"' not in lines
    create = next(line for line in lines if "/echo/items" in line)
    assert create.startswith(f"curl -s -X POST '{served.base_url}/echo/items?a=1'")
    assert '-H "authorization: Bearer $TOKEN"' in create and "--data-binary '{\"n\": 1}'" in create
    assert f"curl -s -X POST {served.base_url}/_schedules/tick" in lines
    # Without samples, the base URL
    (app / "events" / "echo" / "create.json").unlink()
    assert f'curl -s {served.base_url}/echo/ -H "Authorization: Bearer $TOKEN"' in curl_examples(served)


def test_routes_of_samples_name_ids_and_pick_a_headline() -> None:
    event = request_event("POST", "/entries/00000000-0000-4000-8000-0000000e0001/analyze", "", [], b"")
    assert sample_route(event) == ("POST", "/entries/{id}/analyze")
    assert sample_route(request_event("GET", "/orders/42", "", [], b"")) == ("GET", "/orders/{id}")
    assert sample_route({"max_seconds": 1}) is None


def test_payment_fakes_are_used_unless_the_provider_key_is_configured(
        app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = {"PAYMOB_SECRET_KEY": "local", "PAYMOB_API_URL": "http://127.0.0.1:1", "PAYMOB_PUBLIC_KEY": "pk",
             "PAYMOB_INTEGRATION_IDS": "1", "STRIPE_API_KEY": "sk_local", "STRIPE_API_BASE": "http://127.0.0.1:2"}
    for name in fakes:
        monkeypatch.delenv(name, raising=False)
    local = rt.Runner(app / "template.yaml", env_file=None, port=None, services_env=fakes)
    env = local.function_env(local.functions["echo"])
    assert {k: env[k] for k in fakes} == fakes
    # Given a real Stripe key in the shell: Stripe's settings are yours, Paymob stays fake
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_real")
    env = local.function_env(local.functions["echo"])
    assert env["STRIPE_API_KEY"] == "sk_test_real" and "STRIPE_API_BASE" not in env
    assert env["PAYMOB_API_URL"] == "http://127.0.0.1:1"


def test_seed_is_idempotent_and_keeps_the_ledger_equal_to_the_balance(clean_db: str) -> None:
    import psycopg

    first, second = seed.seed(clean_db), seed.seed(clean_db)
    assert first == second and second.demo_credits == seed.DEMO_CREDITS
    with psycopg.connect(clean_db) as conn:
        credits, ledger, rows = conn.execute(
            "SELECT u.credits, sum(l.amount), count(l.*) FROM users u "
            "JOIN credit_ledger l ON l.user_id = u.id WHERE u.id = %s GROUP BY u.credits",
            (seed.DEMO_USER_ID,)).fetchone()
        members = conn.execute("SELECT user_id FROM pair_members WHERE pair_id = %s ORDER BY user_id",
                               (seed.DEMO_PAIR_ID,)).fetchall()
    assert (credits, ledger, rows) == (seed.DEMO_CREDITS, seed.DEMO_CREDITS, 1)
    assert [m[0] for m in members] == [seed.DEMO_USER_ID, seed.PARTNER_USER_ID]


def test_main_starts_services_prints_how_to_use_them_and_stops(app: Path, clean_db: str) -> None:
    import jwt

    # Given main() on a free port with the test database (DATABASE_URL) and moto
    out, stop, ready = io.StringIO(), threading.Event(), threading.Event()
    served: list[rt.Runner] = []
    thread = threading.Thread(
        target=rt.main, args=(app / "template.yaml", 0, app / "env.local.json"), daemon=True,
        kwargs={"run_schedules": False, "stop": stop, "out": out,
                "on_ready": lambda r: (served.append(r), ready.set())})
    thread.start()
    assert ready.wait(30), out.getvalue()
    runner = served[0]
    try:
        # Then the functions answer, with the local services in their environment
        assert echo(runner)["event"]["rawPath"] == "/"
        env = runner.function_env(runner.functions["echo"])
        assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:") and env["DATABASE_URL"] == clean_db
        assert "OPENAI_API_KEY" not in env
    finally:
        stop.set()
        thread.join(10)
    text = out.getvalue()
    # And the banner says what runs where, gives a working token and the examples
    status = next(line for line in text.splitlines() if line.startswith("status: "))
    assert "postgres postgresql://" in status and "s3 moto at http://127.0.0.1:" in status
    assert "ai offline providers" in status
    token = next(line for line in text.splitlines() if line.startswith("export TOKEN=")).split("=", 1)[1]
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(seed.DEMO_USER_ID)
    assert f"{runner.base_url}/echo/items?a=1" in text
    assert "function=echo method=GET route=/ status=200" in text
    assert text.rstrip().splitlines()[-1].startswith("runner stopped")
    assert request_refused(runner.port)


def request_refused(port: int) -> bool:
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/_health")
    except OSError:
        return True
    return False


def test_a_burst_of_clients_is_served_without_connection_resets(served):
    # Given more simultaneous clients than Python's default listen backlog (5) allows
    assert Server.request_queue_size >= 128
    barrier = threading.Barrier(64)

    def one(_i: int) -> int:
        barrier.wait(timeout=10)
        return request(served, "GET", "/echo/plain")[0]

    # When they all connect at once, then every one of them is answered
    with ThreadPoolExecutor(64) as pool:
        assert list(pool.map(one, range(64))) == [200] * 64
