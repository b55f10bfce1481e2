"""Voice and photo notes: upload forms, reading them back, deleting them with their entry,
and turning them into text for the analysis.

- An attachment is one object ``users/<author>/journal/<entry>/<attachment>.<ext>`` in the
  uploads bucket, uploaded by the author through a presigned POST that fixes its key,
  content type and size range. Only the entry's author may add or delete attachments.
- Whoever may read the entry may read its attachments (the database decides:
  ``journal_entries_visible_to``), through presigned GETs; anyone else gets 404.
- Analysing an entry reads each attachment once: its bytes must be the declared kind and
  within the limits (``media``), then voice notes are transcribed and photos described
  (``ai_media``), each cached per user and content (SHA-256 of the bytes) and kept on the
  attachment row. Every check runs before any provider call, so a bad file costs nothing.
- Offline (no key, or ANALYZE_PROVIDER=offline): photos are left out with a note in the
  analysis; a voice note not yet transcribed answers 503 ``ai_unavailable``.
- Transcripts, descriptions and file contents never reach the logs: log lines carry ids,
  kinds, sizes, durations and timings.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from analyze_entry import entries, media
from analyze_entry.schema import Attachment, AttachmentUpload
from common import cache, storage
from common.errors import AppError, Conflict, InvalidInput, NotFound, PayloadTooLarge, Unavailable
from common.observability import logger

if TYPE_CHECKING:
    from analyze_entry.settings import AnalyzeSettings

#: Parallel provider calls of one analysis (transcriptions and descriptions wait on I/O).
MAX_PARALLEL = 4
PHOTOS_OFFLINE_NOTE = "{n} photo(s) left out: describing photos needs the OpenAI provider."
PHOTOS_FAILED_NOTE = "{n} photo(s) left out: the vision provider failed."


class AIUnavailable(Unavailable):
    """A voice note needs the transcription provider, and none is configured."""

    code = "ai_unavailable"


class TooManyAttachments(Conflict):
    code = "too_many_attachments"


class AttachmentNotUploaded(Conflict):
    code = "attachment_not_uploaded"


class UnsupportedType(InvalidInput):
    code = "unsupported_media_type"


# --- routes --------------------------------------------------------------------------------


def create_form(author_id: UUID, entry_id: UUID, content_type: str, size: int,
                s: AnalyzeSettings) -> AttachmentUpload:
    """A presigned upload form for one more attachment of the author's entry."""
    kind_ext = media.kind_of(content_type)
    if kind_ext is None:
        allowed = ", ".join([*media.AUDIO_TYPES, *media.IMAGE_TYPES])
        raise UnsupportedType(f"content_type must be one of: {allowed}")
    kind, extension = kind_ext
    limit = s.ANALYZE_AUDIO_MAX_BYTES if kind == "audio" else s.ANALYZE_IMAGE_MAX_BYTES
    if size > limit:
        what = "voice notes" if kind == "audio" else "photos"
        raise PayloadTooLarge(f"{what} may be at most {limit} bytes")
    if entries.own(author_id, entry_id) is None:
        raise NotFound("no such entry")
    attachment_id = uuid.uuid4()
    key = storage.user_key(author_id, "journal", str(entry_id), f"{attachment_id}.{extension}")
    declared = content_type.strip().lower()
    if not entries.insert_attachment(author_id, entry_id, attachment_id=attachment_id, kind=kind,
                                     content_type=declared, object_key=key, declared_bytes=size,
                                     max_attachments=s.ANALYZE_MAX_ATTACHMENTS):
        if entries.own(author_id, entry_id) is None:  # deleted meanwhile
            raise NotFound("no such entry")
        raise TooManyAttachments(f"an entry may have at most {s.ANALYZE_MAX_ATTACHMENTS} attachments")
    with storage.unavailable_on_error("attachment storage"):
        form = storage.presigned_post(s.bucket(), key, content_types=[declared], content_type=declared,
                                      max_bytes=size, expires_s=s.ANALYZE_UPLOAD_URL_TTL_S)
    logger.info("attachment form issued", extra={"entry_id": str(entry_id), "kind": kind,
                                                 "attachment_id": str(attachment_id), "declared_bytes": size})
    return AttachmentUpload(attachment_id=attachment_id, kind=kind, key=key, url=form["url"],
                            fields=form["fields"], expires_at=form["expires_at"], max_bytes=size)


