"""Paymob's Intention API (Unified Checkout): ``POST /v1/intention/``.

Called with ``requests`` (stripe's own HTTP dependency, so the function bundles one HTTP
library): Paymob publishes no maintained Python SDK for the Intention API. No retry:
Paymob documents no idempotency key, and a second intention would be a second order
there; a failure marks our order failed and the client starts again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.errors import BadGateway, GatewayTimeout
from common.observability import logger, traced

CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class Intention:
    id: str  # pi_...
    client_secret: str
    intention_order_id: int  # Paymob's order id: the callback's obj.order.id


@traced
def create_intention(*, api_url: str, secret_key: str, timeout_s: float,
                     payload: dict[str, Any]) -> Intention:
    """Create a payment intention; BadGateway (502) for any refusal or unusable answer,
    GatewayTimeout (504) when Paymob does not answer in time."""
    import requests

    url = f"{api_url.rstrip('/')}/v1/intention/"
    try:
        headers = {"Authorization": f"Token {secret_key}", "Accept": "application/json"}
        response = requests.post(url, json=payload, headers=headers, timeout=(CONNECT_TIMEOUT_S, timeout_s))
    except requests.Timeout:
        logger.warning("paymob intention timed out", extra={"timeout_s": timeout_s})
        raise GatewayTimeout("the payment provider did not answer in time") from None
    except requests.RequestException as exc:
        logger.warning("paymob intention failed", extra={"error": type(exc).__name__})
        raise BadGateway("the payment provider could not be reached") from None
    if response.status_code >= 300:
        # The status and the error's field names tell what went wrong; values may echo
        # billing data, so they are not logged.
        keys = _json_keys(response)
        logger.warning("paymob intention refused", extra={"status": response.status_code, "error_keys": keys})
        raise BadGateway("the payment provider refused the payment")
    try:
        data = response.json()
        intention = Intention(id=data["id"], client_secret=data["client_secret"],
                              intention_order_id=data["intention_order_id"])
    except (ValueError, KeyError, TypeError):
        logger.warning("paymob intention answer unusable", extra={"error_keys": _json_keys(response)})
        raise BadGateway("the payment provider answered unexpectedly") from None
    if not (isinstance(intention.id, str) and intention.id and isinstance(intention.client_secret, str)
            and intention.client_secret and isinstance(intention.intention_order_id, int)
            and not isinstance(intention.intention_order_id, bool)):
        logger.warning("paymob intention answer unusable", extra={"error_keys": _json_keys(response)})
        raise BadGateway("the payment provider answered unexpectedly")
    return intention


def _json_keys(response: Any) -> list[str] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return sorted(data)[:20] if isinstance(data, dict) else None
