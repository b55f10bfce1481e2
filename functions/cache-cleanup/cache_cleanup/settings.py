"""The job's settings (environment variables, read by ``common.settings.EnvSettings``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from common.settings import EnvSettings


class CleanupSettings(EnvSettings):

    #: A reservation still open after this long is refunded. It must exceed the longest
    #: any holder can live: process-image's AI timeout plus its own work, and in any case
    #: its Lambda Timeout (a holder cannot outlive its invocation). 120 s AI timeout +
    #: margin -> 300 s.
    RESERVATION_STALE_AFTER_S: int = Field(default=300, ge=60)
    #: Finished webhook deliveries (processed, ignored) are kept this long for audit and
    #: replays; unfinished ones (received, unmatched, failed) are never purged.
    INBOX_RETENTION_DAYS: int = Field(default=90, ge=1)
    #: Rate-limit windows that started longer ago than this are deleted (windows are 60 s).
    RATE_LIMIT_KEEP_S: int = Field(default=3600, ge=60)
    #: The run stops when less than this (plus twice its slowest batch) is left before
    #: the Lambda deadline or the event's max_seconds.
    CLEANUP_DEADLINE_MARGIN_MS: int = Field(default=1000, ge=0)
    #: Slept between rounds of batches while work remains, leaving the database's CPU to
    #: the application's queries (scripts/bench/cleanup.py: with batches of 2000 and 50 ms
    #: the p99 of concurrent cache reads stays under 2x its value without a purge; without
    #: a pause it went to 2-5x on a 2-core server). Purge rate ~20,000 rows/s.
    CLEANUP_PAUSE_MS: int = Field(default=50, ge=0, le=5000)

    @property
    def reservation_stale_after(self) -> timedelta:
        return timedelta(seconds=self.RESERVATION_STALE_AFTER_S)

    @property
    def inbox_retention(self) -> timedelta:
        return timedelta(days=self.INBOX_RETENTION_DAYS)

    @property
    def rate_limit_keep(self) -> timedelta:
        return timedelta(seconds=self.RATE_LIMIT_KEEP_S)
