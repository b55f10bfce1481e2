"""reconcile handler: EventBridge Scheduler invokes it every 15 minutes (or a person, with
scripts/invoke) with ``{"providers": [...]}`` (optional: all three by default).

A webhook that never arrives is a paid customer without what they paid for: RevenueCat
gives up after 5 tries, Paymob documents no retries, Stripe disables an endpoint that
keeps failing. Each provider's part reads what the webhook would have brought from the
provider's API and delivers it through the same inbox (``common.webhooks``), under the
same event key: a heal after a delivery is a duplicate, a delivery after a heal too.

- Stripe (``stripe_events``): the events API since a stored cursor;
- Paymob (``paymob_orders``): the transaction inquiry for orders left pending;
- RevenueCat (``revenuecat_subscribers``): ``GET /v1/subscribers`` for users queued by
  checkout's sync while RevenueCat was down, users whose entitlement is about to expire,
  and parked events' app user ids.

Each part stops starting work ``RECONCILE_DEADLINE_MARGIN_MS`` before the Lambda
deadline; a provider's error or timeout ends that provider's part (its cursor unmoved)
and the others still run. Returns ``{provider: {"checked", "healed", "outcomes",
"errors", "complete", "note", "seconds"}}``, and emits per provider the metric
``WebhooksHealed`` (dimension ``provider``; an alarm fires when it is above zero: the
webhook is probably misconfigured) and ``ReconcileErrors``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from pydantic import BaseModel, ConfigDict

from common.observability import logger
from reconcile import paymob_orders, revenuecat_subscribers, stripe_events
from reconcile.report import Deadline, Report

if TYPE_CHECKING:
    from reconcile.settings import ReconcileSettings

Provider = Literal["stripe", "paymob", "revenuecat"]
PARTS: dict[str, Callable[[Deadline, ReconcileSettings], Report]] = {
    "stripe": stripe_events.run,
    "paymob": paymob_orders.run,
    "revenuecat": revenuecat_subscribers.run,
}


class ReconcileInput(BaseModel):
    """The schedule's Input. Unknown keys are refused (a misspelt option would otherwise
    be ignored on every run)."""

    model_config = ConfigDict(extra="forbid")

    providers: list[Provider] = ["stripe", "paymob", "revenuecat"]


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    from reconcile.settings import ReconcileSettings  # pydantic-settings: not on the import path

    request = ReconcileInput.model_validate(event or {})
    settings = ReconcileSettings()
    deadline = Deadline(context.get_remaining_time_in_millis, settings.RECONCILE_DEADLINE_MARGIN_MS)
    reports = {}
    for provider in dict.fromkeys(request.providers):
        if deadline.passed():
            reports[provider] = Report(provider).stop("deadline")
            continue
        try:
            reports[provider] = PARTS[provider](deadline, settings)
        except Exception as exc:  # e.g. the database: the other providers still run
            logger.exception("reconcile part failed", extra={"provider": provider})
            reports[provider] = Report(provider).stop(type(exc).__name__, error=True)
    result: dict[str, Any] = {provider: report.as_dict() for provider, report in reports.items()}
    _emit_metrics(reports.values())
    logger.info("reconcile finished", extra={"report": result})
    return result


def _emit_metrics(reports: Any) -> None:
    # One metric set per provider (EphemeralMetrics: the shared Powertools set is one dict
    # per process, and runs overlapping in one process would flush each other's).
    for report in reports:
        metrics = EphemeralMetrics()
        metrics.add_dimension(name="provider", value=report.provider)
        metrics.add_metric(name="WebhooksHealed", unit=MetricUnit.Count, value=report.healed)
        metrics.add_metric(name="ReconcileErrors", unit=MetricUnit.Count, value=report.errors)
        metrics.flush_metrics()
