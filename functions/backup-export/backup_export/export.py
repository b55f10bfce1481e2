"""One backup run: every table of one consistent snapshot, streamed to S3.

Layout (the restore reads exactly this; docs/housekeeping.md describes it)::

    backups/<stage>/<run>/<table>.bin.zst    COPY ... TO STDOUT (FORMAT binary), zstd
    backups/<stage>/<run>/manifest.json      written last: a run without it failed

``<run>`` is the UTC start time, ``20260101T030000Z``. ``BACKUP_COPY_FORMAT=csv`` writes
``<table>.csv.zst`` (``FORMAT csv, HEADER``: readable by any tool, portable across server
versions) instead of COPY's binary format (less work for the server on both ends). An
empty table gets no object (``"key": null`` in the manifest). Each table goes from
``COPY`` through the codec (Zstandard level 1 by default: ``BACKUP_COMPRESSION``;
``gzip`` writes ``.gz`` with zlib's gzip container, the format of earlier runs, which the
restore still reads; the manifest names the codec) into ``common.storage.MultipartUpload``
(SSE-S3, a SHA-256 checksum per part that S3 verifies, and the SHA-256 of the whole
object, which the manifest records: a multipart ETag is not a content hash). Memory stays
constant whatever the table size: rows are gathered into ~1 MiB blocks, a block is
compressed as a whole (block-wise compression is much faster than row by row), and the upload
holds three 5 MiB parts (two being sent, one filling).

Tables are exported ``BACKUP_PARALLEL_TABLES`` at a time, largest first, each worker on a
connection of its own that imports the leader's snapshot (``pg_export_snapshot()``, ``SET
TRANSACTION SNAPSHOT``, as ``pg_dump -j`` does): every table is still read from the one
snapshot. Within a table, reading, compressing and uploading run in three threads joined
by short queues (zstd, zlib, hashlib and socket I/O release the GIL, so they overlap; see
``stream_table``). Hand-written because it is a few dozen lines over the standard library;
scripts/bench/backup.py measures it against pg_dump.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backup_export import catalog

MANIFEST = "manifest.json"
#: 2: each table names its ``copy`` format (binary or csv) and ``data_bytes``; an empty
#: table has ``"key": null``. 1 (earlier runs, still restored): CSV only, ``csv_bytes``.
FORMAT_VERSION = 2
BLOCK_SIZE = 1024 * 1024
QUEUE_DEPTH = 2  # COPY blocks between the reader and the compressor (~2 MiB)
UPLOAD_DEPTH = 2  # compressed blocks between the compressor and the upload (~2 MiB)
RUN_FORMAT = "%Y%m%dT%H%M%SZ"
GZIP_WBITS = 31  # zlib's gzip container (header and CRC trailer), readable by gzip/zcat

#: Serialises backup runs (two scheduler deliveries, or a hand-run during the nightly
#: one): a second run finds the lock taken and stops without writing anything.
LOCK_ID = 0x6261636B7570  # "backup"

BEGIN_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
EXPORT_SNAPSHOT = "SELECT pg_export_snapshot() AS id"
# COPY of a large table outlives the connection's statement_timeout: lifted for this
# transaction only (set_config(..., true) is SET LOCAL).
NO_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', '0', true)"
TRY_LOCK = "SELECT pg_try_advisory_xact_lock(%s) AS locked"
SNAPSHOT_TIME = "SELECT now() AS at"


class BackupBusy(Exception):
    """Another backup run holds the lock."""


class OutOfTime(Exception):
    """The Lambda deadline is too close to start the next table; the run is incomplete
    (no manifest) and its objects are removed by retention or the lifecycle rule."""


def run_id(at: datetime) -> str:
    return at.astimezone(UTC).strftime(RUN_FORMAT)


def run_prefix(stage: str, run: str) -> str:
    return f"backups/{stage}/{run}/"


# --- Redaction -------------------------------------------------------------------------


def parse_redactions(text: str) -> dict[str, frozenset[str]]:
    """``"users.email, journal_entries.content"`` -> ``{"users": {"email"}, ...}``."""
    out: dict[str, set[str]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        table, dot, column = item.partition(".")
        if not (dot and table and column):
            raise ValueError(f"BACKUP_REDACT_COLUMNS: {item!r} is not table.column")
        out.setdefault(table, set()).add(column)
    return {table: frozenset(columns) for table, columns in out.items()}


def _redacted(column: catalog.Column, salt: str) -> Any:
    """The SQL that replaces a redacted column's value (NULL stays NULL).

    Text becomes ``redacted:<salted hash>`` (bytea: those bytes; distinct values stay
    distinct, so unique constraints still hold on restore, yet the salt is random per run
    and never stored, so the values can't be recovered by hashing guesses); JSON becomes
    ``{"redacted": true}``; other nullable columns become NULL. A NOT NULL column of any
    other type cannot be redacted (refused before anything is written).
    """
    from psycopg import sql

    name = sql.Identifier(column.name)
    if column.category == "S":
        replacement = sql.SQL(
            "'redacted:' || left(encode(sha256(convert_to({} || {}::text, 'UTF8')), 'hex'), 24)"
        ).format(sql.Literal(salt), name)
    elif column.type_name == "bytea":
        replacement = sql.SQL(
            "convert_to('redacted:' || left(encode(sha256(convert_to({}, 'UTF8') || {}), 'hex'), 24), 'UTF8')"
        ).format(sql.Literal(salt), name)
    elif column.type_name in ("json", "jsonb"):
        replacement = sql.SQL("""'{{"redacted": true}}'::{}""").format(sql.Identifier(column.type_name))
    elif not column.not_null:
        return sql.SQL("NULL::{} AS {}").format(sql.Identifier(column.type_name), name)
    else:
        raise ValueError(f"cannot redact NOT NULL column of type {column.type_name}: {column.name}")
    return sql.SQL("CASE WHEN {n} IS NULL THEN NULL ELSE {r} END AS {n}").format(n=name, r=replacement)


def check_redactions(schema: catalog.Schema, redact: dict[str, frozenset[str]]) -> None:
    """Every table.column to redact exists and can be redacted (a typo must not let
    personal data through silently)."""
    tables = {t.name: t for t in schema.tables}
    for table, columns in redact.items():
        if table not in tables:
            raise ValueError(f"BACKUP_REDACT_COLUMNS: no exported table {table!r}")
        known = {c.name: c for c in tables[table].columns}
        for column in sorted(columns):
            if column not in known:
                raise ValueError(f"BACKUP_REDACT_COLUMNS: no column {table}.{column}")
            _redacted(known[column], "check")


#: COPY's formats: manifest name -> the statement's options. Binary is the default: the
#: server neither formats values as text nor quotes them (and the restore's server does
#: not parse them), and the data is smaller; csv is the portable, human-readable one.
COPY_OPTIONS = {"binary": "TO STDOUT (FORMAT binary)",
                "csv": "TO STDOUT (FORMAT csv, HEADER, ENCODING 'UTF8')"}


def copy_statement(table: catalog.Table, redacted: frozenset[str], salt: str,
                   copy_format: str = "binary") -> Any:
    from psycopg import sql

    names = [sql.Identifier(c.name) for c in table.columns]
    options = sql.SQL(COPY_OPTIONS[copy_format])
    if not redacted and not table.partitioned:
        return sql.SQL("COPY {} ({}) {}").format(sql.Identifier(table.name), sql.SQL(", ").join(names),
                                                  options)
    exprs = [_redacted(c, salt) if c.name in redacted else sql.Identifier(c.name) for c in table.columns]
    return sql.SQL("COPY (SELECT {} FROM {}) {}").format(sql.SQL(", ").join(exprs),
                                                          sql.Identifier(table.name), options)


# --- Streaming -------------------------------------------------------------------------


class _Handoff(threading.Thread):
    """Runs ``write`` on the blocks put into it, in its own thread, at most ``depth``
    blocks behind. An error in ``write`` is raised in the producer at its next ``put``
    (or at ``close``); the thread keeps draining so the producer never blocks on it."""

    def __init__(self, write: Callable[[bytearray], Any], *, depth: int, name: str):
        super().__init__(name=name, daemon=True)
        self._write = write
        self._queue: queue.Queue[bytearray | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._closed = False
        self.start()

    def run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(block)
                except BaseException as exc:  # handed to the producer
                    self._error = exc

    def put(self, block: bytearray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def close(self, *, reraise: bool = True) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self.join()
        if reraise and self._error is not None:
            raise self._error


#: The codecs: manifest name -> (object suffix after .bin or .csv, content type).
CODECS = {"zstd": (".zst", "application/zstd"), "gzip": (".gz", "application/gzip")}
#: COPY format -> the object's name before the codec's suffix.
DATA_SUFFIX = {"binary": ".bin", "csv": ".csv"}


def compressor(codec: str, level: int) -> Any:
    """A streaming compressor (``compress(bytes)``, ``flush()``) of ``codec`` at ``level``."""
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=level).compressobj()
    if codec == "gzip":
        return zlib.compressobj(level, zlib.DEFLATED, GZIP_WBITS)
    raise ValueError(f"unknown backup codec {codec!r}")


#: The last message of a binary COPY: the file trailer, a field count of -1 (after the
#: 19-byte file header in the same message when the table is empty).
BINARY_TRAILER = b"\xff\xff"
TRAILER_SIZES = (2, 21)


def _copy_blocks(conn: Any, copy: Any, binary: bool) -> Iterator[bytearray]:
    """A COPY TO's output in blocks of about ``BLOCK_SIZE`` (the last one smaller).

    psycopg reads each row (one message) through its wait loop, which costs about as
    much CPU as the rest of the export's reading; most rows are already in libpq's buffer
    when asked for, so in binary COPY they are taken straight from it
    (``PGconn.get_copy_data`` without blocking) until it is empty or the file trailer
    came: the waiting, the end of the COPY and its errors stay psycopg's. CSV has no
    trailer to stop at: psycopg reads all of it.
    """
    get_copy_data = conn.pgconn.get_copy_data
    block = bytearray()
    for data in copy:  # waits for the server
        block += data
        while binary and not (len(data) in TRAILER_SIZES and data[-2:] == BINARY_TRAILER):
            # (a row that looks like the trailer only hands the rest back to psycopg)
            size, data = get_copy_data(1)  # 1: don't wait
            if size == -1:  # the end, before the trailer: the server failed the COPY
                raise _copy_failure(conn)
            if size <= 0:
                break
            block += data
            if len(block) >= BLOCK_SIZE:
                break
        if len(block) >= BLOCK_SIZE:
            yield block
            block = bytearray()
    yield block


def _copy_failure(conn: Any) -> Exception:
    """The server's error that ended a COPY early, its results read so that the
    connection is usable again (as psycopg does when it reads the end itself)."""
    from psycopg import errors
    from psycopg.pq import DiagnosticField

    results = []
    while (result := conn.pgconn.get_result()) is not None:
        results.append(result)
    failed = [r for r in results if r.error_field(DiagnosticField.SQLSTATE)]
    if not failed:
        return errors.OperationalError("COPY ended before its binary trailer")
    return errors.error_from_result(failed[0], encoding=conn.info.encoding)


def stream_table(conn: Any, statement: Any, out: Any, *, codec: str = "zstd",
                 level: int = 1, binary: bool = False) -> tuple[int, int]:
    """COPY one table through the codec into the file object ``out``: ``(rows, data_bytes)``.
    ``binary``: the statement is a binary COPY, whose rows can be read past psycopg.

    Three stages, each in its own thread, joined by short queues of ~1 MiB blocks: this
    thread reads rows, one thread compresses, one writes to ``out`` (the upload, which
    sends a part every ``part_size``). zlib, hashlib and socket I/O release the GIL, so reading,
    compressing and uploading overlap; at most ``QUEUE_DEPTH`` + ``UPLOAD_DEPTH`` blocks
    are in flight, whatever the table size.
    """
    compress_stream = compressor(codec, level)
    upload = _Handoff(out.write, depth=UPLOAD_DEPTH, name="backup-upload")
    compressed = bytearray()

    def compress(block: bytearray) -> None:
        nonlocal compressed
        compressed += compress_stream.compress(block)
        if len(compressed) >= BLOCK_SIZE:
            upload.put(compressed)
            compressed = bytearray()

    compressing = _Handoff(compress, depth=QUEUE_DEPTH, name="backup-compress")
    data_bytes = 0
    cursor = conn.cursor()
    try:
        with cursor.copy(statement) as copy:
            for block in _copy_blocks(conn, copy, binary):
                data_bytes += len(block)
                compressing.put(block)
        compressing.close()
        compressed += compress_stream.flush()
        upload.put(compressed)
        upload.close()
    except BaseException:
        compressing.close(reraise=False)  # the first error is the one to see
        upload.close(reraise=False)
        raise
    return cursor.rowcount, data_bytes


# --- A run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    bucket: str
    stage: str
    exclude: frozenset[str]
    redact: dict[str, frozenset[str]]
    compression: str = "zstd"  # a key of CODECS
    level: int = 1
    # Parts of S3's minimum size, two sent at once: the upload keeps up with the reading,
    # in about the memory one 8 MiB part sent at a time took (a part in flight, its copy,
    # the next one filling).
    part_size: int = 5 * 1024 * 1024
    upload_concurrency: int = 2
    copy_format: str = "binary"  # a key of COPY_OPTIONS
    parallel_tables: int = 4


def begin_snapshot(conn: Any, imported: str | None = None) -> None:
    """Make ``conn``'s transaction (just begun) a read-only snapshot with no statement
    timeout: its own (the leader's), or the leader's ``imported`` one (a worker's)."""
    conn.execute(BEGIN_SNAPSHOT)
    if imported is not None:
        from psycopg import sql

        # SET TRANSACTION SNAPSHOT takes no bind parameter: the id is quoted as a literal.
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(imported)))
    conn.execute(NO_STATEMENT_TIMEOUT)


@dataclass
class _Work:
    """The tables left to export and what the workers found, shared under ``lock``."""

    pending: list[catalog.Table]  # largest first
    time_left: Callable[[], float]
    min_time_s: float
    entries: dict[str, dict[str, Any]]
    lock: threading.Lock
    error: BaseException | None = None

    def next_table(self) -> catalog.Table | None:
        with self.lock:
            if self.error is not None or not self.pending:
                return None
            table = self.pending.pop(0)
            if self.time_left() < self.min_time_s:
                self.error = OutOfTime(f"stopped before {table.name}: the Lambda deadline is near")
                return None
            return table

    def failed(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:  # the first error is the one to see
                self.error = exc


def export(conn: Any, options: Options, *, time_left: Callable[[], float] = lambda: float("inf"),
           min_time_s: float = 0.0, connect: Callable[[], Any] | None = None,
           now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> dict[str, Any]:
    """Back up every table in one snapshot; return the manifest (already written).

    ``conn`` must be in a fresh transaction (``common.db.transaction()``): its first
    statement makes it the snapshot. ``connect()`` opens a connection for each further
    worker (``options.parallel_tables`` - 1 of them, which the export closes); without
    it, ``conn`` exports every table itself. ``time_left()`` (seconds) is checked before
    each table; below ``min_time_s`` the run stops with OutOfTime.
    """
    started = now()
    begin_snapshot(conn)
    if not conn.execute(TRY_LOCK, (LOCK_ID,)).fetchone()["locked"]:
        raise BackupBusy("another backup run is in progress")
    snapshot_at = conn.execute(SNAPSHOT_TIME).fetchone()["at"]
    schema = catalog.read(conn, exclude=options.exclude)
    check_redactions(schema, options.redact)
    salt = secrets.token_hex(16)  # per run, never stored
    run = run_id(started)
    prefix = run_prefix(options.stage, run)
    work = _Work(pending=sorted(schema.tables, key=lambda t: (-t.size, t.name)), time_left=time_left,
                 min_time_s=min_time_s, entries={}, lock=threading.Lock())

    def export_tables(worker_conn: Any) -> None:
        try:
            while (table := work.next_table()) is not None:
                entry = export_table(worker_conn, table, options, prefix, salt)
                with work.lock:
                    work.entries[table.name] = entry
        except BaseException as exc:  # handed to the leader
            work.failed(exc)

    def helper() -> None:
        assert connect is not None
        try:
            helper_conn = connect()
        except Exception as exc:  # fewer workers, not a failed run: the others take its share
            from common.observability import logger

            logger.warning("a backup worker could not connect; the others export its tables",
                           extra={"error": type(exc).__name__})
            return
        try:
            with helper_conn.transaction():
                begin_snapshot(helper_conn, snapshot)
                export_tables(helper_conn)
        except BaseException as exc:
            work.failed(exc)
        finally:
            helper_conn.close()

    helpers: list[threading.Thread] = []
    if connect is not None and (extra := min(options.parallel_tables, len(schema.tables)) - 1) > 0:
        snapshot = conn.execute(EXPORT_SNAPSHOT).fetchone()["id"]
        helpers = [threading.Thread(target=helper, name=f"backup-table-{n}", daemon=True)
                   for n in range(extra)]
        for thread in helpers:
            thread.start()
    export_tables(conn)  # the leader works too
    for thread in helpers:
        thread.join()
    if work.error is not None:
        raise work.error
    entries = [work.entries[t.name] for t in schema.tables]  # dependency order
    manifest = {
        "format": FORMAT_VERSION,
        "stage": options.stage,
        "run": run,
        "started_at": started.isoformat(),
        "snapshot_at": snapshot_at.isoformat(),
        "finished_at": now().isoformat(),
        "server_version": schema.server_version,
        "server_version_num": schema.server_version_num,
        "migration_version": schema.migration_version,
        "migrations": schema.migrations,
        "excluded": sorted(options.exclude | catalog.YOYO_TABLES),
        "redacted": any(e["redacted"] for e in entries),
        "compression": {"format": options.compression, "level": options.level},
        "sequences": schema.sequences,
        "tables": entries,
    }
    from common import storage

    storage.put(options.bucket, f"{prefix}{MANIFEST}", json.dumps(manifest, indent=1).encode(),
                "application/json")
    return manifest


def export_table(conn: Any, table: catalog.Table, options: Options, prefix: str, salt: str) -> dict[str, Any]:
    """One table into its object; its manifest entry. An empty table gets no object."""
    from common import storage

    redacted = options.redact.get(table.name, frozenset())
    suffix, content_type = CODECS[options.compression]
    key = f"{prefix}{table.name}{DATA_SUFFIX[options.copy_format]}{suffix}"
    upload = storage.MultipartUpload(options.bucket, key, content_type=content_type,
                                     part_size=options.part_size, concurrency=options.upload_concurrency)
    try:
        rows, data_bytes = stream_table(conn, copy_statement(table, redacted, salt, options.copy_format),
                                        upload, codec=options.compression, level=options.level,
                                        binary=options.copy_format == "binary")
        if rows == 0:
            upload.abort()  # nothing was sent yet: a part is never filled by an empty table
            result = None
        else:
            result = upload.complete()
    except BaseException:
        upload.abort()
        raise
    return {
        "name": table.name, "key": key if result else None, "copy": options.copy_format,
        "columns": [c.name for c in table.columns], "depends_on": table.depends_on, "rows": rows,
        "bytes": result.size if result else 0, "data_bytes": data_bytes if result else 0,
        "sha256": result.sha256 if result else None, "redacted": sorted(redacted),
    }