def views(viewer: UUID, entry_id: UUID, s: AnalyzeSettings) -> list[Attachment]:
    """The entry's attachments with fresh download URLs, if the viewer may read the entry."""
    rows = entries.visible_attachments(viewer, entry_id)
    if not rows:
        return []
    bucket = s.bucket()
    out = []
    for row in rows:
        url, expires_at = storage.presigned_get(bucket, row["object_key"],
                                                expires_s=s.ANALYZE_DOWNLOAD_URL_TTL_S)
        out.append(Attachment(id=row["id"], kind=row["kind"], content_type=row["content_type"],
                              bytes=row["bytes"], duration_s=row["duration_s"], transcript=row["transcript"],
                              language=row["language"], description=row["description"],
                              checked=row["sha256"] is not None, url=url, expires_at=expires_at,
                              created_at=row["created_at"]))
    return out


def delete(author_id: UUID, entry_id: UUID, attachment_id: UUID, s: AnalyzeSettings) -> None:
    key = entries.delete_attachment(author_id, entry_id, attachment_id)
    if key is None:
        raise NotFound("no such attachment")
    _delete_objects(s, [key])


def delete_entry(author_id: UUID, entry_id: UUID, s: AnalyzeSettings) -> None:
    """The entry and its attachments: the objects first (a failure leaves everything in
    place, to be retried), then the row (the attachment rows go with it)."""
    if entries.own(author_id, entry_id) is None:
        raise NotFound("no such entry")
    _delete_objects(s, [row["object_key"] for row in entries.own_attachments(author_id, entry_id)])
    if not entries.delete(author_id, entry_id):
        raise NotFound("no such entry")
    logger.info("entry deleted", extra={"entry_id": str(entry_id)})


def _delete_objects(s: AnalyzeSettings, keys: list[str]) -> None:
    if not keys:
        return
    with storage.unavailable_on_error("attachment storage"):
        result = storage.s3().delete_objects(Bucket=s.bucket(), Delete={"Objects": [{"Key": k} for k in keys],
                                                                       "Quiet": True})
    if result.get("Errors"):
        logger.error("attachment objects not deleted", extra={"count": len(result["Errors"])})
        raise Unavailable("the attachments could not be deleted; retry shortly")


# --- analysis inputs -------------------------------------------------------------------------


@dataclass
class Inputs:
    """What an entry's attachments add to its analysis."""

    voice_notes: list[dict[str, Any]] = field(default_factory=list)  # {"transcript", "language"}
    photos: list[dict[str, Any]] = field(default_factory=list)  # {"description"}
    notes: list[str] = field(default_factory=list)
    attachments: int = 0  # how many the entry has (0: nothing more to read back)


@dataclass
class _Work:
    row: dict[str, Any]
    sha256: str
    data: bytes | None = None  # the bytes to send (audio as uploaded; photos as a small JPEG)
    result: Any = None
    error: BaseException | None = None


def analysis_inputs(author_id: UUID, entry_id: UUID, s: AnalyzeSettings, api_key: str | None) -> Inputs:
    """Transcripts and descriptions of the entry's attachments, made where missing.

    ``api_key`` None means offline: photos are left out (with a note), and a voice note
    without a transcript yet is 503 ``ai_unavailable``. Raises the first bad file's 4xx
    before any provider call.
    """
    rows = entries.own_attachments(author_id, entry_id)
    inputs = Inputs(attachments=len(rows))
    if not rows:
        return inputs
    pending: list[_Work] = []
    for row in rows:
        done = row["transcript"] if row["kind"] == "audio" else row["description"]
        if done is not None:
            continue
        work = _check(author_id, row, s)
        if row["kind"] == "audio" and api_key is None:
            raise AIUnavailable("voice notes need the transcription provider, which is not available "
                                "right now")
        pending.append(work)
    if api_key is not None and pending:
        _fill(author_id, pending, s, api_key)
    photos_failed = 0
    for work in pending:
        if work.error is not None:
            if work.row["kind"] == "image" and s.ANALYZE_FALLBACK_OFFLINE and _provider_failure(work.error):
                photos_failed += 1
                continue
            raise work.error
    for row in entries.own_attachments(author_id, entry_id):
        if row["kind"] == "audio" and row["transcript"] is not None:
            inputs.voice_notes.append({"transcript": row["transcript"], "language": row["language"]})
        elif row["kind"] == "image" and row["description"] is not None:
            inputs.photos.append({"description": row["description"]})
    left_out = sum(1 for row in rows if row["kind"] == "image") - len(inputs.photos)
    if api_key is None and left_out:
        inputs.notes.append(PHOTOS_OFFLINE_NOTE.format(n=left_out))
    elif photos_failed:
        inputs.notes.append(PHOTOS_FAILED_NOTE.format(n=photos_failed))
    return inputs


