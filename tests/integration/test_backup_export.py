"""backup-export and scripts/restore on a real Postgres and a moto S3 server.

The round trip seeds every table of a database of its own (unicode, NULLs next to empty
strings, CSV-hostile text, JSON, a text larger than one upload part), exports it with the
handler as Lambda invokes it (COPY binary, tables in parallel), restores the run into a
fresh database and compares every table row for row, plus keys, indexes, triggers and
sequences. Also: the parallel workers read the one snapshot, CSV runs (and format-1
manifests) still restore, an empty table has no object, a corrupted object stops the
restore before anything is loaded, non-empty targets are refused, a run without a
manifest is not "latest", redaction, retention, the deadline and the lock.
"""

import base64
import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from common import db, ledger, storage
from devkit import ROOT, lambdas, migrations, postgres, restore

CSV_HOSTILE = [
    'comma, "quotes", and a \\ backslash',
    "line one\nline two\r\nline three",
    "\\.",  # COPY's end-of-data marker on a line of its own
    "\\N",  # text that looks like NULL in text format
    "",  # empty string, distinct from NULL
    "  padded\t",
    "emoji 🎨🙂, RTL עברית ,العربية, combining é, zero\u200bwidth",
]


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def s3(s3_endpoint):
    storage.reset()
    yield
    storage.reset()


def _new_stage():
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def stage(monkeypatch):
    """A test that runs its own backup writes under a stage of its own: backups/<stage>/..."""
    name = _new_stage()
    monkeypatch.setenv("STAGE", name)
    return name


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    return os.environ["BACKUPS_BUCKET"]


@pytest.fixture(scope="module")
def server(database_url):
    server = postgres.with_database(database_url, "postgres")
    made = []

    def fresh(role):
        name = f"{role}_{uuid.uuid4().hex[:10]}"
        made.append(name)
        return postgres.create_database(server, name)

    yield fresh
    for name in made:
        postgres.drop_database(server, name)


