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


def test_no_named_prepared_statements_are_left_on_the_session():
    # RDS Proxy pins sessions holding prepared statements: none may be created.
    for _ in range(10):
        db.execute("SELECT 1 + %s AS n", (1,))
    assert db.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()["n"] == 0


def test_named_prepared_statements_only_when_configured(monkeypatch):
    # DB_PREPARE_THRESHOLD (no RDS Proxy in the path): statements seen that often are prepared.
    from common import config

    monkeypatch.setenv("DB_PREPARE_THRESHOLD", "0")
    config.settings.cache_clear()
    db.reset()
    try:
        for _ in range(3):
            db.execute("SELECT 2 + %s AS n", (1,))
        assert db.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()["n"] >= 1
    finally:
        monkeypatch.delenv("DB_PREPARE_THRESHOLD")
        config.settings.cache_clear()
        db.reset()



def test_hot_row_binds_values_like_execute_and_leaves_no_session_state(database_url):
    # The simple-protocol path: the same values back (quotes, backslashes, unicode, NUL
    # refused alike), nothing prepared on the session, and a dead connection replaced
    # for an idempotent statement.
    for value in ["o'r\\x; DROP TABLE users; --", "é", "%s", None, 42]:
        assert db.hot_row("SELECT %s AS v", (value,)) == db.execute("SELECT %s AS v", (value,)).fetchone()
    with pytest.raises(psycopg.DataError):
        db.hot_row("SELECT %s::text AS v", ("a\x00b",))
    assert db.hot_row("SELECT %(n)s::int + 1 AS n", {"n": 1}) == {"n": 2}
    assert db.hot_row("SELECT 1 AS n WHERE false") is None
    assert db.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()["n"] == 0
    old_pid = db.hot_row("SELECT pg_backend_pid() AS pid")["pid"]
    _kill(old_pid, database_url)
    assert db.hot_row("SELECT pg_backend_pid() AS pid", idempotent=True)["pid"] != old_pid


def test_hot_row_is_prepared_when_configured(monkeypatch):
    from common import config

    monkeypatch.setenv("DB_PREPARE_THRESHOLD", "0")
    config.settings.cache_clear()
    db.reset()
    try:
        for _ in range(3):
            assert db.hot_row("SELECT 3 + %s AS n", (1,)) == {"n": 4}
        assert db.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()["n"] >= 1
    finally:
        monkeypatch.delenv("DB_PREPARE_THRESHOLD")
        config.settings.cache_clear()
        db.reset()

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


def test_the_session_keeps_no_state_a_proxy_pins_for(clean_db):
    """RDS Proxy pins a client to one database connection when a statement changes session
    state (SET or set_config, PREPARE, session advisory locks, LISTEN, temporary tables,
    DISCARD). After a request's kinds of work (a cache miss with its lease, a transaction,
    reads), the session has none of it: its settings came in the startup packet
    (pg_settings.source 'client', where a SET says 'session')."""
    from common import cache

    cache.get_or_compute(cache.key("t", "pinning"), 60, lambda: {"v": 1})
    with db.transaction() as conn:
        conn.execute("SELECT 1")
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
