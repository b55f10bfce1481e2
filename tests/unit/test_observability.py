"""The logging filter: secrets and user content never reach a log line."""

import io
import json

import pytest

from common import observability
from common.observability import logger


@pytest.fixture
def log_lines():
    """What the function's logger writes, as parsed JSON lines."""
    handler = logger.registered_handler
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    handler.setStream(previous)


def test_sensitive_keys_are_redacted(log_lines):
    # When a log call carries headers and journal text as extra keys
    logger.info("request", extra={"headers": {"Authorization": "Bearer abc.def.ghi", "x-trace": "t1"},
                                  "content": "Dear diary, today I cried"})
    line = log_lines()[-1]
    # Then the sensitive values are replaced and the rest kept
    assert line["headers"] == {"Authorization": "[redacted]", "x-trace": "t1"}
    assert line["content"] == "[redacted]"


def test_configured_secret_values_are_masked_anywhere(monkeypatch, log_lines):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_live_supersecretvalue42")
    monkeypatch.setenv("PAYMOB_HMAC_SECRET", "04DC1A9490B8CC2094C011FC")
    logger.warning("calling with sk_live_supersecretvalue42 and 04DC1A9490B8CC2094C011FC")
    out = json.dumps(log_lines())
    assert "supersecretvalue42" not in out
    assert "04DC1A9490B8CC2094C011FC" not in out


def test_tokens_and_database_passwords_are_masked(log_lines):
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXBhcnQ"
    logger.error(f"bad token {jwt}; db postgresql://app:hunter2pw@db.internal:5432/app")
    message = log_lines()[-1]["message"]
    assert jwt not in message and "hunter2pw" not in message
    assert "postgresql://app:[redacted]@db.internal" in message


def test_exception_tracebacks_are_scrubbed(monkeypatch, log_lines):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-abcdefghijklmnop")
    try:
        raise RuntimeError("provider rejected key sk-proj-abcdefghijklmnop")
    except RuntimeError:
        logger.exception("provider call failed")
    assert "abcdefghijklmnop" not in json.dumps(log_lines())


def test_redact_is_recursive():
    data = {"a": [{"token": "x", "ok": 1}], "Cookie": "c"}
    assert observability.redact(data) == {"a": [{"token": "[redacted]", "ok": 1}], "Cookie": "[redacted]"}


def test_an_invocation_without_metrics_prints_no_warning():
    # Given a fresh process (a cold start) with Python's default warning filters, as Lambda has
    import subprocess
    import sys

    code = ("from common.observability import metrics\n"
            "@metrics.log_metrics\n"
            "def handler(event, context):\n"
            "    return 'ok'\n"
            "print(handler({}, None))\n")
    # When a handler wrapped by log_metrics adds no metric
    out = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    # Then it runs and Powertools' "No application metrics to publish" warning is not printed
    assert out.stdout.strip().splitlines()[-1] == "ok"
    assert "metrics" not in out.stderr.lower(), out.stderr


# --- tracing: the X-Ray SDK only when tracing is on ------------------------------------------

_IMPORT_HANDLER = """
import importlib, json, sys
from devkit import cfn
spec = cfn.functions()[sys.argv[1]]
sys.path.insert(0, str(spec.code_uri))
module = importlib.import_module(spec.handler.rsplit(".", 1)[0])
from common.observability import tracer
tracer.put_annotation("k", "v")
print(json.dumps({"xray": "aws_xray_sdk" in sys.modules, "botocore": "botocore.session" in sys.modules,
                  "real": tracer._tracer is not None}))
"""


def _import_in_fresh_process(function: str, **env: str) -> dict:
    import os
    import subprocess
    import sys

    unset = ("POWERTOOLS_TRACE_DISABLED", "LAMBDA_TASK_ROOT")
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    out = subprocess.run([sys.executable, "-c", _IMPORT_HANDLER, function], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("function", ["process-image", "checkout", "stripe-webhook", "account"])
def test_no_function_imports_the_xray_sdk_or_a_botocore_session_while_tracing_is_off(function):
    off = {"xray": False, "botocore": False, "real": False}
    in_lambda_disabled = {"POWERTOOLS_TRACE_DISABLED": "1", "LAMBDA_TASK_ROOT": "/var/task"}
    assert _import_in_fresh_process(function, **in_lambda_disabled) == off
    assert _import_in_fresh_process(function) == off  # outside Lambda


def test_with_tracing_on_in_lambda_the_tracer_is_powertools_own():
    got = _import_in_fresh_process("checkout", LAMBDA_TASK_ROOT="/var/task")
    assert got["xray"] and got["real"]


_TRACED_CALL = """
import json, os
from aws_xray_sdk.core import xray_recorder
sent = []
class Capture:  # the X-Ray daemon's emitter, kept in memory (no daemon here)
    def send_entity(self, entity): sent.append(json.loads(entity.serialize()))
    def set_daemon_address(self, address): pass
xray_recorder.configure(emitter=Capture(), streaming_threshold=1)
from common.observability import traced
@traced
def transcribe(audio):
    return {"transcript": "today I felt sad"}
transcribe(b"...")
print(json.dumps(sent))
"""


def test_traced_calls_are_subsegments_without_their_return_value():
    import os
    import subprocess
    import sys

    # Given tracing on, in a Lambda invocation that X-Ray samples
    env = {k: v for k, v in os.environ.items() if k != "POWERTOOLS_TRACE_DISABLED"}
    env.update(LAMBDA_TASK_ROOT="/var/task", AWS_XRAY_CONTEXT_MISSING="LOG_ERROR",
               _X_AMZN_TRACE_ID="Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")
    # When a traced function returns private content
    out = subprocess.run([sys.executable, "-c", _TRACED_CALL], env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    [subsegment] = json.loads(out.splitlines()[-1])
    # Then X-Ray gets a subsegment for the call, and never the value it returned
    assert subsegment["name"] == "## __main__.transcribe" and subsegment["type"] == "subsegment"
    assert "felt sad" not in out
