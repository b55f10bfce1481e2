"""One export archive: a ZIP written straight into a multipart upload, in flat memory.

Layout (README.txt inside says the same)::

    README.txt            what each file holds
    account.json          the profile: id, email, created_at, balance
    credits_ledger.json   every change of the balance
    orders.json           web orders (Stripe, Paymob)
    payments.json         their payments (ids, amounts, states)
    entitlements.json     subscriptions and what they give
    journal_entries.json  the user's own entries, with their analyses
    journal_attachments.json  their voice and photo notes: transcripts, descriptions
    generations.json      image edits and analyses: tool, parameters, results (metadata)
    pair.json             the current pair, the user's invites (no codes), the pair audit
    media/...             every object under the user's prefix: uploads/ (photos),
                          journal/ (voice and photo notes), generations/ (edited images)
    manifest.json         counts and the export's time, written last

Memory stays flat whatever the user's size: database rows are streamed (psycopg's
``stream``, one row at a time, inside one REPEATABLE READ READ ONLY transaction, so the
JSON files are one consistent snapshot), each JSON file is written row by row into its
ZIP entry, media are copied from S3 in 1 MiB chunks, and the ZIP goes out through
``common.storage.MultipartUpload`` in parts of EXPORT_PART_SIZE_MB (zipfile writes to a
stream it cannot seek, with data descriptors). Media are stored, not deflated (they are
compressed already); JSON is deflated. The archive's SHA-256 is computed on the way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from common import db, storage
from common.config import settings as layer_settings

FORMAT = 1
CHUNK = 1024 * 1024

BEGIN_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

PROFILE = """
SELECT id AS user_id, email, created_at, credits AS balance FROM users WHERE id = %(user_id)s
"""

#: (file, query): every row of the user, streamed in this order.
TABLES: tuple[tuple[str, str], ...] = (
    ("credits_ledger.json", """
        SELECT id, amount, kind, reason, source, ref, reservation_id, shortfall, created_at
          FROM credit_ledger WHERE user_id = %(user_id)s ORDER BY id"""),
    ("orders.json", """
        SELECT id, product_id, provider, status, amount_minor, currency, provider_order_id, failure_code,
               paid_at, refunded_minor, period_end, subscription_id, subscription_status,
               cancel_at_period_end, created_at, updated_at
          FROM orders WHERE user_id = %(user_id)s ORDER BY created_at, id"""),
    ("payments.json", """
        SELECT pay.id, pay.order_id, pay.provider, pay.provider_transaction_id, pay.kind, pay.status,
               pay.amount_minor, pay.currency, pay.created_at, pay.updated_at
          FROM payments pay JOIN orders o ON o.id = pay.order_id
         WHERE o.user_id = %(user_id)s ORDER BY pay.created_at, pay.id"""),
    ("entitlements.json", """
        SELECT entitlement_id, source, active, expires_at, will_renew, store, product_id, period_type,
               updated_at
          FROM entitlements WHERE user_id = %(user_id)s ORDER BY entitlement_id, source"""),
    ("journal_entries.json", """
        SELECT id, pair_id, title, content, visibility, analysis, analyzed_at, created_at, updated_at
          FROM journal_entries WHERE author_id = %(user_id)s ORDER BY created_at, id"""),
    ("journal_attachments.json", """
        SELECT id, entry_id, kind, content_type, object_key, bytes, duration_s, transcript, language,
               description, described_by, created_at
          FROM journal_attachments WHERE author_id = %(user_id)s ORDER BY created_at, id"""),
    ("generations.json", """
        SELECT id, tool_id, tool_version, model, params, status, source_key, result_key, result_content_type,
               result, result_bytes, width, height, credits_charged, error_code, created_at
          FROM generations WHERE user_id = %(user_id)s ORDER BY created_at, id"""),
)

PAIR = """
SELECT me.pair_id, partner.user_id AS partner_id, me.joined_at
  FROM pair_members me
  JOIN pair_members partner ON partner.pair_id = me.pair_id AND partner.user_id <> me.user_id
 WHERE me.user_id = %(user_id)s
"""

INVITES = """
SELECT id, created_at, expires_at, used_at, pair_id, revoked_at
  FROM pair_invites WHERE inviter_id = %(user_id)s ORDER BY created_at
"""

PAIR_AUDIT = """
SELECT id, pair_id, action, actor_id, entry_id, details, created_at
  FROM pair_audit WHERE visible_to @> ARRAY[%(user_id)s]::uuid[] ORDER BY id
"""

#: The buckets whose ``users/<id>/`` prefix holds the user's media (their keys go on
#: from there: uploads/..., journal/..., generations/...).
MEDIA_BUCKETS = ("UPLOADS_BUCKET", "GENERATIONS_BUCKET")

README = """Your data, exported {at}.

