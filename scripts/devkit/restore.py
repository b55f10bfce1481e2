"""Restore a backup-export run into a Postgres database (``scripts/restore``).

The steps, each of which stops the restore with a RestoreError before the target is
changed (1-4) or rolls the load back (5-6):

1. Resolve the run: ``latest`` is the newest run under ``backups/<stage>/`` that has a
   ``manifest.json`` (a run without one failed and is skipped).
2. Refuse a non-empty target (any table holding a row) unless ``force``.
3. Download every object to a work folder (a few at once) and verify its size and
   SHA-256 against the manifest, all of them before anything is loaded (a corrupted or
   truncated object is CorruptBackup). What is loaded is exactly what was verified.
   Meanwhile (from the start) this checkout's migrations are read and parsed.
4. Migrate the target to the manifest's migration version (``devkit.migrations.apply``,
   the same SQL files) and check it has exactly the backup's migrations. (Applied only
   after step 3: a corrupt backup leaves the target untouched.)
5. In one transaction: empty the backed-up tables (migrations seed catalog rows, which
   the backup holds too), disable their user triggers (a trigger that records history on
   insert would duplicate rows the backup already has), drop their keys and indexes,
   ``COPY ... FROM STDIN`` each table in dependency order from its compressed object in
   COPY's binary format or CSV (each table's ``copy``; format-1 manifests are CSV), zstd
   or gzip (the manifest names the codec), an empty table (no object) skipped, check each
   row count against the manifest, re-create the keys and indexes (then the foreign keys,
   which validates every reference), re-enable the triggers and move identity/serial
   sequences past the restored ids. Keys are added after loading as pg_restore does
   it: building an index once is much faster than maintaining it row by row. Then, still
   in that transaction, re-apply the deletions log (``s3://<bucket>/deletions/<stage>/``,
   read before anything is changed): every account deleted since the backup was taken is
   deleted again by the same ``delete_account()`` (docs/account.md), so no restore brings
   a deleted account back.
6. Commit, then ANALYZE the restored tables.

The format it reads is backup-export's (functions/backup-export/backup_export/export.py),
described in docs/housekeeping.md; the round-trip test keeps the two in step.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from devkit import migrations

MANIFEST = "manifest.json"
#: 1: CSV objects, ``csv_bytes``; 2: each table's ``copy`` format (binary or csv) and
#: ``data_bytes``, ``"key": null`` for an empty table.
FORMAT_VERSIONS = (1, 2)
DOWNLOADS = 4  # objects downloaded at once
RUN_FORMAT = "%Y%m%dT%H%M%SZ"
CHUNK = 1024 * 1024
YOYO_TABLES = frozenset({"_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock"})


class RestoreError(Exception):
    """The restore cannot go on; the message says why (the target is left unchanged)."""


class CorruptBackup(RestoreError):
    """An object is missing, or its size or SHA-256 differs from the manifest."""


class TargetNotEmpty(RestoreError):
    """The target database holds data (pass force to overwrite the backed-up tables)."""


@dataclass
class TableReport:
    name: str
    rows: int
    seconds: float


@dataclass
class Report:
    run: str
    migration_version: str | None
    migrated: list[str]
    tables: list[TableReport] = field(default_factory=list)
    step: str = ""  # what the restore was doing (named in errors)
    download_seconds: float = 0.0
    migrate_seconds: float = 0.0
    load_seconds: float = 0.0  # all of the load transaction and ANALYZE, of which:
    keys_seconds: float = 0.0  # re-creating keys and indexes
    analyze_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    deletions: dict[str, int] = field(default_factory=dict)  # delete_account() outcomes of the log

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


# --- The run and its manifest ------------------------------------------------------------


def _s3() -> Any:
    from common import storage

    return storage.s3()


def list_runs(bucket: str, stage: str) -> list[tuple[str, bool]]:
    """``(run, complete)`` for every run under the stage's prefix, newest first."""
    prefix = f"backups/{stage}/"
    names = []
    for page in _s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for common_prefix in page.get("CommonPrefixes", []):
            name = common_prefix["Prefix"][len(prefix):].rstrip("/")
            try:
                datetime.strptime(name, RUN_FORMAT)
            except ValueError:
                continue
            names.append(name)
    from common import storage

    return [(name, storage.head(bucket, f"{prefix}{name}/{MANIFEST}") is not None)
            for name in sorted(names, reverse=True)]


