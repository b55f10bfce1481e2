"""The in-database cache: JSON values in the ``cache_entries`` table, with TTLs.

    k = cache.key("caption", image_sha256, {"style": "noir", "strength": 0.75})
    caption = cache.get_or_compute(k, timedelta(days=7), lambda: ai.caption(...))

Keys are ``"<namespace>:" + sha256(canonical JSON of the parts)`` (see ``key``), so
the same logical request always maps to the same key. Values round-trip through JSON
(``jsonb``): tuples come back as lists. Expired rows are never returned (the expiry is
checked in SQL against the database clock), whether or not the cleanup job has run.

Stampede protection: ``get_or_compute`` runs ``compute`` once per cold key across all
callers. The caller that misses takes the key's lease (``single_flight``: a row with an
expiry in ``cache_leases``, taken in one autocommit statement), re-checks, computes,
stores and then deletes its lease; the others poll until they find the stored value, or
take the lease when it is released or has expired. While ``compute`` runs (a slow AI
call) the caller holds no transaction, no lock and no second connection: one connection
per container, whatever the cache does, and ``compute`` can commit its own transactions
(a credit reservation, say) on it. Nothing is session state, so RDS Proxy never pins.

Metrics (Powertools, unit Count): ``CacheHit``, ``CacheMiss``, ``CacheCompute``,
``CacheBusy``, ``CacheEarlyRefresh``. Misses that did not compute were served by a
concurrent caller's computation (misses - computes = coalesced requests).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from common import db
from common.errors import AppError

if TYPE_CHECKING:
    import psycopg


#: How long a caller waits for another caller's computation of the same key.
DEFAULT_WAIT_S = 30.0
#: How long a single-flight lease lasts unless released: a holder that died (a killed
#: Lambda sandbox) blocks its key until then. 900 s is Lambda's maximum timeout; callers
#: that know their deadline pass a shorter ``hold_s``.
DEFAULT_HOLD_S = 900.0

_NAMESPACE = re.compile(r"[A-Za-z0-9_.:/-]{1,100}")


class CacheBusy(AppError):
    """Another caller is computing this entry and did not finish within the wait."""

    status = 503
    code = "busy"


# --- keys -------------------------------------------------------------------------


def key(namespace: str, *parts: Any, **named: Any) -> str:
    """``"<namespace>:" + sha256 hex`` of the canonical JSON of ``[parts, named]``.

    Canonical JSON: object keys sorted, no spaces, ASCII only, and values normalised so
    that equal inputs give equal text:

    - str, int, bool, None as JSON; dict keys must be str (``{1: x}`` would otherwise
      collide with ``{"1": x}``); lists and tuples are both arrays; sets and frozensets
      become arrays sorted by their elements' canonical JSON.
    - Numbers are keyed by value: an integral float or Decimal is the integer
      (``2 == 2.0 == Decimal("2.00")``); other floats use ``repr`` (the shortest text
      that round-trips the binary value, which is what ``json`` writes); other Decimals
      their normalised text as a string (``Decimal("1.50")`` -> ``"1.5"``). NaN and
      infinities are rejected.
    - UUID -> its canonical string; aware datetime -> ISO 8601 in UTC; date -> ISO
      8601. These key like their string forms, on purpose: an id sent as text and as a
      UUID is the same request. Naive datetimes are rejected (ambiguous).
    - Anything else (bytes, arbitrary objects) raises TypeError: pass a digest or a
      plain dict (``model.model_dump(mode="json")``) instead.
    """
    if type(namespace) is not str or namespace not in _valid_namespaces:
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError("cache namespace must be 1-100 characters of [A-Za-z0-9_.:/-]")
        if len(_valid_namespaces) < 1000:  # namespaces are constants; stay bounded anyway
            _valid_namespaces.add(namespace)
    # Most keys: nothing to normalise (exact str, int, bool, None, and dicts of them with
    # str keys, one level: a request's parameters).
    values = (*parts, *named.values())
    if _PLAIN.issuperset(map(type, values)) or all(
            type(v) in _PLAIN or (type(v) is dict and _plain_dict(v)) for v in values):
        text = _CANONICAL_JSON.encode([parts, named])  # named's keys are str (keywords)
    else:
        text = _CANONICAL_JSON.encode([[_canonical(p) for p in parts], _canonical(named)])
    return f"{namespace}:{hashlib.sha256(text.encode('ascii')).hexdigest()}"


# Built once: json.dumps with options builds a new encoder on every call. No circular
# check (a fifth of a short key's encoding): what it encodes is scalars in a fresh tuple
# and dict, or what _canonical built (a cycle fails there, by recursion, as before).
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
                                   check_circular=False)
_valid_namespaces: builtins.set[str] = builtins.set()
_PLAIN = frozenset({str, int, bool, type(None)})


def _plain_dict(value: dict[Any, Any]) -> bool:
    """A dict ``_canonical`` would return unchanged: exact str keys, plain values."""
    return all(type(k) is str for k in value) and _PLAIN.issuperset(map(type, value.values()))


def _canonical(value: Any) -> Any:
    # Hand-written: json's `default=` hook is never called for floats, and there is no
    # well-kept canonical-JSON library with these numeric and datetime rules.
    if type(value) in _PLAIN:  # the common case, exact types only
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)  # a str subclass (StrEnum) as its plain text
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError("cache key parts cannot be NaN or infinite")
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("cache key dicts must have str keys")
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, builtins.set | frozenset):
        items = [_canonical(v) for v in value]
        return sorted(items, key=_CANONICAL_JSON.encode)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("cache key parts cannot be NaN or infinite")
        if value == value.to_integral_value():
            return int(value)
        return format(value.normalize(), "f")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise TypeError("cache key datetimes must be timezone-aware")
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot use a {type(value).__name__} in a cache key")


# --- reads and writes ---------------------------------------------------------------

_GET = "SELECT value FROM cache_entries WHERE key = %s AND expires_at > now()"
_GET_VALUE = "SELECT value FROM cache_entries WHERE key = %(cache_key)s AND expires_at > now()"

_GET_WITH_AGE = """
SELECT value, compute_ms, extract(epoch FROM expires_at - now())::float8 AS ttl_left
  FROM cache_entries
 WHERE key = %s AND expires_at > now()
