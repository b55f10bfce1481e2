"""S3 helpers: user-scoped keys, presigned POST/GET, bounded reads, streaming uploads.

One boto3 client per container, made on first use (boto3 is imported then, never at
import time). boto3 itself honours ``AWS_ENDPOINT_URL`` (moto locally) and the region
variables; the client signs with SigV4 and has short timeouts and standard retries, so
a stalled S3 call fails inside the Lambda timeout instead of eating it.

Keys of user content live under ``users/<user uuid>/``. Keys that come from a client are
checked with ``validate_user_key``: a malformed key is InvalidInput (422); a well-formed
key outside the caller's prefix is NotFound (404), exactly like a missing object, so
other users' objects cannot be probed. Every helper also refuses malformed keys.

Objects are written with SSE-S3 (``AES256``) and a SHA-256 checksum that S3 verifies on
arrival. Presigned URLs made with temporary (role) credentials stop working when those
credentials expire, whichever comes first.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
import unicodedata
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from common.errors import InvalidInput, NotFound, PayloadTooLarge, Unavailable
from common.observability import logger, traced

if TYPE_CHECKING:
    from types import TracebackType

    from mypy_boto3_s3 import S3Client  # the boto3 stubs' types (dev only)
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

USER_PREFIX = "users"
MAX_KEY_BYTES = 1024  # S3's own limit
MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3: every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MiB
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 limit
SSE: Final = "AES256"

#: Unicode categories refused in keys: control, format (zero-width, bidi overrides),
#: surrogates.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # the ASCII characters of those categories
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})

_client: S3Client | None = None
_client_lock = threading.Lock()


def s3() -> S3Client:
    """This container's S3 client (thread-safe once made; made under a lock because
    boto3 sessions are not)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    signature_version="s3v4",
                    connect_timeout=5,
                    read_timeout=30,
                    retries={"mode": "standard", "max_attempts": 3},
                    max_pool_connections=10,
                )
                _client = boto3.session.Session().client("s3", config=config)
    return _client


def reset() -> None:
    """Forget the client (tests that change the endpoint or credentials)."""
    global _client
    with _client_lock:
        _client = None
    _recent_urls.clear()


# --- Keys ------------------------------------------------------------------------------


def user_key(user_id: uuid.UUID | str, *parts: str) -> str:
    """``users/<uuid>/<parts...>``, validated. Parts may contain ``/``."""
    if not parts:
        raise ValueError("a key needs at least one part after the user prefix")
    uid = _user_id(user_id)
    return validate_user_key("/".join([USER_PREFIX, uid, *parts]), uid)


def validate_user_key(key: str, user_id: uuid.UUID | str) -> str:
    """The key, if it is well formed and inside the user's prefix.

    InvalidInput for a malformed key (``..``/``.`` or empty segments, leading ``/``,
    backslashes, control or invisible characters, over 1024 bytes); NotFound for a
    well-formed key outside ``users/<user_id>/``.
    """
    key = check_key(key)
    if not key.startswith(f"{USER_PREFIX}/{_user_id(user_id)}/"):
        raise NotFound("object not found")
    return key


def check_key(key: str) -> str:
    """The key, if it is well formed (see ``validate_user_key``); no ownership check."""
    if not isinstance(key, str) or not key:
        raise InvalidInput("invalid storage key")
    if key.isascii():  # the usual key: its only refused characters are the controls (Cc)
        if _ASCII_CONTROL.search(key):
            raise InvalidInput("invalid storage key")
    elif any(unicodedata.category(ch) in _BAD_CATEGORIES for ch in key):
        raise InvalidInput("invalid storage key")
    if len(key.encode()) > MAX_KEY_BYTES or "\\" in key:
        raise InvalidInput("invalid storage key")
    # A leading '/' gives an empty first segment; '//' and a trailing '/' empty ones.
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise InvalidInput("invalid storage key")
    return key


def _user_id(user_id: uuid.UUID | str) -> str:
    try:
        return str(user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(str(user_id)))
    except ValueError:
        raise InvalidInput("invalid user id") from None


# --- Presigned URLs --------------------------------------------------------------------


