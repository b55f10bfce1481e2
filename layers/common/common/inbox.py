"""The webhook inbox: every delivery of a provider event, recorded in the transaction
that applies it.

The pattern every payment webhook follows::

    with db.transaction() as conn:
        if inbox.record(conn, "stripe", event_id, headers=..., body=raw, signature_ok=True,
                        event_type=kind):
            apply_event(conn, event)              # grants, entitlements, orders...
            inbox.mark(conn, "stripe", event_id, "processed")

The inbox row and the event's effects commit or roll back together. A second delivery
of the same event waits on the first one's row lock (``UNIQUE (provider, event_id)``)
and then sees it finished, so an event takes effect once, however often it arrives.

``record`` returns True when the caller must process the event: its first delivery, or
a redelivery of one whose earlier attempt ended ``failed``, ``unmatched`` or ``rejected``
(nothing was applied then: an error rolls the effects back, unmatched and rejected mean
no effect). For a
processed, ignored or parked event it returns False and only counts the attempt. Always ``mark``
before committing; mark a delivery that failed its signature check ``failed`` (never
``ignored``), so the genuine delivery of that event id is still processed.

Headers are stored with sensitive values redacted (authorization, signatures, cookies,
tokens); the raw body is kept as the exact bytes received (``bytea``), for audit and
replays: a signed body that holds what text columns cannot (``\u0000``) is kept as
signed. ``common.webhooks.deliver`` runs the record, apply, mark pattern for every
provider.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from common import db

if TYPE_CHECKING:
    import psycopg

STATUSES = frozenset({"received", "processed", "ignored", "unmatched", "failed", "parked", "rejected"})
#: Statuses after which a redelivery is only counted. 'parked': a delivery for a deleted
#: account, kept without its body, never applied (``park``). 'rejected' (a signed event
#: that fails a binding: not ours) is not among them: it took no effect, so a redelivery
#: is checked again.
DONE = ("processed", "ignored", "parked")
MAX_ERROR_CHARS = 1000

#: Header names redacted besides observability's SENSITIVE_KEYS (provider-specific
#: signature headers, proxy credentials, session tokens).
_SENSITIVE_HEADER = re.compile(r"auth|cookie|signature|hmac|token|secret|api[-_]?key|session", re.I)

# --- Queries ---------------------------------------------------------------------------

#: A new event is inserted as 'received'. A redelivery counts an attempt; if the event is
#: not done it becomes 'received' again, with this delivery's headers and body, for the
#: caller to process. The conflict path waits while another transaction holds the row.
RECORD = """
INSERT INTO webhook_inbox AS w (provider, event_id, event_type, headers, body, signature_ok)
VALUES (%(provider)s, %(event_id)s, %(event_type)s, %(headers)s, %(body)s, %(signature_ok)s)
ON CONFLICT (provider, event_id) DO UPDATE SET
    attempts     = w.attempts + 1,
    status       = CASE WHEN w.status IN ('processed', 'ignored', 'parked') THEN w.status ELSE 'received' END,
    event_type   = CASE WHEN w.status IN ('processed', 'ignored', 'parked') THEN w.event_type
                        ELSE coalesce(EXCLUDED.event_type, w.event_type) END,
    headers      = CASE WHEN w.status IN ('processed', 'ignored', 'parked') THEN w.headers
                        ELSE EXCLUDED.headers END,
    body         = CASE WHEN w.status IN ('processed', 'ignored', 'parked') THEN w.body
                        ELSE EXCLUDED.body END,
    signature_ok = CASE WHEN w.status IN ('processed', 'ignored', 'parked') THEN w.signature_ok
                        ELSE EXCLUDED.signature_ok END
RETURNING status
"""

MARK = """
UPDATE webhook_inbox
SET status = %(status)s, processed_at = now(), last_error = %(error)s
WHERE provider = %(provider)s AND event_id = %(event_id)s
RETURNING id
"""

UNMATCHED = """
SELECT id, provider, event_id, event_type, headers, body, signature_ok, status, attempts,
       last_error, received_at, processed_at
FROM webhook_inbox
WHERE provider = %(provider)s AND status = 'unmatched'
ORDER BY received_at
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class InboxEvent:
    id: int
    provider: str
    event_id: str
    event_type: str | None
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    status: str
    attempts: int
    last_error: str | None
    received_at: datetime
    processed_at: datetime | None


def record(conn: psycopg.Connection[Any], provider: str, event_id: str, *, headers: Mapping[str, Any],
           body: str | bytes, signature_ok: bool, event_type: str | None = None) -> bool:
    """Record a delivery inside the caller's transaction; True if it must be processed
    now (see the module docstring), False for a duplicate of a finished event."""
    from psycopg import pq
    from psycopg.types.json import Jsonb

    if conn.info.transaction_status != pq.TransactionStatus.INTRANS:
        raise RuntimeError("inbox.record must run inside the transaction that applies the event")
    if not provider or not event_id:
        raise ValueError("provider and event_id are required")
    if isinstance(body, str):
        body = body.encode("utf-8", errors="surrogatepass")
    params = {
        "provider": provider,
        "event_id": str(event_id),
        "event_type": event_type,
        "headers": Jsonb(redact_headers(headers)),
        "body": bytes(body),
        "signature_ok": bool(signature_ok),
    }
    status: str = db.one_row(db.execute_on(conn, RECORD, params))["status"]  # an upsert: always a row
    return status == "received"


def mark(conn: psycopg.Connection[Any], provider: str, event_id: str, status: str, *,
         error: str | None = None) -> bool:
    """Set the outcome of this delivery (and ``processed_at``). ``error`` is stored
    scrubbed of secret values and token-shaped strings, and shortened; pass a short
    description (an error code, an exception class), not a payload. False if the event
    was never recorded."""
    from common.observability import scrub

    if status not in STATUSES:
        raise ValueError(f"unknown inbox status {status!r}")
    if error is not None:
        error = scrub(str(error))[:MAX_ERROR_CHARS]
    params = {"provider": provider, "event_id": str(event_id), "status": status, "error": error}
    return conn.execute(MARK, params).fetchone() is not None


def park(provider: str, event_id: str, *, event_type: str | None = None) -> None:
    """Keep a delivery for a deleted account as 'parked': after its transaction rolled
    back on the database's refusal (``errors.is_account_deleted``), in a transaction of
    its own. Its body and headers are not kept (they hold the deleted user's data); the
    provider's event id is enough to look it up there. A redelivery is only counted."""
    with db.transaction() as conn:
        record(conn, provider, event_id, headers={}, body="", signature_ok=True, event_type=event_type)
        mark(conn, provider, event_id, "parked", error="account deleted")


def unmatched(provider: str, limit: int = 100) -> list[InboxEvent]:
    """Events parked as 'unmatched' (e.g. a payment whose order was not there yet), oldest
    first. Replay one by passing its stored headers and body to ``record`` again (it
    returns True for them) in the transaction that processes it."""
    rows = db.execute(UNMATCHED, {"provider": provider, "limit": limit}, idempotent=True).fetchall()
    return [InboxEvent(**row) for row in rows]


def redact_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """Header names lower-cased, values of credentials and signatures replaced, and what
    jsonb cannot hold (NUL, unpaired surrogates) replaced by U+FFFD."""
    from common.observability import REDACTED, SENSITIVE_KEYS
    from common.safejson import clean_text

    out = {}
    for name, value in headers.items():
        key = clean_text(str(name).lower())
        sensitive = key in SENSITIVE_KEYS or _SENSITIVE_HEADER.search(key)
        out[key] = REDACTED if sensitive else clean_text(str(value))
    return out
