"""What an account deletion leaves to do after its transaction, done at once by the
account function and retried by cache-cleanup until done; and the deletions log that
scripts/restore re-applies.

``delete_account()`` (the SQL function of migration 0012) deletes and pseudonymises in
the database, in one transaction, and queues three kinds of follow-up that cannot be part
of it:

- the deletions log: each ``account_deletions`` row is copied to
  ``s3://BACKUPS_BUCKET/deletions/<stage>/<user id>.json``, so that a restore of a backup
  taken before the deletion deletes the account again (``read_log``);
- the user's objects: every object under ``users/<id>/`` in the uploads, generations and
  exports buckets is deleted, and the prefix is swept again until ``keep_until`` (an
  upload form or a generation in flight at the time of the deletion may still add one);
  a failure is retried with backoff;
- webhook deliveries that mention the account lose their body and headers, in batches of
  inbox ids (the inbox has no user column).

Also here: ``expire_exports``, cache-cleanup's removal of export archives past their
expiry. S3 calls go through ``common.storage``'s client (boto3, imported on first use).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from common import db
from common.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef  # the boto3 stubs (dev only)

#: One copy of the log per deleted account, under the stage's prefix.
LOG_PREFIX = "deletions"
LOG_FORMAT = 1
#: A claimed prefix task is not retried by another run before this lease ends.
LEASE = timedelta(minutes=10)
MAX_BACKOFF = timedelta(hours=6)
#: Inbox ids per scrub statement.
SCRUB_STEP = 5000
#: S3's DeleteObjects limit per request.
DELETE_BATCH = 1000

# --- Queries ---------------------------------------------------------------------------

UNLOGGED = """
SELECT user_id, deleted_at FROM account_deletions
 WHERE logged_at IS NULL AND (%(user_id)s::uuid IS NULL OR user_id = %(user_id)s::uuid)
 ORDER BY deleted_at
 LIMIT %(limit)s
