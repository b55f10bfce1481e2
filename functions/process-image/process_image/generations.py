"""Generations: the money path, and reading a user's generations back.

``create`` runs a tool on an uploaded image the user owns and charges for it once. Image
tools (local, ai) store an image; analysis tools (``face_analysis``) store JSON in the
generation row instead, on the same path:

1. Validate: the tool exists and is enabled, the parameters fit its schema (defaults
   filled in), the source key is well formed and under the user's prefix, the object
   exists (HEAD: its ETag and version; none for an upload this container knows is sealed,
   ``_head_source``).
2. Cache key over (user, tool, tool version, engine version, model, canonical
   parameters, source ETag + version id). A hit returns the stored generation:
   ``cached: true``, nothing charged, no tool run, no new object.
3. Miss: inside ``cache.single_flight(key)`` (a lease row: one caller per key across all
   containers, holding no transaction or second connection while the tool runs; the
   others poll, then find the entry), check the cache again, reserve the credits,
   read the source (size limit), decode it (pixel limit), run the tool, store the result
   under the user's prefix in the generations bucket, then in ONE transaction settle the
   reservation, insert the generation and write the cache entry.
4. Any failure after the reservation refunds it (and removes a stored result that was
   never recorded). A container that dies mid-way leaves the reservation 'reserved';
   cache-cleanup refunds those older than its RESERVATION_STALE_AFTER_S.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from common import cache, db, ledger, storage
from common.errors import AppError, Conflict, GatewayTimeout, InvalidInput, NotFound
from common.observability import logger, metrics, traced
from process_image import catalog, images
from process_image import settings as settings_module
from process_image.catalog import Tool
from process_image.models import GenerationOut, GenerationView
from process_image.settings import Settings

CACHE_NAMESPACE = "process-image:generation"
#: Reservation idempotency keys are "process-image:<generation id>".
RESERVATION_PREFIX = "process-image:"
#: What an analysis tool's result is.
ANALYSIS_CONTENT_TYPE = "application/json"
#: Longest wait for another caller's identical local generation.
LOCAL_WAIT_S = 60.0
_ETAG = re.compile(r"[0-9A-Za-z_.:+/=-]{1,128}")
#: Seconds past its upload form's life (UPLOAD_URL_TTL_S) after which an upload is sealed
#: (``_head_source``): the form's expiry is the signing container's clock, S3 enforces it
#: and writes LastModified by its own; this covers the skew between the two (Lambda's
#: clock is NTP-synced, well under a second) with room to spare.
SEAL_MARGIN_S = 60
#: Sealed sources a container remembers (a few hundred bytes each), least recently used out.
SEALED_MAX = 4096

# --- Queries ---------------------------------------------------------------------------

INSERT_GENERATION = """
INSERT INTO generations (id, user_id, tool_id, tool_version, model, params, source_key, source_etag,
                         result_key, result, result_content_type, result_bytes, width, height, status,
                         cache_key, credits_charged, reservation_id)
VALUES (%(id)s, %(user_id)s, %(tool_id)s, %(tool_version)s, %(model)s, %(params)s, %(source_key)s,
        %(source_etag)s, %(result_key)s, %(result)s, %(content_type)s, %(result_bytes)s, %(width)s,
        %(height)s, 'succeeded', %(cache_key)s, %(credits_charged)s, %(reservation_id)s)
RETURNING created_at
"""

_GENERATION_COLUMNS = """id, tool_id, params, status, result_key, result, result_content_type, width, height,
       credits_charged, error_code, created_at"""

GET_GENERATION = f"""
SELECT {_GENERATION_COLUMNS}
  FROM generations
 WHERE id = %(id)s AND user_id = %(user_id)s
"""

RECENT_GENERATIONS = f"""
SELECT {_GENERATION_COLUMNS}
  FROM generations
 WHERE user_id = %(user_id)s
 ORDER BY created_at DESC, id
 LIMIT %(limit)s