def resolve_run(bucket: str, stage: str, run: str) -> str:
    if run != "latest":
        return run
    for name, complete in list_runs(bucket, stage):
        if complete:
            return name
    raise RestoreError(f"no complete backup run under s3://{bucket}/backups/{stage}/")


def load_manifest(bucket: str, stage: str, run: str) -> dict[str, Any]:
    from common import storage
    from common.errors import NotFound

    key = f"backups/{stage}/{run}/{MANIFEST}"
    try:
        manifest = json.loads(storage.read(bucket, key, max_bytes=16 * 1024 * 1024))
    except NotFound:
        raise RestoreError(f"s3://{bucket}/{key} does not exist: no such run, or the run failed") from None
    if manifest.get("format") not in FORMAT_VERSIONS:
        raise RestoreError(f"unsupported manifest format {manifest.get('format')!r}")
    return manifest


# --- Download and verify -----------------------------------------------------------------


def download_verified(bucket: str, manifest: dict[str, Any], workdir: Path, *,
                      progress: bool = True) -> dict[str, Path]:
    """Every table's object in ``workdir`` (``DOWNLOADS`` at once), each checked against
    the manifest's size and SHA-256; CorruptBackup naming every object that failed. An
    empty table (format 2: no object) has no path."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    tables = [t for t in manifest["tables"] if t["key"] is not None]
    total = sum(t["bytes"] for t in tables)
    with tqdm(total=total, unit="B", unit_scale=True, desc="download+verify",
              disable=_quiet(progress)) as bar, ThreadPoolExecutor(DOWNLOADS) as pool:
        outcomes = list(pool.map(
            lambda t: _download_one(bucket, t, workdir / f"{t['name']}.data", bar.update), tables))
    if problems := [problem for _, problem in outcomes if problem]:
        raise CorruptBackup("backup objects failed verification, nothing was loaded:\n  "
                            + "\n  ".join(problems))
    return {t["name"]: path for t, (path, _) in zip(tables, outcomes, strict=True)}


def _download_one(bucket: str, table: dict[str, Any], path: Path,
                  advance: Callable[[int], Any]) -> tuple[Path, str | None]:
    """One object into ``path``: ``(path, None)``, or ``(path, what is wrong with it)``."""
    from botocore.exceptions import ClientError, FlexibleChecksumError

    digest, size = hashlib.sha256(), 0
    try:
        body = _s3().get_object(Bucket=bucket, Key=table["key"])["Body"]
    except ClientError as exc:
        return path, f"{table['key']}: {exc.response.get('Error', {}).get('Code', 'error')}"
    try:
        with body, path.open("wb") as out:
            for chunk in body.iter_chunks(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
                advance(len(chunk))
    except FlexibleChecksumError:  # botocore checks S3's stored checksum on the way
        return path, f"{table['key']}: the bytes received differ from S3's stored checksum"
    if size != table["bytes"]:
        return path, f"{table['key']}: {size} bytes, manifest says {table['bytes']}"
    if digest.hexdigest() != table["sha256"]:
        return path, f"{table['key']}: SHA-256 differs from the manifest"
    return path, None


# --- The target -------------------------------------------------------------------------

USER_TABLES = """
SELECT c.relname AS name, c.relkind AS kind, c.oid FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
"""

# Keys and indexes of the restored tables, dropped before loading and re-created after.
# Foreign keys are collected from both ends (a key from an excluded table into a restored
# one would otherwise block dropping the referenced primary key).
FOREIGN_KEYS = """
SELECT k.conrelid::regclass::text AS tbl, k.conname AS name, pg_get_constraintdef(k.oid) AS def
  FROM pg_constraint k
 WHERE k.contype = 'f' AND (k.conrelid = ANY(%(oids)s) OR k.confrelid = ANY(%(oids)s))
 ORDER BY k.conrelid, k.conname
