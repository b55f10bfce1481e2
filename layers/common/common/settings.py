"""Typed settings from environment variables: ``EnvSettings``, the base of every
settings model (the layer's ``Settings`` here, each function's own), and ``Settings``.
Imported on first use by ``common.config.settings()``.

Why not pydantic-settings (the design brief's choice): we use one thing of it, "field
names are environment variable names, validated by pydantic", and its import alone cost
~77 ms warm (it imports asyncio, dotenv, its CLI, AWS and cloud-vault sources) and
150-180 ms on this 2-core machine under load, measured on top of an imported pydantic
(``python -X importtime -c "import pydantic, pydantic.fields; import pydantic_settings"``);
every function's cold start paid it on its first request. ``EnvSettings`` is a plain
pydantic model that reads its fields from ``os.environ``: the same parsing (pydantic's
lax mode turns "5" into 5, "true" into True; constraints and validators run), the same
errors (``ValidationError`` naming the field), keyword arguments still win over the
environment. What it drops: .env files, secrets directories, JSON parsing of complex
fields and nested delimiters, none of which any settings model here uses.
"""

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.errors import ConfigError


class EnvSettings(BaseModel):
    """A frozen settings model whose field values come from the environment variables
    of the same names (case-sensitive); unknown variables are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    def __init__(self, **values: Any):
        names = type(self).model_fields
        super().__init__(**{name: os.environ[name] for name in names if name in os.environ}, **values)


class Settings(EnvSettings):
    """Non-secret settings. Field names are the environment variable names."""

    STAGE: str = "dev"
    AWS_ENDPOINT_URL: str | None = None
    UPLOADS_BUCKET: str | None = None
    GENERATIONS_BUCKET: str | None = None
    BACKUPS_BUCKET: str | None = None
    EXPORTS_BUCKET: str | None = None
    JWT_JWKS_URL: str | None = None
    JWT_ISSUER: str | None = None
    JWT_AUDIENCE: str | None = None
    JWT_MAX_LIFETIME_S: int | None = Field(default=None, ge=1)  # unset: any lifetime the issuer gives
    OPENAI_BASE_URL: str | None = None
    PAYMOB_API_URL: str = "https://accept.paymob.com"
    STRIPE_API_BASE: str = "https://api.stripe.com"
    REVENUECAT_API_URL: str = "https://api.revenuecat.com"
    #: The account's integration ids, comma-separated (checkout offers them; a callback
    #: must name one of the numeric ones). Names are allowed for checkout and bind nothing.
    PAYMOB_INTEGRATION_IDS: str = ""
    #: The merchant's Paymob id (a callback's signed ``owner``); empty: not checked.
    PAYMOB_MERCHANT_ID: str = Field(default="", pattern=r"^[0-9]*$")
    # RDS Proxy: connect to this host instead of DATABASE_URL's (same user, database, TLS).
    DATABASE_PROXY_HOST: str | None = None
    DB_STATEMENT_TIMEOUT_MS: int = Field(default=10_000, ge=0)
    DB_CONNECT_TIMEOUT_S: int = Field(default=5, ge=1)
    DB_DEAD_PEER_TIMEOUT_S: int = Field(default=10, ge=1)  # a silent server is given up on after this
    #: psycopg's prepare_threshold: how many times a statement runs on a connection before
    #: it is prepared as a *named* statement (0: at once); ``off``: never. Unset: follows
    #: DATABASE_PROXY_HOST (see ``prepare_threshold``).
    DB_PREPARE_THRESHOLD: Annotated[int, Field(ge=0)] | Literal["off"] | None = None
    SECRETS_MAX_AGE: int = Field(default=300, ge=0)
    RATE_LIMIT_PER_MINUTE: int = Field(default=100, ge=1)  # per user and route, unless the route says
    POWERTOOLS_SERVICE_NAME: str = "backend"

    def prepare_threshold(self) -> int | None:
        """``DB_PREPARE_THRESHOLD`` as psycopg takes it (None: never prepare).

        Unset, it follows ``DATABASE_PROXY_HOST``. Behind RDS Proxy: never, because the
        proxy pins a session holding named prepared statements to one database connection
        (AWS, "Avoiding pinning an RDS Proxy"), which defeats its pooling. Directly
        connected: 1, so a statement seen a second time skips the server's parse and plan
        from then on (a cache read ~1.5x faster, docs/cache.md), while a one-off statement
        is never prepared (it would cost a round trip and a slot in psycopg's cache).
        """
        if self.DB_PREPARE_THRESHOLD == "off":
            return None
        if self.DB_PREPARE_THRESHOLD is None:
            return None if self.DATABASE_PROXY_HOST else 1
        return self.DB_PREPARE_THRESHOLD

    def paymob_integration_ids(self) -> frozenset[int]:
        return frozenset(int(i) for i in (p.strip() for p in self.PAYMOB_INTEGRATION_IDS.split(","))
                         if i.isdigit())

    def require(self, name: str) -> str:
        """A non-secret setting that this code path cannot do without."""
        value = getattr(self, name)
        if value in (None, ""):
            raise ConfigError(f"{name} is not set")
        return str(value)
