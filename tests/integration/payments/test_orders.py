"""Order invariants held by the database (migration 0006), whatever the code does, and
the subscription ordering rule."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from common import db, orders, payment_records
from tests.integration.payments.helpers import new_user, order


def paid_order():
    user = new_user()
    created = orders.create_order(user, "credits_50", "paymob", 25000, "EGP")
    with db.transaction() as conn:
        assert orders.pay(conn, orders.lock_order(conn, order_id=created.id), event_id="test")
        assert not orders.pay(conn, orders.lock_order(conn, order_id=created.id), event_id="test")
    return created.id


@pytest.mark.parametrize("sql", [
    "UPDATE orders SET status = 'pending' WHERE id = %s",
    "UPDATE orders SET status = 'created' WHERE id = %s",
    "UPDATE orders SET status = 'failed', failure_code = 'x' WHERE id = %s",
    "UPDATE orders SET status = 'refunded' WHERE id = %s",              # refunded_minor must equal the amount
    "UPDATE orders SET refunded_minor = amount_minor + 1 WHERE id = %s",
    "UPDATE orders SET paid_at = NULL WHERE id = %s",
    "UPDATE orders SET subscription_status = 'bogus', state_at = now() WHERE id = %s",
])
def test_a_paid_order_cannot_be_moved_backwards_or_made_inconsistent(sql):
    order_id = paid_order()
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(sql, (order_id,))
    assert order(order_id)["status"] == "paid"


def test_a_payment_has_a_known_status_and_unmatched_means_no_order():
    with pytest.raises(psycopg.errors.CheckViolation), db.transaction() as conn:
        payment_records.record(conn, provider="paymob", transaction_id="1", order_id=None, status="paid",
                                amount_minor=1, currency="EGP", raw={})
    with pytest.raises(psycopg.errors.CheckViolation), db.transaction() as conn:
        payment_records.record(conn, provider="paymob", transaction_id="2", order_id=None, status="weird",
                                amount_minor=1, currency="EGP", raw={})


def test_subscription_ordering_rule():
    from common.providers.stripe_subscriptions import decide

    t = datetime(2026, 1, 1, tzinfo=UTC)
    later, earlier = t + timedelta(seconds=1), t - timedelta(seconds=1)
    assert decide(None, None, "active", t) == "apply"
    assert decide("active", t, "past_due", later) == "apply"
    assert decide("past_due", t, "active", earlier) == "stale"
    assert decide("canceled", t, "active", later) == "stale"          # canceled is final
    assert decide("active", t, "canceled", earlier) == "apply"        # whatever its time
    assert decide("canceled", t, "incomplete_expired", earlier) == "stale"
    assert decide("active", t, "active", t) == "apply"
    assert decide("active", t, "past_due", t) == "tie"