"""

KEY_CONSTRAINTS = """
SELECT k.conrelid::regclass::text AS tbl, k.conname AS name, pg_get_constraintdef(k.oid) AS def
  FROM pg_constraint k
 WHERE k.contype IN ('p', 'u', 'x') AND k.conrelid = ANY(%(oids)s)
 ORDER BY k.conrelid, k.contype, k.conname
"""

PLAIN_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
  FROM pg_index i
 WHERE i.indrelid = ANY(%(oids)s)
   AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                    WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
 ORDER BY 1
"""

# The identity/serial sequence of every column of the restored tables, in one query.
SEQUENCES = """
SELECT c.relname AS tbl, a.attname AS col, pg_get_serial_sequence(c.oid::regclass::text, a.attname) AS seq
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
 WHERE c.oid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped
"""

HAS_DELETE_ACCOUNT = "SELECT to_regprocedure('delete_account(uuid, timestamptz)') IS NOT NULL AS present"
DELETE_ACCOUNT = "SELECT delete_account(%(user_id)s, %(deleted_at)s) AS outcome"


def _quiet(progress: bool) -> bool | None:
    return None if progress else True  # tqdm: None = only on a terminal


def target_is_empty(conn: psycopg.Connection[Any]) -> bool:
    for row in conn.execute(USER_TABLES).fetchall():
        if row["name"] in YOYO_TABLES:
            continue
        if conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {}) AS any").format(
                sql.Identifier(row["name"]))).fetchone()["any"]:
            return False
    return True


def _migrate(url: str, manifest: dict[str, Any], report: Report, parsed: Any) -> None:
    """Migrate the target to the manifest's version with ``parsed`` (``migrations.read()``,
    all of this checkout's migrations)."""
    version = manifest.get("migration_version")
    if version is None:
        raise RestoreError("the manifest records no migration version; migrate the target by hand first")
    report.migrated = migrations.apply(url, to=version, parsed=parsed)
    have, want = set(migrations.applied(url)), set(manifest.get("migrations") or [version])
    if missing := sorted(want - have):
        raise RestoreError(f"this checkout cannot apply the backup's migrations {missing}")
    if extra := sorted(have - want):
        report.warnings.append(f"the target has migrations the backup did not: {extra}")


@dataclass
class _Keys:
    foreign: list[dict[str, str]]
    constraints: list[dict[str, str]]
    indexes: list[dict[str, str]]

    @classmethod
    def read(cls, conn: psycopg.Connection[Any], oids: list[int]) -> _Keys:
        params = {"oids": oids}
        return cls(conn.execute(FOREIGN_KEYS, params).fetchall(),
                   conn.execute(KEY_CONSTRAINTS, params).fetchall(),
                   conn.execute(PLAIN_INDEXES, params).fetchall())

    def drop(self, conn: psycopg.Connection[Any]) -> None:
        statements = [sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.SQL(k["tbl"]), sql.Identifier(k["name"]))  # tbl: regclass text, already quoted
            for k in [*self.foreign, *self.constraints]]
        statements += [sql.SQL("DROP INDEX {}").format(sql.SQL(i["name"])) for i in self.indexes]
        _execute_all(conn, statements)

    def create(self, conn: psycopg.Connection[Any]) -> None:
        for k in self.constraints:
            conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.SQL(k["tbl"]), sql.Identifier(k["name"]), sql.SQL(k["def"])))
        for i in self.indexes:
            conn.execute(sql.SQL(i["def"]))
        for k in self.foreign:
            conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.SQL(k["tbl"]), sql.Identifier(k["name"]), sql.SQL(k["def"])))


