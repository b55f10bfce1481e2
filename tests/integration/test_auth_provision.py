"""The first authenticated call provisions the users row, once, on a real Postgres."""

import threading
import uuid

import pytest

from common import auth, db


@pytest.fixture(autouse=True)
def fresh_connection(clean_db):
    db.reset()
    yield
    db.reset()


def users(user_id=None):
    if user_id is None:
        return db.execute("SELECT id, email, credits FROM users ORDER BY created_at").fetchall()
    return db.execute("SELECT id, email, credits FROM users WHERE id = %s", (user_id,)).fetchall()


def test_ensure_user_is_idempotent():
    # Given an authenticated caller seen for the first time
    principal = auth.authenticate(f"Bearer {auth.mint_token(uuid.uuid4())}")
    # When their user is ensured twice
    first = auth.ensure_user(principal.user_id, email="ana@example.test")
    second = auth.ensure_user(principal.user_id, email="ana@example.test")
    # Then one row exists, with the email and an empty balance
    assert (first, second) == (True, False)
    assert users() == [{"id": principal.user_id, "email": "ana@example.test", "credits": 0}]


def test_ensure_user_accepts_text_ids_and_no_email():
    user_id = uuid.uuid4()
    assert auth.ensure_user(str(user_id))
    assert users(user_id) == [{"id": user_id, "email": None, "credits": 0}]


def test_email_owned_by_another_user_does_not_block_provisioning():
    # Given a user who already has the email
    auth.ensure_user(uuid.uuid4(), email="shared@example.test")
    # When a different user's token carries the same email
    newcomer = uuid.uuid4()
    assert auth.ensure_user(newcomer, email="shared@example.test")
    # Then the newcomer is provisioned without it
    assert users(newcomer) == [{"id": newcomer, "email": None, "credits": 0}]


def test_concurrent_first_calls_provision_once():
    # Given 10 concurrent first requests from one new user
    user_id = uuid.uuid4()
    results: list[bool] = []
    barrier = threading.Barrier(10)

    def first_request():
        try:
            db.connection()  # connect before the race, so the inserts really overlap
            barrier.wait()
            results.append(auth.ensure_user(user_id))
        finally:
            db.reset()

    threads = [threading.Thread(target=first_request) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly one created the row and none failed
    assert sorted(results) == [False] * 9 + [True]
    assert len(users(user_id)) == 1
