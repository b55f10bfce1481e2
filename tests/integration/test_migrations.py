"""Migrations: applying twice is a no-op, and a fresh database gets the same schema."""

import subprocess
import sys
import uuid

import psycopg

from devkit import ROOT, migrations, postgres

SCHEMA_QUERY = """
SELECT table_name, column_name, data_type, is_nullable, column_default
FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2
"""
CONSTRAINTS_QUERY = """
SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2
"""
INDEXES_QUERY = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"


def _schema(url: str):
    with psycopg.connect(url) as conn:
        return [conn.execute(q).fetchall() for q in (SCHEMA_QUERY, CONSTRAINTS_QUERY, INDEXES_QUERY)]


def test_migrating_twice_is_a_noop(database_url):
    before = _schema(database_url)
    assert migrations.apply(database_url) == []
    assert _schema(database_url) == before


def test_script_migrates_an_empty_database_to_the_same_schema(database_url):
    server = postgres.with_database(database_url, "postgres")
    name = f"mig_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(server, name)
    try:
        out = subprocess.run([sys.executable, str(ROOT / "scripts" / "migrate"), "--database-url", url],
                             capture_output=True, text=True, check=True)
        assert "applied" in out.stdout
        again = subprocess.run([sys.executable, str(ROOT / "scripts" / "migrate"), "--database-url", url],
                               capture_output=True, text=True, check=True)
        assert "up to date" in again.stdout
        assert _schema(url) == _schema(database_url)
    finally:
        postgres.drop_database(server, name)