#: COPY's options for each format a manifest names (format 1 is CSV).
COPY_OPTIONS = {"binary": "FORMAT binary", "csv": "FORMAT csv, HEADER, ENCODING 'UTF8'"}


def _execute_all(conn: psycopg.Connection[Any], statements: list[sql.Composable]) -> None:
    """Run ``statements`` (no parameters) in one round trip: a restore runs a few of them
    for each table."""
    if statements:
        conn.execute(sql.SQL("; ").join(statements))


def _set_triggers(conn: psycopg.Connection[Any], idents: list[sql.Identifier], action: str) -> None:
    _execute_all(conn, [sql.SQL("ALTER TABLE {} {} TRIGGER USER").format(i, sql.SQL(action)) for i in idents])


def _copy_in(conn: psycopg.Connection[Any], table: dict[str, Any], path: Path,
              advance: Callable[[int], Any], *, freeze: bool, codec: str | None = None) -> int:
    # FREEZE (allowed because the table was emptied in this transaction) writes the rows
    # already frozen: no hint-bit rewrite or anti-wraparound vacuum of them later.
    copy_format = table.get("copy", "csv")
    if copy_format not in COPY_OPTIONS:
        raise RestoreError(f"{table['name']}: unsupported COPY format {copy_format!r}")
    statement = sql.SQL("COPY {} ({}) FROM STDIN ({}{})").format(
        sql.Identifier(table["name"]), sql.SQL(", ").join(map(sql.Identifier, table["columns"])),
        sql.SQL(COPY_OPTIONS[copy_format]), sql.SQL(", FREEZE" if freeze else ""))  # type: ignore[arg-type]
    codec = codec or "gzip"
    inflate = _decompressor(codec)
    cursor = conn.cursor()
    with path.open("rb") as src, cursor.copy(statement) as copy:
        while chunk := src.read(CHUNK):
            data = inflate.decompress(chunk)
            copy.write(data)
            advance(len(data))
        if codec == "gzip":
            copy.write(inflate.flush())
        if not inflate.eof:
            raise CorruptBackup(f"{table['key']}: the {codec} stream is truncated")
    return cursor.rowcount


def _decompressor(codec: str) -> Any:
    """A streaming decompressor (``decompress(bytes)``, ``eof``) for the manifest's codec:
    zstd (Zstandard, backup-export's default) or gzip (earlier runs, or
    BACKUP_COMPRESSION=gzip)."""
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()
    if codec == "gzip":
        return zlib.decompressobj(31)  # gzip container
    raise RestoreError(f"unsupported compression {codec!r}")


def _set_sequences(conn: psycopg.Connection[Any], manifest: dict[str, Any], oids: list[int]) -> None:
    """Move each identity/serial sequence past the restored ids and the source's value."""
    recorded = manifest.get("sequences", {})
    sequences = {(row["tbl"], row["col"]): row["seq"] for row in conn.execute(SEQUENCES, {"oids": oids})}
    for table in manifest["tables"]:
        for column in table["columns"]:
            seq = sequences.get((table["name"], column))
            if seq is None:
                continue
            top = conn.execute(sql.SQL("SELECT max({}) AS top FROM {}").format(
                sql.Identifier(column), sql.Identifier(table["name"]))).fetchone()["top"]
            values = [v for v in (top, recorded.get(f"{table['name']}.{column}")) if v is not None]
            if values:
                conn.execute("SELECT setval(%s::regclass, %s, true)", (seq, max(values)))


def read_deletions(bucket: str, stage: str) -> list[Any]:
    """The deletions log of the stage (``common.accounts.read_log``); an entry that cannot
    be read stops the restore before anything is changed."""
    from common import accounts

    try:
        return accounts.read_log(bucket, stage)
    except Exception as exc:
        raise RestoreError(f"the deletions log under s3://{bucket}/deletions/{stage}/ cannot be read "
                           f"({type(exc).__name__}): a restore without it could bring deleted accounts "
                           "back") from None


