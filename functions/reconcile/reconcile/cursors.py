"""How far reconcile has read, per provider (``reconcile_cursors``, migration 0014)."""

from __future__ import annotations

from common import db

GET = "SELECT position FROM reconcile_cursors WHERE provider = %(provider)s"
PUT = """
INSERT INTO reconcile_cursors (provider, position) VALUES (%(provider)s, %(position)s)
ON CONFLICT (provider) DO UPDATE SET position = EXCLUDED.position, updated_at = now()
"""


def get(provider: str) -> int | None:
    row = db.execute(GET, {"provider": provider}, idempotent=True).fetchone()
    return None if row is None else int(row["position"])


def put(provider: str, position: int) -> None:
    db.execute(PUT, {"provider": provider, "position": position})
