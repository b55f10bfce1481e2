"""Invoke the functions of template.yaml (as ``devkit.cfn.functions`` reads them) the way
Lambda does: the function's CodeUri on sys.path (the layer is installed), then
``module.function`` from its Handler, called with a Lambda-shaped context. Also builds
Function URL (payload 2.0) and Scheduler events."""

from __future__ import annotations

import base64
import importlib
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from devkit import cfn


def load_handler(name: str):
    """Import a function's handler as Lambda does: CodeUri on sys.path, then module.attr."""
    spec = cfn.functions()[name]
    if str(spec.code_uri) not in sys.path:
        sys.path.insert(0, str(spec.code_uri))
    module_name, attr = spec.handler.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), attr)


class LambdaContext:
    """The attributes of Lambda's context object that code and Powertools read."""

    def __init__(self, function_name: str, timeout_s: float = 30, memory_mb: int = 512):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def invoke(name: str, event: dict[str, Any], *, timeout_s: float | None = None) -> Any:
    spec = cfn.functions()[name]
    context = LambdaContext(name, timeout_s if timeout_s is not None else spec.timeout, spec.memory)
    return load_handler(name)(event, context)


def url_event(method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None,
              query: dict[str, str] | None = None, cookies: list[str] | None = None,
              raw_body: bytes | str | None = None) -> dict[str, Any]:
    """A Function URL request event, payload format 2.0."""
    from urllib.parse import urlencode

    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    encoded = False
    text: str | None = None
    if raw_body is not None:
        if isinstance(raw_body, bytes):
            text, encoded = base64.b64encode(raw_body).decode(), True
        else:
            text = raw_body
    elif body is not None:
        text = json.dumps(body)
        hdrs.setdefault("content-type", "application/json")
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": urlencode(query or {}),
        "headers": {"host": "localhost", "user-agent": "tests", **hdrs},
        "requestContext": {
            "accountId": "anonymous", "apiId": "local", "domainName": "localhost", "domainPrefix": "local",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": hdrs.get("user-agent", "tests")},
            "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"), "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if query:
        event["queryStringParameters"] = dict(query)
    if cookies:
        event["cookies"] = cookies
    if text is not None:
        event["body"] = text
    return event


def scheduler_event(payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """EventBridge Scheduler with an explicit Input delivers that Input as the event."""
    return dict(payload or {})
