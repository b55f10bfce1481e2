"""SQL migrations (shared/migrations) applied with yoyo-migrations."""

from __future__ import annotations

from typing import Any

from devkit import ROOT

MIGRATIONS_DIR = ROOT / "shared" / "migrations"


def _yoyo_uri(database_url: str) -> str:
    # yoyo picks its psycopg 3 backend from the URI scheme.
    scheme, rest = database_url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgres", "postgresql") else database_url


def read(*, to: str | None = None) -> Any:
    """The migrations up to and including ``to`` (all without it), read and parsed.

    Parsing (yoyo splits each SQL file into statements) needs no database, so a caller
    can do it while waiting for something else (the restore: while objects download)."""
    from yoyo import read_migrations

    migrations = read_migrations(str(MIGRATIONS_DIR))
    if to is not None:
        ids = [m.id for m in migrations]
        if to not in ids:
            raise SystemExit(f"unknown migration {to!r}; known: {', '.join(ids)}")
        migrations = migrations[: ids.index(to) + 1]
    for migration in migrations:
        migration.load()
    return migrations


def apply(database_url: str, *, to: str | None = None, parsed: Any = None) -> list[str]:
    """Apply pending migrations (up to and including ``to``, or the ones ``read``
    returned); return the ids applied."""
    from yoyo import get_backend

    backend = get_backend(_yoyo_uri(database_url))
    migrations = parsed if parsed is not None else read(to=to)
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