account.json          your profile: id, email, when you joined, your credit balance
credits_ledger.json   every change of your credit balance (grants, spends, refunds)
orders.json           your web orders (Stripe, Paymob) and their state
payments.json         the payments of those orders (provider ids, amounts, states)
entitlements.json     your subscriptions and what they give (a pair shares them)
journal_entries.json  your journal entries, with their analyses
journal_attachments.json  your voice and photo notes: transcripts and descriptions
generations.json      your image edits and face analyses: tool, parameters, result
pair.json             your current pair, your invites (never their codes), the pair's audit trail
media/                your files: uploaded photos (uploads/), voice and photo notes (journal/),
                      edited images (generations/)
manifest.json         what this archive holds

Dates are ISO 8601 in UTC; amounts of money are in the currency's minor unit (cents).
"""


@dataclass(frozen=True)
class Built:
    key: str
    size: int
    sha256: str
    files: int


def build(export_id: UUID, user_id: UUID, *, part_size: int) -> Built:
    """Write the user's archive to ``users/<id>/exports/<export id>.zip`` in the exports
    bucket. On any error the upload is aborted (nothing is left behind)."""
    import zipfile

    bucket = layer_settings().require("EXPORTS_BUCKET")
    key = storage.user_key(user_id, "exports", f"{export_id}.zip")
    counts: dict[str, int] = {}
    with (storage.MultipartUpload(bucket, key, content_type="application/zip", part_size=part_size) as upload,
          zipfile.ZipFile(upload, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf):
        now = datetime.now(UTC)
        _write(zf, "README.txt", README.format(at=now.isoformat(timespec="seconds")).encode())
        with db.transaction() as conn:
            conn.execute(BEGIN_SNAPSHOT)
            params = {"user_id": user_id}
            profile = conn.execute(PROFILE, params).fetchone()
            _write(zf, "account.json", _json(profile))
            for name, query in TABLES:
                counts[name] = _write_rows(zf, name, _stream(conn, query, params))
            pair = {"current": conn.execute(PAIR, params).fetchone(),
                    "invites": conn.execute(INVITES, params).fetchall(),
                    "audit": conn.execute(PAIR_AUDIT, params).fetchall()}
            _write(zf, "pair.json", _json(pair))
        media = _copy_media(zf, user_id)
        manifest = {"format": FORMAT, "export_id": str(export_id), "user_id": str(user_id),
                    "exported_at": now.isoformat(), "rows": counts, "media": media}
        _write(zf, "manifest.json", _json(manifest))
    result = upload.result
    assert result is not None
    return Built(key=key, size=result.size, sha256=result.sha256, files=len(counts) + 4 + media["count"])


def discard(key: str) -> None:
    """Delete an archive nobody will fetch (its export is gone)."""
    storage.s3().delete_object(Bucket=layer_settings().require("EXPORTS_BUCKET"), Key=key)


# --- helpers ---------------------------------------------------------------------------


def _stream(conn: Any, query: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    from psycopg.rows import dict_row

    yield from conn.cursor(row_factory=dict_row).stream(query, params)


def _write(zf: Any, name: str, data: bytes) -> None:
    with zf.open(name, "w", force_zip64=True) as out:
        out.write(data)


def _write_rows(zf: Any, name: str, rows: Iterator[dict[str, Any]]) -> int:
    """A JSON array written one row at a time; how many rows."""
    n = 0
    with zf.open(name, "w", force_zip64=True) as out:
        out.write(b"[")
        for row in rows:
            out.write((b",\n" if n else b"\n") + _json(row))
            n += 1
        out.write(b"\n]\n" if n else b"]\n")
    return n


def _copy_media(zf: Any, user_id: UUID) -> dict[str, int]:
    """Every object under the user's prefix in the media buckets, copied in chunks, as
    ``media/<its key after the prefix>``."""
    import zipfile

    client = storage.s3()
    count = size = 0
    prefix = f"{storage.USER_PREFIX}/{user_id}/"
    seen: set[str] = set()
    for setting in MEDIA_BUCKETS:
        bucket = layer_settings().require(setting)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = f"media/{item['Key'][len(prefix):]}"
                if name in seen:  # the same key in both buckets: keep both
                    name = f"media/{setting.split('_')[0].lower()}/{item['Key'][len(prefix):]}"
                seen.add(name)
                info = zipfile.ZipInfo(name, date_time=item["LastModified"].timetuple()[:6])
                info.compress_type = zipfile.ZIP_STORED
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"]
                with body, zf.open(info, "w", force_zip64=True) as out:
                    for chunk in body.iter_chunks(CHUNK):
                        out.write(chunk)
                        size += len(chunk)
                count += 1
    return {"count": count, "bytes": size}


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    raise TypeError(f"cannot export a {type(value).__name__}")


def _json(value: Any) -> bytes:
    return json.dumps(value, default=_default, ensure_ascii=False).encode()
