"""Journal entries in Postgres: named queries and the functions that run them.

Visibility is the database's: reads on behalf of a user go through
``journal_entries_visible_to(viewer)`` (migration 0008), and a trigger refuses an entry
naming a pair its author is not in. Writes are scoped to the author in their WHERE
clause. Entry text is passed as bound parameters only, never formatted into SQL or logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from common import db
from common.errors import ACCOUNT_DELETED_CONSTRAINT, AccountDeleted, Forbidden

COLUMNS = ("id, author_id, pair_id, title, content, visibility, analysis, analyzed_at, "
           "created_at, updated_at")

PAIR_OF_USER = "SELECT pair_id FROM pair_members WHERE user_id = %(user_id)s"

INSERT_ENTRY = f"""
INSERT INTO journal_entries (author_id, pair_id, title, content, visibility, analysis, analyzed_at)
VALUES (%(author_id)s, %(pair_id)s, %(title)s, %(content)s, %(visibility)s, %(analysis)s,
        CASE WHEN %(analysed)s THEN now() END)
RETURNING {COLUMNS}
"""

#: The one read on behalf of a user: only entries the database says they may see.
VISIBLE_ENTRY = f"SELECT {COLUMNS} FROM journal_entries_visible_to(%(viewer)s) WHERE id = %(id)s"

#: An entry its author may change (re-analyse).
OWN_ENTRY = f"SELECT {COLUMNS} FROM journal_entries WHERE id = %(id)s AND author_id = %(author_id)s"

SET_ANALYSIS = f"""
UPDATE journal_entries
   SET analysis = %(analysis)s, analyzed_at = now(), updated_at = now()
 WHERE id = %(id)s AND author_id = %(author_id)s
RETURNING {COLUMNS}
"""


DELETE_ENTRY = "DELETE FROM journal_entries WHERE id = %(id)s AND author_id = %(author_id)s RETURNING id"

# --- attachments (migration 0013): readable by whoever may read their entry ---

ATTACHMENT_COLUMNS = ("a.id, a.entry_id, a.kind, a.content_type, a.object_key, a.declared_bytes, a.sha256, "
                      "a.bytes, a.duration_s, a.transcript, a.language, a.description, a.described_by, "
                      "a.created_at")

VISIBLE_ATTACHMENTS = f"""
SELECT {ATTACHMENT_COLUMNS}
  FROM journal_attachments a
  JOIN journal_entries_visible_to(%(viewer)s) e ON e.id = a.entry_id
 WHERE a.entry_id = %(entry_id)s
 ORDER BY a.created_at, a.id
"""

#: The author's attachments of one entry, locked for a change (analysis, deletion).
OWN_ATTACHMENTS = f"""
SELECT {ATTACHMENT_COLUMNS}
  FROM journal_attachments a
 WHERE a.entry_id = %(entry_id)s AND a.author_id = %(author_id)s
 ORDER BY a.created_at, a.id
"""

#: One more attachment, unless the entry has its share already (the entry row is locked,
#: so two requests can't both take the last place).
INSERT_ATTACHMENT = """
WITH entry AS (
    SELECT id FROM journal_entries WHERE id = %(entry_id)s AND author_id = %(author_id)s FOR UPDATE
)
INSERT INTO journal_attachments (id, entry_id, author_id, kind, content_type, object_key, declared_bytes)
SELECT %(id)s, entry.id, %(author_id)s, %(kind)s, %(content_type)s, %(object_key)s, %(declared_bytes)s
  FROM entry
 WHERE (SELECT count(*) FROM journal_attachments WHERE entry_id = %(entry_id)s) < %(max_attachments)s
RETURNING id
"""

SET_ATTACHMENT_CHECKED = """
UPDATE journal_attachments
   SET sha256 = %(sha256)s, bytes = %(bytes)s, duration_s = %(duration_s)s, updated_at = now()
 WHERE id = %(id)s AND author_id = %(author_id)s
"""

SET_ATTACHMENT_TEXT = """
UPDATE journal_attachments
   SET transcript = %(transcript)s, language = %(language)s, description = %(description)s,
       described_by = %(described_by)s, updated_at = now()
 WHERE id = %(id)s AND author_id = %(author_id)s AND sha256 = %(sha256)s
"""

DELETE_ATTACHMENT = """
DELETE FROM journal_attachments
 WHERE id = %(id)s AND entry_id = %(entry_id)s AND author_id = %(author_id)s