"""

MARK_LOGGED = """
UPDATE account_deletions SET logged_at = now() WHERE user_id = %(user_id)s AND logged_at IS NULL
"""

#: Takes due tasks by moving them past a lease: another run skips them meanwhile, and a
#: run that dies leaves them to be taken again when the lease ends.
CLAIM_PREFIXES = """
UPDATE account_object_deletions d
   SET next_attempt_at = now() + %(lease)s, attempts = d.attempts + 1
 WHERE d.id IN (SELECT id FROM account_object_deletions
                 WHERE next_attempt_at <= now()
                   AND (%(prefix)s::text IS NULL OR prefix = %(prefix)s::text)
                 ORDER BY next_attempt_at
                 LIMIT %(limit)s
                   FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.bucket_setting, d.prefix, d.keep_until, d.attempts, now() >= d.keep_until AS past_keep
"""

PREFIX_DONE = "DELETE FROM account_object_deletions WHERE id = %(id)s"

PREFIX_SWEPT = """
UPDATE account_object_deletions
   SET objects_deleted = objects_deleted + %(deleted)s, last_error = NULL, attempts = 0,
       next_attempt_at = CASE WHEN %(emptied)s THEN keep_until ELSE now() END
 WHERE id = %(id)s
"""

PREFIX_FAILED = """
UPDATE account_object_deletions
   SET objects_deleted = objects_deleted + %(deleted)s, last_error = %(error)s,
       next_attempt_at = now() + least(%(max_backoff)s,
                                       make_interval(mins => power(2, least(attempts, 12))::int))
 WHERE id = %(id)s
"""

CLAIM_SCRUB = """
SELECT id, needles, next_id, last_id FROM account_inbox_scrubs
 ORDER BY id
 LIMIT 1
   FOR UPDATE SKIP LOCKED
"""

#: Deliveries that were not finished become 'parked': they must never be applied now.
#: Bodies are the bytes received (bytea): the needles are searched as bytes.
SCRUB_BATCH = """
UPDATE webhook_inbox w
   SET body = ''::bytea, headers = '{}'::jsonb,
       status = CASE WHEN w.status IN ('processed', 'ignored', 'parked') THEN w.status ELSE 'parked' END,
       last_error = CASE WHEN w.status IN ('processed', 'ignored', 'parked') THEN w.last_error
                         ELSE 'account deleted' END
 WHERE w.id BETWEEN %(from_id)s AND %(to_id)s
   AND octet_length(w.body) > 0
   AND EXISTS (SELECT 1 FROM unnest(%(needles)s::bytea[]) AS n WHERE position(n IN w.body) > 0)
"""

SCRUB_ADVANCE = "UPDATE account_inbox_scrubs SET next_id = %(next_id)s WHERE id = %(id)s"
SCRUB_DONE = "DELETE FROM account_inbox_scrubs WHERE id = %(id)s"

#: What is left; overdue: deletions not in the log after an hour, prefixes still failing
#: after a day, inbox scrubs not done after a day (the alarm's metric).
PENDING = """
SELECT (SELECT count(*) FROM account_deletions WHERE logged_at IS NULL) AS unlogged,
       (SELECT count(*) FROM account_object_deletions) AS prefixes,
       (SELECT count(*) FROM account_inbox_scrubs) AS scrubs,
       (SELECT count(*) FROM account_deletions
         WHERE logged_at IS NULL AND deleted_at < now() - interval '1 hour')
     + (SELECT count(*) FROM account_object_deletions
         WHERE created_at < now() - interval '1 day' AND last_error IS NOT NULL)
     + (SELECT count(*) FROM account_inbox_scrubs WHERE created_at < now() - interval '1 day') AS overdue
"""

#: Completed exports past their expiry (oldest first), taken by moving them to
#: 'expired' once their object is deleted.
EXPIRED_EXPORTS = """
SELECT id, object_key FROM account_exports
 WHERE status = 'completed' AND expires_at <= now()
 ORDER BY expires_at
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED
"""

MARK_EXPIRED = """
UPDATE account_exports SET status = 'expired', object_key = NULL
 WHERE id = ANY(%(ids)s) AND status = 'completed'
"""


# --- Types -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Deletion:
    """One entry of the deletions log."""

    user_id: uuid.UUID
    deleted_at: datetime


@dataclass
class Followups:
    """What one run did, and what is left (``pending`` only when asked for)."""

    logs_written: int = 0
    objects_deleted: int = 0
    prefixes_done: int = 0
    inbox_rows_scrubbed: int = 0
    errors: int = 0
    complete: bool = False  # nothing due was left undone by this run
    pending: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ObjectDeletionFailed(RuntimeError):
    """S3 refused to delete some objects (its error code, never the keys)."""


# --- The deletions log -----------------------------------------------------------------


def log_key(stage: str, user_id: uuid.UUID | str) -> str:
    return f"{LOG_PREFIX}/{stage}/{uuid.UUID(str(user_id))}.json"


def write_logs(*, user_id: uuid.UUID | None = None, limit: int = 100) -> int:
    """Copy unlogged deletions to the backups bucket; how many. Writing one twice is
    harmless (same key, same content)."""
    from common import storage
    from common.config import settings

    rows = db.execute(UNLOGGED, {"user_id": user_id, "limit": limit}, idempotent=True).fetchall()
    s = settings()
    for row in rows:
        bucket = s.require("BACKUPS_BUCKET")
        body = json.dumps({"format": LOG_FORMAT, "user_id": str(row["user_id"]),
                           "deleted_at": row["deleted_at"].isoformat()}).encode()
        storage.put(bucket, log_key(s.STAGE, row["user_id"]), body, "application/json")
        db.execute(MARK_LOGGED, {"user_id": row["user_id"]}, idempotent=True)
    return len(rows)


def read_log(bucket: str, stage: str) -> list[Deletion]:
    """Every deletion logged for ``stage``, oldest first (scripts/restore re-applies
    them). An entry that cannot be read stops the restore: skipping it could bring a
    deleted account back."""
    from common import storage

    client = storage.s3()
    deletions = []
    prefix = f"{LOG_PREFIX}/{stage}/"
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            entry = json.loads(storage.read(bucket, item["Key"], max_bytes=64 * 1024))
            if entry.get("format") != LOG_FORMAT:
                raise ValueError(f"{item['Key']}: unsupported deletions log format {entry.get('format')!r}")
            deletions.append(Deletion(uuid.UUID(entry["user_id"]),
                                      datetime.fromisoformat(entry["deleted_at"])))
    return sorted(deletions, key=lambda d: d.deleted_at)


# --- Objects ---------------------------------------------------------------------------


def sweep_prefix(bucket: str, prefix: str, deadline: float) -> tuple[int, bool]:
    """Delete the objects under ``prefix`` until none is left or ``deadline``
    (``time.monotonic()``) passes: ``(deleted, emptied)``."""
    from common import storage

    client = storage.s3()
    deleted = 0
    while time.monotonic() < deadline:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=DELETE_BATCH)
        keys: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in listed.get("Contents", [])]
        if not keys:
            return deleted, True
        answer = client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        if errors := answer.get("Errors"):
            deleted += len(keys) - len(errors)
            raise ObjectDeletionFailed(f"S3 refused {len(errors)} deletions ({errors[0].get('Code')})")
        deleted += len(keys)
    return deleted, False


def delete_objects(deadline: float, *, user_id: uuid.UUID | None = None, limit: int = 20) -> Followups:
    """Work due prefix tasks (this user's only, when given) until ``deadline``."""
    from common.config import settings

    done = Followups()
    prefix = f"users/{user_id}/" if user_id else None
    tasks = db.execute(CLAIM_PREFIXES, {"lease": LEASE, "prefix": prefix, "limit": limit}).fetchall()
    for task in tasks:
        deleted = 0
        try:
            bucket = settings().require(task["bucket_setting"])
            deleted, emptied = sweep_prefix(bucket, task["prefix"], deadline)
        except Exception as exc:  # S3, the network, a missing bucket setting: all retried later
            done.errors += 1
            error = str(exc)[:200] if isinstance(exc, ObjectDeletionFailed) else type(exc).__name__
            logger.warning("object deletion failed; retried later",
                           extra={"task_id": task["id"], "attempts": task["attempts"], "error": error})
            db.execute(PREFIX_FAILED, {"id": task["id"], "deleted": deleted, "error": error,
                                       "max_backoff": MAX_BACKOFF})
            continue
        done.objects_deleted += deleted
        if emptied and task["past_keep"]:
            db.execute(PREFIX_DONE, {"id": task["id"]})
            done.prefixes_done += 1
        else:  # swept again at keep_until, or at once when the deadline cut it short
            db.execute(PREFIX_SWEPT, {"id": task["id"], "deleted": deleted, "emptied": emptied})
    return done


# --- Inbox -----------------------------------------------------------------------------


def _needles(texts: list[str]) -> list[bytes]:
    """Each id as the bytes a body may hold it in: as stored, lower and upper case (a
    client may send a UUID in capitals)."""
    return sorted({variant.encode() for text in texts for variant in (text, text.lower(), text.upper())})


def scrub_inbox(deadline: float) -> int:
    """Empty the deliveries that mention deleted accounts, one batch of ids per
    transaction, until the queue is done or ``deadline``; rows scrubbed."""
    scrubbed = 0
    while time.monotonic() < deadline:
        with db.transaction() as conn:
            task = conn.execute(CLAIM_SCRUB).fetchone()
            if task is None:
                return scrubbed
            scrubbed += _scrub(conn, task, min(task["next_id"] + SCRUB_STEP - 1, task["last_id"]))
    return scrubbed


def scrub_inbox_now(conn: Any) -> int:
    """Every queued scrub at once, in the caller's transaction (scripts/restore, which
    re-applies deletions offline); rows scrubbed."""
    scrubbed = 0
    while task := db.execute_on(conn, CLAIM_SCRUB).fetchone():
        scrubbed += _scrub(conn, task, task["last_id"])
    return scrubbed


def _scrub(conn: Any, task: dict[str, Any], to_id: int) -> int:
    scrubbed = 0
    if task["needles"]:
        params = {"from_id": task["next_id"], "to_id": to_id, "needles": _needles(task["needles"])}
        scrubbed = conn.execute(SCRUB_BATCH, params).rowcount
    if to_id >= task["last_id"]:
        conn.execute(SCRUB_DONE, {"id": task["id"]})
    else:
        conn.execute(SCRUB_ADVANCE, {"id": task["id"], "next_id": to_id + 1})
    return scrubbed


# --- All of them -----------------------------------------------------------------------


def run_followups(budget_s: float, *, user_id: uuid.UUID | None = None,
                  with_pending: bool = False) -> Followups:
    """The log first (what keeps a restore from bringing an account back), then the
    objects, then the inbox, within ``budget_s`` seconds. With ``user_id``, only that
    account's log and objects (the inbox queue is shared). Failures are logged and
    counted, and left for the next run."""
    deadline = time.monotonic() + budget_s
    result = Followups()
    try:
        result.logs_written = write_logs(user_id=user_id)
    except Exception as exc:
        result.errors += 1
        logger.warning("deletions log not written; retried later", extra={"error": type(exc).__name__})
    objects = delete_objects(deadline, user_id=user_id)
    result.objects_deleted, result.prefixes_done = objects.objects_deleted, objects.prefixes_done
    result.errors += objects.errors
    if time.monotonic() < deadline:
        result.inbox_rows_scrubbed = scrub_inbox(deadline)
    result.complete = result.errors == 0 and time.monotonic() < deadline
    if with_pending:
        result.pending = dict(db.one_row(db.execute(PENDING, idempotent=True)))
    return result


# --- Export archives -------------------------------------------------------------------


def expire_exports(limit: int = 100) -> int:
    """Delete the archives of exports past their expiry and mark them 'expired'; how
    many. The exports bucket's lifecycle rule is the backstop."""
    from common import storage
    from common.config import settings

    with db.transaction() as conn:
        rows = conn.execute(EXPIRED_EXPORTS, {"limit": limit}).fetchall()
        if not rows:
            return 0
        bucket = settings().require("EXPORTS_BUCKET")
        keys: list[ObjectIdentifierTypeDef] = [{"Key": row["object_key"]} for row in rows]
        answer = storage.s3().delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        if errors := answer.get("Errors"):
            raise ObjectDeletionFailed(f"S3 refused {len(errors)} deletions ({errors[0].get('Code')})")
        conn.execute(MARK_EXPIRED, {"ids": [row["id"] for row in rows]})
    return len(rows)
