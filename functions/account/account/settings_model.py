"""account's settings model (``common.settings.EnvSettings``), imported on first use by
``account.settings.settings()``: a cold start pays for building the model only when a
setting is read."""

from pydantic import Field

from common.settings import EnvSettings


class AccountSettings(EnvSettings):

    #: How long an invite code can be used, in seconds (24 hours).
    INVITE_TTL_S: int = Field(default=24 * 3600, ge=300, le=7 * 24 * 3600)
    #: Invites a user may have open at once.
    INVITE_MAX_OPEN: int = Field(default=3, ge=1, le=20)
    #: POST /pairs/join attempts per user per hour (guessing codes is rate limited).
    JOIN_ATTEMPTS_PER_HOUR: int = Field(default=10, ge=1, le=1000)
    #: Exports a user may start per day (one runs at a time).
    EXPORTS_PER_DAY: int = Field(default=3, ge=1, le=100)
    #: How long a finished archive is kept, in days (the bucket's lifecycle rule is the backstop).
    EXPORT_TTL_DAYS: int = Field(default=7, ge=1, le=30)
    #: Lifetime of the presigned download URL (never past the archive's expiry).
    EXPORT_URL_TTL_S: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    #: Attempts of one export before it is failed.
    EXPORT_MAX_ATTEMPTS: int = Field(default=3, ge=1, le=10)
    #: A running export older than this was killed (above the function's Timeout): run again.
    EXPORT_STALE_AFTER_S: int = Field(default=960, ge=60)
    #: The job starts another export only with this much time left in its invocation.
    EXPORT_MIN_TIME_S: int = Field(default=120, ge=1)
    #: Size of the archive's multipart upload parts, in MiB: the job's memory is about
    #: two parts whatever the user's size.
    EXPORT_PART_SIZE_MB: int = Field(default=8, ge=5, le=64)
    #: Seconds DELETE /me spends deleting objects after the commit (cache-cleanup does the rest).
    DELETE_FOLLOWUP_BUDGET_S: float = Field(default=5.0, ge=0, le=20)
