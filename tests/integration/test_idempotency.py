"""The Postgres idempotency persistence layer against the Powertools contract: completed,
in-progress (live and timed out), expired, payload validation, failures, concurrency."""

import threading
import time

import pytest
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from pydantic import BaseModel

from common import db, idempotency
from devkit.lambdas import LambdaContext

SCOPE = "user-1 tests:POST /orders"


@pytest.fixture(autouse=True)
def fresh(clean_db):
    db.reset()
    yield
    db.reset()


class Order(BaseModel):
    order: int


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return Order(order=self.calls)


def outcome(fn, *, key="key-1", payload=None, scope=SCOPE, **kwargs):
    return idempotency.run_idempotent(
        scope, key, payload or {"sku": "a"}, fn, model=Order, lambda_context=LambdaContext("tests"), **kwargs
    )


def run(fn, **kwargs):
    """The result as JSON data (a replay is validated back into ``Order`` first)."""
    result = outcome(fn, **kwargs).result
    assert isinstance(result, Order)
    return result.model_dump()


def records():
    return db.execute("SELECT * FROM idempotency_records").fetchall()


def test_first_call_runs_and_stores_completed_result():
    fn = Counter()
    assert run(fn) == {"order": 1}
    [row] = records()
    assert row["status"] == "COMPLETED"
    assert row["id"].startswith("client#") and "key-1" not in row["id"]
    assert row["response_data"] == '{"order": 1}'
    assert row["payload_hash"]


def test_repeat_returns_stored_result_without_calling_fn():
    fn = Counter()
    first = outcome(fn)
    # When the client retries with the same key and payload
    second = outcome(fn)
    # Then it gets the first result, marked as a replay, and the work ran once
    assert second.result == first.result and fn.calls == 1
    assert (first.replayed, second.replayed) == (False, True)
    assert outcome(fn, key=None).replayed is False


def test_no_key_runs_every_time_and_stores_nothing():
    fn = Counter()
    run(fn, key=None)
    run(fn, key=None)
    assert fn.calls == 2 and records() == []


def test_same_key_in_another_scope_is_another_request():
    fn = Counter()
    run(fn, scope="user-1 tests:POST /orders")
    run(fn, scope="user-2 tests:POST /orders")
    assert fn.calls == 2


def test_same_key_with_different_payload_is_refused():
    run(Counter(), payload={"sku": "a"})
    with pytest.raises(IdempotencyValidationError):
        run(Counter(), payload={"sku": "b"})


def test_payload_comparison_ignores_key_order():
    fn = Counter()
    run(fn, payload={"sku": "a", "qty": 1})
    run(fn, payload={"qty": 1, "sku": "a"})
    assert fn.calls == 1


def test_failure_is_forgotten_so_a_retry_runs():
    def boom():
        raise ValueError("provider failed")

    with pytest.raises(ValueError):
        run(boom)
    assert records() == []
    assert run(Counter()) == {"order": 1}


def test_expired_record_runs_again():
    fn = Counter()
    run(fn)
    # Given the completed record has expired
    db.execute("UPDATE idempotency_records SET expires_at = now() - interval '1 second'")
    # Then the same key runs the work again and stores the new result
    assert run(fn) == {"order": 2}
    [row] = records()
    assert row["status"] == "COMPLETED" and row["response_data"] == '{"order": 2}'


def _leave_in_progress(in_progress_expiry_ms):
    """Turn the stored record into one whose invocation is still running (or died)."""
    db.execute(
        "UPDATE idempotency_records SET status = 'INPROGRESS', response_data = NULL, "
        "in_progress_expiry_ms = %s",
        (in_progress_expiry_ms,),
    )


def test_live_in_progress_record_refuses_a_duplicate():
    fn = Counter()
    run(fn)
    _leave_in_progress(int(time.time() * 1000) + 60_000)
    with pytest.raises(IdempotencyAlreadyInProgressError):
        run(fn)
    assert fn.calls == 1


def test_in_progress_record_past_its_lambda_deadline_is_taken_over():
    fn = Counter()
    run(fn)
    # Given the invocation holding the record timed out (its deadline has passed)
    _leave_in_progress(int(time.time() * 1000) - 1)
    # Then a retry takes the record over and runs the work
    assert run(fn) == {"order": 2}
    assert records()[0]["status"] == "COMPLETED"


def test_in_progress_without_deadline_waits_for_record_expiry():
    fn = Counter()
    run(fn)
    _leave_in_progress(None)
    with pytest.raises(IdempotencyAlreadyInProgressError):
        run(fn)
    db.execute("UPDATE idempotency_records SET expires_at = now() - interval '1 second'")
    assert run(fn) == {"order": 2}


def test_put_record_is_conditional():
    layer = idempotency.PostgresPersistenceLayer()
    now = int(time.time())

    def record(status="INPROGRESS", expiry=now + 60, in_progress_ms=None):
        return DataRecord("client#k", status=status, expiry_timestamp=expiry,
                          in_progress_expiry_timestamp=in_progress_ms, payload_hash="h")

    layer._put_record(record())
    # A live record (in progress without a deadline) is not overwritten
    with pytest.raises(IdempotencyItemAlreadyExistsError):
        layer._put_record(record())
    layer._update_record(record(status="COMPLETED"))
    with pytest.raises(IdempotencyItemAlreadyExistsError):
        layer._put_record(record())
    # An expired one is taken over
    layer._update_record(record(status="COMPLETED", expiry=now - 1))
    layer._put_record(record(in_progress_ms=(now + 60) * 1000))
    assert layer._get_record("client#k").status == "INPROGRESS"


def test_concurrent_duplicates_run_the_work_once():
    calls = []
    started = threading.Event()
    outcomes = []
    barrier = threading.Barrier(10)

    def slow():
        calls.append(1)
        started.set()
        time.sleep(0.3)
        return Order(order=1)

    def client():
        try:
            barrier.wait()
            outcomes.append(run(slow))
        except IdempotencyAlreadyInProgressError:
            outcomes.append("in_progress")
        finally:
            db.reset()

    # Given 10 retries of one request arriving together
    threads = [threading.Thread(target=client) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then the work ran once; the others were told it is in progress
    assert len(calls) == 1
    assert outcomes.count({"order": 1}) == 1 and outcomes.count("in_progress") == 9
    # And once it completed, a retry gets its result
    assert run(slow) == {"order": 1} and len(calls) == 1
