"""The export job's memory stays flat whatever the user's size: the same job exports a
small user and a user with thousands of entries and tens of megabytes of images, each in
a fresh Lambda-like worker process (devkit.runner, as scripts/invoke runs it), and the
workers' peak resident memory (VmHWM) is compared."""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile

import psycopg
import pytest

from devkit import runner as rt
from devkit import s3
from devkit.runner.services import Services

PART_MB = 5
IMAGE_BYTES = 1024 * 1024


@pytest.fixture
def make_runner(clean_db, s3_endpoint, tmp_path):
    from common import storage

    storage.reset()  # another test may have left a client of another S3 endpoint
    made: list[rt.Runner] = []

    def make() -> rt.Runner:
        """A runner with fresh (cold) workers for the account function."""
        services = Services(
            os.environ["DATABASE_URL"], "test", s3_endpoint, list(s3.LOCAL_BUCKETS.values())
        )
        env_file = tmp_path / "env.local.json"
        env_file.write_text(json.dumps({"account": {"EXPORT_PART_SIZE_MB": str(PART_MB)}}))
        runner = rt.Runner(
            env_file=env_file,
            port=None,
            services_env={**services.env(), **{k: os.environ[k] for k in s3.BUCKET_VARS}},
            sink=lambda _line: None,
        )
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.stop()


def user_with(entries: int, images: int, entry_chars: int, *, queued: bool = False) -> uuid.UUID:
    from common import storage

    user = uuid.uuid4()
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("INSERT INTO users (id) VALUES (%s)", (user,))
        conn.execute(
            """INSERT INTO journal_entries (author_id, title, content, analysis)
                        SELECT %s, 'day ' || i, left(repeat(md5(i::text) || ' ', %s), %s),
                               jsonb_build_object('mood', 'calm', 'summary', md5(i::text))
                          FROM generate_series(1, %s) i""",
            (user, entry_chars // 33 + 1, entry_chars, entries),
        )
        conn.execute(
            """INSERT INTO generations (user_id, tool_id, params, source_key, result_key, status)
                        SELECT %s, 'resize', '{"width": 100}', 'users/x/uploads/' || i || '.jpg',
                               'users/x/generations/' || i || '.jpg', 'succeeded'
                          FROM generate_series(1, %s) i""",
            (user, entries),
        )
        if queued:
            conn.execute("INSERT INTO account_exports (user_id) VALUES (%s)", (user,))
    for i in range(images):
        bucket = os.environ["UPLOADS_BUCKET" if i % 2 else "GENERATIONS_BUCKET"]
        storage.s3().put_object(
            Bucket=bucket,
            Key=f"users/{user}/{'uploads' if i % 2 else 'generations'}/{i}.jpg",
            Body=os.urandom(IMAGE_BYTES),
        )
    return user


def peak_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def export_in_fresh_worker(make_runner, user: uuid.UUID) -> float:
    """The growth of a fresh worker's peak memory while it exports ``user``, after a
    warm-up export of a tiny user (imports, the database connection, the S3 client)."""
    runner = make_runner()
    user_with(entries=1, images=1, entry_chars=10, queued=True)
    warm = runner.invoke("account", {"job": "exports"})
    assert warm.ok and warm.result["exports"]["completed"] == 1, warm.error or warm.result
    baseline = peak_mib(warm.pid)
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("INSERT INTO account_exports (user_id) VALUES (%s)", (user,))
    inv = runner.invoke("account", {"job": "exports"})
    assert inv.ok, inv.error
    assert inv.pid == warm.pid and inv.result["exports"]["completed"] == 1, inv.result
    return peak_mib(inv.pid) - baseline


def archive_of(user: uuid.UUID) -> zipfile.ZipFile:
    from common import storage

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        key = conn.execute("SELECT object_key FROM account_exports WHERE user_id = %s", (user,)).fetchone()[0]
    body = storage.s3().get_object(Bucket=os.environ["EXPORTS_BUCKET"], Key=key)["Body"].read()
    return zipfile.ZipFile(io.BytesIO(body))


def test_the_exports_memory_does_not_grow_with_the_users_size(make_runner):
    # Given a small user, and a user 300 times larger (3000 entries of 8 KB, 40 images of 1 MiB)
    small = user_with(entries=10, images=2, entry_chars=8000)
    large = user_with(entries=3000, images=40, entry_chars=8000)
    # When each is exported by the scheduled job in a fresh worker
    small_growth = export_in_fresh_worker(make_runner, small)
    large_growth = export_in_fresh_worker(make_runner, large)
    large_zip = archive_of(large)
    size = sum(info.file_size for info in large_zip.infolist()) / 1024 / 1024
    # Then the archive holds everything (about 70 MiB uncompressed) ...
    assert size > 60, size
    entries = json.loads(large_zip.read("journal_entries.json"))
    assert len(entries) == 3000 and len(entries[-1]["content"]) == 8000
    assert len([n for n in large_zip.namelist() if n.startswith("media/")]) == 40
    assert archive_of(small).testzip() is None
    # ... while the worker's peak memory grew by about two upload parts for either user,
    # not with the data (printed for the record: pytest -s)
    print(
        f"\nexport peak growth: small user {small_growth:.1f} MiB, large user {large_growth:.1f} MiB "
        f"for {size:.0f} MiB of data (parts of {PART_MB} MiB)"
    )
    assert large_growth < 4 * PART_MB, large_growth
    assert large_growth < small_growth + 3 * PART_MB, (small_growth, large_growth)