@pytest.fixture(scope="module")
def source(server):
    """A database of its own, migrated and seeded once for the module; the functions
    (common.db, ledger) are pointed at it."""
    url = server("bsrc")
    migrations.apply(url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", url)
        db.reset()
        seed(url)
        db.reset()
        yield url
    db.reset()


@pytest.fixture(autouse=True)
def _source_env(source, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", source)
    db.reset()
    yield
    db.reset()


@pytest.fixture(scope="module")
def exported(source, bucket, s3_endpoint):
    """The source backed up once by the handler: ``(stage, summary, manifest)``."""
    name = _new_stage()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", source)
        mp.setenv("STAGE", name)
        storage.reset()
        summary = invoke({"retention": True})
    return name, summary, manifest_of(bucket, name, summary["run"])


def function_module(name):
    """A module of backup-export, imported as Lambda would (its CodeUri on sys.path)."""
    import importlib

    lambdas.load_handler("backup-export")
    return importlib.import_module(f"backup_export.{name}")


def invoke(event=None, timeout_s=120):
    try:
        return lambdas.invoke("backup-export", event if event is not None else {}, timeout_s=timeout_s)
    finally:
        db.reset()


# --- seed data -------------------------------------------------------------------------


def seed(url):
    """Rows in every table; balances only through the ledger."""
    big = base64.b64encode(os.urandom(9 * 1024 * 1024)).decode()  # ~12 MB, incompressible: 2 parts
    alice, bob, carol = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, email) VALUES (%s, %s), (%s, NULL), (%s, %s)",
                     (alice, "zoë.ñandú@exämple.com", bob, carol, 'quote"comma,@example.com'))
    for user_id in (alice, bob, carol):
        ledger.grant(user_id, 50, reason="welcome 🎁", source="test", ref=f"welcome:{user_id}")
    settled = ledger.reserve(alice, 5, idempotency_key="gen-1")
    ledger.settle(settled.id)
    refunded = ledger.reserve(alice, 3, idempotency_key="gen-2")
    ledger.refund(refunded.id)
    ledger.reserve(bob, 2, idempotency_key="gen-3")  # still open
    ledger.clawback(carol, 80, reason="refund", source="stripe", ref="ch_1")  # takes 50, shortfall 30

    with psycopg.connect(url, autocommit=True) as conn:
        x = conn.execute
        pair = x("INSERT INTO pairs DEFAULT VALUES RETURNING id").fetchone()[0]
        x("INSERT INTO pair_members (pair_id, user_id) VALUES (%s, %s), (%s, %s)", (pair, alice, pair, bob))
        analysis = json.dumps({"mood": "joyful 😊", "tags": ["a", "b"], "score": 0.125,
                               "nested": {"n": None}})
        for i, text in enumerate([*CSV_HOSTILE, big]):
            shared = i % 2 == 1
            x("""INSERT INTO journal_entries (author_id, pair_id, title, content, visibility, analysis,
                                              analyzed_at)
                 VALUES (%s, %s, %s, %s, %s, %s, %s)""",
              (alice, pair if shared else None, None if i % 3 == 0 else f"title {i} ✍", text,
               "shared" if shared else "private", analysis if shared else None,
               datetime.now(UTC) if shared else None))
        entry = x("SELECT id FROM journal_entries WHERE author_id = %s ORDER BY id LIMIT 1",
                  (alice,)).fetchone()[0]
        x("""INSERT INTO journal_attachments (entry_id, author_id, kind, content_type, object_key,
                                              declared_bytes, sha256, bytes, duration_s, transcript, language,
                                              described_by)
             VALUES (%s, %s, 'audio', 'audio/webm', %s, 4096, %s, 4000, 12.5, %s, 'english', 'whisper-1')""",
          (entry, alice, f"users/{alice}/journal/{entry}/note.webm", "ab" * 32, CSV_HOSTILE[1]))
        x("""INSERT INTO tools (id, name, kind, credit_cost, prompt_template, params_schema, description)
             VALUES ('backup_test_tool', 'Tést tool', 'ai', 2, 'Make it {style} ✨', '{"type": "object"}',
                     '')""")
        x("""UPDATE tools SET prompt_template = 'Make it {style}, v2', prompt_version = 2
             WHERE id = 'backup_test_tool'""")
        x("""INSERT INTO generations (user_id, tool_id, tool_version, params, source_key, result_key, status,
                                      credits_charged, reservation_id, cache_key)
             VALUES (%s, 'backup_test_tool', 2, '{"style": "noir"}', 'users/a/src.jpg', 'users/a/out.png',
                     'succeeded', 5, %s, 'img:abc')""", (alice, settled.id))
        x("""INSERT INTO generations (user_id, tool_id, params, source_key, status, error_code)
             VALUES (%s, 'backup_test_tool', '{}', 'users/a/src.jpg', 'failed', 'provider_error')""",
          (alice,))
        x("""INSERT INTO products (id, kind, name, credits)
             VALUES ('backup_pack', 'credit_pack', 'Pack «10»', 10)""")
        x("""INSERT INTO product_prices (product_id, provider, currency, amount_minor)
             VALUES ('backup_pack', 'stripe', 'EUR', 199)""")
        x("""INSERT INTO entitlements (user_id, entitlement_id, source, expires_at, last_event_at, store,
                                       period_type)
             VALUES (%s, 'premium', 'revenuecat', now() + interval '30 days', now(), 'APP_STORE', 'NORMAL'),
                    (%s, 'premium', 'stripe', NULL, now(), NULL, NULL)""", (alice, bob))
        order = x("""INSERT INTO orders (user_id, product_id, provider, status, amount_minor, currency,
                                         provider_order_id, paid_at)
                     VALUES (%s, 'credits_50', 'paymob', 'paid', 25000, 'EGP', '9001', now()) RETURNING id""",
                  (carol,)).fetchone()[0]
        x("""INSERT INTO payments (order_id, provider, provider_transaction_id, status, amount_minor,
                                   currency, raw)
             VALUES (%s, 'paymob', 'tx-1', 'paid', 25000, 'EGP', %s)""",
          (order, json.dumps({"obj": {"billing_data": {"first_name": "Zoë", "email": "z@example.com"},
                                      "amount_cents": 25000, "success": True, "tags": [], "none": None}})))
        inbox_id = x("""INSERT INTO webhook_inbox (provider, event_id, event_type, headers, body,
                                                   signature_ok, status, last_error)
                        VALUES ('revenuecat', 'evt-1', 'INITIAL_PURCHASE',
                                '{"content-type": "application/json"}', %s, true, 'unmatched', NULL)
                        RETURNING id""",
                     (json.dumps({"event": {"app_user_id": "$RCAnonymousID:abc",
                                            "note": CSV_HOSTILE[1]}}).encode(),)
                     ).fetchone()[0]
        x("""INSERT INTO webhook_inbox (provider, event_id, body, signature_ok, status, last_error)
             VALUES ('stripe', 'evt-2', %s, false, 'failed', 'SignatureError')""",
          (CSV_HOSTILE[0].encode() + b"\x00\xff",))  # bytes no text column could hold
        x("""INSERT INTO idempotency_records (id, status, expires_at, in_progress_expiry_ms, response_data)
             VALUES ('client#abc', 'COMPLETED', now() + interval '1 day', NULL, '{"ok": true}')""")
        x("""INSERT INTO audit_log (actor, action, subject, details)
             VALUES ('backup-test', 'seed', NULL, '{"why": "round trip", "list": [1, 2.5, "x"]}')""")
        x("INSERT INTO revenuecat_aliases (app_user_id, user_id) VALUES ('$RCAnonymousID:abc', %s)", (alice,))
        x("INSERT INTO revenuecat_pending (app_user_id, inbox_id) VALUES ('$RCAnonymousID:zzz', %s)",
          (inbox_id,))
        x("""INSERT INTO revenuecat_transfers (event_id, from_user, to_user, transferred_at)
             VALUES ('evt-t', %s, %s, now())""", (bob, carol))
        x("INSERT INTO revenuecat_refunds (transaction_id, user_id, refunded_at) VALUES ('GPA.1', %s, now())",
          (carol,))
        x("INSERT INTO revenuecat_currencies (code, credits_per_unit) VALUES ('GEMS', 3)")
        # reconcile (migration 0014): a cursor, a claimed store transaction
        x("INSERT INTO reconcile_cursors (provider, position) VALUES ('stripe', 1767225600)")
        x("INSERT INTO revenuecat_claims (transaction_id, event_id) VALUES ('GPA.1', 'evt-claim')")
        # migration 0017: a user whose app's sync found RevenueCat down
        x("INSERT INTO revenuecat_sync_queue (user_id) VALUES (%s)", (bob,))
        # accounts (migration 0012): an invite, an export, and a deleted account (its tombstone,
        # the log, and the follow-ups it queued: objects to delete, the inbox to scrub)
        x("""INSERT INTO pair_invites (inviter_id, code_sha256, expires_at)
             VALUES (%s, sha256('a code'::bytea), now() + interval '1 day')""", (carol,))
        x("""INSERT INTO pair_audit (action, actor_id, details, visible_to)
             VALUES ('invite_created', %s, '{"invite_id": "x"}', ARRAY[%s]::uuid[])""", (carol, carol))
        x("INSERT INTO account_exports (user_id) VALUES (%s)", (bob,))
        dave = uuid.uuid4()
        x("INSERT INTO users (id, email) VALUES (%s, 'dave@example.com')", (dave,))
        x("SELECT delete_account(%s)", (dave,))
        # left out of backups: disposable
        x("INSERT INTO cache_entries (key, value, expires_at) VALUES ('k', '1', now() + interval '1 day')")
        x("INSERT INTO rate_limit_windows (subject, route, window_start, hits) VALUES ('u', '/', now(), 1)")


