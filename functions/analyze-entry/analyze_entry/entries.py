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
        return conn.execute(INSERT_ENTRY, params).fetchone()


def visible(viewer: UUID, entry_id: UUID) -> dict[str, Any] | None:
    return db.execute(VISIBLE_ENTRY, {"viewer": viewer, "id": entry_id}, idempotent=True).fetchone()


def own(author_id: UUID, entry_id: UUID) -> dict[str, Any] | None:
    return db.execute(OWN_ENTRY, {"author_id": author_id, "id": entry_id}, idempotent=True).fetchone()


def set_analysis(author_id: UUID, entry_id: UUID, analysis: dict[str, Any]) -> dict[str, Any] | None:
    from psycopg.types.json import Jsonb

    params = {"author_id": author_id, "id": entry_id, "analysis": Jsonb(analysis)}
    with _no_row_in_errors():
        return db.execute(SET_ANALYSIS, params, idempotent=True).fetchone()
