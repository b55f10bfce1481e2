"""Entitlements on a real Postgres: what a user may use now, their own or their pair's
(the view and SQL function of migration 0005, read through common.entitlements)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from common import db, entitlements
from common.errors import InvalidInput


@pytest.fixture(autouse=True)
def fresh_connection(clean_db):
    db.reset()
    yield
    db.reset()


def user() -> uuid.UUID:
    user_id = uuid.uuid4()
    db.execute("INSERT INTO users (id) VALUES (%s)", (user_id,))
    return user_id


def pair(a: uuid.UUID, b: uuid.UUID) -> None:
    pair_id = db.execute("INSERT INTO pairs DEFAULT VALUES RETURNING id").fetchone()["id"]
    db.execute("INSERT INTO pair_members (pair_id, user_id) VALUES (%s, %s), (%s, %s)",
               (pair_id, a, pair_id, b))


def entitle(user_id, entitlement_id="premium", *, expires_in=timedelta(days=30), active=True,
            source="revenuecat"):
    expires_at = None if expires_in is None else datetime.now(UTC) + expires_in
    db.execute(
        "INSERT INTO entitlements (user_id, entitlement_id, source, expires_at, active, last_event_at)"
        " VALUES (%s, %s, %s, %s, %s, now())",
        (user_id, entitlement_id, source, expires_at, active))
    return expires_at


def test_a_user_has_their_own_active_entitlement():
    # Given a user with premium until next month
    alice = user()
    expires_at = entitle(alice)
    # Then they have it, and nothing else
    assert entitlements.has_entitlement(alice, "premium") is True
    assert entitlements.has_entitlement(str(alice), "premium") is True
    assert entitlements.has_entitlement(alice, "pro") is False
    assert entitlements.active_entitlements(alice) == [
        {"entitlement_id": "premium", "source": "revenuecat", "expires_at": expires_at, "owner": "self"}]


@pytest.mark.parametrize("kind", ["expired", "revoked"])
def test_expired_or_revoked_entitlements_are_not_active(kind):
    # Given an entitlement that ended a second ago, or was revoked (refund) before its expiry
    alice = user()
    if kind == "expired":
        entitle(alice, expires_in=timedelta(seconds=-1))
    else:
        entitle(alice, active=False)
    # Then it is not active
    assert entitlements.has_entitlement(alice, "premium") is False
    assert entitlements.active_entitlements(alice) == []


def test_no_expiry_means_lifetime():
    alice = user()
    entitle(alice, "lifetime", expires_in=None)
    assert entitlements.has_entitlement(alice, "lifetime") is True
    assert entitlements.active_entitlements(alice)[0]["expires_at"] is None


def test_a_pair_shares_each_members_entitlements():
    # Given a couple where only Alice subscribed, and Carol outside the pair
    alice, bob, carol = user(), user(), user()
    pair(alice, bob)
    expires_at = entitle(alice)
    # Then Bob has premium through the pair, Carol does not
    assert entitlements.has_entitlement(bob, "premium") is True
    assert entitlements.has_entitlement(carol, "premium") is False
    assert entitlements.active_entitlements(bob) == [
        {"entitlement_id": "premium", "source": "revenuecat", "expires_at": expires_at, "owner": "pair"}]
    # And when Alice's subscription is revoked, Bob loses it too
    db.execute("UPDATE entitlements SET active = false WHERE user_id = %s", (alice,))
    assert entitlements.has_entitlement(bob, "premium") is False


def test_both_members_holding_it_show_both_rows():
    alice, bob = user(), user()
    pair(alice, bob)
    entitle(alice, expires_in=timedelta(days=10))
    entitle(bob, source="stripe", expires_in=timedelta(days=300))
    owners = [(e["owner"], e["source"]) for e in entitlements.active_entitlements(alice)]
    assert owners == [("self", "revenuecat"), ("pair", "stripe")]


def test_leaving_the_pair_stops_the_sharing():
    alice, bob = user(), user()
    pair(alice, bob)
    entitle(alice)
    db.execute("DELETE FROM pair_members WHERE user_id = %s", (bob,))
    assert entitlements.has_entitlement(bob, "premium") is False
    assert entitlements.has_entitlement(alice, "premium") is True


def test_unknown_users_have_nothing_and_malformed_ids_are_invalid():
    assert entitlements.has_entitlement(uuid.uuid4(), "premium") is False
    assert entitlements.active_entitlements(uuid.uuid4()) == []
    with pytest.raises(InvalidInput):
        entitlements.has_entitlement("not-a-uuid", "premium")


def test_runs_inside_the_callers_transaction():
    # Given an entitlement written but not yet committed in a transaction
    alice = user()
    with db.transaction() as conn:
        conn.execute("INSERT INTO entitlements (user_id, entitlement_id, source, last_event_at)"
                     " VALUES (%s, 'premium', 'stripe', now())", (alice,))
        # Then that transaction sees it
        assert entitlements.has_entitlement(alice, "premium", conn=conn) is True
        assert entitlements.active_entitlements(alice, conn=conn)[0]["owner"] == "self"