# --- comparison ------------------------------------------------------------------------


def table_rows(url, table):
    with psycopg.connect(url) as conn:
        return sorted(r[0] for r in conn.execute(f'SELECT t::text FROM "{table}" t'))


SCHEMA_OF = """
SELECT 'constraint' AS kind, conname AS name, pg_get_constraintdef(oid) AS def
  FROM pg_constraint WHERE conrelid = %(t)s::regclass
UNION ALL
SELECT 'index', indexrelid::regclass::text, pg_get_indexdef(indexrelid)
  FROM pg_index WHERE indrelid = %(t)s::regclass
UNION ALL
SELECT 'trigger', tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = %(t)s::regclass AND NOT tgisinternal
ORDER BY 1, 2
"""


def schema_of(url, table):
    with psycopg.connect(url) as conn:
        return conn.execute(SCHEMA_OF, {"t": table}).fetchall()


def manifest_of(bucket, stage, run):
    return json.loads(storage.read(bucket, f"backups/{stage}/{run}/manifest.json", max_bytes=1 << 20))


# --- tests -----------------------------------------------------------------------------


def quiet_restore(bucket, stage, run, target, **kw):
    return restore.restore(bucket, stage, run, target, progress=False, log=lambda _: None, **kw)


def test_round_trip_restores_every_table_row_for_row(source, server, bucket, exported):
    # Given a database with rows in every table, backed up as the scheduler invokes it
    stage, summary, manifest = exported

    # Then one complete run was written: every table but the cache and rate-limit windows,
    # each with its row count, sizes and SHA-256, the migration and server versions
    assert summary["status"] == "complete" and summary["retention"]["deleted_runs"] == []
    names = [t["name"] for t in manifest["tables"]]
    assert not {"cache_entries", "cache_leases", "rate_limit_windows"} & set(names)
    assert not any(n.startswith("_yoyo") or n == "yoyo_lock" for n in names)
    empty = [t["name"] for t in manifest["tables"] if t["rows"] == 0]
    assert not empty, f"seed these tables in test_backup_export.seed: {empty}"
    assert manifest["migrations"] == migrations.applied(source)
    assert manifest["migration_version"] == manifest["migrations"][-1]
    assert manifest["server_version_num"] >= 130000 and manifest["redacted"] is False
    for parent, child in [("users", "credit_reservations"), ("credit_reservations", "generations"),
                          ("tools", "tool_versions"), ("tool_versions", "generations"),
                          ("orders", "payments"), ("webhook_inbox", "revenuecat_pending")]:
        assert names.index(parent) < names.index(child)
    assert manifest["format"] == 2 and manifest["compression"] == {"format": "zstd", "level": 1}
    for table in manifest["tables"]:
        assert table["key"] == f"backups/{stage}/{summary['run']}/{table['name']}.bin.zst"
        assert table["copy"] == "binary" and table["data_bytes"] > 0
        head = storage.head(bucket, table["key"])
        assert head["ServerSideEncryption"] == "AES256" and head["ContentLength"] == table["bytes"]
    journal = next(t for t in manifest["tables"] if t["name"] == "journal_entries")
    assert journal["bytes"] > storage.DEFAULT_PART_SIZE  # went up as a multipart upload

    # When it is restored into a fresh database
    target = server("btgt")
    report = quiet_restore(bucket, stage, "latest", target)

    # Then every table is equal row for row, with its keys, indexes and enabled triggers
    assert report.run == summary["run"] and report.rows == sum(t["rows"] for t in manifest["tables"])
    for table in names:
        assert table_rows(target, table) == table_rows(source, table), table
        assert schema_of(target, table) == schema_of(source, table), table
    for disposable in ("cache_entries", "cache_leases", "rate_limit_windows"):
        assert table_rows(target, disposable) == [], disposable
    assert migrations.applied(target) == manifest["migrations"]
    with psycopg.connect(target, autocommit=True) as conn:
        # identity sequences continue after the restored ids; the ledger still sums up
        top = conn.execute("SELECT max(id) FROM webhook_inbox").fetchone()[0]
        new = conn.execute("""INSERT INTO webhook_inbox (provider, event_id, body, signature_ok)
                              VALUES ('stripe', 'after-restore', '{}', true) RETURNING id""").fetchone()[0]
        assert new > top
        assert conn.execute("""SELECT count(*) FROM users u WHERE credits <>
                               (SELECT coalesce(sum(amount), 0) FROM credit_ledger l WHERE l.user_id = u.id)
                            """).fetchone()[0] == 0


def zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def unzstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def copy_run(bucket, exported, edit=None):
    """A copy of the module's run under a new stage, its manifest passed through ``edit``."""
    stage, summary, manifest = exported
    copy_stage = _new_stage()
    copy = json.loads(json.dumps(manifest))
    for table in copy["tables"]:
        original = storage.read(bucket, table["key"], max_bytes=1 << 26)
        table["key"] = table["key"].replace(f"backups/{stage}/", f"backups/{copy_stage}/")
        storage.put(bucket, table["key"], original, "application/zstd")
    if edit:
        edit(copy)
    storage.put(bucket, f"backups/{copy_stage}/{summary['run']}/manifest.json", json.dumps(copy).encode(),
                "application/json")
    return copy_stage, copy


def test_every_table_is_read_from_the_one_snapshot_whichever_worker_reads_it(source, bucket, stage, exported):
    from psycopg.rows import dict_row

    export = function_module("export")
    # Given two tables to export with two workers: the leader takes the larger
    # (journal_entries), and a write to the other commits before the second worker's
    # transaction begins
    keep = {"journal_entries", "cache_entries"}
    every = {t["name"] for t in exported[2]["tables"]} | {"cache_leases", "rate_limit_windows"}
    exclude = frozenset(every - keep)
    first_taken, takers = threading.Event(), []

    def time_left():  # asked as each table is taken
        takers.append(threading.current_thread().name)
        first_taken.set()
        return float("inf")

    def connect():
        assert first_taken.wait(10)
        with psycopg.connect(source, autocommit=True) as other:
            other.execute("INSERT INTO cache_entries (key, value, expires_at) "
                          "VALUES ('written-during-the-export', '1', now() + interval '1 day')")
        return psycopg.connect(source, autocommit=True, row_factory=dict_row)

    options = export.Options(bucket=bucket, stage=stage, exclude=exclude, redact={}, parallel_tables=2)
    try:
        # When the export runs
        with psycopg.connect(source, autocommit=True, row_factory=dict_row) as conn, conn.transaction():
            manifest = export.export(conn, options, connect=connect, time_left=time_left)

        # Then the second worker exported cache_entries, as of the leader's snapshot: the
        # seeded row, not the one committed meanwhile
        assert takers == ["MainThread", "backup-table-0"]
        cache = next(t for t in manifest["tables"] if t["name"] == "cache_entries")
        assert cache["rows"] == 1
        data = unzstd(storage.read(bucket, cache["key"], max_bytes=1 << 20))
        assert b"written-during-the-export" not in data
        assert [t["name"] for t in manifest["tables"]] == ["cache_entries", "journal_entries"]
    finally:
        with psycopg.connect(source, autocommit=True) as other:
            other.execute("DELETE FROM cache_entries WHERE key = 'written-during-the-export'")