def presigned_post(bucket: str, key: str, *, content_types: Sequence[str], max_bytes: int,
                   content_type: str | None = None, min_bytes: int = 1,
                   expires_s: int = 300, tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A browser/app upload form for exactly ``key``: ``{"url", "fields", "expires_at"}``.

    The client's declared ``content_type`` must be in ``content_types`` (it may be
    omitted when only one is allowed); the policy then fixes that type, the key, SSE and
    the size range ``[min_bytes, max_bytes]``, so S3 refuses any other upload. ``tags``
    become the object's tags (the form's ``tagging`` field, fixed by the policy too): a
    bucket lifecycle rule can then expire these objects and no others.
    """
    key = check_key(key)
    chosen = _allowed_content_type(content_type, content_types)
    if not 0 <= min_bytes <= max_bytes:
        raise ValueError("need 0 <= min_bytes <= max_bytes")
    expires_at = _expires_at(expires_s)
    fields = {"Content-Type": chosen, "x-amz-server-side-encryption": SSE}
    conditions: list[Any] = [
        {"Content-Type": chosen},
        {"x-amz-server-side-encryption": SSE},
        ["content-length-range", min_bytes, max_bytes],
    ]  # boto3 adds {"bucket": ...} and {"key": key} (exact match) itself
    if tags:
        from xml.sax.saxutils import escape

        tag_set = "".join(f"<Tag><Key>{escape(k)}</Key><Value>{escape(v)}</Value></Tag>"
                          for k, v in tags.items())
        fields["tagging"] = f"<Tagging><TagSet>{tag_set}</TagSet></Tagging>"
        conditions.append({"tagging": fields["tagging"]})
    post = s3().generate_presigned_post(bucket, key, Fields=fields, Conditions=conditions,
                                        ExpiresIn=expires_s)
    return {"url": post["url"], "fields": post["fields"], "expires_at": expires_at}


def presigned_get(bucket: str, key: str, *, expires_s: int = 900,
                  reuse: bool = False) -> tuple[str, datetime]:
    """A download URL and the time it stops working (never later than stated).

    ``reuse``: answer with a URL this container made for the same object and lifetime
    while more than half of that lifetime is left (its own, earlier ``expires_at``), so
    the client still has at least ``expires_s / 2`` to start the download. For hot
    repeated reads (a cache hit): botocore's signing is ~0.3 ms, a third of a hit's own
    work. The URL grants nothing a fresh one would not: the same object, no longer.
    """
    if reuse and type(key) is str:  # a key is kept only once check_key took it
        made = _recent_urls.get((bucket, key, expires_s))
        if made is not None and made[2] - time.monotonic() > expires_s / 2:
            return made[0], made[1]
    key = check_key(key)
    started = time.monotonic()
    expires_at = _expires_at(expires_s)
    url = s3().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                      ExpiresIn=expires_s)
    if reuse:
        if len(_recent_urls) >= _RECENT_URLS_MAX:
            _recent_urls.clear()  # bounded; hot keys come back on their next request
        _recent_urls[(bucket, key, expires_s)] = (url, expires_at, started + expires_s)
    return url, expires_at


#: URLs made with ``reuse``: (bucket, key, expires_s) -> (url, expires_at, monotonic end).
_recent_urls: dict[tuple[str, str, int], tuple[str, datetime, float]] = {}
_RECENT_URLS_MAX = 1024


def _allowed_content_type(declared: str | None, allowed: Sequence[str]) -> str:
    if isinstance(allowed, str) or not allowed:
        raise ValueError("content_types must be a non-empty sequence of types")
    normal = [ct.strip().lower() for ct in allowed]
    if declared is None:
        if len(normal) == 1:
            return normal[0]
        raise InvalidInput("content type is required")
    if declared.strip().lower() not in normal:
        raise InvalidInput("content type not allowed")
    return declared.strip().lower()


def _expires_at(expires_s: int) -> datetime:
    if not 1 <= expires_s <= MAX_PRESIGN_SECONDS:
        raise ValueError("expires_s must be between 1 second and 7 days")
    return datetime.now(UTC) + timedelta(seconds=expires_s)


# --- Objects ---------------------------------------------------------------------------


@contextmanager
def unavailable_on_error(what: str) -> Iterator[None]:
    """S3 failing (throttling, outage, misconfiguration) inside the block is 503
    ``unavailable`` ("<what> is unavailable; retry shortly"): the client retries later.
    Logged once with the error's class and S3's code, never the key or the body."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
        logger.error("storage failed", extra={"error": type(exc).__name__, "s3_code": code})
        raise Unavailable(f"{what} is unavailable; retry shortly") from None


