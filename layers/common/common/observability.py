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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from common.config import SECRET_NAMES

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

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


def tracing_enabled() -> bool:
    """Powertools' own rule: off when POWERTOOLS_TRACE_DISABLED is truthy, and outside
    Lambda (no LAMBDA_TASK_ROOT) or under sam local / chalice."""
    from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

    if resolve_truthy_env_var_choice(env=os.environ.get("POWERTOOLS_TRACE_DISABLED", "false")):
        return False
    return bool(os.environ.get("LAMBDA_TASK_ROOT")) and not (
        os.environ.get("AWS_SAM_LOCAL") or os.environ.get("AWS_CHALICE_CLI_MODE"))


class LazyTracer:
    """Powertools' Tracer, made only when tracing is on.

    Constructing a Tracer imports the X-Ray SDK and botocore (about half a second of a
    cold start), even when tracing is disabled; with tracing off this stands in for it:
    its decorators return the function unchanged and everything else does nothing. With
    tracing on it is the real Tracer (built on first use, so importing this module stays
    cheap either way).
    """

    def __init__(self, service: str):
        self._service = service
        self._tracer: Tracer | None = None

    def _real(self) -> Tracer | None:
        if self._tracer is None and tracing_enabled():
            from aws_lambda_powertools import Tracer

            self._tracer = Tracer(service=self._service)
        return self._tracer

    def capture_lambda_handler(self, lambda_handler: Any = None, **options: Any) -> Any:
        real = self._real()
        if real is not None:
            return real.capture_lambda_handler(lambda_handler, **options)
        return lambda_handler if lambda_handler is not None else (lambda fn: fn)

    def capture_method(self, method: Any = None, **options: Any) -> Any:
        real = self._real()
        if real is not None:
            return real.capture_method(method, **options)
        return method if method is not None else (lambda fn: fn)

    def __getattr__(self, name: str) -> Any:
        real = self._real()
        if real is not None:
            return getattr(real, name)
        return lambda *args, **kwargs: None  # put_annotation, put_metadata, ...


tracer = LazyTracer(service_name())


def traced[F: Callable[..., Any]](fn: F) -> F:
    """A subsegment per call of ``fn`` when tracing is on (nothing otherwise): the money
    path, provider calls and storage. Never the return value, which Powertools records by
    default: it can be journal text, a transcript, an image or a signed URL."""
    return cast(F, tracer.capture_method(fn, capture_response=False))
