"""Fixed-window rate limits on a real Postgres: counting, the 429 with its reset time,
isolation per subject and route, and exactness under concurrency."""

import threading
import time
import uuid

import pytest

from common import db, ratelimit
from common.errors import TooManyRequests


@pytest.fixture(autouse=True)
def fresh(clean_db):
    db.reset()
    # Windows are aligned on the minute: a test that must stay inside one window does not
    # start in its last seconds (the database runs on this machine's clock).
    if (left := 60 - time.time() % 60) < 3:
        time.sleep(left + 0.05)
    yield
    db.reset()


def test_hits_are_counted_until_the_limit_then_429_with_seconds_to_window_end():
    subject = str(uuid.uuid4())
    # Given a limit of 3 a minute, when 3 requests arrive
    usages = [ratelimit.hit(subject, "GET /things", limit=3) for _ in range(3)]
    # Then they pass and the count goes up
    assert [u.hits for u in usages] == [1, 2, 3]
    assert usages[-1].remaining == 0
    # When a 4th arrives in the same window, it is refused with the seconds left
    with pytest.raises(TooManyRequests) as exc:
        ratelimit.hit(subject, "GET /things", limit=3)
    assert exc.value.status == 429 and exc.value.code == "rate_limited"
    assert 1 <= exc.value.retry_after <= 60


def test_subjects_and_routes_have_separate_windows():
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    ratelimit.hit(alice, "POST /a", limit=1)
    # Given alice used her one request on POST /a, bob and alice's other routes are unaffected
    assert ratelimit.hit(bob, "POST /a", limit=1).hits == 1
    assert ratelimit.hit(alice, "POST /b", limit=1).hits == 1
    with pytest.raises(TooManyRequests):
        ratelimit.hit(alice, "POST /a", limit=1)


def test_default_limit_comes_from_the_setting(monkeypatch):
    from common.config import settings

    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "2")
    settings.cache_clear()
    try:
        subject = str(uuid.uuid4())
        assert ratelimit.hit(subject, "GET /x").limit == 2
        ratelimit.hit(subject, "GET /x")
        with pytest.raises(TooManyRequests):
            ratelimit.hit(subject, "GET /x")
    finally:
        monkeypatch.delenv("RATE_LIMIT_PER_MINUTE")
        settings.cache_clear()
    assert ratelimit.hit(str(uuid.uuid4()), "GET /x").limit == 100


def test_a_new_window_starts_from_zero():
    subject = str(uuid.uuid4())
    ratelimit.hit(subject, "GET /w", limit=1)
    # Given the current window is used up, when it is moved one minute into the past
    db.execute(
        "UPDATE rate_limit_windows SET window_start = window_start - interval '60 seconds' "
        "WHERE subject = %s",
        (subject,),
    )
    # Then the next request opens a new window
    assert ratelimit.hit(subject, "GET /w", limit=1).hits == 1


def test_concurrent_burst_lets_exactly_the_limit_through():
    subject = str(uuid.uuid4())
    passed, refused = [], []
    start = threading.Barrier(20)

    def request():
        try:
            start.wait()
            ratelimit.hit(subject, "POST /burst", limit=10)
            passed.append(1)
        except TooManyRequests:
            refused.append(1)
        finally:
            db.reset()

    # Given 20 requests released at once against a limit of 10
    threads = [threading.Thread(target=request) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly 10 pass, 10 are refused, and the window counted all 20
    assert (len(passed), len(refused)) == (10, 10)
    row = db.execute("SELECT hits FROM rate_limit_windows WHERE subject = %s", (subject,)).fetchone()
    assert row["hits"] == 20
