"""Per-subject, per-route rate limits: fixed windows counted in Postgres.

Each request is one atomic upsert on ``rate_limit_windows`` that adds a hit to the
current window and returns the new count; the row lock taken by ``ON CONFLICT DO
UPDATE`` serialises concurrent requests, so with a limit of N exactly N of any burst
pass. Windows are aligned on the database clock (one clock for every container).
A request over the limit still counts, which keeps a client that hammers the API
throttled until the window ends.

Hand-written rather than a library: the usual rate-limit packages keep their counters in
Redis or in process memory, and Postgres is this system's one stateful service.
"""

from __future__ import annotations

from dataclasses import dataclass

from common import db
from common.errors import TooManyRequests

WINDOW_SECONDS = 60

# Adds one hit to the subject's current window for the route and returns the count and
# the whole seconds left in the window (at least 1, for Retry-After).
HIT = """
INSERT INTO rate_limit_windows AS w (subject, route, window_start, hits)
VALUES (%(subject)s, %(route)s,
        to_timestamp(floor(extract(epoch FROM now()) / %(window)s) * %(window)s), 1)
ON CONFLICT (subject, route, window_start) DO UPDATE SET hits = w.hits + 1
RETURNING w.hits,
          greatest(1, ceil(extract(epoch FROM w.window_start - now()) + %(window)s))::int AS reset_after
"""

# Windows that ended long ago; run by the housekeeping job.

@dataclass(frozen=True)
class Usage:
    hits: int
    limit: int
    reset_after: int  # seconds until the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.hits)


def hit(subject: str, route: str, *, limit: int | None = None, window_s: int = WINDOW_SECONDS) -> Usage:
    """Count one request of ``subject`` on ``route``; raise TooManyRequests past the limit.

    ``limit`` defaults to the RATE_LIMIT_PER_MINUTE setting (100).
    """
    limit = default_limit() if limit is None else limit
    row = db.one_row(db.execute(HIT, {"subject": subject, "route": route, "window": window_s}))
    return check(Usage(hits=row["hits"], limit=limit, reset_after=row["reset_after"]), route)


def default_limit() -> int:
    from common.config import settings

    return settings().RATE_LIMIT_PER_MINUTE


def check(usage: Usage, route: str) -> Usage:
    """``usage`` if within its limit; else TooManyRequests (429, Retry-After), counted in
    the RateLimited metric."""
    limit = usage.limit
    if usage.hits > limit:
        from aws_lambda_powertools.metrics import MetricUnit

        from common.observability import logger, metrics

        metrics.add_metric(name="RateLimited", unit=MetricUnit.Count, value=1)
        logger.info("rate limit hit", extra={"route": route, "limit": limit, "hits": usage.hits})
        raise TooManyRequests(retry_after=usage.reset_after)
    return usage
