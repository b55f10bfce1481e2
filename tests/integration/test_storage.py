"""S3 helpers against a moto server: user-scoped key validation, presigned POST/GET,
bounded reads, and streaming multipart uploads that checksum and abort cleanly."""

import base64
import gzip
import hashlib
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from common import storage
from common.errors import InvalidInput, NotFound, PayloadTooLarge

ME = "0b5c1c2e-5f0e-4c55-9a0e-3a9c0b0c0d01"
OTHER = "7d1f3a4b-0000-4000-8000-000000000002"
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def client(s3_endpoint):
    storage.reset()  # the client is made against this session's moto endpoint
    yield storage.s3()
    storage.reset()


@pytest.fixture
def bucket():
    return os.environ["UPLOADS_BUCKET"]


def unique_key(*parts):
    return storage.user_key(ME, uuid.uuid4().hex, *parts)


# --- keys ------------------------------------------------------------------------------

@pytest.mark.parametrize("key", [
    f"users/{ME}/photo.jpg",
    f"users/{ME}/uploads/2026/11/a b (1).jpg",
    f"users/{ME}/résumé.png",
    f"users/{ME}/.hidden",
    f"users/{ME}/a..b.jpg",
])
def test_keys_inside_the_users_prefix_are_accepted(key):
    assert storage.validate_user_key(key, ME) == key
    assert storage.validate_user_key(key, uuid.UUID(ME)) == key


@pytest.mark.parametrize("key", [
    "",
    f"users/{ME}/../{OTHER}/photo.jpg",
    f"users/{ME}/..",
    f"users/{ME}/./photo.jpg",
    f"/users/{ME}/photo.jpg",
    f"users/{ME}//photo.jpg",
    f"users/{ME}/",
    f"users/{ME}/dir\\photo.jpg",
    f"users/{ME}/photo\x00.jpg",
    f"users/{ME}/photo\n.jpg",
    f"users/{ME}/photo\x7f.jpg",
    f"users/{ME}/evil\u202egpj.exe",  # bidi override
    f"users/{ME}/zero\u200bwidth.jpg",
    f"users/{ME}/" + "a" * 1000,
])
def test_malformed_keys_are_invalid_input(key):
    with pytest.raises(InvalidInput):
        storage.validate_user_key(key, ME)


@pytest.mark.parametrize("key", [
    f"users/{OTHER}/photo.jpg",
    f"users/{ME.upper()}/photo.jpg",
    f"users/{ME}",
    f"users/{ME}x/photo.jpg",
    f"backups/{ME}/photo.jpg",
    "photo.jpg",
])
def test_keys_outside_the_users_prefix_are_not_found(key):
    with pytest.raises(NotFound):
        storage.validate_user_key(key, ME)


def test_user_key_builds_a_validated_key():
    assert storage.user_key(uuid.UUID(ME), "uploads", "a.jpg") == f"users/{ME}/uploads/a.jpg"
    with pytest.raises(InvalidInput):
        storage.user_key(ME, "..", "a.jpg")
    with pytest.raises(InvalidInput):
        storage.user_key("not-a-uuid", "a.jpg")


def test_client_is_made_once_and_honours_the_endpoint(s3_endpoint):
    assert storage.s3() is storage.s3()
    assert storage.s3().meta.endpoint_url == s3_endpoint


# --- presigned POST / GET --------------------------------------------------------------

def test_presigned_post_uploads_and_its_policy_binds_key_type_and_size(bucket):
    key = unique_key("photo.png")
    post = storage.presigned_post(bucket, key, content_types=["image/jpeg", "image/png"],
                                  content_type="IMAGE/PNG", max_bytes=1000, expires_s=120)
    # The policy (moto does not enforce it, so decode and check it)
    policy = json.loads(base64.b64decode(post["fields"]["policy"]))
    conditions = policy["conditions"]
    assert {"key": key} in conditions
    assert {"bucket": bucket} in conditions
    assert {"Content-Type": "image/png"} in conditions
    assert ["content-length-range", 1, 1000] in conditions
    assert {"x-amz-server-side-encryption": "AES256"} in conditions
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expiration - post["expires_at"]) < timedelta(seconds=5)
    assert post["expires_at"] - datetime.now(UTC) <= timedelta(seconds=120)
    # The form uploads (multipart/form-data, fields first, file last)
    response = requests.post(post["url"], data=post["fields"],
                             files={"file": ("photo.png", b"\x89PNG fake", "image/png")}, timeout=10)
    assert response.status_code in (200, 201, 204), response.text
    meta = storage.head(bucket, key)
    assert (meta["ContentLength"], meta["ContentType"]) == (len(b"\x89PNG fake"), "image/png")


