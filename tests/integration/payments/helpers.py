"""Helpers for the payment tests: users, calls through the handlers (as Lambda invokes
them), signed webhook deliveries and database reads."""

from __future__ import annotations

import json
import multiprocessing
import uuid
import warnings
from typing import Any

from common import auth, db
from devkit import fake_paymob, fake_stripe
from devkit.lambdas import invoke, load_handler, url_event

PAYMOB_SECRET = "local-paymob-hmac-secret"
STRIPE_SECRET = "whsec_local_stripe_webhook_secret"
ENV = {
    "PAYMOB_HMAC_SECRET": PAYMOB_SECRET,
    "PAYMOB_SECRET_KEY": "egy_sk_test_local_0000000000",
    "PAYMOB_PUBLIC_KEY": "egy_pk_test_local_0000000000",
    "PAYMOB_INTEGRATION_IDS": "4097558",
    "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
    "STRIPE_API_KEY": "sk_test_local_0000000000",
    "PAYMOB_API_KEY": "local-paymob-api-key",
    "REVENUECAT_API_KEY": "sk_local_revenuecat_0000000000",
    "REVENUECAT_WEBHOOK_AUTH": "local-test-revenuecat-auth",
    "STRIPE_SUCCESS_URL": "https://example.com/checkout/return?status=success&session_id={CHECKOUT_SESSION_ID}",
    "STRIPE_CANCEL_URL": "https://example.com/checkout/return?status=canceled",
}


# --- users and calls ---------------------------------------------------------------------


def new_user() -> uuid.UUID:
    user_id = uuid.uuid4()
    auth.ensure_user(user_id)
    return user_id


def call(name: str, event: dict[str, Any]) -> tuple[int, Any]:
    """Invoke a function as Lambda does; (status, JSON body or text)."""
    response = invoke(name, event)
    body = response.get("body") or ""
    try:
        return response["statusCode"], json.loads(body)
    except ValueError:
        return response["statusCode"], body


def checkout(path: str, user_id: uuid.UUID | None, body: Any = None, *, method: str = "POST",
             key: str | None = None, raw_body: str | bytes | None = None) -> tuple[int, Any]:
    headers = {}
    if user_id is not None:
        headers["authorization"] = f"Bearer {auth.mint_token(user_id)}"
    if key:
        headers["idempotency-key"] = key
    if raw_body is not None:
        headers["content-type"] = "application/json"
    return call("checkout", url_event(method, path, body=body, headers=headers, raw_body=raw_body))


# --- webhook deliveries ------------------------------------------------------------------


def paymob_event(callback: dict[str, Any], *, secret: str = PAYMOB_SECRET, hmac_value: str | None = None,
                 raw_body: str | None = None) -> dict[str, Any]:
    """A processed callback as Paymob posts it: the body, ``?hmac=`` in the query."""
    signature = hmac_value if hmac_value is not None else fake_paymob.hmac_for(callback["obj"], secret)
    return url_event("POST", "/", raw_body=raw_body if raw_body is not None else json.dumps(callback),
                     headers={"content-type": "application/json", "user-agent": "Paymob"},
                     query={"hmac": signature})