"""

_GET_MANY = "SELECT key, value FROM cache_entries WHERE key = ANY(%s) AND expires_at > now()"

# A server-side function (migrations 0002, 0012): commits its own transaction
# asynchronously; records the entry's owner (a user id, so a deletion finds it). Its
# set_config runs inside the function, out of RDS Proxy's sight: the write of a
# connection behind the proxy, and get_or_compute's store (which wants the stored value).
_SET = "SELECT cache_put(%(key)s, %(value)s, %(ttl)s, %(compute_ms)s, %(async)s, %(owner)s) AS value"
# The same write when the caller needs nothing back: the stored value is not sent back and
# decoded again (about a tenth of a set's time for a 1 KB value).
_SET_QUIET = _SET.replace(" AS value", " IS NOT NULL AS ok")

# cache_put's upsert as one plain statement: on a connection that prepares statements
# (no RDS Proxy in the path) it is parsed and planned once, and skips the PL/pgSQL call.
_UPSERT = """
INSERT INTO cache_entries (key, value, expires_at, compute_ms, owner)
VALUES (%(key)s, %(value)s, now() + make_interval(secs => %(ttl)s), %(compute_ms)s, %(owner)s)
ON CONFLICT (key) DO UPDATE
   SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at,
       compute_ms = EXCLUDED.compute_ms, created_at = now(), owner = EXCLUDED.owner
