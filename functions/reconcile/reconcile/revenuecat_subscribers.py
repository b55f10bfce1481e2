"""RevenueCat: ``GET /v1/subscribers/{app_user_id}`` for the users who may be missing a
purchase, each purchase it lists applied as its webhook event would be
(``common.providers.revenuecat_subscribers``).

Whom: users queued by a sync that found RevenueCat down (``revenuecat_sync_queue``, all of
them first, oldest first, removed once asked), users with RevenueCat entitlements expiring
within ``RECONCILE_REVENUECAT_WINDOW_S`` (or expired as long ago: a renewal's webhook may
be lost), and the app user ids of parked (unmatched) events; ``RECONCILE_BATCH`` a run, up
to half of the rest for parked ids (a random sample of each when there are more: every
one gets its turn, without state). A RevenueCat error or timeout stops the RevenueCat
part of the run (the queue is kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common import config, db
from common.observability import logger
from common.providers.revenuecat_subscribers import RevenueCatUnavailable, fetch, heal
from reconcile.report import Deadline, Report

if TYPE_CHECKING:
    from reconcile.settings import ReconcileSettings

PROVIDER = "revenuecat"
HEADERS = {"user-agent": "reconcile", "x-reconcile-source": "GET /v1/subscribers"}

QUEUED = """
SELECT user_id::text AS app_user_id FROM revenuecat_sync_queue ORDER BY queued_at LIMIT %(limit)s
"""
DEQUEUE = "DELETE FROM revenuecat_sync_queue WHERE user_id = %(user_id)s::uuid"
EXPIRING = """
SELECT user_id::text AS app_user_id
FROM entitlements
WHERE source = 'revenuecat' AND expires_at IS NOT NULL
  AND expires_at BETWEEN now() - make_interval(secs => %(window)s)
                     AND now() + make_interval(secs => %(window)s)
GROUP BY user_id
ORDER BY random()  -- more candidates than a batch: every one gets its turn, without state
LIMIT %(limit)s
"""
PARKED = """
SELECT p.app_user_id
FROM revenuecat_pending p JOIN webhook_inbox w ON w.id = p.inbox_id
WHERE w.status = 'unmatched'
GROUP BY p.app_user_id
ORDER BY random()
LIMIT %(limit)s
"""


def run(deadline: Deadline, settings: ReconcileSettings) -> Report:
    report = Report(PROVIDER)
    api_key = config.secret("REVENUECAT_API_KEY")
    if not api_key:
        return report.stop("REVENUECAT_API_KEY is not set")
    batch = settings.RECONCILE_BATCH
    queued = [r["app_user_id"] for r in db.execute(QUEUED, {"limit": batch}, idempotent=True).fetchall()]
    rest = batch - len(queued)
    # Up to half the rest for parked ids, the others for expiring entitlements.
    parked = [r["app_user_id"] for r in db.execute(
        PARKED, {"limit": (rest + 1) // 2}, idempotent=True).fetchall()] if rest else []
    params = {"window": settings.RECONCILE_REVENUECAT_WINDOW_S, "limit": rest - len(parked)}
    expiring = [r["app_user_id"] for r in db.execute(EXPIRING, params, idempotent=True).fetchall()] \
        if rest - len(parked) > 0 else []
    base = config.settings().REVENUECAT_API_URL.rstrip("/")
    for app_user_id in list(dict.fromkeys(queued + expiring + parked))[:batch]:
        if deadline.passed():
            return report.stop("deadline")
        try:
            subscriber = fetch(base, api_key, app_user_id, settings.RECONCILE_HTTP_TIMEOUT_S)
        except RevenueCatUnavailable as exc:
            logger.warning("revenuecat subscriber not fetched; retried next run", extra={"error": str(exc)})
            return report.stop("revenuecat unavailable", error=True)
        report.checked += 1
        report.outcomes.update(heal(app_user_id, subscriber, HEADERS))
        if app_user_id in queued:
            db.execute(DEQUEUE, {"user_id": app_user_id})
    return report
