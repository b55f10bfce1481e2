"""process-image's settings: environment variables, read by ``common.settings.EnvSettings``.

Read once per container through ``get()``, like the layer's and the other functions'
settings (a Lambda's environment does not change while it is warm; reading the variables
again cost a hit ~15 us); tests call ``get.cache_clear()`` after changing the
environment. Secrets (``OPENAI_API_KEY``) go through ``common.config.secret`` instead.
"""

from __future__ import annotations

from functools import cache

from pydantic import Field

from common.settings import EnvSettings

MiB = 1024 * 1024


class Settings(EnvSettings):

    UPLOADS_BUCKET: str = ""
    GENERATIONS_BUCKET: str = ""
    #: Largest upload accepted (the presigned POST's content-length-range) and read back.
    IMAGE_MAX_UPLOAD_BYTES: int = Field(default=20 * MiB, ge=1024, le=100 * MiB)
    #: Largest image, in pixels, decoded or produced (header checked before decoding).
    IMAGE_MAX_PIXELS: int = Field(default=40_000_000, ge=10_000, le=100_000_000)
    #: The model for AI tools whose catalog row names none.
    AI_IMAGE_MODEL: str = "gpt-image-1"
    #: Seconds one OpenAI image-edit attempt may take (the SDK's request timeout).
    AI_TIMEOUT_S: float = Field(default=60.0, gt=0, le=300)
    #: Extra attempts after a timeout, connection error, 429 or 5xx (the SDK's retries).
    AI_MAX_RETRIES: int = Field(default=1, ge=0, le=3)
    #: The vision model of analysis tools whose catalog row names none (structured outputs).
    AI_VISION_MODEL: str = "gpt-4o-mini"
    #: Requests made for a malformed analysis answer (the first included).
    AI_ANALYSIS_ATTEMPTS: int = Field(default=2, ge=1, le=3)
    #: How long an identical request returns the stored generation instead of paying again.
    GENERATION_CACHE_TTL_S: int = Field(default=30 * 24 * 3600, ge=60)
    #: Lifetime of presigned download URLs and of upload forms.
    DOWNLOAD_URL_TTL_S: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    UPLOAD_URL_TTL_S: int = Field(default=300, ge=30, le=3600)

    def bucket(self, name: str) -> str:
        """A bucket setting that this code path cannot do without."""
        value = getattr(self, name)
        if not value:
            from common.errors import ConfigError

            raise ConfigError(f"{name} is not set")
        return str(value)


@cache
def get() -> Settings:
    return Settings()
