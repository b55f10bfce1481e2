"""CORS as a Function URL answers it from its ``Cors`` configuration: preflights without
invoking the function, and the allow/expose headers added to the function's responses."""

from __future__ import annotations

from typing import Any


def cors_headers(cors: dict[str, Any] | None, origin: str | None, *, preflight: bool,
                  request_headers: str | None = None) -> list[tuple[str, str]]:
    if not cors or not origin:
        return []
    allowed = [o.rstrip("/") for o in cors.get("AllowOrigins") or []]
    if "*" not in allowed and origin.rstrip("/") not in allowed:
        return []
    out = [("Access-Control-Allow-Origin", "*" if "*" in allowed and not cors.get("AllowCredentials")
            else origin), ("Vary", "Origin")]
    if cors.get("AllowCredentials"):
        out.append(("Access-Control-Allow-Credentials", "true"))
    if preflight:
        methods = cors.get("AllowMethods") or ["*"]
        out.append(("Access-Control-Allow-Methods", ",".join(methods)))
        allow_headers = cors.get("AllowHeaders") or []
        if allow_headers or request_headers:
            out.append(("Access-Control-Allow-Headers", ",".join(allow_headers) or request_headers or ""))
        if cors.get("MaxAge") is not None:
            out.append(("Access-Control-Max-Age", str(cors["MaxAge"])))
    elif cors.get("ExposeHeaders"):
        out.append(("Access-Control-Expose-Headers", ",".join(cors["ExposeHeaders"])))
    return out
