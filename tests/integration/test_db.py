"""The connection helper against a real Postgres: lazy, reused, re-made after breaking."""

import os

import psycopg
import pytest

from common import db


@pytest.fixture(autouse=True)
def fresh_connection(database_url):
    db.reset()
    yield
    db.reset()


def _kill(pid: int, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_connection_is_lazy_and_reused():
    # Given no connection yet, when two transactions run
    with db.transaction() as conn:
        first = conn.info.backend_pid
    with db.transaction() as conn:
        second = conn.info.backend_pid
    # Then they share one server session
    assert first == second


def test_broken_connection_is_recreated_on_next_transaction(database_url):
    # Given a warm connection whose server session was killed while idle
    with db.transaction() as conn:
        old_pid = conn.info.backend_pid
    _kill(old_pid, database_url)
    # When the next invocation opens a transaction
    with db.transaction() as conn:
        new_pid = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
    # Then it runs on a new session, transparently
    assert new_pid != old_pid


def test_broken_connection_is_recreated_for_idempotent_statements(database_url):
    old_pid = db.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
    _kill(old_pid, database_url)
    new_pid = db.execute("SELECT pg_backend_pid() AS pid", idempotent=True).fetchone()["pid"]
    assert new_pid != old_pid


def test_failure_inside_transaction_rolls_back(clean_db):
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO users (id) VALUES (gen_random_uuid())")
        raise RuntimeError("boom")
    assert db.execute("SELECT count(*) AS n FROM users").fetchone()["n"] == 0


def test_session_settings_come_from_startup_parameters(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "checkout")
    db.reset()
    row = db.execute("SELECT current_setting('application_name') AS app, "
                     "current_setting('statement_timeout') AS timeout").fetchone()
    assert row == {"app": "checkout", "timeout": "10s"}


def _prepared() -> list[str]:
    """The session's named prepared statements (this query itself never prepared)."""
    rows = db.connection().execute("SELECT statement FROM pg_prepared_statements", prepare=False)
    return [row["statement"] for row in rows]


def _set_prepare_threshold(monkeypatch, value: str) -> None:
    from common import config

    monkeypatch.setenv("DB_PREPARE_THRESHOLD", value)
    config.settings.cache_clear()
    db.reset()


@pytest.fixture
def restore_settings():
    from common import config

    yield
    config.settings.cache_clear()
    db.reset()


def test_no_named_prepared_statements_behind_the_proxy(behind_proxy):
    # RDS Proxy pins sessions holding prepared statements: none may be created.
    for _ in range(10):
        db.execute("SELECT 1 + %s AS n", (1,))
        db.hot_row("SELECT 2 + %s AS n", (1,))
    assert db.connection().prepare_threshold is None
    assert _prepared() == []


def test_a_direct_connection_prepares_a_statement_on_its_second_run():
    # No proxy in the path: a statement seen again is prepared, a one-off never is.
    db.execute("SELECT 1 + %s AS n", (1,))
    assert _prepared() == []
    db.execute("SELECT 1 + %s AS n", (1,))
    assert db.connection().prepare_threshold == 1
    assert _prepared() == ["SELECT 1 + $1 AS n"]


def test_db_prepare_threshold_overrides_the_default(monkeypatch, restore_settings):
    # off: never, even directly connected
    _set_prepare_threshold(monkeypatch, "off")
    for _ in range(3):
        db.execute("SELECT 2 + %s AS n", (1,))
    assert db.connection().prepare_threshold is None
    assert _prepared() == []
    # a number: that threshold (0: at the first run)
    _set_prepare_threshold(monkeypatch, "0")
    db.execute("SELECT 2 + %s AS n", (1,))
    assert _prepared() == ["SELECT 2 + $1 AS n"]


def test_an_explicit_threshold_wins_behind_the_proxy(behind_proxy, monkeypatch, restore_settings):
    # (for a pooler that tracks prepared statements: the operator's call)
    _set_prepare_threshold(monkeypatch, "0")
    db.execute("SELECT 3 + %s AS n", (1,))
    assert _prepared() == ["SELECT 3 + $1 AS n"]


def test_hot_row_binds_values_like_execute(connection_mode, database_url):
    # Either path (simple protocol behind the proxy, prepared directly): the same values
    # back (quotes, backslashes, unicode, NUL refused alike), and a dead connection
    # replaced for an idempotent statement.
    for _ in range(2):  # the second run is prepared on a direct connection
        for value in ["o'r\\x; DROP TABLE users; --", "é", "%s", None, 42]:
            assert db.hot_row("SELECT %s AS v", (value,)) == db.execute("SELECT %s AS v", (value,)).fetchone()
        with pytest.raises(psycopg.DataError):
            db.hot_row("SELECT %s::text AS v", ("a\x00b",))
        assert db.hot_row("SELECT %(n)s::int + 1 AS n", {"n": 1}) == {"n": 2}
        assert db.hot_row("SELECT 1 AS n WHERE false") is None
    prepared = _prepared()
    if connection_mode == "direct":
        assert "SELECT $1::int + 1 AS n" in prepared
    else:
        assert prepared == []
    old_pid = db.hot_row("SELECT pg_backend_pid() AS pid")["pid"]
    _kill(old_pid, database_url)
    assert db.hot_row("SELECT pg_backend_pid() AS pid", idempotent=True)["pid"] != old_pid


def test_hot_row_runs_prepared_sql_only_where_statements_are_prepared(connection_mode):
    row = db.hot_row("SELECT 'plain' AS v", prepared_sql="SELECT 'prepared' AS v")
    assert row == {"v": "prepared" if connection_mode == "direct" else "plain"}


def test_unreachable_database_raises_operational_error(monkeypatch):
    # Given a database URL nobody answers at
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/none")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_S", "1")
    from common import config

    config.settings.cache_clear()
    db.reset()
    # Then opening a transaction fails with the driver's own error, for callers to map to 5xx
    with pytest.raises(psycopg.OperationalError), db.transaction():
        pass
    config.settings.cache_clear()


