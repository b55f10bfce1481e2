"""Postgres access: one psycopg 3 connection per warm container.

The connection is made lazily on first use (never at import), reused across
invocations, and re-made when it was found broken. Each function names itself through
``application_name``; ``statement_timeout`` is a startup parameter, so nothing is ever
``SET`` on the session (RDS Proxy would pin it).

Parameter binding: psycopg's server-side binding (extended query protocol) is kept
because values never mix into SQL text. Automatic *named* prepared statements
(``DB_PREPARE_THRESHOLD``, ``Settings.prepare_threshold``) follow ``DATABASE_PROXY_HOST``
unless set: on a direct connection a statement run a second time is prepared (the
server then skips parsing and planning it); behind RDS Proxy they are off
(``prepare_threshold=None``), because they are session state, which the proxy answers
by pinning the client to one backend. Unnamed statements do not pin.

Failures, and what each costs the caller:
- a kept connection that the server closed while it sat idle (a failover, a proxy's idle
  timeout, ``pg_terminate_backend``) is noticed before anything is sent on it (the
  server's goodbye is waiting on the socket) and replaced: nothing ran, nothing is lost;
- a server that vanished without a word (a host gone, a network partition) is detected by
  TCP keepalives and ``tcp_user_timeout`` within ``DB_DEAD_PEER_TIMEOUT_S`` seconds,
  instead of hanging until the Lambda timeout;
- any of these, or a server refusing connections, is an outage (``is_outage``): the HTTP
  layer answers 503 with Retry-After and the caller or the provider retries.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from common.config import require_secret, settings

if TYPE_CHECKING:  # psycopg costs ~170 ms to import: loaded on first connection instead
    import psycopg

_local = threading.local()


def _connect() -> psycopg.Connection[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    s = settings()
    name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or s.POWERTOOLS_SERVICE_NAME
    dead_peer_s = s.DB_DEAD_PEER_TIMEOUT_S
    # Through RDS Proxy (DATABASE_PROXY_HOST) the URL's credentials and database stay; only
    # the host changes (a keyword argument overrides the URL's). Every other argument is
    # a startup parameter or a libpq setting: nothing the proxy pins a session for.
    return psycopg.connect(
        require_secret("DATABASE_URL"),
        host=s.DATABASE_PROXY_HOST or None,  # None: the URL's host
        autocommit=True,
        row_factory=dict_row,
        prepare_threshold=s.prepare_threshold(),  # None behind RDS Proxy: see the module doc
        connect_timeout=s.DB_CONNECT_TIMEOUT_S,
        application_name=name,
        options=f"-c statement_timeout={s.DB_STATEMENT_TIMEOUT_MS}",
        # A peer that stops answering: unacknowledged data fails after tcp_user_timeout,
        # and an idle wait (a long statement) is probed from a third of the budget on.
        # libpq ignores these on a Unix socket (the embedded server locally).
        keepalives=1,
        keepalives_idle=max(1, dead_peer_s // 3),
        keepalives_interval=max(1, dead_peer_s // 6),
        keepalives_count=3,
        tcp_user_timeout=dead_peer_s * 1000,
    )


def _closed_while_idle(conn: psycopg.Connection[Any]) -> bool:
    """True when the server has spoken on an idle connection.

    An idle session receives nothing unless the server is going away: its termination
    notice (``AdminShutdown``) or the end of the stream is then waiting on the socket.
    Polling costs no round trip, unlike a ``SELECT 1``; psycopg offers no such check
    (its pool pings), so it is written here. Anything unexpected counts as closed: a
    spare reconnect is cheap, a statement sent to a dead backend is a failed request.
    """
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except Exception:
        return True


# libpq's CONNECTION_BAD and PQTRANS_IDLE (psycopg.pq.ConnStatus.BAD,
# psycopg.pq.TransactionStatus.IDLE), compared on the libpq connection itself: psycopg's
# closed/broken/info properties wrap the same two calls, and cost ~3 us per statement
# between round trips (a sixth of a cache read's client time).
_CONNECTION_BAD = 1
_PQTRANS_IDLE = 0


def _thread_connection() -> psycopg.Connection[dict[str, Any]]:
    conn: psycopg.Connection[dict[str, Any]] | None = getattr(_local, "conn", None)
    if conn is not None:
        pgconn = conn.pgconn
        # BAD: closed by us or found broken; idle: nothing in flight, so a closed socket
        # would be waiting to be read.
        if pgconn.status != _CONNECTION_BAD and (
            pgconn.transaction_status != _PQTRANS_IDLE or not _closed_while_idle(conn)
        ):
            return conn
        conn.close()
    conn = _connect()
    _local.conn = conn
    return conn


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is unreachable or failing for now (connection
    refused or lost, server shutting down or starting, too many connections, a timeout,
    a deadlock): a 503 and a retry, not a bug. Needs no import of psycopg."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.OperationalError)


def connection() -> psycopg.Connection[dict[str, Any]]:
    """This thread's connection, made on first use and re-made after a failure.

    Lambda runs one invocation at a time per container, so one connection per thread is
    one per container there; tests and the local runner use threads.
    """
    return _thread_connection()


def reset() -> None:
    """Close this thread's connection (tests, and after settings change)."""
    conn = getattr(_local, "conn", None)
    _local.conn = _local.hot_cursor = None
    if conn is not None:
        conn.close()


