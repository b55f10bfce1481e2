"""The job's settings (environment variables, read with pydantic-settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReconcileSettings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    #: Anything younger is left to its webhook (Stripe and RevenueCat deliver within
    #: seconds, and retry): reconcile heals what is still missing after this.
    RECONCILE_MIN_AGE_S: int = Field(default=600, ge=0)
    #: Stripe, on the first run (no cursor yet): how far back the events API is read.
    #: Never more than the 30 days Stripe keeps events.
    RECONCILE_STRIPE_FIRST_LOOKBACK_S: int = Field(default=3 * 86400, ge=60, le=30 * 86400)
    #: Paymob: pending (or declined) orders up to this old are asked about.
    RECONCILE_PAYMOB_MAX_AGE_S: int = Field(default=3 * 86400, ge=60)
    #: Per run: Paymob orders inquired, RevenueCat subscribers fetched (the least recently
    #: asked first, so every candidate's turn comes).
    RECONCILE_BATCH: int = Field(default=100, ge=1, le=1000)
    #: RevenueCat: entitlements expiring within this (or expired this long ago) are
    #: checked for a renewal whose webhook was lost.
    RECONCILE_REVENUECAT_WINDOW_S: int = Field(default=86400, ge=60)
    #: Seconds each provider request may take (connect and read).
    RECONCILE_HTTP_TIMEOUT_S: float = Field(default=10, gt=0, le=60)
    #: The run stops starting new work when less than this is left before the Lambda
    #: deadline: more than one provider request's timeout.
    RECONCILE_DEADLINE_MARGIN_MS: int = Field(default=15_000, ge=0)
