"""The job's settings (environment variables, read by ``common.settings.EnvSettings``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.settings import EnvSettings


class BackupSettings(EnvSettings):

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
    #: The tables' codec: zstd (Zstandard) or gzip (the format of earlier runs; the restore
    #: reads both). zstd level 1 compresses CSV several times faster than gzip level 1 and
    #: smaller (scripts/bench/backup.py, docs/housekeeping.md).
    BACKUP_COMPRESSION: Literal["zstd", "gzip"] = "zstd"
    BACKUP_ZSTD_LEVEL: int = Field(default=1, ge=1, le=19)
    #: gzip level, when BACKUP_COMPRESSION is gzip.
    BACKUP_GZIP_LEVEL: int = Field(default=1, ge=1, le=9)
    #: COPY's format for the tables: binary (the default: less work for the server on
    #: export and on restore, smaller data) or csv (readable by any tool, and portable
    #: across Postgres versions, as earlier runs wrote it). The restore reads both.
    BACKUP_COPY_FORMAT: Literal["binary", "csv"] = "binary"
    #: Tables exported at once, each by a worker on a connection of its own that imports
    #: the run's one snapshot (1: every table on the function's own connection).
    BACKUP_PARALLEL_TABLES: int = Field(default=4, ge=1, le=16)
    #: A table is not started with less than this left before the Lambda deadline.
    BACKUP_MIN_TIME_LEFT_S: int = Field(default=60, ge=0)

    @property
    def exclude(self) -> frozenset[str]:
        return frozenset(filter(None, (t.strip() for t in self.BACKUP_EXCLUDE_TABLES.split(","))))

    @property
    def compression_level(self) -> int:
        return self.BACKUP_ZSTD_LEVEL if self.BACKUP_COMPRESSION == "zstd" else self.BACKUP_GZIP_LEVEL
