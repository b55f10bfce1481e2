"""Paymob: orders still pending (or declined) after ``RECONCILE_MIN_AGE_S``, up to
``RECONCILE_PAYMOB_MAX_AGE_S`` old, are asked about with the transaction inquiry API and
the answer applied exactly as the processed callback is (``common.providers.
paymob_callbacks``: same inbox key ``<transaction id>:<state>``, same amount, currency
and binding rules).

The inquiry is ``POST /api/ecommerce/orders/transaction_inquiry {"order_id": ...}`` with
the token of ``POST /api/auth/tokens {"api_key": PAYMOB_API_KEY}``; it answers the
order's transaction (Paymob documents the processed callback's ``obj`` shape). The
least recently asked orders go first (``orders.reconciled_at``), ``RECONCILE_BATCH`` a
run. A Paymob error or timeout stops the Paymob part of the run and leaves the order's
``reconciled_at`` as it was: it is asked first next time.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from common import config, db
from common.observability import logger, traced
from common.providers import paymob_callbacks
from common.providers.paymob_models import Transaction
from reconcile.report import Deadline, Report

if TYPE_CHECKING:
    from reconcile.settings import ReconcileSettings

PROVIDER = "paymob"
AUTH_PATH = "/api/auth/tokens"
INQUIRY_PATH = "/api/ecommerce/orders/transaction_inquiry"
HEADERS = {"user-agent": "reconcile", "x-reconcile-source": f"POST {INQUIRY_PATH}"}

OPEN_ORDERS = """
SELECT id, provider_order_id FROM orders
WHERE provider = 'paymob' AND status IN ('pending', 'failed') AND provider_order_id IS NOT NULL
  AND created_at >= now() - make_interval(secs => %(max_age)s)
  AND created_at <= now() - make_interval(secs => %(min_age)s)
ORDER BY reconciled_at NULLS FIRST, created_at
LIMIT %(limit)s
"""
ASKED = "UPDATE orders SET reconciled_at = now() WHERE id = %(id)s"


class PaymobUnavailable(Exception):
    """Paymob answered an error or did not answer in time."""


def run(deadline: Deadline, settings: ReconcileSettings) -> Report:
    report = Report(PROVIDER)
    api_key = config.secret("PAYMOB_API_KEY")
    if not api_key:
        return report.stop("PAYMOB_API_KEY is not set")
    orders = db.execute(OPEN_ORDERS, {"max_age": settings.RECONCILE_PAYMOB_MAX_AGE_S,
                                      "min_age": settings.RECONCILE_MIN_AGE_S,
                                      "limit": settings.RECONCILE_BATCH}, idempotent=True).fetchall()
    if not orders:
        return report
    base = config.settings().PAYMOB_API_URL.rstrip("/")
    timeout = settings.RECONCILE_HTTP_TIMEOUT_S
    try:
        token = _post(f"{base}{AUTH_PATH}", {"api_key": api_key}, None, timeout)["token"]
        for order in orders:
            if deadline.passed():
                return report.stop("deadline")
            inquiry = {"order_id": int(order["provider_order_id"])}
            found = _post(f"{base}{INQUIRY_PATH}", inquiry, token, timeout)
            report.checked += 1
            if found is not None:
                report.outcomes[_apply(found)] += 1
            else:
                report.outcomes["no_transaction"] += 1
            db.execute(ASKED, {"id": order["id"]})
    except PaymobUnavailable as exc:
        logger.warning("paymob inquiry failed; retried next run", extra={"error": str(exc)})
        return report.stop("paymob unavailable", error=True)
    return report


def _apply(obj: Any) -> str:
    try:
        txn = Transaction.model_validate(obj)
    except ValidationError:
        logger.warning("paymob inquiry answer not applicable")
        return "invalid"
    callback = {"type": paymob_callbacks.EVENT_TYPE, "obj": obj}
    raw = json.dumps(callback, separators=(",", ":")).encode()
    return paymob_callbacks.process(txn, callback, headers=HEADERS, raw=raw)


@traced
def _post(url: str, payload: dict[str, Any], token: str | None, timeout: float) -> Any:
    """The JSON answer; None for 404 (no transaction yet); PaymobUnavailable otherwise."""
    import requests

    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.post(url, json=payload, headers=headers, timeout=(3, timeout))
    except requests.RequestException as exc:
        raise PaymobUnavailable(type(exc).__name__) from None
    if response.status_code == 404 and token:
        return None
    if not response.ok:
        raise PaymobUnavailable(f"HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise PaymobUnavailable("not JSON") from None
