"""The Function URL gateway: an HTTP request becomes a Function URL event (payload 2.0),
the handler's return value or failure becomes the HTTP response, as the URL service
makes them."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from devkit import lambdas
from devkit.runner.pool import Invocation
from devkit.runner.settings import DEFAULT_PORT

_TEXT_TYPES = re.compile(r"text/.*|application/(json|.*\+json|xml|.*\+xml|javascript|x-www-form-urlencoded"
                         r"|graphql|x-ndjson)")


def is_binary(content_type: str | None, body: bytes) -> bool:
    """Whether the URL service would base64-encode this body: anything but text types."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media and not _TEXT_TYPES.fullmatch(media):
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def request_event(method: str, raw_path: str, raw_query: str, headers: Iterable[tuple[str, str]], body: bytes,
                  *, source_ip: str = "127.0.0.1", port: int = DEFAULT_PORT) -> dict[str, Any]:
    """The Function URL event (payload 2.0) for one HTTP request: headers lower-cased,
    repeated ones joined by commas, the cookie header moved to ``cookies``."""
    hdrs: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        name = name.lower()
        if name == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
        else:
            hdrs[name] = f"{hdrs[name]},{value}" if name in hdrs else value
    hdrs.setdefault("x-forwarded-for", source_ip)
    hdrs.setdefault("x-forwarded-proto", "http")
    hdrs.setdefault("x-forwarded-port", str(port))
    hdrs.setdefault("x-amzn-trace-id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}")
    raw_body: bytes | str | None = None
    if body:
        raw_body = body if is_binary(hdrs.get("content-type"), body) else body.decode()
    event = lambdas.url_event(method, raw_path or "/", headers=hdrs, cookies=cookies or None,
                              raw_body=raw_body)
    if "user-agent" not in hdrs:
        event["headers"].pop("user-agent", None)
        event["requestContext"]["http"]["userAgent"] = ""
    event["rawQueryString"] = raw_query
    if raw_query:
        params: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    event["requestContext"]["http"]["sourceIp"] = source_ip
    host = hdrs.get("host", "localhost").rsplit(":", 1)[0]
    event["requestContext"]["domainName"] = host
    event["requestContext"]["domainPrefix"] = host.split(".", 1)[0]
    return event


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """The HTTP response a Function URL makes of a handler's return value."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # no statusCode: the URL service answers 200 with the value as JSON
        return 200, [("Content-Type", "application/json")], json.dumps(result).encode()
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    headers += [("Set-Cookie", str(c)) for c in result.get("cookies") or []]
    body = result.get("body")
    if body is None:
        data = b""
    elif result.get("isBase64Encoded"):
        data = base64.b64decode(body)
    else:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return int(result["statusCode"]), headers, data


def error_response(inv: Invocation) -> tuple[int, list[tuple[str, str]], bytes]:
    """What a Function URL answers when the function fails: 502, or 504 for a timeout
    (the details stay in the runner's log, as they stay in CloudWatch)."""
    status, message = (504, "Endpoint request timed out") if inv.status == "timeout" else \
        (502, "Internal Server Error")
    error_type = (inv.error or {}).get("errorType", "Unknown")
    return status, [("Content-Type", "application/json"), ("X-Amzn-ErrorType", error_type)], \
        json.dumps({"Message": message}).encode()