class UploadResult(NamedTuple):
    sha256: str  # hex digest of the whole content
    size: int
    etag: str


@traced
def head(bucket: str, key: str) -> dict[str, Any] | None:
    """The object's metadata (ContentLength, ContentType, ETag, LastModified,
    ChecksumSHA256, ...), or None if there is no such object. Other errors (403: the role
    lacks s3:ListBucket, S3 then hides 404s) propagate.

    Also ``Date``: when S3 answered, by S3's clock (the response's Date header, the clock
    of LastModified), if the response had one; an object's age needs no local clock."""
    from botocore.exceptions import ClientError

    try:
        response = s3().head_object(Bucket=bucket, Key=check_key(key), ChecksumMode="ENABLED")
    except ClientError as exc:
        if _not_found(exc):
            return None
        raise
    meta: dict[str, Any] = {name: value for name, value in response.items() if name != "ResponseMetadata"}
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        from email.utils import parsedate_to_datetime

        try:
            parsed = parsedate_to_datetime(date)
            meta["Date"] = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # "-0000": UTC
        except (TypeError, ValueError):
            pass  # a malformed header: as if there were none
    return meta


@traced
def read(bucket: str, key: str, *, max_bytes: int) -> bytes:
    """The object's bytes. An object larger than ``max_bytes`` is refused
    (PayloadTooLarge) from its Content-Length, before its body is read; a missing one is
    NotFound."""
    from botocore.exceptions import ClientError

    try:
        response = s3().get_object(Bucket=bucket, Key=check_key(key))
    except ClientError as exc:
        if _not_found(exc):
            raise NotFound("object not found") from None
        raise
    body = response["Body"]
    try:
        if response["ContentLength"] > max_bytes:
            raise PayloadTooLarge("object is too large")
        data = body.read(max_bytes + 1)
        if len(data) > max_bytes:  # a length header that lied
            raise PayloadTooLarge("object is too large")
        return data
    finally:
        body.close()  # drops the connection without draining an unread body


@traced
def put(bucket: str, key: str, data: bytes, content_type: str) -> UploadResult:
    """One PUT (small objects), SSE-S3, SHA-256 checked by S3."""
    digest = hashlib.sha256(data).digest()
    response = s3().put_object(
        Bucket=bucket, Key=check_key(key), Body=data, ContentType=content_type,
        ServerSideEncryption=SSE, ChecksumAlgorithm="SHA256",
        ChecksumSHA256=base64.b64encode(digest).decode(),
    )
    return UploadResult(digest.hex(), len(data), response["ETag"].strip('"'))


def _not_found(exc: Any) -> bool:
    return exc.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES


# --- Streaming uploads -----------------------------------------------------------------