@contextmanager
def transaction(
    connect: Callable[[], psycopg.Connection[dict[str, Any]]] = connection,
) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A transaction on this thread's connection: commits on success, rolls back on error.

    If the kept connection turns out dead when the transaction begins (the server
    restarted, an idle timeout), nothing has been sent yet, so the transaction is begun
    again on a new connection. A connection that breaks later makes the error propagate
    (the caller, or the provider's retry, decides what next); the next call reconnects.
    """
    import psycopg

    with ExitStack() as stack:
        conn = connect()  # a failure to connect at all propagates as it is
        try:
            stack.enter_context(conn.transaction())
        except psycopg.OperationalError:
            if not conn.broken:
                raise
            conn = connect()
            stack.enter_context(conn.transaction())
        yield conn


def execute_on(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> psycopg.Cursor[dict[str, Any]]:
    """Run one statement on the caller's connection (inside its transaction), rows as
    dicts whatever that connection's own row factory."""
    from psycopg.rows import dict_row

    return conn.cursor(row_factory=dict_row).execute(sql, params)


def one_row(cursor: psycopg.Cursor[dict[str, Any]]) -> dict[str, Any]:
    """The row of a statement that always returns one (an aggregate, an upsert with
    RETURNING): none at all is a bug, raised as one."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the statement returned no row")
    return row


def hot_row(sql: str, params: Any = None, *, idempotent: bool = False,
            prepared_sql: str | None = None) -> dict[str, Any] | None:
    """``execute(sql, params, idempotent=...).fetchone()`` for a statement on a request's
    hot path (a cache read or write), on a cursor kept per connection (making one per
    call costs ~15 us); no cursor is handed out, so no caller can hold it across another
    call. ``prepared_sql``: the statement to run instead where the connection prepares
    statements (no RDS Proxy in the path), when that allows a cheaper form.

    Where named prepared statements are on (a direct connection), the server-side path:
    the statement is prepared on its second run. Where they are off (behind RDS Proxy)
    the statement goes as one simple-protocol query, its values bound on the client by
    psycopg (``ClientCursor``: psycopg's literal quoting for the connection's encoding;
    nothing is ever formatted into SQL by hand) instead of Parse/Bind/Describe/Execute of
    an unnamed statement (~40 us cheaper here, docs/cache.md): no session state either,
    so the proxy does not pin.
    """
    conn = connection()
    try:
        return _run_hot(conn, sql, params, prepared_sql)
    except Exception as exc:  # is_outage: no import of psycopg on the hot path
        if not (idempotent and is_outage(exc) and conn.broken):
            raise
        return _run_hot(connection(), sql, params, prepared_sql)


def _run_hot(conn: psycopg.Connection[dict[str, Any]], sql: str, params: Any,
             prepared_sql: str | None) -> dict[str, Any] | None:
    # The kept cursor, with the connection it belongs to and whether that prepares.
    kept: tuple[psycopg.Connection[dict[str, Any]], psycopg.Cursor[dict[str, Any]], bool] | None
    kept = getattr(_local, "hot_cursor", None)
    if kept is None or kept[0] is not conn:
        import psycopg

        prepared = conn.prepare_threshold is not None
        kept = conn, (conn.cursor() if prepared else psycopg.ClientCursor(conn)), prepared
        _local.hot_cursor = kept
    _, cursor, prepared = kept
    return cursor.execute(prepared_sql if prepared and prepared_sql else sql, params).fetchone()


def execute(sql: str, params: Any = None, *, idempotent: bool = False) -> psycopg.Cursor[dict[str, Any]]:
    """Run one statement in autocommit mode.

    With ``idempotent=True`` (reads, upserts that may safely run twice) a statement that
    failed because the kept connection had died is run once more on a new connection.
    """
    import psycopg

    conn = connection()
    try:
        return conn.execute(sql, params)
    except psycopg.OperationalError:
        if not (idempotent and conn.broken):
            raise
        return connection().execute(sql, params)
