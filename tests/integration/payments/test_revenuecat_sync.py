"""checkout's POST /revenuecat/sync, invoked as Lambda invokes it, against the RevenueCat
fake on a real Postgres: the app reports a store purchase whose webhook was lost and it is
granted once, as reconcile would grant it (same inbox keys and claims); the webhook
arriving afterwards is a duplicate, a repeated sync changes nothing, a sync racing the
webhooks grants once (20 times over), and a RevenueCat outage answers 503 with
Retry-After and queues the user, whom the next reconcile run heals."""

import time
import uuid

import pytest

from common import auth, ledger
from devkit import lambdas
from devkit.fake_http import Scripted
from tests.integration.payments.helpers import (
    balance,
    call,
    checkout,
    invoke_together,
    ledger_of,
    new_user,
    rows,
    snapshot,
)
from tests.integration.payments.test_reconcile import PACK, premium, rc_send, subscriber_renewed

SYNC = "/revenuecat/sync"


@pytest.fixture(autouse=True)
def reconcile_now(monkeypatch):
    monkeypatch.setenv("RECONCILE_MIN_AGE_S", "0")


def sync_event(user):
    return lambdas.url_event("POST", SYNC, headers={"authorization": f"Bearer {auth.mint_token(user)}"})


def test_a_purchase_whose_webhooks_were_lost_is_granted_once_by_the_sync(revenuecat_api):
    # Given a subscriber who renewed and bought a pack; neither webhook arrived
    user, renewal, pack = subscriber_renewed(revenuecat_api)
    # When the app reports the purchase
    status, body = checkout(SYNC, user)
    # Then both are applied, and the answer is the caller's new state
    assert status == 200, body
    assert (body["applied"], body["credits"]) == (2, 50)
    assert [(e["entitlement_id"], e["source"], e["owner"]) for e in body["entitlements"]] == [
        ("premium", "revenuecat", "self")]
    assert balance(user) == 50 and premium(user)["active"]
    # A repeated sync changes nothing
    before = snapshot()
    assert checkout(SYNC, user) == (200, {**body, "applied": 0})
    assert snapshot() == before
    # The webhooks arriving afterwards are duplicates
    for event in (renewal, pack):
        assert call("revenuecat-webhook", rc_send(event))[1]["status"] == "duplicate"
    assert [e["kind"] for e in ledger_of(user)] == ["grant"]
    assert ledger.ledger_matches_balance()


def test_a_sync_racing_the_webhooks_grants_once_20_times(revenuecat_api):
    for _ in range(20):
        user, renewal, pack = subscriber_renewed(revenuecat_api)
        first, second, synced = invoke_together(("revenuecat-webhook", rc_send(renewal)),
                                                ("revenuecat-webhook", rc_send(pack)),
                                                ("checkout", sync_event(user)))
        assert (first, second, synced) == (200, 200, 200)
        assert balance(user) == 50 and premium(user)["active"]
        assert [e["kind"] for e in ledger_of(user)] == ["grant"]
    assert ledger.ledger_matches_balance()


def test_a_revenuecat_outage_answers_503_queues_the_user_and_reconcile_heals(revenuecat_api):
    # Given a user who bought a pack (no entitlement near expiry: reconcile would not ask
    # about them), whose webhook was lost
    user = new_user()
    transaction = f"t-{uuid.uuid4().hex[:10]}"
    revenuecat_api.purchase(str(user), PACK, transaction_id=transaction,
                            purchased_ms=int(time.time() * 1000) - 30_000)
    # When the app reports it while RevenueCat is down
    revenuecat_api.script(Scripted(status=503, body={"message": "down"}))
    response = lambdas.invoke("checkout", sync_event(user))
    # Then 503 with Retry-After, nothing granted, the user queued
    assert response["statusCode"] == 503 and int(response["headers"]["Retry-After"]) > 0
    assert balance(user) == 0
    assert [r["user_id"] for r in rows("SELECT user_id FROM revenuecat_sync_queue")] == [user]
    # And the next reconcile run asks about them, grants once and empties the queue
    report = lambdas.invoke("reconcile", {"providers": ["revenuecat"]})
    assert report["revenuecat"]["outcomes"] == {"processed": 1}, report
    assert balance(user) == 50
    assert rows("SELECT user_id FROM revenuecat_sync_queue") == []
    # The app's retry afterwards is answered with the state, changing nothing
    status, body = checkout(SYNC, user)
    assert (status, body["applied"], body["credits"]) == (200, 0, 50)
    assert ledger.ledger_matches_balance()


def test_a_sync_needs_a_token():
    status, body = checkout(SYNC, None)
    assert status == 401 and body["error"]["code"] == "unauthorized"


def test_an_idempotency_key_replays_the_first_answer(revenuecat_api):
    user, _renewal, _pack = subscriber_renewed(revenuecat_api)
    event = sync_event(user)
    event["headers"]["idempotency-key"] = "sync-1"
    first = lambdas.invoke("checkout", event)
    again = lambdas.invoke("checkout", event)
    assert first["statusCode"] == again["statusCode"] == 200
    assert again["body"] == first["body"] and again["headers"].get("Idempotent-Replayed") == "true"
    assert balance(user) == 50
