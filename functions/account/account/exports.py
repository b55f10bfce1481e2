"""Data exports: a queue in ``account_exports``, worked by the account function's own
schedule (``jobs``), one archive per export in the exports bucket.

``POST /me/exports`` queues one (202), or answers the one already queued or running (the
database allows one per user: a partial unique index), after the daily limit. The
schedule (every minute) claims queued exports with ``FOR UPDATE SKIP LOCKED`` and writes
each archive (``archive.build``). An export whose run died (a timeout) is claimed again
once it is older than EXPORT_STALE_AFTER_S; after EXPORT_MAX_ATTEMPTS it is failed.
``GET /me/exports/{id}`` gives the status and, while the archive exists, a presigned URL.
cache-cleanup deletes archives past their expiry (``common.accounts.expire_exports``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from account.models import ExportOut
from account.settings import settings
from common import db
from common.errors import InvalidInput, NotFound
from common.ids import as_uuid
from common.observability import logger

#: The daily export limit's rate-limit route (per user).
EXPORTS_ROUTE = "account:exports-per-day"

_COLUMNS = "id, status, created_at, completed_at, expires_at, object_key, size_bytes, sha256, error_code"

ACTIVE = f"""
SELECT {_COLUMNS} FROM account_exports WHERE user_id = %(user_id)s AND status IN ('queued', 'running')
"""

QUEUE = f"""
INSERT INTO account_exports (user_id) VALUES (%(user_id)s)
ON CONFLICT (user_id) WHERE status IN ('queued', 'running') DO NOTHING
RETURNING {_COLUMNS}
"""

ONE = f"SELECT {_COLUMNS} FROM account_exports WHERE id = %(id)s AND user_id = %(user_id)s"

# --- the job's queries ---

#: The oldest export to run: queued, or running in an invocation that died (not one that
#: failed in this run: it waits for the next one).
CLAIM = """
UPDATE account_exports e
   SET status = 'running', attempts = e.attempts + 1, started_at = now(), error_code = NULL
 WHERE e.id = (SELECT id FROM account_exports
                WHERE (status = 'queued' OR (status = 'running' AND started_at < now() - %(stale)s))
                  AND attempts < %(max_attempts)s AND id <> ALL(%(skip)s::uuid[])
                ORDER BY created_at
                LIMIT 1
                  FOR UPDATE SKIP LOCKED)
RETURNING e.id, e.user_id, e.attempts
"""

#: Exports whose every attempt died.
GIVE_UP = """
UPDATE account_exports SET status = 'failed', error_code = coalesce(error_code, 'timed_out')
 WHERE (status = 'queued' OR (status = 'running' AND started_at < now() - %(stale)s))
   AND attempts >= %(max_attempts)s
"""

#: Only the attempt that holds the export completes it (not a stale one taken over).
COMPLETE = """
UPDATE account_exports
   SET status = 'completed', completed_at = now(), expires_at = now() + %(ttl)s,
       object_key = %(key)s, size_bytes = %(size)s, sha256 = %(sha256)s
 WHERE id = %(id)s AND status = 'running' AND attempts = %(attempts)s
RETURNING id
"""

FAIL = """
UPDATE account_exports
   SET status = CASE WHEN attempts >= %(max_attempts)s THEN 'failed' ELSE 'queued' END, error_code = %(error)s
 WHERE id = %(id)s AND status = 'running' AND attempts = %(attempts)s