"""
# The same write as its own transaction, committed without waiting for the WAL flush:
# synchronous_commit off for this statement's transaction only (is_local), set in the
# statement itself, so the session keeps no setting. A crash can lose the last fraction
# of a second of such writes; for a cache that is fine (the entry is computed again).
# Only where nothing pins on it: an RDS Proxy would see set_config in the text.
_UPSERT_ASYNC = _UPSERT + "RETURNING set_config('synchronous_commit', 'off', true) AS async_commit\n"

_DELETE = "DELETE FROM cache_entries WHERE key = %s"

_MISS = object()


def get(key: str) -> Any | None:
    """The live value stored under ``key``, or None (missing or expired)."""
    row = db.hot_row(_GET, (key,), idempotent=True)
    _count("CacheHit" if row else "CacheMiss")
    return row["value"] if row else None


def get_along(key: str, queries: dict[str, str], params: dict[str, Any]) -> tuple[Any | None, dict[str, Any]]:
    """``get(key)`` and, in the same statement (one round trip, one snapshot), the scalar
    ``queries`` (name -> a SELECT of one value, written with ``params``): a hot path that
    needs the cached value and a few other values pays one round trip instead of several.
    Returns the value (or None) and ``{name: result}``."""
    columns = "".join(f",\n       ({sql}) AS {name}" for name, sql in queries.items())
    row = db.hot_row(f"SELECT ({_GET_VALUE}) AS cache_value{columns}", {**params, "cache_key": key},
                     idempotent=True)
    if row is None:
        raise RuntimeError("the statement returned no row")
    return found_along(row)


def along(key: str, queries: dict[str, str], params: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """``get_along``'s queries and parameters, for a statement the caller runs anyway
    (``auth.admit_along``); its results go through ``found_along``."""
    return {"cache_value": _GET_VALUE, **queries}, {**params, "cache_key": key}


def found_along(row: dict[str, Any]) -> tuple[Any | None, dict[str, Any]]:
    """What ``get_along`` returns, from the results of ``along``'s queries (counted as a
    hit or a miss, like ``get``)."""
    rest = dict(row)
    value = rest.pop("cache_value")
    _count("CacheHit" if value is not None else "CacheMiss")
    return value, rest


def get_many(keys: Iterable[str]) -> dict[str, Any]:
    """The live entries among ``keys``: ``{key: value}``, missing keys left out."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    found = {row["key"]: row["value"] for row in db.execute(_GET_MANY, (wanted,), idempotent=True)}
    if found:
        _count("CacheHit", len(found))
    if len(found) < len(wanted):
        _count("CacheMiss", len(wanted) - len(found))
    return found


def set(  # the cache's verb: this module says `builtins.set` for the type
    key: str,
    value: Any,
    ttl: int | float | timedelta,
    *,
    conn: psycopg.Connection[Any] | None = None,
    compute_ms: int = 0,
    owner: uuid.UUID | str | None = None,
) -> None:
    """Store ``value`` (JSON-serialisable) under ``key`` for ``ttl`` (seconds or a
    timedelta), replacing any previous entry. ``owner``: the user whose data the entry
    holds (an account deletion removes their entries); None for shared entries.

    With ``conn``, the write runs on that connection, inside the caller's transaction:
    it commits or rolls back with the caller's other writes, as durably as they do.
    Without, it is its own transaction, committed without waiting for the WAL flush
    (a crash may lose the last moments of cache writes; they are computed again).
    """
    params = _set_params(key, value, ttl, compute_ms, owner)
    if conn is not None:
        conn.execute(_UPSERT, params)
    else:
        params["async"] = True
        db.hot_row(_SET_QUIET, params, idempotent=True, prepared_sql=_UPSERT_ASYNC)


def delete(key: str) -> bool:
    """Remove the entry; True if there was one."""
    return db.execute(_DELETE, (key,), idempotent=True).rowcount > 0


def _set_params(key: str, value: Any, ttl: int | float | timedelta, compute_ms: int,
                owner: uuid.UUID | str | None) -> dict[str, Any]:
    from psycopg.types.json import Jsonb

    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError("cache ttl must be a positive number of seconds or a timedelta")
    return {"key": key, "value": Jsonb(value), "ttl": float(seconds), "compute_ms": int(compute_ms),
            "owner": None if owner is None else uuid.UUID(str(owner))}


# --- single flight ------------------------------------------------------------------

# Take the key's lease if nobody holds it or the holder's lease has expired (a holder
# that died): one autocommit statement, so no transaction stays open while the slow tool
# runs, and no second connection is needed. RETURNING gives a row only to the taker; a
# holder's own retry (the reply was lost) takes it again, so the statement is idempotent.
_TAKE_LEASE = """
INSERT INTO cache_leases AS l (key, holder, expires_at)
VALUES (%(key)s, %(holder)s, now() + make_interval(secs => %(hold_s)s))
ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
 WHERE l.expires_at <= now() OR l.holder = EXCLUDED.holder
RETURNING holder
"""

