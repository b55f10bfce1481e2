"""The webhook inbox on a real Postgres: an event takes effect once, its row and its
effects commit or roll back together, and stored headers hold no credentials."""

import contextlib
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from common import db, inbox, ledger

HEADERS = {
    "Content-Type": "application/json",
    "Authorization": "Bearer rc_live_secret_value_123",
    "Stripe-Signature": "t=1700000000,v1=abcdef0123456789",
    "Cookie": "session=s3cr3t",
    "X-Paymob-Hmac": "f00dfeed",
    "User-Agent": "Stripe/1.0",
}
BODY = json.dumps({"id": "evt_1", "type": "checkout.session.completed", "data": {"amount": 499}})


@pytest.fixture(autouse=True)
def fresh_connection(clean_db):
    db.reset()
    yield
    db.reset()


def deliver(event_id, *, effect=None, fail=False, status="processed", provider="stripe"):
    """One webhook delivery as the handlers do it: record, apply, mark, in one transaction.
    Returns whether the event was processed."""
    with db.transaction() as conn:
        new = inbox.record(conn, provider, event_id, headers=HEADERS, body=BODY, signature_ok=True,
                           event_type="checkout.session.completed")
        if new:
            if effect:
                effect(conn)
            if fail:
                raise RuntimeError("processing failed")
            inbox.mark(conn, provider, event_id, status)
        return new


def row(event_id, provider="stripe"):
    return db.execute("SELECT * FROM webhook_inbox WHERE provider = %s AND event_id = %s",
                      (provider, event_id)).fetchone()


def audit_count():
    return db.execute("SELECT count(*) AS n FROM audit_log").fetchone()["n"]


def audit(conn):
    # A deliberately non-idempotent effect: only the inbox keeps it to one row.
    conn.execute("INSERT INTO audit_log (actor, action) VALUES ('stripe', 'event applied')")


def test_a_new_event_is_processed_and_a_duplicate_only_counted():
    assert deliver("evt_1", effect=audit) is True
    assert deliver("evt_1", effect=audit) is False
    stored = row("evt_1")
    assert (stored["status"], stored["attempts"], stored["signature_ok"]) == ("processed", 2, True)
    assert stored["processed_at"] is not None
    assert stored["body"] == BODY.encode()  # the exact bytes received
    assert stored["event_type"] == "checkout.session.completed"
    assert audit_count() == 1


def test_the_same_event_id_from_another_provider_is_another_event():
    assert deliver("evt_1") is True
    assert deliver("evt_1", provider="paymob") is True


def test_rollback_removes_the_inbox_row_and_the_effects():
    user = uuid.uuid4()
    db.execute("INSERT INTO users (id) VALUES (%s)", (user,))

    def grant(conn):
        ledger.grant(user, 50, reason="credits_50", source="stripe", ref="evt_2", conn=conn)

    with pytest.raises(RuntimeError):
        deliver("evt_2", effect=grant, fail=True)
    assert row("evt_2") is None
    assert ledger.balance(user) == 0
    # The provider's retry is then a first delivery, and applies the event
    assert deliver("evt_2", effect=grant) is True
    assert ledger.balance(user) == 50
    assert ledger.ledger_matches_balance(user)


def test_headers_are_stored_redacted():
    deliver("evt_3")
    headers = row("evt_3")["headers"]
    assert headers == {
        "content-type": "application/json",
        "authorization": "[redacted]",
        "stripe-signature": "[redacted]",
        "cookie": "[redacted]",
        "x-paymob-hmac": "[redacted]",
        "user-agent": "Stripe/1.0",
    }


def test_a_failed_event_is_processed_again_on_redelivery():
    # Given a delivery whose processing failed and was recorded as failed
    with db.transaction() as conn:
        assert inbox.record(conn, "paymob", "tx_7", headers={}, body="{}", signature_ok=False)
        inbox.mark(conn, "paymob", "tx_7", "failed", error="bad signature")
    # When the provider retries with a good signature
    assert deliver("tx_7", provider="paymob", effect=audit) is True
    stored = row("tx_7", "paymob")
    assert (stored["status"], stored["attempts"], stored["signature_ok"]) == ("processed", 2, True)
    assert stored["last_error"] is None
    assert audit_count() == 1


def test_unmatched_events_are_listed_for_replay_and_replay_through_record():
    deliver("evt_late", status="unmatched")
    deliver("evt_done")
    parked = inbox.unmatched("stripe", limit=10)
    assert [e.event_id for e in parked] == ["evt_late"]
    # Replaying a parked event goes through record() again, which hands it out once more
    event = parked[0]
    with db.transaction() as conn:
        assert inbox.record(conn, "stripe", event.event_id, headers=event.headers, body=event.body,
                            signature_ok=event.signature_ok, event_type=event.event_type)
        inbox.mark(conn, "stripe", event.event_id, "processed")
    assert inbox.unmatched("stripe", limit=10) == []


def test_error_text_is_scrubbed_of_secrets(monkeypatch):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_topsecretvalue123")
    with db.transaction() as conn:
        inbox.record(conn, "stripe", "evt_err", headers={}, body="{}", signature_ok=True)
        inbox.mark(conn, "stripe", "evt_err", "failed",
                   error="verify failed with whsec_topsecretvalue123 and Bearer abcdefghijkl" + "x" * 5000)
    error = row("evt_err")["last_error"]
    assert "topsecret" not in error and "abcdefghijkl" not in error
    assert len(error) <= inbox.MAX_ERROR_CHARS


def test_record_refuses_to_run_outside_a_transaction():
    with pytest.raises(RuntimeError):
        inbox.record(db.connection(), "stripe", "evt_x", headers={}, body="{}", signature_ok=True)


def test_unknown_status_is_refused():
    with db.transaction() as conn, pytest.raises(ValueError):
        inbox.mark(conn, "stripe", "evt_1", "done")


@pytest.mark.parametrize("run", range(3))
def test_concurrent_deliveries_of_one_event_take_effect_once(run):
    start = threading.Barrier(10)

    def worker(_):
        try:
            db.connection()
            start.wait(timeout=30)
            return deliver(f"evt_race_{run}", effect=audit)
        finally:
            db.reset()

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(worker, range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert audit_count() == 1
    assert row(f"evt_race_{run}")["attempts"] == 10


def test_each_pipeline_outcome_counts_its_metric():
    from common import webhooks
    from common.observability import metrics

    def counts(event_id, outcome=None, error=None):
        metrics.clear_metrics()

        def apply(conn):
            if error:
                raise error
            return outcome

        with contextlib.suppress(ValueError):  # the failure propagates to the provider (500)
            webhooks.deliver("paymob", event_id, event_type="TRANSACTION", headers=HEADERS, raw=BODY,
                             apply=apply)
        found = {name: sum(m["Value"]) for name, m in metrics.metric_set.items()}
        metrics.clear_metrics()
        return found

    # Each outcome of the one pipeline is one count, named for the dashboard
    assert counts("e1", webhooks.Outcome("paid")) == {"WebhookApplied": 1}
    assert counts("e1", webhooks.Outcome("paid")) == {"WebhookDuplicate": 1}
    assert counts("e2", webhooks.Outcome.ignored("not ours")) == {"WebhookIgnored": 1}
    assert counts("e3", webhooks.Outcome.unmatched("no order")) == {"WebhookUnmatched": 1}
    assert counts("e4", webhooks.Outcome("rejected", "rejected", "integration")) == {"WebhookRejected": 1}
    assert counts("e5", error=ValueError("bug")) == {"WebhookFailed": 1}
