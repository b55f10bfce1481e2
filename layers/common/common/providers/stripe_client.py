"""The Stripe SDK client that checkout, the Stripe webhook (subscription look-ups) and
``reconcile`` (events list) share; ``stripe`` is their dependency, imported on first use.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import stripe

#: Seconds the Stripe SDK waits for an answer, and its retries (POSTs carry our
#: idempotency key, so a retry never makes a second session).
STRIPE_TIMEOUT_S = 10
STRIPE_RETRIES = 1


def stripe_client() -> stripe.StripeClient:
    """The Stripe client for ``STRIPE_API_KEY`` and ``STRIPE_API_BASE`` (a local fake in
    tests), one per key and base per container; ``STRIPE_TIMEOUT_S`` per request."""
    from common.config import require_secret, settings

    return _stripe_client(require_secret("STRIPE_API_KEY"), settings().STRIPE_API_BASE.rstrip("/"))


@lru_cache(maxsize=4)
def _stripe_client(api_key: str, api_base: str) -> stripe.StripeClient:
    import stripe

    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        http_client=stripe.RequestsClient(timeout=STRIPE_TIMEOUT_S),
        max_network_retries=STRIPE_RETRIES,
    )
