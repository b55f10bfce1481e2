"""The account function's scheduled job: EventBridge Scheduler (every minute) or a person
invokes it with ``{"job": "exports"}``, optionally ``"max_seconds"``; it runs queued
exports (``exports.run_queue``) and returns their counts. Imported on the first job
invocation only: URL requests never load the archive code."""

from __future__ import annotations

import time
from typing import Any, Literal

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from account import exports
from common.observability import logger


class JobInput(BaseModel):
    """The schedule's Input; unknown keys are refused (a misspelt option would be ignored)."""

    model_config = ConfigDict(extra="forbid")

    job: Literal["exports"]
    max_seconds: float | None = Field(default=None, gt=0, le=900)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = JobInput.model_validate(event)
    started = time.monotonic()

    def time_left_s() -> float:
        left = context.get_remaining_time_in_millis() / 1000
        if request.max_seconds is not None:
            left = min(left, request.max_seconds - (time.monotonic() - started))
        return left

    counts = exports.run_queue(time_left_s)
    result = {"job": request.job, "exports": counts, "seconds": round(time.monotonic() - started, 3)}
    # One metric set per invocation (the shared set is the URL handler's).
    metrics = EphemeralMetrics()
    metrics.add_metric(name="ExportsCompleted", unit=MetricUnit.Count, value=counts["completed"])
    metrics.add_metric(name="ExportsFailed", unit=MetricUnit.Count, value=counts["failed"])
    metrics.add_metric(name="ExportsRetried", unit=MetricUnit.Count, value=counts["retried"])
    metrics.flush_metrics()
    logger.info("account job finished", extra={"result": result})
    return result