"""


# --- routes ----------------------------------------------------------------------------


def start(user_id: UUID) -> ExportOut:
    """Queue an export, or answer the one in progress (429 past EXPORTS_PER_DAY new ones)."""
    from common import ratelimit

    row = db.execute(ACTIVE, {"user_id": user_id}, idempotent=True).fetchone()
    if row is None:
        ratelimit.hit(str(user_id), EXPORTS_ROUTE, limit=settings().EXPORTS_PER_DAY, window_s=24 * 3600)
        row = db.execute(QUEUE, {"user_id": user_id}).fetchone()
        if row is None:  # a concurrent request queued one first
            row = db.one_row(db.execute(ACTIVE, {"user_id": user_id}, idempotent=True))
        else:
            logger.info("export queued", extra={"export_id": str(row["id"])})
    return view(row)


def status(user_id: UUID, export_id: str) -> ExportOut:
    try:
        eid = as_uuid(export_id)
    except InvalidInput:
        raise NotFound("no such export") from None
    row = db.execute(ONE, {"id": eid, "user_id": user_id}, idempotent=True).fetchone()
    if row is None:
        raise NotFound("no such export")
    return view(row)


def view(row: dict[str, Any]) -> ExportOut:
    """The export as the API shows it: a fresh URL while the archive exists, never one
    that outlives it; past its expiry it is 'expired' even before cache-cleanup ran."""
    status, url, url_expires_at = row["status"], None, None
    now = datetime.now(UTC)
    if status == "completed" and row["expires_at"] <= now:
        status = "expired"
    if status == "completed":
        from common import storage
        from common.config import settings as layer_settings

        ttl = min(settings().EXPORT_URL_TTL_S, int((row["expires_at"] - now).total_seconds()))
        if ttl >= 1:
            url, url_expires_at = storage.presigned_get(layer_settings().require("EXPORTS_BUCKET"),
                                                        row["object_key"], expires_s=ttl)
    return ExportOut(export_id=row["id"], status=status, created_at=row["created_at"],
                     completed_at=row["completed_at"], expires_at=row["expires_at"],
                     size_bytes=row["size_bytes"], sha256=row["sha256"], url=url,
                     url_expires_at=url_expires_at, error_code=row["error_code"])


# --- the job ---------------------------------------------------------------------------


def run_queue(time_left_s: Any) -> dict[str, int]:
    """Run queued exports one after the other while more than EXPORT_MIN_TIME_S is left
    (``time_left_s()``). Returns counts: completed, failed (given up), retried."""
    from account import archive

    s = settings()
    stale = timedelta(seconds=s.EXPORT_STALE_AFTER_S)
    counts = {"completed": 0, "failed": 0, "retried": 0}
    counts["failed"] += db.execute(GIVE_UP, {"stale": stale, "max_attempts": s.EXPORT_MAX_ATTEMPTS}).rowcount
    failed: list[UUID] = []
    while time_left_s() > s.EXPORT_MIN_TIME_S:
        job = db.execute(CLAIM, {"stale": stale, "max_attempts": s.EXPORT_MAX_ATTEMPTS,
                                 "skip": failed}).fetchone()
        if job is None:
            break
        started = time.monotonic()
        try:
            built = archive.build(job["id"], job["user_id"], part_size=s.EXPORT_PART_SIZE_MB * 1024 * 1024)
        except Exception as exc:
            logger.exception("export failed", extra={"export_id": str(job["id"]), "attempt": job["attempts"]})
            db.execute(FAIL, {"id": job["id"], "attempts": job["attempts"], "error": type(exc).__name__,
                              "max_attempts": s.EXPORT_MAX_ATTEMPTS})
            counts["failed" if job["attempts"] >= s.EXPORT_MAX_ATTEMPTS else "retried"] += 1
            failed.append(job["id"])
            continue
        done = db.execute(COMPLETE, {"id": job["id"], "attempts": job["attempts"], "key": built.key,
                                     "size": built.size, "sha256": built.sha256,
                                     "ttl": timedelta(days=s.EXPORT_TTL_DAYS)}).fetchone()
        if done is None:  # the account was deleted meanwhile, or a later attempt took over
            archive.discard(built.key)
            continue
        counts["completed"] += 1
        logger.info("export completed", extra={"export_id": str(job["id"]), "bytes": built.size,
                                               "files": built.files,
                                               "seconds": round(time.monotonic() - started, 1)})
    return counts
