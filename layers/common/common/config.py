"""Typed settings read from environment variables.

Plain values come straight from the environment (pydantic-settings). Each secret may
instead be given in AWS as a reference: ``<NAME>_SECRET_ARN`` (Secrets Manager) or
``<NAME>_PARAM`` (SSM Parameter Store, decrypted); references are resolved on first use
with the Powertools parameters utility, which caches them for ``SECRETS_MAX_AGE``
seconds. A missing required setting raises ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigError

#: Settings that hold secrets: never logged, resolvable from Secrets Manager or SSM.
SECRET_NAMES = (
    "DATABASE_URL",
    "JWT_SECRET",
    "OPENAI_API_KEY",
    "PAYMOB_HMAC_SECRET",
    "PAYMOB_SECRET_KEY",
    "REVENUECAT_WEBHOOK_AUTH",
    "REVENUECAT_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_KEY",
)


class Settings(BaseSettings):
    """Non-secret settings. Field names are the environment variable names."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    STAGE: str = "dev"
    AWS_ENDPOINT_URL: str | None = None
    UPLOADS_BUCKET: str | None = None
    GENERATIONS_BUCKET: str | None = None
    BACKUPS_BUCKET: str | None = None
    JWT_JWKS_URL: str | None = None
    JWT_ISSUER: str | None = None
    JWT_AUDIENCE: str | None = None
    OPENAI_BASE_URL: str | None = None
    PAYMOB_API_URL: str = "https://accept.paymob.com"
    STRIPE_API_BASE: str = "https://api.stripe.com"
    REVENUECAT_API_URL: str = "https://api.revenuecat.com"
    DB_STATEMENT_TIMEOUT_MS: int = Field(default=10_000, ge=0)
    DB_CONNECT_TIMEOUT_S: int = Field(default=5, ge=1)
    SECRETS_MAX_AGE: int = Field(default=300, ge=0)
    POWERTOOLS_SERVICE_NAME: str = "backend"

    def require(self, name: str) -> str:
        """A non-secret setting that this code path cannot do without."""
        value = getattr(self, name)
        if value in (None, ""):
            raise ConfigError(f"{name} is not set")
        return str(value)


@lru_cache(maxsize=1)
def settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # Name the variables, never echo their values.
        names = ", ".join(str(err["loc"][0]) for err in exc.errors())
        raise ConfigError(f"invalid setting(s): {names}") from None


def secret(name: str) -> str | None:
    """The secret's value, or None when neither the value nor a reference is set."""
    if name not in SECRET_NAMES:
        raise ValueError(f"{name} is not a known secret setting")
    value = os.environ.get(name)
    if value:
        return value
    max_age = settings().SECRETS_MAX_AGE
    if arn := os.environ.get(f"{name}_SECRET_ARN"):
        from aws_lambda_powertools.utilities import parameters

        return str(parameters.get_secret(arn, max_age=max_age))
    if param := os.environ.get(f"{name}_PARAM"):
        from aws_lambda_powertools.utilities import parameters

        return str(parameters.get_parameter(param, decrypt=True, max_age=max_age))
    return None


def require_secret(name: str) -> str:
    value = secret(name)
    if not value:
        raise ConfigError(f"{name} is not set (nor {name}_SECRET_ARN or {name}_PARAM)")
    return value


def secret_list(name: str) -> list[str]:
    """A secret holding one or more active values, comma-separated, for rotation."""
    return [part.strip() for part in require_secret(name).split(",") if part.strip()]