def test_a_worker_that_cannot_connect_leaves_its_tables_to_the_others(source, bucket, stage, exported):
    from psycopg.rows import dict_row

    export = function_module("export")
    attempts = []

    def connect():
        attempts.append(1)
        if len(attempts) == 1:
            raise psycopg.OperationalError("too many connections")
        return psycopg.connect(source, autocommit=True, row_factory=dict_row)

    options = export.Options(bucket=bucket, stage=stage, exclude=frozenset(), redact={}, parallel_tables=3)
    with psycopg.connect(source, autocommit=True, row_factory=dict_row) as conn, conn.transaction():
        manifest = export.export(conn, options, connect=connect)
    assert len(attempts) == 2
    want = {t["name"]: t["rows"] for t in exported[2]["tables"]}
    assert {t["name"]: t["rows"] for t in manifest["tables"] if t["name"] in want} == want


@pytest.mark.parametrize("copy_format", ["binary", "csv"])
def test_a_copy_the_server_fails_midway_raises_its_error_and_the_connection_stays_usable(source, copy_format):
    export = function_module("export")

    class Sink:
        def write(self, data):
            return len(data)

    # Given a COPY that fails after many rows (binary rows are partly read past psycopg)
    failing = (f"COPY (SELECT CASE WHEN i = 150000 THEN 1 / (i - i) ELSE i END, repeat('x', 100) "
               f"FROM generate_series(1, 200000) i) TO STDOUT (FORMAT {copy_format})")
    with psycopg.connect(source) as conn:
        # Then the server's own error is raised
        with pytest.raises(psycopg.errors.DivisionByZero):
            export.stream_table(conn, failing, Sink(), binary=copy_format == "binary")
        # And the connection goes on
        conn.rollback()
        ok = "COPY (SELECT i FROM generate_series(1, 1000) i) TO STDOUT (FORMAT binary)"
        assert export.stream_table(conn, ok, Sink(), binary=True)[0] == 1000