def test_a_proxy_host_replaces_the_urls_host(monkeypatch, database_url):
    # Given DATABASE_URL naming a host that does not exist, and the proxy endpoint
    # (DatabaseProxyEndpoint in the template) naming the real server
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from common import config

    params = conninfo_to_dict(os.environ["DATABASE_URL"])
    real_host = params.get("host") or "127.0.0.1"
    monkeypatch.setenv("DATABASE_URL", make_conninfo(**{**params, "host": "db.invalid"}))
    monkeypatch.setenv("DATABASE_PROXY_HOST", real_host)
    config.settings.cache_clear()
    db.reset()
    try:
        # Then the functions connect through it, with the URL's user and database
        row = db.execute("SELECT current_user AS u, current_database() AS d").fetchone()
        assert row == {"u": params.get("user") or "postgres", "d": params["dbname"]}
    finally:
        db.reset()
        config.settings.cache_clear()


def test_the_session_keeps_no_state_a_proxy_pins_for(clean_db, behind_proxy):
    """RDS Proxy pins a client to one database connection when a statement changes session
    state (SET or set_config, PREPARE, session advisory locks, LISTEN, temporary tables,
    DISCARD). After a request's kinds of work (a cache miss with its lease, a transaction,
    reads), the session has none of it: its settings came in the startup packet
    (pg_settings.source 'client', where a SET says 'session')."""
    _a_requests_work()
    row = db.execute("""
        SELECT (SELECT count(*) FROM pg_prepared_statements) AS prepared,
               (SELECT count(*) FROM pg_locks
                 WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks,
               (SELECT count(*) FROM pg_listening_channels()) AS listening,
               pg_my_temp_schema() = 0 AS no_temp_schema,
               (SELECT array_agg(DISTINCT source ORDER BY source) FROM pg_settings
                 WHERE name IN ('statement_timeout', 'application_name')) AS sources,
               (SELECT count(*) FROM pg_settings WHERE source = 'session') AS set_in_session
    """).fetchone()
    assert row == {"prepared": 0, "locks": 0, "listening": 0, "no_temp_schema": True,
                   "sources": ["client"], "set_in_session": 0}


def test_a_direct_session_keeps_only_prepared_statements(clean_db):
    # Connected directly, the same work leaves named prepared statements (the point of
    # preparing) and nothing else: the cache write's synchronous_commit off ended with
    # its own transaction.
    _a_requests_work()
    row = db.execute("""
        SELECT (SELECT count(*) FROM pg_prepared_statements) AS prepared,
               current_setting('synchronous_commit') AS synchronous_commit,
               (SELECT count(*) FROM pg_settings WHERE source = 'session') AS set_in_session
    """).fetchone()
    assert row["prepared"] > 0
    assert row["synchronous_commit"] == "on"
    assert row["set_in_session"] == 0


def _a_requests_work() -> None:
    """A cache miss with its lease, hits and writes, a transaction."""
    from common import cache

    k = cache.key("t", "pinning")
    for _ in range(2):  # twice: what a direct connection prepares
        cache.get_or_compute(k, 60, lambda: {"v": 1})
        cache.set(k, {"v": 2}, 60)
        with db.transaction() as conn:
            conn.execute("SELECT 1")


def test_the_libpq_states_the_connection_check_compares_are_psycopgs():
    assert db._CONNECTION_BAD == psycopg.pq.ConnStatus.BAD
    assert db._PQTRANS_IDLE == psycopg.pq.TransactionStatus.IDLE