# Only our own lease: after an expiry another caller may hold the key, and keeps it.
_RELEASE_LEASE = "DELETE FROM cache_leases WHERE key = %(key)s AND holder = %(holder)s"

#: Polling while another caller holds the lease: first wait, growth, longest wait (s).
_POLL = (0.05, 1.5, 0.5)


@contextmanager
def single_flight(
    key: str, *, wait_s: float = DEFAULT_WAIT_S, hold_s: float = DEFAULT_HOLD_S
) -> Iterator[None]:
    """Run the block while holding the key's lease, one caller at a time.

    The lease is a row of ``cache_leases`` (migration 0015) that expires ``hold_s``
    seconds after it is taken: taking and releasing it are single autocommit statements
    on this thread's connection, so while the block runs (a 60-120 s AI call) the caller
    holds no transaction, no lock and no second connection. A caller that finds the
    lease held polls (50 ms, growing to 500 ms) until it is released or expires, and
    gets ``CacheBusy`` after ``wait_s`` seconds (``wait_s=0``: try once, never wait). A
    holder that vanished (a killed container) blocks the key until its lease expires,
    so ``hold_s`` should be the longest the block can run (the Lambda's remaining time).

    Polling, not LISTEN/NOTIFY: a listening session is pinned by RDS Proxy.
    """
    import psycopg

    _require_no_open_transaction()
    holder = uuid.uuid4()
    params = {"key": key, "holder": holder, "hold_s": max(1.0, float(hold_s))}
    deadline = time.monotonic() + max(0.0, wait_s)
    pause, growth, longest = _POLL
    while db.execute(_TAKE_LEASE, params, idempotent=True).fetchone() is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CacheBusy("this entry is being computed; retry shortly")
        time.sleep(min(pause * random.uniform(0.8, 1.2), left))
        pause = min(pause * growth, longest)
    try:
        yield
    finally:
        # The database unreachable: the lease expires after hold_s, and the block's own
        # work (or its error) stands.
        with suppress(psycopg.Error):
            db.execute(_RELEASE_LEASE, params, idempotent=True)


# --- get or compute ---------------------------------------------------------------


def get_or_compute[T](
    key: str,
    ttl: int | float | timedelta,
    compute: Callable[[], T],
    *,
    wait_s: float = DEFAULT_WAIT_S,
    early_refresh: float = 0.0,
    owner: uuid.UUID | str | None = None,
) -> T | Any:
    """The cached value, or ``compute()`` run once across all concurrent callers.

    On a miss the caller takes the key's single-flight lock, checks again (another
    caller may have just stored it), computes, stores the value with its compute time
    and returns the stored value (as every other caller will read it). A caller that
    waits longer than ``wait_s`` for someone else's computation gets ``CacheBusy``
    (HTTP 503, code ``busy``). If ``compute`` raises, nothing is stored, the lock is
    released and the error propagates. A stored ``None`` is a hit.

    ``early_refresh`` (beta of "XFetch", Vattani et al. 2015; 0 = off): a hit that is
    within about ``beta * compute time`` of expiry recomputes early, with probability
    rising towards expiry, if nobody else is already doing so (otherwise it returns the
    still-valid value). Off by default: where ``compute`` is a paid AI call, an early
    refresh spends money on a request that would have been a free hit.

    ``owner``: the user whose data the value holds (see ``set``).
    """
    if early_refresh > 0:
        value = _get_or_refresh(key, ttl, compute, early_refresh, owner)
    else:
        row = db.hot_row(_GET, (key,), idempotent=True)
        value = row["value"] if row else _MISS
    if value is not _MISS:
        _count("CacheHit")
        return value
    _count("CacheMiss")
    try:
        with single_flight(key, wait_s=wait_s):
            row = db.execute(_GET, (key,), idempotent=True).fetchone()
            if row:
                return row["value"]  # computed by the caller we waited for
            return _compute_and_store(key, ttl, compute, owner)
    except CacheBusy:
        _count("CacheBusy")
        row = db.execute(_GET, (key,), idempotent=True).fetchone()
        if row:  # stored just as our wait ran out
            return row["value"]
        raise


