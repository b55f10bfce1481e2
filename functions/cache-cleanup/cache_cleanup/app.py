"""cache-cleanup handler: EventBridge Scheduler (or a person) invokes it with the
schedule's Input as the event, ``{"max_seconds", "batch_size", "dry_run"}``, all optional.

Returns ``{"deleted": {table: n}, "refunded": n, "remaining_expired": {table: n},
"complete": bool, ...}`` and emits one metric per count.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from pydantic import BaseModel, ConfigDict, Field

from cache_cleanup import job, purge
from cache_cleanup.settings import CleanupSettings
from common.observability import logger


class CleanupInput(BaseModel):
    """The schedule's Input. Unknown keys are refused: a misspelt option would otherwise
    be silently ignored on every run."""

    model_config = ConfigDict(extra="forbid")

    max_seconds: float | None = Field(default=None, gt=0, le=900)
    batch_size: int = Field(default=2000, ge=1, le=50_000)
    dry_run: bool = False


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    request = CleanupInput.model_validate(event or {})
    settings = CleanupSettings()
    limits = purge.Limits(stale_after=settings.reservation_stale_after,
                          inbox_retention=settings.inbox_retention,
                          rate_limit_keep=settings.rate_limit_keep)
    budget = job.Budget(context.get_remaining_time_in_millis, max_seconds=request.max_seconds,
                        margin_ms=settings.CLEANUP_DEADLINE_MARGIN_MS)
    report = job.run(budget, limits, batch_size=request.batch_size, dry_run=request.dry_run,
                     pause_s=settings.CLEANUP_PAUSE_MS / 1000)
    result = report.as_dict()
    _emit_metrics(report)
    logger.info("cleanup finished", extra={"report": result})
    return result


_METRIC_NAMES = {
    "cache_entries": "CacheEntriesPurged",
    "idempotency_records": "IdempotencyRecordsPurged",
    "rate_limit_windows": "RateLimitWindowsPurged",
    "webhook_inbox": "InboxRowsPurged",
}


def _emit_metrics(report: job.Report) -> None:
    # One metric set per invocation (EphemeralMetrics), flushed here: the shared
    # Powertools Metrics set is one dict for the whole process, and two runs overlapping
    # in one process (the local runner, the tests) would flush each other's.
    metrics = EphemeralMetrics()
    if not report.dry_run:
        for name, count in report.deleted.items():
            metrics.add_metric(name=_METRIC_NAMES[name], unit=MetricUnit.Count, value=count)
        metrics.add_metric(name="StaleReservationsRefunded", unit=MetricUnit.Count, value=report.refunded)
    metrics.add_metric(name="ExpiredRowsRemaining", unit=MetricUnit.Count,
                       value=sum(report.remaining_expired.values()))
    metrics.add_metric(name="CleanupIncomplete", unit=MetricUnit.Count, value=0 if report.complete else 1)
    metrics.add_metric(name="CleanupSeconds", unit=MetricUnit.Seconds, value=report.seconds)
    metrics.flush_metrics()