def test_a_csv_run_and_a_format_1_manifest_still_restore(source, server, bucket, stage, monkeypatch):
    # Given a run exported as CSV (BACKUP_COPY_FORMAT=csv), every table on the function's
    # own connection (BACKUP_PARALLEL_TABLES=1)
    monkeypatch.setenv("BACKUP_COPY_FORMAT", "csv")
    monkeypatch.setenv("BACKUP_PARALLEL_TABLES", "1")
    summary = invoke({"retention": False})
    manifest = manifest_of(bucket, stage, summary["run"])
    names = [t["name"] for t in manifest["tables"]]
    assert manifest["format"] == 2 and {t["copy"] for t in manifest["tables"]} == {"csv"}
    users = next(t for t in manifest["tables"] if t["name"] == "users")
    assert users["key"].endswith("/users.csv.zst")
    csv = unzstd(storage.read(bucket, users["key"], max_bytes=1 << 20))
    assert csv.startswith(b"id,email,") and len(csv) == users["data_bytes"]

    # When it is restored, then every table is equal row for row
    target = server("btgt")
    quiet_restore(bucket, stage, "latest", target)
    for table in names:
        assert table_rows(target, table) == table_rows(source, table), table

    # And the same objects under a manifest as earlier versions wrote it (format 1: CSV,
    # csv_bytes, no copy) restore too
    def as_format_1(manifest):
        manifest.update(format=1, csv={"format": "csv", "header": True, "encoding": "UTF8"})
        for table in manifest["tables"]:
            del table["copy"]
            table["csv_bytes"] = table.pop("data_bytes")

    copy_stage, _ = copy_run(bucket, (stage, summary, manifest), as_format_1)
    target = server("btgt")
    quiet_restore(bucket, copy_stage, "latest", target)
    for table in names:
        assert table_rows(target, table) == table_rows(source, table), table


def test_an_empty_table_gets_no_object_and_restores_empty(source, server, bucket, stage, monkeypatch):
    # Given a run that includes cache_entries (one row) and cache_leases (none)
    monkeypatch.setenv("BACKUP_EXCLUDE_TABLES", "rate_limit_windows")
    summary = invoke({"retention": False})
    by_name = {t["name"]: t for t in manifest_of(bucket, stage, summary["run"])["tables"]}

    # Then the empty table has no object, and the manifest says so
    leases = by_name["cache_leases"]
    assert (leases["rows"], leases["key"], leases["bytes"], leases["sha256"]) == (0, None, 0, None)
    listed = storage.s3().list_objects_v2(Bucket=bucket, Prefix=f"backups/{stage}/")
    assert not [o["Key"] for o in listed["Contents"] if "cache_leases" in o["Key"]]
    assert by_name["cache_entries"]["rows"] == 1

    # When it is restored, the empty table is empty with its keys, the other one is loaded
    target = server("btgt")
    report = quiet_restore(bucket, stage, "latest", target)
    assert ("cache_leases", 0) in [(t.name, t.rows) for t in report.tables]
    assert table_rows(target, "cache_leases") == []
    assert schema_of(target, "cache_leases") == schema_of(source, "cache_leases")
    assert table_rows(target, "cache_entries") == table_rows(source, "cache_entries")


def test_a_corrupted_object_is_detected_before_anything_is_loaded(server, bucket, exported):
    # Given a copy of the run in which one object was replaced (by valid zstd) afterwards
    copy_stage, copy = copy_run(bucket, exported)
    users = next(t for t in copy["tables"] if t["name"] == "users")
    storage.put(bucket, users["key"], zstd(b"id,email\n"), "application/zstd")
    target = server("btgt")

    # When it is restored, then the restore refuses, naming the object, and the target is
    # untouched (the migrations, parsed meanwhile, were not applied)
    with pytest.raises(restore.CorruptBackup, match=r"users\.bin\.zst"):
        quiet_restore(bucket, copy_stage, "latest", target)
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def test_a_gzip_run_of_earlier_versions_still_restores(source, server, bucket, exported):
    # Given the run re-encoded as earlier versions wrote it (gzip, .csv.gz, the manifest
    # naming gzip), or as BACKUP_COMPRESSION=gzip writes it
    def as_gzip(manifest):
        manifest["compression"] = {"format": "gzip", "level": 1}
        for table in manifest["tables"]:
            body = gzip.compress(unzstd(storage.read(bucket, table["key"], max_bytes=1 << 26)), 1)
            table["key"] = table["key"].replace(".bin.zst", ".bin.gz")
            storage.put(bucket, table["key"], body, "application/gzip")
            table.update(bytes=len(body), sha256=hashlib.sha256(body).hexdigest())

    copy_stage, _ = copy_run(bucket, exported, as_gzip)
    target = server("btgt")
    quiet_restore(bucket, copy_stage, "latest", target)
    assert table_rows(target, "journal_entries") == table_rows(source, "journal_entries")


