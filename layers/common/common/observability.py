"""One place that builds the Powertools Logger, Metrics and Tracer for every function.

The service name comes from ``POWERTOOLS_SERVICE_NAME`` (set per function in
template.yaml). Every log line passes through ``redact``: values of sensitive keys
(headers, bodies, journal text) are replaced, and any configured secret value, bearer
token or JWT that slipped into a message or a traceback is masked in the final line.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from common.config import SECRET_NAMES

REDACTED = "[redacted]"

#: Keys whose values are secrets or user content, wherever they appear in a log record.
SENSITIVE_KEYS = frozenset(
    {
        "authorization", "cookie", "cookies", "set-cookie", "x-api-key", "stripe-signature",
        "hmac", "signature", "token", "password", "secret", "api_key", "client_secret",
        "body", "content", "text", "title", "summary", "tags", "prompt", "image", "email",
    }
)

_TOKEN_PATTERNS = re.compile(
    r"(?i)\b(bearer|token)\s+[A-Za-z0-9._~+/=-]{8,}"  # Authorization header values
    r"|eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*"  # JWTs
    r"|\b(sk|rk|pk|whsec|sk_live|sk_test)_[A-Za-z0-9_]{8,}"  # provider API keys
    r"|(postgres(?:ql)?://[^:/@\s]*:)[^@\s]+@"  # passwords in database URLs
)


def _secret_values() -> list[str]:
    values = []
    for name in SECRET_NAMES:
        for value in (os.environ.get(name) or "").split(","):
            if len(value.strip()) >= 6:
                values.append(value.strip())
    return sorted(values, key=len, reverse=True)


def scrub(text: str) -> str:
    """Mask secret values and token-shaped strings in already formatted text."""
    for value in _secret_values():
        text = text.replace(value, REDACTED)

    def _mask(match: re.Match[str]) -> str:
        if match.group(3):  # keep the database URL's user, drop its password
            return f"{match.group(3)}{REDACTED}@"
        return REDACTED

    return _TOKEN_PATTERNS.sub(_mask, text)


def redact(value: Any) -> Any:
    """A copy of a structure with the values of sensitive keys replaced."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if str(k).lower() in SENSITIVE_KEYS else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class RedactingFormatter(LambdaPowertoolsFormatter):
    """The Powertools JSON formatter, with sensitive keys and secret values removed."""

    _STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        for key, val in list(record.__dict__.items()):
            if key in self._STANDARD:
                continue
            record.__dict__[key] = REDACTED if key.lower() in SENSITIVE_KEYS else redact(val)
        return scrub(super().format(record))


def service_name() -> str:
    return os.environ.get("POWERTOOLS_SERVICE_NAME", "backend")


logger = Logger(service=service_name(), logger_formatter=RedactingFormatter())
# Records stop here: no other handler (Lambda's root handler, a test runner's) may see
# them before redaction.
logging.getLogger(logger.name).propagate = False
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Backend"))
# Most invocations add no metric, and log_metrics then warns once per execution
# environment; Powertools' documented way to silence it when that is expected.
warnings.filterwarnings("ignore", "No application metrics to publish*")
tracer = Tracer(service=service_name())