"""


# --- Results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    key: str
    etag: str
    version_id: str | None
    size: int


# --- The money path --------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """What a request names, worked out from the catalog snapshot before any round trip
    of its own (``plan``); with the source's ETag (``source_etag``, or a sealed upload
    remembered), its cache key too."""

    settings: Settings
    tool: Tool
    known: catalog.Catalog
    canonical: dict[str, Any]
    model: str | None
    cost: int
    analysis: Analysis | None
    object_key: str
    key: str | None  # None when the ETag needs a HEAD first
    sealed: Source | None  # without source_etag: the source if remembered sealed

    def lookup(self, user_id: uuid.UUID) -> tuple[dict[str, str], dict[str, Any]] | None:
        """The hit's read (the cache entry, the caller's balance, the catalog's version)
        as scalar queries and their parameters, to go along the request's admission
        (``http.current_user_along``); None without a key."""
        if self.key is None:
            return None
        return cache.along(self.key, LOOKUP, {"user_id": user_id})


#: What a hit reads along with its cache entry.
LOOKUP = {"balance": ledger.BALANCE, "catalog_version": catalog.VERSION}


def plan(user_id: uuid.UUID, tool_id: str, params: dict[str, Any] | None, source_key: str,
         source_etag: str | None = None) -> Planned:
    """The request's tool, canonical parameters, model, price and source key, and with
    ``source_etag`` (or a source remembered sealed) its cache key: no S3 call, no round
    trip (but the catalog snapshot's first read). Raises what ``create`` would for a bad
    request (422, 404)."""
    s = settings_module.get()
    tool, known = catalog.known_tool(tool_id)
    canonical = catalog.canonical_params(tool, params)
    model = analysis = None
    cost = tool.credit_cost
    if tool.is_ai:
        from process_image import ai_tools

        ai_tools.render_prompt(tool, canonical)  # a catalog bug fails before anything is charged
        model = tool.model or s.AI_IMAGE_MODEL
    elif tool.is_analysis:
        from process_image import face_analysis

        # OpenAI when a key is configured, else offline: the model (in the key) says which.
        analysis = Analysis(face_analysis.provider(tool, s), face_analysis.suggestion_tools(known))
        model, cost = analysis.provider.model, analysis.provider.credit_cost
    object_key = storage.validate_user_key(source_key, user_id)
    sealed = _sealed_source(s, object_key) if source_etag is None else None  # no S3 call
    etag = source_etag if sealed is None else sealed.etag
    key = None
    if etag is not None:
        key = cache_key(user_id, tool, model, canonical, _etag(etag),
                        suggestions=analysis.suggestions if analysis else None)
    return Planned(s, tool, known, canonical, model, cost, analysis, object_key, key, sealed)


@traced
def create(user_id: uuid.UUID, tool_id: str, params: dict[str, Any] | None, source_key: str, *,
           source_etag: str | None = None, deadline: float | None = None,
           planned: Planned | None = None, found: dict[str, Any] | None = None,
           _catalog_checked: bool = False) -> GenerationOut:
    """Run ``tool_id`` on ``source_key`` for the user, charged once (see the module doc).

    ``source_etag``: the ETag S3 answered to the upload, if the client passes it on; a
    cache hit then needs no S3 call (a wrong value can only miss, and a miss checks it
    before charging). ``deadline`` is the Lambda's deadline as a ``time.monotonic()`` value.

    A cache hit is one round trip to Postgres (after the request's own admission,
    ``http.current_user``): the tool comes from the container's catalog snapshot, and one
    statement reads the cache entry, the caller's balance and the catalog's version. A
    changed catalog (its version differs) is read again and the request starts over with
    it, once. ``planned``: this request's ``plan``, made already; ``found``: the results
    of its ``lookup``, read along the admission (then a hit makes no round trip here).
    """
    p = planned or plan(user_id, tool_id, params, source_key, source_etag)
    s, tool, known, canonical, model, cost, analysis, object_key = (
        p.settings, p.tool, p.known, p.canonical, p.model, p.cost, p.analysis, p.object_key)
    source = memo = None
    if source_etag is None:
        source = memo = p.sealed  # a sealed upload: no S3 call
        if source is None:
            source = _head_source(s, object_key)
        source_etag = source.etag
    key = p.key or cache_key(user_id, tool, model, canonical, _etag(source_etag),
                             suggestions=analysis.suggestions if analysis else None)

    if found is not None:  # read along the admission (``Planned.lookup``: only with a key)
        hit, current = cache.found_along(found)
    else:
        hit, current = cache.get_along(key, LOOKUP, {"user_id": user_id})
    if current["catalog_version"] != known.version and not _catalog_checked:
        catalog.refresh()  # the tool, its price or its version may have changed: start over
        return create(user_id, tool_id, params, source_key, source_etag=source_etag, deadline=deadline,
                      _catalog_checked=True)
    if hit is not None:
        return _cached(user_id, tool, hit, s, balance=current["balance"])
    if tool.is_ai:
        from process_image import ai_tools

        ai_tools.require_available()  # 503 ai_unavailable: nothing reserved, nothing charged
    if source is None or source is memo:  # an ETag from the client or the memo: checked before charging
        source = _head_source(s, object_key)
        if _etag(source.etag) != _etag(source_etag):
            raise Conflict("source_etag does not match the uploaded object; upload again or leave it out"
                           if memo is None else "the source image changed; retry")
    with cache.single_flight(key, wait_s=_wait_s(tool, s, deadline), hold_s=_hold_s(deadline)):
        hit = cache.get(key)  # stored by the caller we waited for
        if hit is not None:
            return _cached(user_id, tool, hit, s)
        return _generate(user_id, tool, model, cost, canonical, source, key, s, deadline, analysis)


@dataclass(frozen=True)
class Analysis:
    """How an analysis tool's request is answered: the provider, and the tools its
    suggestions name (their versions are in the cache key)."""

    provider: Any  # face_analysis.Provider
    suggestions: dict[str, Tool]


def cache_key(user_id: uuid.UUID, tool: Tool, model: str | None, params: dict[str, Any], etag: str, *,
              suggestions: dict[str, Tool] | None = None) -> str:
    """The request's identity. The source is named by its ETag, which S3 derives from the
    content (single-part: its MD5; multipart: the parts' MD5s): the same photo uploaded
    twice hits, a replaced object misses. The version id is left out on purpose: two
    versions with one ETag hold the same bytes."""
    memo = _key_inputs(user_id, tool, model, params, etag, suggestions)
    key = _keys.get(memo) if memo is not None else None
    if key is None:
        key = _cache_key(user_id, tool, model, params, etag, suggestions)
        if memo is not None:
            if len(_keys) >= KEYS_MAX:
                _keys.clear()
            _keys[memo] = key
    return key


#: Cache keys worked out already, by their inputs: a repeated request (a hit) skips the
#: canonical JSON and its hash (~10 us). One request at a time per container, so no lock.
_keys: dict[tuple[Any, ...], str] = {}
#: Keys a container remembers (a few hundred bytes each), all forgotten when full.
KEYS_MAX = 4096


def _key_inputs(user_id: uuid.UUID, tool: Tool, model: str | None, params: dict[str, Any], etag: str,
                suggestions: dict[str, Tool] | None) -> tuple[Any, ...] | None:
    """What ``cache_key`` depends on, as a dict key; None unless every parameter is a plain
    scalar. Each value goes with its exact type: True, 1 and 1.0 are equal in Python but
    not all alike in the key (``cache.key``)."""
    types = tuple(map(type, params.values()))
    if not catalog.SCALAR_TYPES.issuperset(types):
        return None
    return (user_id, tool.id, tool.kind, tool.prompt_version, model, etag, tuple(params.items()), types,
            tuple((t.id, t.prompt_version) for t in suggestions.values()) if suggestions else None)


def _cache_key(user_id: uuid.UUID, tool: Tool, model: str | None, params: dict[str, Any], etag: str,
               suggestions: dict[str, Tool] | None) -> str:
    named: dict[str, Any] = {}
    if tool.is_ai:
        from process_image import ai_tools

        engine = f"ai-{ai_tools.ENGINE_VERSION}"
    elif tool.is_analysis:
        from process_image import face_analysis

        engine = f"analysis-{face_analysis.ENGINE_VERSION}-schema-{face_analysis.SCHEMA_VERSION}"
        # A suggestion names another tool's parameter values: a new version of that tool
        # (other values) is a new analysis.
        named["suggests"] = {t.id: t.prompt_version for t in (suggestions or {}).values()}
    else:
        from process_image import local_tools

        engine = f"local-{local_tools.ENGINE_VERSION}"
    # the user as its text (the key's canonical form of a UUID) keeps the key on cache.key's plain path
    return cache.key(CACHE_NAMESPACE, user=str(user_id), tool=tool.id, version=tool.prompt_version,
                     engine=engine, model=model, params=params, source_etag=etag, **named)


def _etag(value: str) -> str:
    """An ETag as S3 writes it, without quotes: hex, maybe ``-<parts>``."""
    etag = value.strip().strip('"')
    if not _ETAG.fullmatch(etag):
        raise InvalidInput("source_etag is not an S3 ETag", code="invalid_input")
    return etag.lower()


def _generate(user_id: uuid.UUID, tool: Tool, model: str | None, cost: int, params: dict[str, Any],
              source: Source, key: str, s: Settings, deadline: float | None,
              analysis: Analysis | None) -> GenerationOut:
    generation_id = uuid.uuid4()
    started = time.perf_counter()
    reservation = None
    if cost > 0:
        reservation = ledger.reserve(user_id, cost,
                                     idempotency_key=f"{RESERVATION_PREFIX}{generation_id}",
                                     reason=f"generation: {tool.id}")
    stored_key = None
    try:
        decoded = images.decode(_read_source(s, source), max_pixels=s.IMAGE_MAX_PIXELS)
        if analysis is not None:
            return _analyse(user_id, tool, model, cost, params, source, key, s, deadline, analysis,
                            decoded, generation_id, reservation, started)
        if tool.is_ai:
            from process_image import ai_tools

            assert model is not None
            encoded = ai_tools.run(tool, params, decoded, model=model, user_id=str(user_id),
                                   settings=s, deadline=deadline)
        else:
            from process_image import local_tools

            encoded = local_tools.run(tool, params, decoded, max_pixels=s.IMAGE_MAX_PIXELS)
        del decoded
        result_key = storage.user_key(user_id, "generations", f"{generation_id}.{encoded.extension}")
        with storage.unavailable_on_error("image storage"):
            storage.put(s.bucket("GENERATIONS_BUCKET"), result_key, encoded.data, encoded.content_type)
        stored_key = result_key
        row = {
            "id": generation_id, "user_id": user_id, "tool_id": tool.id, "tool_version": tool.prompt_version,
            "model": model, "params": _jsonb(params), "source_key": source.key, "source_etag": source.etag,
            "result_key": result_key, "content_type": encoded.content_type, "result_bytes": len(encoded.data),
            "width": encoded.width, "height": encoded.height, "cache_key": key, "result": None,
            "credits_charged": cost, "reservation_id": reservation.id if reservation else None,
        }
        entry = {"generation_id": str(generation_id), "result_key": result_key,
                 "content_type": encoded.content_type}
        with db.transaction() as tx:
            if reservation is not None:
                _settle(reservation.id, tx)
            tx.execute(INSERT_GENERATION, row)
            cache.set(key, entry, s.GENERATION_CACHE_TTL_S, conn=tx, owner=user_id)
    except BaseException as exc:
        if reservation is not None:
            _refund(reservation.id, exc)
        if stored_key is not None:
            _delete_quietly(s.bucket("GENERATIONS_BUCKET"), stored_key)
        raise
    _stored(tool, cost, started)
    url, expires_at = storage.presigned_get(s.bucket("GENERATIONS_BUCKET"), result_key,
                                            expires_s=s.DOWNLOAD_URL_TTL_S)
    return GenerationOut(generation_id=str(generation_id), status="succeeded", tool_id=tool.id, url=url,
                         expires_at=expires_at, cached=False, credits_charged=cost,
                         balance=ledger.balance(user_id), content_type=encoded.content_type)


def _analyse(user_id: uuid.UUID, tool: Tool, model: str | None, cost: int, params: dict[str, Any],
             source: Source, key: str, s: Settings, deadline: float | None, analysis: Analysis,
             decoded: images.Decoded, generation_id: uuid.UUID, reservation: Any,
             started: float) -> GenerationOut:
    """An analysis tool's run, inside ``_generate``'s reservation (which refunds it on any
    failure): the JSON result goes into the generation row and the cache entry, no object
    is stored."""
    from process_image import face_analysis

    result = face_analysis.run(tool, decoded, analysis.provider, analysis.suggestions, user_id=str(user_id),
                               settings=s, deadline=deadline).model_dump(mode="json")
    row = {
        "id": generation_id, "user_id": user_id, "tool_id": tool.id, "tool_version": tool.prompt_version,
        "model": model, "params": _jsonb(params), "source_key": source.key, "source_etag": source.etag,
        "result_key": None, "result": _jsonb(result), "content_type": ANALYSIS_CONTENT_TYPE,
        "result_bytes": None, "width": None, "height": None, "cache_key": key,
        "credits_charged": cost, "reservation_id": reservation.id if reservation else None,
    }
    entry = {"generation_id": str(generation_id), "result": result, "content_type": ANALYSIS_CONTENT_TYPE}
    with db.transaction() as tx:
        if reservation is not None:
            _settle(reservation.id, tx)
        tx.execute(INSERT_GENERATION, row)
        cache.set(key, entry, s.GENERATION_CACHE_TTL_S, conn=tx, owner=user_id)
    _stored(tool, cost, started)
    return GenerationOut(generation_id=str(generation_id), status="succeeded", tool_id=tool.id, url=None,
                         expires_at=None, cached=False, credits_charged=cost, balance=ledger.balance(user_id),
                         content_type=ANALYSIS_CONTENT_TYPE, result=result)


def _cached(user_id: uuid.UUID, tool: Tool, entry: dict[str, Any], s: Settings, *,
            balance: int | None = None) -> GenerationOut:
    if balance is None:
        balance = ledger.balance(user_id)
    url = expires_at = None
    if entry.get("result_key"):
        # a repeated hit may get the URL an earlier one got, with at least half its life left
        url, expires_at = storage.presigned_get(s.bucket("GENERATIONS_BUCKET"), entry["result_key"],
                                                expires_s=s.DOWNLOAD_URL_TTL_S, reuse=True)
    return GenerationOut(generation_id=entry["generation_id"], status="succeeded", tool_id=tool.id, url=url,
                         expires_at=expires_at, cached=True, credits_charged=0,
                         balance=balance, content_type=entry["content_type"],
                         result=entry.get("result"))


def _stored(tool: Tool, cost: int, started: float) -> None:
    """The business figures of a committed generation (the dashboard's)."""
    logger.info("generation stored", extra={"tool": tool.id, "credits": cost,
                                            "ms": round((time.perf_counter() - started) * 1000)})
    metrics.add_metric(name="GenerationsCreated", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="CreditsCharged", unit=MetricUnit.Count, value=cost)


def _settle(reservation_id: uuid.UUID, tx: Any) -> None:
    try:
        ledger.settle(reservation_id, conn=tx)
    except Conflict:
        # cache-cleanup refunded it as stale: this run outlived every timeout. The
        # credits are back with the user; record nothing.
        raise GatewayTimeout("the generation took too long; nothing was charged") from None


def _refund(reservation_id: uuid.UUID, exc: BaseException) -> None:
    code = exc.code if isinstance(exc, AppError) else type(exc).__name__
    try:
        if ledger.refund(reservation_id, reason=f"generation failed: {code}"):
            metrics.add_metric(name="GenerationsRefunded", unit=MetricUnit.Count, value=1)
    except Exception as refund_exc:
        # The database is unreachable or the reservation is settled already; if it is
        # still open, cache-cleanup refunds it once it is stale.
        logger.error("refund failed; left to cache-cleanup", extra={
            "reservation_id": str(reservation_id), "error": type(refund_exc).__name__})


def _wait_s(tool: Tool, s: Settings, deadline: float | None) -> float:
    """How long to wait for an identical request's run: its longest run, within our deadline."""
    if tool.is_ai:
        wait = s.AI_TIMEOUT_S * (s.AI_MAX_RETRIES + 1) + 15
    elif tool.is_analysis:
        wait = s.AI_TIMEOUT_S * (s.AI_MAX_RETRIES + 1) * s.AI_ANALYSIS_ATTEMPTS + 15
    else:
        wait = LOCAL_WAIT_S
    if deadline is not None:
        wait = min(wait, deadline - time.monotonic() - 5)
    return max(wait, 0.5)


def _hold_s(deadline: float | None) -> float:
    """How long our single-flight lease lasts: as long as this invocation can run, so a
    container killed mid-run frees the key for the next caller soon after."""
    if deadline is None:
        return cache.DEFAULT_HOLD_S
    return max(deadline - time.monotonic(), 1.0) + 5


# --- Reading back ----------------------------------------------------------------------


def get(user_id: uuid.UUID, generation_id: str) -> GenerationView:
    """The user's own generation with a fresh download URL; anyone else's is NotFound."""
    try:
        gid = uuid.UUID(generation_id)
    except ValueError:
        raise NotFound("generation not found") from None
    row = db.execute(GET_GENERATION, {"id": gid, "user_id": user_id}, idempotent=True).fetchone()
    if row is None:
        raise NotFound("generation not found")
    return _view(row, settings_module.get())


def recent(user_id: uuid.UUID, limit: int) -> list[GenerationView]:
    if limit <= 0:
        return []
    s = settings_module.get()
    rows = db.execute(RECENT_GENERATIONS, {"user_id": user_id, "limit": limit}, idempotent=True).fetchall()
    return [_view(row, s) for row in rows]


def _view(row: dict[str, Any], s: Settings) -> GenerationView:
    url = expires_at = None
    if row["status"] == "succeeded" and row["result_key"]:
        url, expires_at = storage.presigned_get(s.bucket("GENERATIONS_BUCKET"), row["result_key"],
                                                expires_s=s.DOWNLOAD_URL_TTL_S)
    return GenerationView(
        generation_id=str(row["id"]), tool_id=row["tool_id"], status=row["status"], params=row["params"],
        url=url, expires_at=expires_at, content_type=row["result_content_type"], width=row["width"],
        height=row["height"], credits_charged=row["credits_charged"], error_code=row["error_code"],
        created_at=row["created_at"], result=row["result"],
    )


# --- Storage ---------------------------------------------------------------------------


#: Sealed sources: (bucket, key) -> Source, least recently used first. One request at a
#: time per container (Lambda), so no lock.
_sealed: OrderedDict[tuple[str, str], Source] = OrderedDict()


def _head_source(s: Settings, key: str) -> Source:
    """The source as S3 has it now; remembered if it is sealed (``_is_sealed``), else
    forgotten."""
    bucket = s.bucket("UPLOADS_BUCKET")
    with storage.unavailable_on_error("image storage"):
        meta = storage.head(bucket, key)
    if meta is None:
        _sealed.pop((bucket, key), None)
        raise NotFound("source image not found")
    source = Source(key=key, etag=str(meta.get("ETag", "")).strip('"'), version_id=meta.get("VersionId"),
                    size=int(meta.get("ContentLength", 0)))
    if _is_sealed(s, key, meta):
        _sealed[(bucket, key)] = source
        _sealed.move_to_end((bucket, key))
        if len(_sealed) > SEALED_MAX:
            _sealed.popitem(last=False)
    else:
        _sealed.pop((bucket, key), None)
    return source


def _is_sealed(s: Settings, key: str, meta: dict[str, Any]) -> bool:
    """Whether no upload form can write the object again, so its ETag is final.

    Each form names one fresh key (``uploads.create_form``) and is valid UPLOAD_URL_TTL_S
    from before the object's first upload: once S3's clock is more than that (+
    SEAL_MARGIN_S) past its LastModified, no form can replace it. Only keys under
    ``users/<user>/uploads/``, process-image's forms (journal attachments in the same
    bucket have another function's form life). UPLOAD_URL_TTL_S lowered by a deploy:
    forms signed before keep their longer life, so an object re-sent through one late in
    that life may be remembered stale, as a stale ``source_etag`` from the client would
    be (at worst the caller's own earlier result; a miss checks it).
    """
    modified = meta.get("LastModified")
    if key.split("/", 3)[2] != "uploads" or not isinstance(modified, datetime):
        return False
    now = meta.get("Date") or datetime.now(UTC)  # S3's clock, that of LastModified, if it said
    return (now - modified).total_seconds() > s.UPLOAD_URL_TTL_S + SEAL_MARGIN_S


def _sealed_source(s: Settings, key: str) -> Source | None:
    """The source if ``_head_source`` found it sealed (it can change no more)."""
    bucket = s.bucket("UPLOADS_BUCKET")
    source = _sealed.get((bucket, key))
    if source is not None:
        _sealed.move_to_end((bucket, key))
    return source


def _read_source(s: Settings, source: Source) -> bytes:
    """The source's bytes (size-limited), and the same object the cache key named."""
    with storage.unavailable_on_error("image storage"):
        data = storage.read(s.bucket("UPLOADS_BUCKET"), source.key, max_bytes=s.IMAGE_MAX_UPLOAD_BYTES)
    # An ETag of a single-part SSE-S3 object is the MD5 of its bytes. If ours differs,
    # either the object was replaced since the HEAD (then the cache key names another
    # image) or the ETag is not an MD5 (multipart, KMS): ask S3 again to tell which.
    if hashlib.md5(data, usedforsecurity=False).hexdigest() != source.etag:
        again = _head_source(s, source.key)
        if (again.etag, again.version_id) != (source.etag, source.version_id):
            raise Conflict("the source image changed while it was being read; retry")
    return data


def _delete_quietly(bucket: str, key: str) -> None:
    try:
        storage.s3().delete_object(Bucket=bucket, Key=key)
    except Exception as exc:
        logger.warning("could not remove an unrecorded result", extra={"error": type(exc).__name__})



def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value)