RETURNING object_key
"""


class NotPairMember(Forbidden):
    code = "not_pair_member"


class EntryWriteFailed(RuntimeError):
    """A write the database refused, described without the row (which holds the text)."""


@contextmanager
def _no_row_in_errors() -> Iterator[None]:
    """Postgres reports a violated constraint with "DETAIL: Failing row contains (...)",
    the entry's text included, and psycopg puts that detail in the exception's message,
    where a traceback would log it. Re-raise such errors with their SQLSTATE and
    constraint only."""
    import psycopg

    try:
        yield
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
        if exc.diag.constraint_name == "journal_entries_author_in_pair":  # left the pair meanwhile
            raise NotPairMember("you are not a member of this pair") from None
        if exc.diag.constraint_name == ACCOUNT_DELETED_CONSTRAINT:  # deleted meanwhile: 401
            raise AccountDeleted("this account has been deleted") from None
        raise EntryWriteFailed(f"journal entry write refused: SQLSTATE {exc.sqlstate}, "
                               f"constraint {exc.diag.constraint_name}") from None


def pair_of(user_id: UUID) -> UUID | None:
    """The pair the user is in (a user is in at most one), or None."""
    row = db.execute(PAIR_OF_USER, {"user_id": user_id}, idempotent=True).fetchone()
    return row["pair_id"] if row else None


def insert(author_id: UUID, *, pair_id: UUID | None, title: str | None, content: str, visibility: str,
           analysis: dict[str, Any] | None) -> dict[str, Any]:
    from psycopg.types.json import Jsonb

    params = {"author_id": author_id, "pair_id": pair_id, "title": title, "content": content,
              "visibility": visibility, "analysis": Jsonb(analysis) if analysis is not None else None,
              "analysed": analysis is not None}
    with _no_row_in_errors(), db.transaction() as conn:
        return db.one_row(conn.execute(INSERT_ENTRY, params))


def visible(viewer: UUID, entry_id: UUID) -> dict[str, Any] | None:
    return db.execute(VISIBLE_ENTRY, {"viewer": viewer, "id": entry_id}, idempotent=True).fetchone()


def own(author_id: UUID, entry_id: UUID) -> dict[str, Any] | None:
    return db.execute(OWN_ENTRY, {"author_id": author_id, "id": entry_id}, idempotent=True).fetchone()


def delete(author_id: UUID, entry_id: UUID) -> bool:
    """Delete the author's entry (its attachment rows go with it: ON DELETE CASCADE)."""
    return db.execute(DELETE_ENTRY, {"id": entry_id, "author_id": author_id}).fetchone() is not None


def visible_attachments(viewer: UUID, entry_id: UUID) -> list[dict[str, Any]]:
    return db.execute(VISIBLE_ATTACHMENTS, {"viewer": viewer, "entry_id": entry_id},
                      idempotent=True).fetchall()


def own_attachments(author_id: UUID, entry_id: UUID) -> list[dict[str, Any]]:
    return db.execute(OWN_ATTACHMENTS, {"author_id": author_id, "entry_id": entry_id},
                      idempotent=True).fetchall()


def insert_attachment(author_id: UUID, entry_id: UUID, *, attachment_id: UUID, kind: str, content_type: str,
                      object_key: str, declared_bytes: int, max_attachments: int) -> bool:
    """False when the entry has ``max_attachments`` already."""
    params = {"id": attachment_id, "entry_id": entry_id, "author_id": author_id, "kind": kind,
              "content_type": content_type, "object_key": object_key, "declared_bytes": declared_bytes,
              "max_attachments": max_attachments}
    with db.transaction() as conn:
        return conn.execute(INSERT_ATTACHMENT, params).fetchone() is not None


def set_attachment_checked(author_id: UUID, attachment_id: UUID, *, sha256: str, size: int,
                           duration_s: float | None) -> None:
    db.execute(SET_ATTACHMENT_CHECKED, {"id": attachment_id, "author_id": author_id, "sha256": sha256,
                                        "bytes": size, "duration_s": duration_s}, idempotent=True)


def set_attachment_text(author_id: UUID, attachment_id: UUID, *, sha256: str, transcript: str | None,
                        language: str | None, description: str | None, described_by: str) -> None:
    """Only while the attachment still holds the content it was made from (``sha256``)."""
    db.execute(SET_ATTACHMENT_TEXT, {"id": attachment_id, "author_id": author_id, "sha256": sha256,
                                     "transcript": transcript, "language": language,
                                     "description": description, "described_by": described_by},
               idempotent=True)


def delete_attachment(author_id: UUID, entry_id: UUID, attachment_id: UUID) -> str | None:
    """The deleted attachment's object key, or None when there was none of the author's."""
    row = db.execute(DELETE_ATTACHMENT, {"id": attachment_id, "entry_id": entry_id,
                                         "author_id": author_id}).fetchone()
    return row["object_key"] if row else None


def set_analysis(author_id: UUID, entry_id: UUID, analysis: dict[str, Any]) -> dict[str, Any] | None:
    from psycopg.types.json import Jsonb

    params = {"author_id": author_id, "id": entry_id, "analysis": Jsonb(analysis)}
    with _no_row_in_errors():
        return db.execute(SET_ANALYSIS, params, idempotent=True).fetchone()
