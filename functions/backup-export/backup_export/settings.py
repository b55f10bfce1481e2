"""The job's settings (environment variables, read with pydantic-settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BackupSettings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    STAGE: str = "dev"
    BACKUPS_BUCKET: str | None = None
    #: Complete runs older than this are deleted by the job (the newest BACKUP_KEEP_RUNS
    #: always stay). The template passes its BackupRetentionDays parameter.
    BACKUP_RETENTION_DAYS: int = Field(default=30, ge=1)
    BACKUP_KEEP_RUNS: int = Field(default=7, ge=1)
    #: Tables left out, comma-separated (yoyo's bookkeeping is always left out).
    BACKUP_EXCLUDE_TABLES: str = "cache_entries,cache_leases,rate_limit_windows"
    #: Columns to redact, comma-separated ``table.column`` (exports for use outside
    #: production). Empty: a full backup.
    BACKUP_REDACT_COLUMNS: str = ""
    #: gzip level: 1 measured ~1.2x faster than pg_dump -Fc, 6 slower, for ~6% smaller files.
    BACKUP_GZIP_LEVEL: int = Field(default=1, ge=1, le=9)
    #: A table is not started with less than this left before the Lambda deadline.
    BACKUP_MIN_TIME_LEFT_S: int = Field(default=60, ge=0)

    @property
    def exclude(self) -> frozenset[str]:
        return frozenset(filter(None, (t.strip() for t in self.BACKUP_EXCLUDE_TABLES.split(","))))
