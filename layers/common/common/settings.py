"""The typed settings model (pydantic-settings). Imported on first use by
``common.config.settings()``: pydantic-settings costs ~90 ms to import, which a cold
start should pay only when a setting is read."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigError


class Settings(BaseSettings):
    """Non-secret settings. Field names are the environment variable names."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

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
    # RDS Proxy: connect to this host instead of DATABASE_URL's (same user, database, TLS).
    DATABASE_PROXY_HOST: str | None = None
    DB_STATEMENT_TIMEOUT_MS: int = Field(default=10_000, ge=0)
    DB_CONNECT_TIMEOUT_S: int = Field(default=5, ge=1)
    DB_DEAD_PEER_TIMEOUT_S: int = Field(default=10, ge=1)  # a silent server is given up on after this
    SECRETS_MAX_AGE: int = Field(default=300, ge=0)
    RATE_LIMIT_PER_MINUTE: int = Field(default=100, ge=1)  # per user and route, unless the route says
    POWERTOOLS_SERVICE_NAME: str = "backend"

    def require(self, name: str) -> str:
        """A non-secret setting that this code path cannot do without."""
        value = getattr(self, name)
        if value in (None, ""):
            raise ConfigError(f"{name} is not set")
        return str(value)
