"""SQL migrations (shared/migrations) applied with yoyo-migrations."""

from __future__ import annotations

from typing import Any

from devkit import ROOT

MIGRATIONS_DIR = ROOT / "shared" / "migrations"


def _yoyo_uri(database_url: str) -> str:
    # yoyo picks its psycopg 3 backend from the URI scheme.
    scheme, rest = database_url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgres", "postgresql") else database_url


def read() -> Any:
    """Every migration, read and parsed.

    Parsing (yoyo splits each SQL file into statements) needs no database, so a caller
    can do it while waiting for something else (the restore: while objects download)."""
    from yoyo import read_migrations

    migrations = read_migrations(str(MIGRATIONS_DIR))
    for migration in migrations:
        migration.load()
    return migrations


def _up_to(migrations: Any, to: str | None) -> Any:
    """``migrations`` up to and including ``to`` (all of them when None)."""
    if to is None:
        return migrations
    ids = [m.id for m in migrations]
    if to not in ids:
        raise SystemExit(f"unknown migration {to!r}; known: {', '.join(ids)}")
    return migrations[: ids.index(to) + 1]


def apply(database_url: str, *, to: str | None = None, parsed: Any = None) -> list[str]:
    """Apply pending migrations (up to and including ``to``); return the ids applied.
    ``parsed``: what ``read()`` returned, so that they are not parsed again."""
    from yoyo import get_backend

    backend = get_backend(_yoyo_uri(database_url))
    migrations = _up_to(parsed if parsed is not None else read(), to)
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def applied(database_url: str) -> list[str]:
    """Ids of the migrations applied to the database, in order."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(_yoyo_uri(database_url))
    done = backend.get_applied_migration_hashes()
    return [m.id for m in read_migrations(str(MIGRATIONS_DIR)) if m.hash in done]
