"""Count round trips to Postgres: libpq's protocol trace on this thread's connections
(``common.db``), as the server sees them. Each exchange ends with the server's
``ReadyForQuery``: one per statement in autocommit, one per BEGIN / COMMIT in a
transaction. Used by tests that bound a hot path's round trips and by benches."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RoundTrips:
    count: int = 0
    messages: list[str] = field(default_factory=list)  # what the client sent, one line per message


@contextmanager
def round_trips() -> Iterator[RoundTrips]:
    """Trace this thread's existing ``common.db`` connections while the block runs; a
    connection made inside the block is an error (its handshake would go uncounted)."""
    import psycopg

    from common import db

    conns = [c for c in _connections(db) if not c.closed]
    result = RoundTrips()
    with tempfile.TemporaryFile() as trace:
        for conn in conns:
            conn.pgconn.trace(trace.fileno())
            conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield result
        finally:
            for conn in conns:
                if not conn.closed:
                    conn.pgconn.untrace()
        trace.seek(0)
        lines = trace.read().decode("utf-8", "replace").splitlines()
    if any(all(c is not old for old in conns) for c in _connections(db)):
        raise AssertionError("a connection was made while counting round trips: warm up first")
    result.count = sum(1 for line in lines if line.split("\t")[2:3] == ["ReadyForQuery"])
    result.messages = [line for line in lines if line.startswith("F\t")]


def _connections(db: Any) -> list[Any]:
    """This thread's connections of ``common.db`` (its thread-local slots)."""
    slots = (getattr(db._local, "conn", None), getattr(db._local, "lock_conn", None))
    return [c for c in slots if c is not None]