class MultipartUpload:
    """A write-only, file-like stream into one S3 object, in constant memory.

    Bytes are buffered up to ``part_size`` and sent as numbered parts, each with its
    SHA-256 checksum (S3 verifies it and stores the composite checksum of the object);
    the whole content's SHA-256 is computed on the way. Content that never fills a part
    is sent with one PUT instead. Used as a context manager it completes on success and
    aborts the upload (S3 drops the parts) on any error, including errors from the data
    source; any error inside ``write``/``complete`` aborts too. Works as ``fileobj`` for
    ``gzip.GzipFile(fileobj=upload, mode="wb")`` or ``tarfile`` streams::

        with storage.MultipartUpload(bucket, key, content_type="application/gzip") as up:
            with gzip.GzipFile(fileobj=up, mode="wb") as gz:
                gz.write(data)
        up.result  # UploadResult(sha256, size, etag)

    ``concurrency``: parts sent at once, each in a thread of its own while the next one
    fills (each part in flight holds its bytes: memory is about ``concurrency`` + 1 parts);
    1 (the default) sends each part before taking more data. A part that fails is raised
    at the next part or at ``complete``, and aborts the upload.

    The bucket should also have a lifecycle rule aborting incomplete multipart uploads
    after a day: the backstop for a container killed mid-upload.
    """

    def __init__(self, bucket: str, key: str, *, content_type: str,
                 part_size: int = DEFAULT_PART_SIZE, concurrency: int = 1) -> None:
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError("part_size must be between 5 MiB and 5 GiB")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.bucket, self.key, self.content_type = bucket, check_key(key), content_type
        self.part_size = part_size
        self.concurrency = concurrency
        self._sending: deque[Future[CompletedPartTypeDef]] = deque()  # parts in flight, oldest first
        self._senders: ThreadPoolExecutor | None = None
        self._next_part = 1
        self.result: UploadResult | None = None
        self._buffer = bytearray()
        self._parts: list[CompletedPartTypeDef] = []
        self._upload_id: str | None = None
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._state = "open"  # open | completed | aborted

    # file-object protocol (what gzip, tarfile and shutil.copyfileobj use)
    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Nothing to do: data leaves in whole parts."""

    @property
    def closed(self) -> bool:
        return self._state != "open"

    def close(self) -> None:
        """As a file's close: finish the object (``complete``) unless already done."""
        if self._state == "open":
            self.complete()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._require_open()
        view = memoryview(data).cast("B")
        size = len(view)
        try:
            self._sha256.update(view)
            self._size += size
            while view:
                room = self.part_size - len(self._buffer)
                self._buffer += view[:room]
                view = view[room:]
                if len(self._buffer) == self.part_size:
                    self._send_part()
        except BaseException:
            self.abort()
            raise
        return size

    def complete(self) -> UploadResult:
        self._require_open()
        client = s3()
        try:
            if self._upload_id is None:  # small content: one PUT
                etag = client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=bytes(self._buffer),
                    ContentType=self.content_type, ServerSideEncryption=SSE, ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=base64.b64encode(self._sha256.digest()).decode(),
                )["ETag"]
            else:
                if self._buffer:
                    self._send_part()
                while self._sending:
                    self._parts.append(self._sending.popleft().result())
                self._stop_senders()
                etag = client.complete_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )["ETag"]
        except BaseException:
            self.abort()
            raise
        self._state = "completed"
        self._buffer = bytearray()
        self.result = UploadResult(self._sha256.hexdigest(), self._size, etag.strip('"'))
        return self.result

    def abort(self) -> None:
        """Drop the upload and its parts (idempotent; failures are logged, not raised,
        so the error that caused the abort is the one the caller sees)."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._buffer = bytearray()
        for sending in self._sending:  # parts in flight end before the abort (or S3 keeps them)
            sending.cancel()
        self._stop_senders()
        self._sending.clear()
        if self._upload_id is not None:
            try:
                s3().abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
            except Exception as exc:
                from common.observability import logger

                logger.warning("multipart upload abort failed; the bucket lifecycle rule will clean up",
                               extra={"bucket": self.bucket, "error": type(exc).__name__})

    def __enter__(self) -> MultipartUpload:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.complete()

    def _send_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = s3().create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type,
                ServerSideEncryption=SSE, ChecksumAlgorithm="SHA256",
            )["UploadId"]
        number = self._next_part
        if number > MAX_PARTS:
            raise ValueError("object exceeds 10,000 parts: use a larger part_size")
        self._next_part += 1
        while len(self._sending) >= self.concurrency:  # at most `concurrency` in flight
            self._parts.append(self._sending.popleft().result())
        body, self._buffer = bytes(self._buffer), bytearray()
        if self.concurrency == 1:
            self._parts.append(self._upload_part(number, body))
            return
        if self._senders is None:
            self._senders = ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-part")
        self._sending.append(self._senders.submit(self._upload_part, number, body))

    def _upload_part(self, number: int, body: bytes) -> CompletedPartTypeDef:
        checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
        response = s3().upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id or "", PartNumber=number,
            Body=body, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
        )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _stop_senders(self) -> None:
        if self._senders is not None:
            self._senders.shutdown(wait=True)
            self._senders = None

    def _require_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"upload is {self._state}")
