"""cache-cleanup handler: EventBridge Scheduler (or a person) invokes it with the
schedule's Input as the event, ``{"max_seconds", "batch_size", "dry_run"}``, all optional.

First the account deletions' follow-ups (``common.accounts``: the deletions log, the
deleted users' objects, the inbox scrubs; then expired export archives), with up to a
third of the time; then the purges. Returns ``{"deleted": {table: n}, "refunded": n,
"remaining_expired": {table: n}, "complete": bool, "accounts": {...}, ...}`` and emits one
metric per count.
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
    account_work = accounts_followups(budget, dry_run=request.dry_run, batch_size=request.batch_size)
    report = job.run(budget, limits, batch_size=request.batch_size, dry_run=request.dry_run,
                     pause_s=settings.CLEANUP_PAUSE_MS / 1000)
    result = {**report.as_dict(), "accounts": account_work}
    _emit_metrics(report, account_work)
    logger.info("cleanup finished", extra={"report": result})
    return result


def accounts_followups(budget: job.Budget, *, dry_run: bool, batch_size: int) -> dict[str, Any]:
    """What account deletions left to do (docs/account.md), within a third of the time
    left; failures are counted and retried by the next run."""
    from common import accounts, db

    if dry_run:
        return {"pending": dict(db.one_row(db.execute(accounts.PENDING, idempotent=True)))}
    done = accounts.run_followups(max(0.0, budget.left_s() / 3), with_pending=True).as_dict()
    try:
        done["exports_expired"] = accounts.expire_exports(limit=min(batch_size, 1000))
    except Exception as exc:
        logger.warning("expired exports not deleted; retried next run", extra={"error": type(exc).__name__})
        done["errors"] += 1
        done["exports_expired"] = 0
    return done


_METRIC_NAMES = {
    "cache_entries": "CacheEntriesPurged",
    "idempotency_records": "IdempotencyRecordsPurged",
    "rate_limit_windows": "RateLimitWindowsPurged",
    "webhook_inbox": "InboxRowsPurged",
    "pair_invites": "InvitesPurged",
}


def _emit_metrics(report: job.Report, account_work: dict[str, Any]) -> None:
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
    if not report.dry_run:
        metrics.add_metric(name="AccountObjectsDeleted", unit=MetricUnit.Count,
                           value=account_work["objects_deleted"])
        metrics.add_metric(name="ExportsExpired", unit=MetricUnit.Count,
                           value=account_work["exports_expired"])
    metrics.add_metric(name="AccountDeletionsOverdue", unit=MetricUnit.Count,
                       value=account_work["pending"]["overdue"])
    metrics.flush_metrics()
