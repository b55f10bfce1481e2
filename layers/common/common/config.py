"""Typed settings read from environment variables.

Plain values come straight from the environment (``common.settings.EnvSettings``, pydantic). Each secret may
instead be given in AWS as a reference: ``<NAME>_SECRET_ARN`` (Secrets Manager) or
``<NAME>_PARAM`` (SSM Parameter Store, decrypted); references are resolved on first use
with the Powertools parameters utility, which caches them for ``SECRETS_MAX_AGE``
seconds. A missing required setting raises ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

from common.errors import ConfigError

if TYPE_CHECKING:
    from common.settings import Settings

#: Settings that hold secrets: never logged, resolvable from Secrets Manager or SSM.
SECRET_NAMES = (
    "DATABASE_URL",
    "JWT_SECRET",
    "OPENAI_API_KEY",
    "PAYMOB_HMAC_SECRET",
    "PAYMOB_SECRET_KEY",
    "PAYMOB_API_KEY",
    "REVENUECAT_WEBHOOK_AUTH",
    "REVENUECAT_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_KEY",
)


@lru_cache(maxsize=1)
def settings() -> Settings:
    from pydantic import ValidationError

    from common.settings import Settings

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
