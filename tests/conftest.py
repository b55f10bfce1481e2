"""Test harness: a fresh Postgres database per session (from DATABASE_URL, else the
embedded server), a moto S3 server with the three buckets, a fake OpenAI server, and
handlers invoked from template.yaml as Lambda invokes them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from devkit import fake_openai, migrations, postgres, s3

# Settings every test process runs with; set before any `common` module reads them.
TEST_ENV = {
    "STAGE": "test",
    "JWT_SECRET": "test-jwt-secret-0123456789abcdef",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_METRICS_NAMESPACE": "BackendTests",
    "POWERTOOLS_SERVICE_NAME": "tests",
    "POWERTOOLS_DEV": "0",
}
os.environ.update(TEST_ENV)
for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(name, None)

#: Tables emptied between tests that ask for a clean database; the catalog seeded by
#: migrations (tools, products, prices) is kept.
MUTABLE_TABLES = (
    "users", "pairs", "webhook_inbox", "cache_entries", "rate_limit_windows",
    "idempotency_records", "audit_log", "account_object_deletions", "account_inbox_scrubs",
    "reconcile_cursors", "revenuecat_claims",
)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = os.environ.get("DATABASE_URL") or postgres.embedded_url()
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(server, name)
    migrations.apply(url)
    os.environ["DATABASE_URL"] = url
    yield url
    from common import db

    db.reset()
    postgres.drop_database(server, name)
    os.environ["DATABASE_URL"] = server if server != url else ""


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(MUTABLE_TABLES)} RESTART IDENTITY CASCADE")
    yield database_url


@pytest.fixture
def behind_proxy(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The layer as deployed behind RDS Proxy: DATABASE_PROXY_HOST set (to the test
    server's own host, so the connection still works), settings and connection fresh."""
    from psycopg.conninfo import conninfo_to_dict

    from common import config, db

    monkeypatch.setenv("DATABASE_PROXY_HOST", str(conninfo_to_dict(database_url).get("host") or "127.0.0.1"))
    config.settings.cache_clear()
    db.reset()
    yield
    db.reset()
    monkeypatch.delenv("DATABASE_PROXY_HOST")
    config.settings.cache_clear()


@pytest.fixture(params=["direct", "behind_proxy"])
def connection_mode(request: pytest.FixtureRequest) -> str:
    """Both ways the layer connects: directly (named prepared statements) and behind RDS
    Proxy (none)."""
    if request.param == "behind_proxy":
        request.getfixturevalue("behind_proxy")
    return str(request.param)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = s3.start_server()
    endpoint = server.endpoint
    os.environ.update(s3.environment(endpoint))
    s3.create_buckets(endpoint)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def _openai_server() -> Iterator[fake_openai.FakeOpenAI]:
    fake = fake_openai.FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def openai_fake(_openai_server: fake_openai.FakeOpenAI, monkeypatch: pytest.MonkeyPatch):
    """The fake OpenAI server, configured as the SDK's base URL with a test key."""
    _openai_server.reset()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-local-0000000000")
    monkeypatch.setenv("OPENAI_BASE_URL", _openai_server.base_url)
    return _openai_server


@pytest.fixture
def log_text() -> Iterator[Callable[[], str]]:
    """What the functions log during the test, as one string (the redacted JSON lines)."""
    import io

    from common.observability import logger

    handler = logger.registered_handler
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield stream.getvalue
    handler.setStream(previous)
