"""analyze-entry's own settings, from environment variables (``common.settings.EnvSettings``, like
the layer's settings; secrets such as OPENAI_API_KEY stay with ``common.config``).

Read once per container through ``settings()``; tests call ``settings.cache_clear()``
after changing the environment.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import Field, field_validator

from common.settings import EnvSettings


class AnalyzeSettings(EnvSettings):

    #: Entitlement id that analysis needs (the user's or their pair's); empty = free.
    ANALYZE_ENTITLEMENT: str | None = None
    #: "auto": OpenAI when OPENAI_API_KEY resolves, else offline; or force one of them.
    ANALYZE_PROVIDER: Literal["auto", "openai", "offline"] = "auto"
    #: When the provider fails (timeout, error, malformed output), answer offline instead.
    ANALYZE_FALLBACK_OFFLINE: bool = True
    ANALYZE_OPENAI_MODEL: str = "gpt-4o-mini"
    #: Per HTTP request to OpenAI, in seconds.
    ANALYZE_OPENAI_TIMEOUT_S: float = Field(default=15.0, gt=0, le=120)
    #: The SDK's retries of timeouts, connection errors, 408/409/429/5xx (with backoff).
    ANALYZE_OPENAI_MAX_RETRIES: int = Field(default=1, ge=0, le=5)
    #: Requests made for malformed structured output (the first included).
    ANALYZE_OPENAI_ATTEMPTS: int = Field(default=2, ge=1, le=5)
    #: How long an analysis stays cached, in seconds (30 days).
    ANALYZE_CACHE_TTL_S: int = Field(default=30 * 24 * 3600, ge=60)
    #: Requests a minute per user on the analysing routes (others use RATE_LIMIT_PER_MINUTE).
    ANALYZE_RATE_LIMIT_PER_MINUTE: int = Field(default=30, ge=1)

    # --- voice and photo notes (docs/analyze-entry.md, "Attachments") ---
    #: The bucket attachments are uploaded to, under users/<author>/journal/<entry>/.
    UPLOADS_BUCKET: str = ""
    #: Attachments an entry may have.
    ANALYZE_MAX_ATTACHMENTS: int = Field(default=5, ge=1, le=20)
    #: Largest voice note (OpenAI's transcription limit is 25 MB) and its longest duration.
    ANALYZE_AUDIO_MAX_BYTES: int = Field(default=25 * 1024 * 1024, ge=1024, le=25 * 1024 * 1024)
    ANALYZE_AUDIO_MAX_SECONDS: int = Field(default=600, ge=1, le=3600)
    #: Largest photo, in bytes and in pixels (the header is checked before decoding).
    ANALYZE_IMAGE_MAX_BYTES: int = Field(default=20 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    ANALYZE_IMAGE_MAX_PIXELS: int = Field(default=40_000_000, ge=10_000, le=100_000_000)
    #: Speech to text; whisper-1 also tells the language (verbose_json), other models don't.
    ANALYZE_TRANSCRIBE_MODEL: str = "whisper-1"
    ANALYZE_TRANSCRIBE_TIMEOUT_S: float = Field(default=60.0, gt=0, le=300)
    #: Describes photos for the analysis (vision).
    ANALYZE_VISION_MODEL: str = "gpt-4o-mini"
    #: Lifetime of attachment upload forms and download URLs.
    ANALYZE_UPLOAD_URL_TTL_S: int = Field(default=300, ge=30, le=3600)
    ANALYZE_DOWNLOAD_URL_TTL_S: int = Field(default=900, ge=60, le=7 * 24 * 3600)

    def bucket(self) -> str:
        if not self.UPLOADS_BUCKET:
            from common.errors import ConfigError

            raise ConfigError("UPLOADS_BUCKET is not set")
        return self.UPLOADS_BUCKET

    @field_validator("ANALYZE_ENTITLEMENT")
    @classmethod
    def _empty_is_free(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


@cache
def settings() -> AnalyzeSettings:
    from pydantic import ValidationError

    from common.errors import ConfigError

    try:
        return AnalyzeSettings()
    except ValidationError as exc:
        names = ", ".join(str(err["loc"][0]) for err in exc.errors())  # names, never values
        raise ConfigError(f"invalid setting(s): {names}") from None