def _check(author_id: UUID, row: dict[str, Any], s: AnalyzeSettings) -> _Work:
    """Read the upload and check it is what it claims, within the limits (4xx otherwise)."""
    audio = row["kind"] == "audio"
    limit = s.ANALYZE_AUDIO_MAX_BYTES if audio else s.ANALYZE_IMAGE_MAX_BYTES
    try:
        with storage.unavailable_on_error("attachment storage"):
            data = storage.read(s.bucket(), row["object_key"], max_bytes=limit)
    except NotFound:
        raise AttachmentNotUploaded(f"attachment {row['id']} has not been uploaded; upload it or delete it") \
            from None
    except AppError as exc:
        exc.message = f"attachment {row['id']}: {exc.message}"
        raise
    digest = hashlib.sha256(data).hexdigest()
    duration = None
    try:
        if audio:
            duration = media.audio_duration(data, media.AUDIO_TYPES[row["content_type"]])
            if duration > s.ANALYZE_AUDIO_MAX_SECONDS:
                raise media.AudioTooLong(
                    f"voice notes may be at most {s.ANALYZE_AUDIO_MAX_SECONDS} seconds long")
            sent = data
        else:
            sent = media.vision_jpeg(data, max_pixels=s.ANALYZE_IMAGE_MAX_PIXELS)
    except AppError as exc:
        exc.message = f"attachment {row['id']}: {exc.message}"
        logger.info("attachment refused", extra={"attachment_id": str(row["id"]), "code": exc.code})
        raise
    if row["sha256"] != digest:
        entries.set_attachment_checked(author_id, row["id"], sha256=digest, size=len(data),
                                       duration_s=duration)
    logger.info("attachment checked", extra={"attachment_id": str(row["id"]), "kind": row["kind"],
                                             "bytes": len(data), "duration_s": duration})
    return _Work(row=row, sha256=digest, data=sent)


def _fill(author_id: UUID, pending: list[_Work], s: AnalyzeSettings, api_key: str) -> None:
    """Transcribe and describe what the cache doesn't hold (in parallel), cache the results
    and keep them on the attachment rows."""
    from analyze_entry import ai_media

    keys = {id(w): _cache_key(author_id, w, s) for w in pending}
    cached = cache.get_many(list(keys.values()))
    todo = []
    for work in pending:
        hit = cached.get(keys[id(work)])
        if hit is not None:
            work.result = hit
        else:
            todo.append(work)

    def run(work: _Work) -> None:
        assert work.data is not None
        try:
            if work.row["kind"] == "audio":
                extension = media.AUDIO_TYPES[work.row["content_type"]]
                t = ai_media.transcribe(work.data, extension, work.row["content_type"], api_key=api_key,
                                        model=s.ANALYZE_TRANSCRIBE_MODEL,
                                        timeout_s=s.ANALYZE_TRANSCRIBE_TIMEOUT_S,
                                        max_retries=s.ANALYZE_OPENAI_MAX_RETRIES)
                work.result = {"transcript": t.text, "language": t.language, "model": t.model}
            else:
                text = ai_media.describe(work.data, api_key=api_key, model=s.ANALYZE_VISION_MODEL,
                                         timeout_s=s.ANALYZE_OPENAI_TIMEOUT_S,
                                         max_retries=s.ANALYZE_OPENAI_MAX_RETRIES)
                work.result = {"description": text, "model": s.ANALYZE_VISION_MODEL}
        except BaseException as exc:  # handed back to the request's thread
            work.error = exc

    started = time.perf_counter()
    if len(todo) == 1:
        run(todo[0])
    elif todo:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(todo))) as pool:
            list(pool.map(run, todo))
    computed = {id(w) for w in todo}
    for work in pending:
        if work.error is not None or work.result is None:
            continue
        if id(work) in computed:
            cache.set(keys[id(work)], work.result, s.ANALYZE_CACHE_TTL_S, owner=author_id)
        result = work.result
        entries.set_attachment_text(author_id, work.row["id"], sha256=work.sha256,
                                    transcript=result.get("transcript"), language=result.get("language"),
                                    description=result.get("description"), described_by=result["model"])
    if todo:
        logger.info("attachments read by the provider", extra={
            "count": len(todo), "failed": sum(1 for w in todo if w.error is not None),
            "ms": round((time.perf_counter() - started) * 1000)})


def _cache_key(author_id: UUID, work: _Work, s: AnalyzeSettings) -> str:
    """Per user and content: the same voice note is transcribed once, whatever entry it
    is attached to; another user's identical file is never an answer."""
    from analyze_entry import ai_media

    if work.row["kind"] == "audio":
        return cache.key("analyze-entry:transcript", author_id, work.sha256, model=s.ANALYZE_TRANSCRIBE_MODEL)
    return cache.key("analyze-entry:photo", author_id, work.sha256, model=s.ANALYZE_VISION_MODEL,
                     prompt_version=ai_media.DESCRIBE_VERSION, engine=media.VISION_MAX_SIDE)


def _provider_failure(exc: BaseException) -> bool:
    from analyze_entry.openai_analyser import ProviderFailed, ProviderTimeout

    return isinstance(exc, ProviderFailed | ProviderTimeout)