def test_presigned_post_refuses_a_type_outside_the_allow_list(bucket):
    with pytest.raises(InvalidInput):
        storage.presigned_post(bucket, unique_key("x.gif"), content_types=["image/jpeg"],
                               content_type="image/gif", max_bytes=10)
    with pytest.raises(InvalidInput):  # several allowed: the client must say which
        storage.presigned_post(bucket, unique_key("x"), content_types=["image/jpeg", "image/png"],
                               max_bytes=10)
    post = storage.presigned_post(bucket, unique_key("x.jpg"), content_types=["image/jpeg"], max_bytes=10)
    assert post["fields"]["Content-Type"] == "image/jpeg"


def test_presigned_get_downloads_and_carries_its_expiry(bucket):
    key = unique_key("result.png")
    storage.put(bucket, key, b"result bytes", "image/png")
    url, expires_at = storage.presigned_get(bucket, key)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert timedelta(seconds=890) < expires_at - datetime.now(UTC) <= timedelta(seconds=900)
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"result bytes"



def test_presigned_get_reuse_answers_the_same_url_while_half_its_life_is_left(bucket, monkeypatch):
    key = unique_key("result.png")
    storage.put(bucket, key, b"result bytes", "image/png")
    url, expires_at = storage.presigned_get(bucket, key, expires_s=600, reuse=True)
    assert storage.presigned_get(bucket, key, expires_s=600, reuse=True) == (url, expires_at)
    assert storage.presigned_get(bucket, key, expires_s=900, reuse=True)[0] != url  # another lifetime
    # Past half its life, a new URL (and its own expiry) is made
    later = time.monotonic() + 301
    monkeypatch.setattr(storage.time, "monotonic", lambda: later)
    fresh, fresh_expires_at = storage.presigned_get(bucket, key, expires_s=600, reuse=True)
    assert (fresh, fresh_expires_at) != (url, expires_at)
    assert requests.get(fresh, timeout=10).content == b"result bytes"

# --- objects ---------------------------------------------------------------------------