def _reapply_deletions(conn: psycopg.Connection[Any], deletions: list[Any], report: Report) -> None:
    """``delete_account()`` for every logged deletion, then the inbox scrubs it queued
    (database work: done here, before anything reads the restored data). The objects were
    deleted from S3 when the accounts were; cache-cleanup sweeps their prefixes again."""
    from common import accounts

    outcomes: dict[str, int] = {}
    for deletion in deletions:
        outcome = conn.execute(DELETE_ACCOUNT, {"user_id": deletion.user_id,
                                                "deleted_at": deletion.deleted_at}).fetchone()["outcome"]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    accounts.scrub_inbox_now(conn)
    report.deletions = outcomes


def load(url: str, manifest: dict[str, Any], paths: dict[str, Path], report: Report, *,
         progress: bool = True, keys_after_load: bool = True, deletions: list[Any] | None = None) -> None:
    """Step 5 and 6 (see the module docstring) on an already migrated target.

    A database error rolls the load back and becomes a RestoreError naming the error
    class, table, column and constraint only: the server's message and detail can quote
    row values (journal text, emails), which must not reach a terminal or a log.
    """
    try:
        _load(url, manifest, paths, report, progress=progress, keys_after_load=keys_after_load,
              deletions=deletions or [])
    except psycopg.Error as exc:
        diag = exc.diag
        where = ", ".join(f"{name} {value}" for name, value in [
            ("table", diag.table_name), ("column", diag.column_name), ("constraint", diag.constraint_name)]
            if value)
        raise RestoreError(f"{report.step} failed and the load was rolled back: {type(exc).__name__} "
                           f"(SQLSTATE {exc.sqlstate})" + (f", {where}" if where else "")) from None


def _load(url: str, manifest: dict[str, Any], paths: dict[str, Path], report: Report, *,
          progress: bool, keys_after_load: bool, deletions: list[Any]) -> None:
    from tqdm import tqdm

    tables = manifest["tables"]
    started = time.monotonic()
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
        present = {row["name"]: row for row in conn.execute(USER_TABLES)}
        if missing := [t["name"] for t in tables if t["name"] not in present]:
            raise RestoreError(f"the migrated target has no table(s) {missing}")
        idents = [sql.Identifier(t["name"]) for t in tables]
        oids = [present[t["name"]]["oid"] for t in tables]
        # The tables that get rows (format 2 gives an empty table no object): only their
        # keys are dropped and re-created and their triggers disabled; the others are
        # only emptied (migrations may have seeded them).
        loading = [t for t in tables if t["key"] is not None]
        loading_idents = [sql.Identifier(t["name"]) for t in loading]
        with conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', '0', true)")
            # index builds sort in memory up to this (the server default is 64MB)
            conn.execute("SELECT set_config('maintenance_work_mem', '256MB', true)")
            report.step = "emptying the tables"
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(idents)))
            keys = _Keys.read(conn, [present[t["name"]]["oid"] for t in loading]) if keys_after_load else None
            _set_triggers(conn, loading_idents, "DISABLE")
            if keys:
                report.step = "dropping keys and indexes"
                keys.drop(conn)
            total = sum(t.get("data_bytes", t.get("csv_bytes", 0)) for t in tables)
            with tqdm(total=total, unit="B", unit_scale=True, desc="load", disable=_quiet(progress)) as bar:
                for table in tables:
                    bar.set_postfix_str(table["name"])
                    report.step = f"COPY {table['name']}"
                    t0 = time.monotonic()
                    if table["key"] is None:  # an empty table: no object (emptied above)
                        rows = 0
                    else:
                        rows = _copy_in(conn, table, paths[table["name"]], bar.update,
                                        freeze=present[table["name"]]["kind"] == "r",
                                        codec=manifest.get("compression", {}).get("format"))
                    if rows != table["rows"]:
                        raise RestoreError(f"{table['name']}: loaded {rows} rows, "
                                           f"the manifest says {table['rows']}")
                    report.tables.append(TableReport(table["name"], rows, time.monotonic() - t0))
            t0 = time.monotonic()
            report.step = "re-creating keys and indexes"
            if keys:
                keys.create(conn)
            report.keys_seconds = time.monotonic() - t0
            _set_triggers(conn, loading_idents, "ENABLE")
            report.step = "setting sequences"
            _set_sequences(conn, manifest, oids)
            if deletions:
                report.step = "re-applying the deletions log"
                _reapply_deletions(conn, deletions, report)
        t0 = time.monotonic()
        report.step = "ANALYZE"
        conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(idents)))
        report.analyze_seconds = time.monotonic() - t0
    report.load_seconds = time.monotonic() - started