def stripe_event(event: dict[str, Any], *, secret: str = STRIPE_SECRET, timestamp: int | None = None,
                 raw_body: str | None = None) -> dict[str, Any]:
    """An event as Stripe posts it: the raw JSON body and its Stripe-Signature header."""
    payload = raw_body if raw_body is not None else json.dumps(event)
    return url_event("POST", "/", raw_body=payload, headers={
        "content-type": "application/json; charset=utf-8", "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        "stripe-signature": fake_stripe.signature(payload, secret, timestamp=timestamp)})


def invoke_concurrently(name: str, event: dict[str, Any], n: int) -> list[int]:
    """Deliver ``event`` to the function ``n`` times at once, each in its own process (a
    Lambda execution environment of its own), released together by a barrier; the
    status codes. Processes, not threads: Powertools keeps the current event on a class
    attribute (docs/http.md), so threads would race inside one resolver, which Lambda
    never does. Forked after the handler is imported, so each starts warm."""
    load_handler(name)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(n)
    results = ctx.SimpleQueue()

    def deliver() -> None:
        # The parent's connection must not be used, nor closed (closing would end the
        # parent's session on the server): keep a reference and start afresh.
        inherited = [getattr(db._local, "conn", None), getattr(db._local, "lock_conn", None)]
        db._local.conn = db._local.lock_conn = None
        try:
            barrier.wait(timeout=30)
            results.put(invoke(name, event)["statusCode"])
        except BaseException as exc:  # report, never hang the parent
            results.put(repr(exc))
        del inherited

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with the fakes' threads running
        children = [ctx.Process(target=deliver) for _ in range(n)]
        for child in children:
            child.start()
    for child in children:
        child.join(timeout=60)
    return [results.get() for _ in range(n)]


def invoke_together(*calls: tuple[str, dict[str, Any]]) -> list[Any]:
    """Invoke each (function, event) at once, each in its own process, released together
    by a barrier (as ``invoke_concurrently``); their results (a status code for a URL
    function, the returned value otherwise), in order."""
    for name, _event in calls:
        load_handler(name)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(calls))
    results = ctx.SimpleQueue()

    def run(index: int, name: str, event: dict[str, Any]) -> None:
        inherited = [getattr(db._local, "conn", None), getattr(db._local, "lock_conn", None)]
        db._local.conn = db._local.lock_conn = None
        try:
            barrier.wait(timeout=30)
            answer = invoke(name, event)
            results.put((index, answer.get("statusCode", answer)))
        except BaseException as exc:
            results.put((index, repr(exc)))
        del inherited

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        children = [ctx.Process(target=run, args=(i, name, event)) for i, (name, event) in enumerate(calls)]
        for child in children:
            child.start()
    for child in children:
        child.join(timeout=60)
    answers = dict(results.get() for _ in calls)
    return [answers[i] for i in range(len(calls))]


# --- database reads ----------------------------------------------------------------------


def one(sql: str, *params: Any) -> dict[str, Any] | None:
    return db.execute(sql, params).fetchone()


def rows(sql: str, *params: Any) -> list[dict[str, Any]]:
    return db.execute(sql, params).fetchall()


def order(order_id: Any) -> dict[str, Any]:
    return one("SELECT * FROM orders WHERE id = %s", uuid.UUID(str(order_id)))


def payments_of(provider: str) -> list[dict[str, Any]]:
    return rows("SELECT * FROM payments WHERE provider = %s ORDER BY created_at", provider)


def inbox_of(provider: str) -> list[dict[str, Any]]:
    return rows("SELECT * FROM webhook_inbox WHERE provider = %s ORDER BY id", provider)


def ledger_of(user_id: uuid.UUID) -> list[dict[str, Any]]:
    return rows("SELECT kind, amount, shortfall, source, ref FROM credit_ledger "
                "WHERE user_id = %s ORDER BY id", user_id)


def balance(user_id: uuid.UUID) -> int:
    return one("SELECT credits FROM users WHERE id = %s", user_id)["credits"]


def entitlement(user_id: uuid.UUID, source: str, entitlement_id: str = "premium") -> dict[str, Any] | None:
    return one("SELECT * FROM entitlements WHERE user_id = %s AND entitlement_id = %s AND source = %s",
               user_id, entitlement_id, source)


def counts() -> dict[str, int]:
    """Row counts of everything a webhook may write."""
    tables = ("orders", "payments", "webhook_inbox", "credit_ledger", "entitlements", "audit_log")
    return {t: one(f"SELECT count(*) AS n FROM {t}")["n"] for t in tables}


def snapshot() -> dict[str, Any]:
    """Everything a refused request must leave unchanged."""
    return {**counts(), "orders_state": rows("SELECT id, status, refunded_minor FROM orders ORDER BY id"),
            "balances": rows("SELECT id, credits FROM users ORDER BY id")}