def test_put_head_and_read(bucket):
    key = unique_key("a.bin")
    data = os.urandom(1000)
    result = storage.put(bucket, key, data, "application/octet-stream")
    assert (result.sha256, result.size) == (hashlib.sha256(data).hexdigest(), 1000)
    meta = storage.head(bucket, key)
    assert meta["ServerSideEncryption"] == "AES256"
    assert meta["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    # S3's clock when it answered (its Date header), comparable with LastModified
    assert meta["Date"].tzinfo is not None and 0 <= (meta["Date"] - meta["LastModified"]).total_seconds() < 60
    assert storage.read(bucket, key, max_bytes=1000) == data
    assert storage.head(bucket, unique_key("missing")) is None
    with pytest.raises(NotFound):
        storage.read(bucket, unique_key("missing"), max_bytes=10)


def test_read_refuses_an_object_over_the_limit(bucket):
    key = unique_key("big.bin")
    storage.put(bucket, key, b"x" * 101, "application/octet-stream")
    with pytest.raises(PayloadTooLarge):
        storage.read(bucket, key, max_bytes=100)


# --- streaming uploads -----------------------------------------------------------------

def chunks(total, size, seed=b"seed"):
    """Deterministic pseudo-random chunks (fast to make, not compressible)."""
    block = hashlib.sha256(seed).digest() * (size // 32 + 2)
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block[sent % 32: sent % 32 + n]
        sent += n


def upload_chunks(bucket, key, chunks, *, content_type):
    """Byte chunks of any sizes written through one MultipartUpload, as the exports do."""
    with storage.MultipartUpload(bucket, key, content_type=content_type) as upload:
        for chunk in chunks:
            upload.write(chunk)
    return upload.result


def test_streaming_20mb_in_small_chunks_checksums_the_content_and_each_part(bucket, client):
    key = unique_key("backup.bin")
    total = 20 * MiB + 12345
    expected = hashlib.sha256()
    part_digests, part = [], hashlib.sha256()
    filled = 0
    for chunk in chunks(total, 64 * 1024 + 7):
        expected.update(chunk)
        view = memoryview(chunk)
        while view:  # the parts the upload must have cut: 8 MiB each
            take = min(len(view), 8 * MiB - filled)
            part.update(view[:take])
            filled += take
            view = view[take:]
            if filled == 8 * MiB:
                part_digests.append(part.digest())
                part, filled = hashlib.sha256(), 0
    part_digests.append(part.digest())

    result = upload_chunks(bucket, key, chunks(total, 64 * 1024 + 7),
                                   content_type="application/octet-stream")

    assert result.sha256 == expected.hexdigest()
    assert result.size == total
    assert result.etag.endswith("-3")  # three parts
    meta = storage.head(bucket, key)
    assert meta["ContentLength"] == total
    assert meta["ServerSideEncryption"] == "AES256"
    # S3 keeps the composite checksum: SHA-256 over the parts' SHA-256 digests
    composite = base64.b64encode(hashlib.sha256(b"".join(part_digests)).digest()).decode()
    assert meta["ChecksumSHA256"].split("-")[0] == composite
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result.sha256


def test_parts_sent_concurrently_make_the_same_object_in_order(bucket, client):
    key = unique_key("concurrent.bin")
    total = 23 * MiB + 321
    expected = hashlib.sha256(b"".join(chunks(total, 256 * 1024 + 3))).hexdigest()
    with storage.MultipartUpload(bucket, key, content_type="application/octet-stream",
                                 part_size=5 * MiB, concurrency=3) as upload:
        for chunk in chunks(total, 256 * 1024 + 3):
            upload.write(chunk)
    assert upload.result.sha256 == expected and upload.result.etag.endswith("-5")
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == expected


def test_a_part_that_fails_in_flight_aborts_the_upload(bucket, client, monkeypatch):
    key = unique_key("concurrent-broken.bin")
    s3 = storage.s3()
    upload_part = s3.upload_part

    def failing_second(**kwargs):
        if kwargs["PartNumber"] == 2:
            raise OSError("connection reset")
        return upload_part(**kwargs)

    monkeypatch.setattr(s3, "upload_part", failing_second)
    with pytest.raises(OSError, match="connection reset"), storage.MultipartUpload(
            bucket, key, content_type="application/octet-stream", part_size=5 * MiB, concurrency=2) as upload:
        for chunk in chunks(18 * MiB, MiB):
            upload.write(chunk)
    assert upload.closed
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u for u in uploads if u["Key"] == key] == []
    assert storage.head(bucket, key) is None


def test_a_failure_mid_stream_aborts_the_upload(bucket, client):
    key = unique_key("broken.bin")

    def failing():
        yield from chunks(12 * MiB, 1 * MiB)  # one part sent, the next buffered
        raise OSError("the source went away")

    with pytest.raises(OSError, match="source went away"):
        upload_chunks(bucket, key, failing(), content_type="application/octet-stream")
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u for u in uploads if u["Key"] == key] == []
    assert storage.head(bucket, key) is None


def test_an_error_inside_the_writer_block_aborts_and_closes_it(bucket, client):
    key = unique_key("broken.gz")
    with pytest.raises(ValueError, match="bad row"), storage.MultipartUpload(
            bucket, key, content_type="application/gzip", part_size=5 * MiB) as upload:
        upload.write(b"x" * (6 * MiB))
        raise ValueError("bad row")
    assert upload.closed
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ValueError):
        upload.write(b"more")


def test_the_writer_is_a_file_object_for_gzip_and_small_content_is_one_put(bucket):
    key = unique_key("export.json.gz")
    rows = [json.dumps({"n": i}).encode() + b"\n" for i in range(1000)]
    with storage.MultipartUpload(bucket, key, content_type="application/gzip") as upload, \
            gzip.GzipFile(fileobj=upload, mode="wb") as gz:
        for row in rows:
            gz.write(row)
    stored = storage.read(bucket, key, max_bytes=MiB)
    assert gzip.decompress(stored) == b"".join(rows)
    assert upload.result.sha256 == hashlib.sha256(stored).hexdigest()
    assert "-" not in upload.result.etag  # a single PUT, no multipart upload
    meta = storage.head(bucket, key)
    assert meta["ContentType"] == "application/gzip"
    assert meta["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(stored).digest()).decode()


def test_an_empty_stream_makes_an_empty_object(bucket):
    key = unique_key("empty")
    result = upload_chunks(bucket, key, [], content_type="text/plain")
    assert (result.size, result.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert storage.head(bucket, key)["ContentLength"] == 0


def test_closing_the_writer_finishes_the_object_once(bucket):
    # As a file's close() does (the writer's file-object protocol): later closes are no-ops
    key = unique_key("closed.txt")
    upload = storage.MultipartUpload(bucket, key, content_type="text/plain")
    upload.write(b"hello")
    upload.close()
    upload.close()
    assert upload.closed and storage.read(bucket, key, max_bytes=MiB) == b"hello"
    assert upload.result.sha256 == hashlib.sha256(b"hello").hexdigest()
