"""Invoke the functions of template.yaml the way Lambda does: the function's CodeUri on
sys.path (the layer is installed), then ``module.function`` from its Handler, called with
a Lambda-shaped context. Also builds Function URL (payload 2.0) and Scheduler events."""

from __future__ import annotations

import base64
import importlib
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from devkit import ROOT

TEMPLATE = ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation's short-form tags (!Ref, !Sub, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@cache
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # the folder name under functions/, used in URLs and by scripts/invoke
    logical_id: str
    code_uri: Path
    handler: str
    timeout: int
    memory: int
    environment: dict[str, Any] = field(default_factory=dict)
    has_url: bool = False
    schedules: dict[str, Any] = field(default_factory=dict)


@cache
def functions() -> dict[str, FunctionSpec]:
    tpl = template()
    globals_ = tpl.get("Globals", {}).get("Function", {})
    specs = {}
    for logical_id, res in tpl["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        props = res["Properties"]
        code_uri = ROOT / props["CodeUri"]
        env = {**globals_.get("Environment", {}).get("Variables", {}),
               **props.get("Environment", {}).get("Variables", {})}
        events = props.get("Events", {})
        specs[code_uri.name] = FunctionSpec(
            name=code_uri.name, logical_id=logical_id, code_uri=code_uri, handler=props["Handler"],
            timeout=int(props.get("Timeout", globals_.get("Timeout", 3))),
            memory=int(props.get("MemorySize", globals_.get("MemorySize", 128))),
            environment=env, has_url="FunctionUrlConfig" in props,
            schedules={k: v["Properties"] for k, v in events.items() if v["Type"] == "ScheduleV2"},
        )
    return specs


def load_handler(name: str):
    """Import a function's handler as Lambda does: CodeUri on sys.path, then module.attr."""
    spec = functions()[name]
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
    spec = functions()[name]
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