def restore(bucket: str, stage: str, run: str, database_url: str, *, force: bool = False,
            workdir: Path | None = None, progress: bool = True, keys_after_load: bool = True,
            log: Callable[[str], Any] = print) -> Report:
    """Restore one run (``latest`` or a run timestamp) into ``database_url``."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="restore-parse") as parser:
        # The migrations are parsed (CPU, no database) while the run is resolved and its
        # objects download (I/O); they are applied only once every object is verified.
        parsing = parser.submit(migrations.read)
        return _restore(bucket, stage, run, database_url, force=force, workdir=workdir, progress=progress,
                        keys_after_load=keys_after_load, log=log, parsing=parsing)


def _restore(bucket: str, stage: str, run: str, database_url: str, *, force: bool, workdir: Path | None,
             progress: bool, keys_after_load: bool, log: Callable[[str], Any], parsing: Any) -> Report:
    name = resolve_run(bucket, stage, run)
    manifest = load_manifest(bucket, stage, name)
    log(f"run {name}: {len(manifest['tables'])} tables, "
        f"{sum(t['rows'] for t in manifest['tables'])} rows, migration {manifest.get('migration_version')}, "
        f"server {manifest.get('server_version')}" + (", REDACTED" if manifest.get("redacted") else ""))
    report = Report(run=name, migration_version=manifest.get("migration_version"), migrated=[])
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        if not target_is_empty(conn):
            if not force:
                raise TargetNotEmpty("the target database holds data; restore into a new database, "
                                     "or pass --force to replace the backed-up tables")
            report.warnings.append("target was not empty: the backed-up tables were replaced (--force)")
    deletions = read_deletions(bucket, stage)
    log(f"deletions log: {len(deletions)} deleted accounts to delete again after loading")
    with tempfile.TemporaryDirectory(prefix="restore-", dir=workdir) as tmp:
        t0 = time.monotonic()
        paths = download_verified(bucket, manifest, Path(tmp), progress=progress)
        report.download_seconds = time.monotonic() - t0
        log(f"verified {len(paths)} objects against the manifest (SHA-256)")
        t0 = time.monotonic()
        parsed = parsing.result()
        _migrate(database_url, manifest, report, parsed)
        if deletions:
            _migrate_for_deletions(database_url, report, parsed)
        report.migrate_seconds = time.monotonic() - t0
        load(database_url, manifest, paths, report, progress=progress, keys_after_load=keys_after_load,
             deletions=deletions)
    return report


def _migrate_for_deletions(url: str, report: Report, parsed: Any) -> None:
    """A backup older than the deletions log (migration 0012) still needs the log applied:
    the target is migrated further, to the checkout's latest migrations."""
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
        if conn.execute(HAS_DELETE_ACCOUNT).fetchone()["present"]:
            return
    applied = migrations.apply(url, parsed=parsed)
    report.migrated += applied
    report.warnings.append(f"the backup predates the deletions log; the target was migrated further "
                           f"({', '.join(applied)}) to re-apply it")