def test_a_row_count_that_differs_from_the_manifest_rolls_the_load_back(server, bucket, exported):
    def one_more_user(manifest):
        next(t for t in manifest["tables"] if t["name"] == "users")["rows"] += 1

    copy_stage, _ = copy_run(bucket, exported, one_more_user)
    target = server("btgt")
    with pytest.raises(restore.RestoreError, match="users: loaded 5 rows, the manifest says 6"):
        quiet_restore(bucket, copy_stage, "latest", target)
    assert table_rows(target, "users") == [] and table_rows(target, "credit_ledger") == []


def test_a_failing_load_names_the_constraint_but_never_the_data(server, bucket, exported):
    # Given a (checksummed) users object whose two rows share an email
    row = ",secret.person@example.com,0,2026-01-01 00:00:00+00,2026-01-01 00:00:00+00\n"
    csv = f"id,email,credits,created_at,updated_at\n{uuid.uuid4()}{row}{uuid.uuid4()}{row}"
    body = zstd(csv.encode())

    def swap_users(manifest):
        users = next(t for t in manifest["tables"] if t["name"] == "users")
        storage.put(bucket, users["key"], body, "application/zstd")
        users.update(rows=2, bytes=len(body), sha256=hashlib.sha256(body).hexdigest(), copy="csv",
                     data_bytes=len(csv), columns=["id", "email", "credits", "created_at", "updated_at"])

    copy_stage, _ = copy_run(bucket, exported, swap_users)
    target = server("btgt")
    with pytest.raises(restore.RestoreError) as exc:
        quiet_restore(bucket, copy_stage, "latest", target)
    message = str(exc.value)
    assert "re-creating keys and indexes failed" in message and "users_email_key" in message
    assert "secret.person" not in message
    assert table_rows(target, "users") == []


