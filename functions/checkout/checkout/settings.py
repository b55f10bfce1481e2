"""Settings only checkout reads (``common.settings.EnvSettings``, from the environment). The shared
ones (``PAYMOB_API_URL``, ``PAYMOB_INTEGRATION_IDS``, ``STRIPE_API_BASE``, secrets) come from
``common.config``."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from common.errors import ConfigError
from common.settings import EnvSettings


class CheckoutSettings(EnvSettings):

    #: Paymob's public key (pk_...), handed to the client for Unified Checkout.
    PAYMOB_PUBLIC_KEY: str = ""
    #: The account's currency when the client names none (EGP on accept., AED on uae., ...).
    PAYMOB_CURRENCY: str = Field(default="EGP", pattern=r"^[A-Z]{3}$")
    #: Where Paymob posts the processed callback and sends the browser back (the
    #: paymob-webhook function URL); empty = the dashboard's integration settings.
    PAYMOB_NOTIFICATION_URL: str = ""
    PAYMOB_REDIRECTION_URL: str = ""
    PAYMOB_TIMEOUT_S: float = Field(default=15, gt=0)
    #: Seconds POST /revenuecat/sync waits for RevenueCat (the app is waiting too); after
    #: that the user is queued for reconcile and the answer is 503.
    REVENUECAT_TIMEOUT_S: float = Field(default=5, gt=0, le=30)
    #: Stripe Checkout's return pages ({CHECKOUT_SESSION_ID} is filled in by Stripe).
    STRIPE_SUCCESS_URL: str = ""
    STRIPE_CANCEL_URL: str = ""
    STRIPE_CURRENCY: str = Field(default="USD", pattern=r"^[A-Z]{3}$")

    def require(self, name: str) -> str:
        value = getattr(self, name)
        if not value:
            raise ConfigError(f"{name} is not set")
        return str(value)


@lru_cache(maxsize=1)
def settings() -> CheckoutSettings:
    from pydantic import ValidationError

    try:
        return CheckoutSettings()
    except ValidationError as exc:
        names = ", ".join(str(err["loc"][0]) for err in exc.errors())
        raise ConfigError(f"invalid setting(s): {names}") from None