def _get_or_refresh[T](key: str, ttl: int | float | timedelta, compute: Callable[[], T], beta: float,
                    owner: uuid.UUID | str | None) -> Any:
    row = db.execute(_GET_WITH_AGE, (key,), idempotent=True).fetchone()
    if not row:
        return _MISS
    # XFetch: refresh when now - delta*beta*ln(rand) >= expiry, rand in (0, 1].
    if row["compute_ms"] / 1000 * beta * -math.log(1.0 - random.random()) < row["ttl_left"]:
        return row["value"]
    try:
        with single_flight(key, wait_s=0):
            again = db.execute(_GET_WITH_AGE, (key,), idempotent=True).fetchone()
            if again and again["ttl_left"] > row["ttl_left"] + 1:
                return again["value"]  # refreshed by someone else meanwhile
            _count("CacheEarlyRefresh")
            return _compute_and_store(key, ttl, compute, owner)
    except CacheBusy:
        return row["value"]  # someone else is refreshing; ours is still valid


def _require_no_open_transaction() -> None:
    """The lease must be visible to other callers at once, and the computed entry
    committed before the lease is released, or the callers waiting for it would miss it
    and compute again: so both run in autocommit, and a caller inside a transaction on
    the main connection is refused."""
    from psycopg.pq import TransactionStatus

    if db.connection().info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError(
            "cache.single_flight cannot run inside a transaction on the main connection"
        )


def _compute_and_store[T](key: str, ttl: int | float | timedelta, compute: Callable[[], T],
                       owner: uuid.UUID | str | None) -> Any:
    started = time.perf_counter()
    value = compute()
    compute_ms = round((time.perf_counter() - started) * 1000)
    _count("CacheCompute")
    params = _set_params(key, value, ttl, compute_ms, owner)
    # Returned as stored, so this caller gets what the waiting callers will read.
    return db.one_row(db.execute(_SET, {**params, "async": True}, idempotent=True))["value"]


# --- metrics ------------------------------------------------------------------------

_metrics_lock = threading.Lock()
_metrics: Any = None


def _count(name: str, value: int = 1) -> None:
    """Add ``value`` to the Count metric ``name`` in the shared Powertools metric set.

    Later events of a name since the last flush add to that entry's value in place.
    ``add_metric`` validates and formats a debug message on every call (20-30 us inside
    the request loop on the dev VM, 6-9% of a cache hit); the in-place add costs about
    3 us and flushes exactly the same Sum (one value per flush instead of one per
    event). The first event of a name since the flush (every request's, as metrics are
    flushed per invocation) goes through ``add_metric`` once per container; after that
    its entry is copied from the one ``add_metric`` made (same type, keys and order)
    when the set has room. If an entry does not have the shape Powertools 3 gives it,
    the plain ``add_metric`` path is taken. The lock serialises threads (tests, the
    local runner).
    """
    global _metrics, _count_entry, _max_metrics
    if _metrics is None:
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_METRICS

        from common.observability import metrics

        _metrics, _max_metrics = metrics, MAX_METRICS
    with _metrics_lock:
        metric_set = _metrics.metric_set
        entry = metric_set.get(name)
        values = entry.get("Value") if isinstance(entry, dict) else None
        if entry is not None and entry.get("Unit") == "Count" and isinstance(values, list) and values:
            values[-1] += value
        elif entry is None and _count_entry is not None and len(metric_set) < _max_metrics - 1:
            made = _count_entry.copy()  # add_metric publishes the set when it reaches MAX_METRICS
            made["Value"] = [float(value)]
            metric_set[name] = made
        else:
            from aws_lambda_powertools.metrics import MetricUnit

            _metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
            made = metric_set.get(name)
            if entry is None and isinstance(made, dict) and list(made) == _ENTRY_KEYS \
                    and made["Unit"] == "Count" and made["Value"] == [float(value)]:
                _count_entry = made.copy()  # the shape of a new Count entry, its values left out
                _count_entry["Value"] = []


#: A new Count entry as ``add_metric`` makes it (see ``_count``); None until one was made.
_count_entry: dict[str, Any] | None = None
_ENTRY_KEYS = ["Unit", "StorageResolution", "Value"]
_max_metrics = 0  # Powertools' MAX_METRICS: add_metric publishes the set when it has that many