def test_the_cli_restores_latest_refuses_a_non_empty_target_and_force_replaces(source, server, bucket,
                                                                                exported):
    stage, summary, _ = exported
    # Given a newer run that failed (objects but no manifest): latest skips it
    storage.put(bucket, f"backups/{stage}/29990101T000000Z/users.csv.zst", zstd(b"x"),
                "application/zstd")
    assert restore.resolve_run(bucket, stage, "latest") == summary["run"]

    # When scripts/restore runs as an operator would, it restores the complete run
    target = server("btgt")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    command = [sys.executable, str(ROOT / "scripts" / "restore"), "--bucket", bucket, "--stage", stage,
               "--database-url", target, "--no-progress", "--run"]
    out = subprocess.run([*command, "latest"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"restored run {summary['run']}" in out.stdout and "every count matches" in out.stdout
    assert table_rows(target, "users") == table_rows(source, "users")

    # Given the target then changes, a second restore is refused (exit 1), nothing touched
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("INSERT INTO audit_log (actor, action) VALUES ('someone', 'changed it')")
    again = subprocess.run([*command, summary["run"]], capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 1 and "holds data" in again.stderr
    assert table_rows(target, "audit_log") != table_rows(source, "audit_log")

    # With force, the backed-up tables are replaced
    report = quiet_restore(bucket, stage, summary["run"], target, force=True)
    assert report.warnings
    assert table_rows(target, "audit_log") == table_rows(source, "audit_log")


def test_redacted_columns_never_leave_the_database(server, bucket, stage, monkeypatch):
    monkeypatch.setenv("BACKUP_REDACT_COLUMNS",
                       "users.email, journal_entries.content,journal_entries.analysis,payments.raw,"
                       "webhook_inbox.body")
    summary = invoke({"retention": False})
    assert summary["redacted"] is True
    manifest = manifest_of(bucket, stage, summary["run"])
    by_name = {t["name"]: t for t in manifest["tables"]}
    assert by_name["users"]["redacted"] == ["email"]

    def text(name):  # COPY's binary format: text values as UTF-8 between binary lengths
        return unzstd(storage.read(bucket, by_name[name]["key"], max_bytes=1 << 26)).decode(errors="replace")

    users_csv, journal_csv, payments_csv = text("users"), text("journal_entries"), text("payments")
    assert "ñandú" not in users_csv and "redacted:" in users_csv
    assert "line two" not in journal_csv and "joyful" not in journal_csv and "Zoë" not in payments_csv
    inbox_csv = text("webhook_inbox")  # bytea: the redaction's bytes, as they are
    assert "RCAnonymousID" not in inbox_csv and "redacted:" in inbox_csv
    assert "title 1 ✍" in journal_csv  # other columns are kept

    # The redacted backup restores (unique and NOT NULL constraints still hold)
    target = server("btgt")
    quiet_restore(bucket, stage, "latest", target)
    with psycopg.connect(target) as conn:
        emails = [r[0] for r in conn.execute("SELECT email FROM users ORDER BY email")]
    present = [e for e in emails if e is not None]  # bob, and the deleted account's two rows, have none
    assert len(present) == len(set(present)) == 2 and all(e.startswith("redacted:") for e in present)


def test_a_misconfigured_redaction_writes_nothing(bucket, stage, monkeypatch):
    monkeypatch.setenv("BACKUP_REDACT_COLUMNS", "users.emial")
    with pytest.raises(ValueError, match=r"users\.emial"):
        invoke()
    assert storage.s3().list_objects_v2(Bucket=bucket, Prefix=f"backups/{stage}/").get("KeyCount") == 0


def test_a_run_out_of_time_leaves_no_manifest_and_no_parts(bucket, stage, monkeypatch):
    export = function_module("export")
    monkeypatch.setenv("BACKUP_MIN_TIME_LEFT_S", "100")
    with pytest.raises(export.OutOfTime):
        invoke(timeout_s=50)
    listed = storage.s3().list_objects_v2(Bucket=bucket, Prefix=f"backups/{stage}/")
    assert not any(o["Key"].endswith("manifest.json") for o in listed.get("Contents", []))
    uploads = storage.s3().list_multipart_uploads(Bucket=bucket, Prefix=f"backups/{stage}/")
    assert not uploads.get("Uploads")


def test_a_second_run_while_one_holds_the_lock_does_nothing(source, bucket, stage):
    export = function_module("export")
    with psycopg.connect(source, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (export.LOCK_ID,))
        assert invoke()["status"] == "skipped"
    assert storage.s3().list_objects_v2(Bucket=bucket, Prefix=f"backups/{stage}/").get("KeyCount") == 0


def test_retention_deletes_old_runs_but_keeps_the_newest_complete_ones(bucket, stage, monkeypatch):
    retention = function_module("retention")
    # Given complete runs 40, 35 and 2 days old, failed runs 3 days and 1 hour old, and
    # a prefix that is not a run
    now = datetime.now(UTC)

    def fake_run(age, *, complete):
        name = (now - age).strftime("%Y%m%dT%H%M%SZ")
        storage.put(bucket, f"backups/{stage}/{name}/users.csv.gz", b"x", "application/gzip")
        if complete:
            storage.put(bucket, f"backups/{stage}/{name}/manifest.json", b"{}", "application/json")
        return name

    old1 = fake_run(timedelta(days=40), complete=True)
    old2 = fake_run(timedelta(days=35), complete=True)
    recent = fake_run(timedelta(days=2), complete=True)
    failed_old = fake_run(timedelta(days=3), complete=False)
    failed_new = fake_run(timedelta(hours=1), complete=False)
    storage.put(bucket, f"backups/{stage}/not-a-run/readme.txt", b"x", "text/plain")

    # When retention runs after a new backup, keeping the newest 3 complete runs (the new
    # one, recent, old2) and 30 days
    result = retention.apply(bucket, stage, now=now, retention_days=30, keep_runs=3, current=None)
    assert sorted(result["deleted_runs"]) == sorted([failed_old])  # without the new run: 3 complete kept
    fake_run(timedelta(0), complete=True)
    result = retention.apply(bucket, stage, now=now, retention_days=30, keep_runs=3, current=None)

    # Then only the complete run past the keep count and retention, and the old failed run, went
    assert result["deleted_runs"] == [old1]
    listed = storage.s3().list_objects_v2(Bucket=bucket, Prefix=f"backups/{stage}/")
    keys = [o["Key"] for o in listed["Contents"]]
    assert {k.split("/")[2] for k in keys} == {now.strftime("%Y%m%dT%H%M%SZ"), recent, old2, failed_new,
                                               "not-a-run"}


def test_retention_never_deletes_the_newest_complete_runs_however_old():
    retention = function_module("retention")
    now = datetime.now(UTC)
    runs = [retention.Run((now - timedelta(days=d)).strftime("%Y%m%dT%H%M%SZ"), now - timedelta(days=d),
                          [f"x/{d}/manifest.json"]) for d in (100, 200, 300)]
    assert retention.select_expired(runs, now=now, retention_days=30, keep_runs=2) == [runs[2]]
    assert retention.select_expired(runs, now=now, retention_days=30, keep_runs=3) == []
