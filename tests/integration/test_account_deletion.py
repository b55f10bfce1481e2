"""Account deletion on the real Postgres and moto S3: what is left (a tombstone and the
pseudonymised accounting rows, nothing else in any table or bucket), old tokens and
later webhooks (RevenueCat, Stripe, Paymob: parked), writes racing the deletion, S3
failures retried by cache-cleanup, and a restore of an earlier backup that re-applies
the deletions log."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import psycopg
import pytest

from common import accounts, auth, db, ledger, storage
from common.auth import mint_token
from common.errors import AccountDeleted
from devkit import ROOT, fake_paymob, fake_stripe, lambdas, postgres
from devkit import restore as restore_backup

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
EMAIL = "leaving.person@example.test"
NAME = "Leaving Person"
WEBHOOK_ENV = {
    "PAYMOB_HMAC_SECRET": "test-paymob-hmac",
    "PAYMOB_INTEGRATION_IDS": "4097558",  # callbacks must name one of ours (the fake's card integration)
    "STRIPE_WEBHOOK_SECRET": "whsec_test_account_deletion",
    "REVENUECAT_WEBHOOK_AUTH": "test-revenuecat-auth",
}


@pytest.fixture(autouse=True)
def fresh(clean_db, s3_endpoint, monkeypatch):
    for name, value in WEBHOOK_ENV.items():
        monkeypatch.setenv(name, value)
    from common import config

    storage.reset()  # another test may have left a client of another S3 endpoint
    config.settings.cache_clear()
    lambdas.load_handler("account")
    from account.settings import settings

    settings.cache_clear()
    db.reset()
    yield
    config.settings.cache_clear()
    settings.cache_clear()
    db.reset()


def call(method: str, path: str, user: uuid.UUID, body=None, headers=None, *, token: str | None = None):
    hdrs = {"authorization": f"Bearer {token or mint_token(user)}", **(headers or {})}
    result = lambdas.invoke("account", lambdas.url_event(method, path, body=body, headers=hdrs))
    return result["statusCode"], json.loads(result["body"]) if result.get("body") else {}


def sql(query: str, params=None, url: str | None = None) -> list[tuple]:
    with psycopg.connect(url or os.environ["DATABASE_URL"], autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def tables(url: str | None = None) -> list[str]:
    return [
        r[0]
        for r in sql(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind = 'r' AND relname NOT LIKE '%%yoyo%%' ORDER BY 1",
            url=url,
        )
    ]


def rows_mentioning(text: str, url: str | None = None) -> dict[str, int]:
    """Per table, the rows whose text (every column, JSON included, bytea as its hex) holds
    ``text`` in any case."""
    needles = sorted({text.lower(), *(v.encode().hex() for v in (text, text.lower(), text.upper()))})
    found = {}
    for table in tables(url):
        n = sql(f'SELECT count(*) FROM "{table}" t WHERE lower(t::text) LIKE ANY (%s)',
                ([f"%{needle}%" for needle in needles],), url=url)[0][0]
        if n:
            found[table] = n
    return found


def keys_under(bucket_var: str, prefix: str) -> list[str]:
    listed = storage.s3().list_objects_v2(Bucket=os.environ[bucket_var], Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def put(bucket_var: str, key: str, data: bytes = b"\xff\xd8image") -> None:
    storage.s3().put_object(Bucket=os.environ[bucket_var], Key=key, Body=data)


def finish_followups() -> dict:
    """What cache-cleanup does for deletions, with the 2-hour re-sweep window over."""
    sql("UPDATE account_object_deletions SET keep_until = now(), next_attempt_at = now()")
    return accounts.run_followups(30, with_pending=True).as_dict()


# --- a user with something in every place ----------------------------------------------


def user_with_everything() -> dict:
    """Leaving (with a partner) holds: a paired couple's shared and private entries and
    their analyses in the cache, generations and their cache entries, images, an export
    archive, entitlements, credits (a grant, a settled and an open reservation), a paid
    Stripe order and a pending Paymob one with their payments, RevenueCat aliases and a
    parked unmatched event, webhook deliveries naming them, an idempotency record and
    rate-limit windows."""
    from common import cache

    leaving, partner = uuid.uuid4(), uuid.uuid4()
    token = mint_token(leaving, claims={"email": EMAIL})
    assert call("GET", "/me", leaving, token=token)[0] == 200
    status, code = call("POST", "/pairs/invites", partner)
    assert call("POST", "/pairs/join", leaving, {"code": code["code"]})[0] == 201
    pair = sql("SELECT pair_id FROM pair_members WHERE user_id = %s", (leaving,))[0][0]
    entries = [
        sql(
            "INSERT INTO journal_entries (author_id, pair_id, title, content, visibility, analysis) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (
                leaving,
                pair if shared else None,
                f"{NAME}'s day",
                f"written by {NAME}",
                "shared" if shared else "private",
                json.dumps({"summary": f"{NAME} felt calm"}),
            ),
        )[0][0]
        for shared in (True, False)
    ]
    partners_entry = sql(
        "INSERT INTO journal_entries (author_id, pair_id, content, visibility) "
        "VALUES (%s, %s, 'the partner writes', 'shared') RETURNING id",
        (partner, pair),
    )[0][0]
    cache.set(cache.key("analysis", leaving, "digest"), {"summary": f"{NAME} felt calm"}, 3600, owner=leaving)
    cache.set(cache.key("shared", "catalog"), {"tools": 1}, 3600)  # nobody's
    ledger.grant(leaving, 100, reason="purchase credits_200", source="stripe", ref="order:paid-order")
    settled = ledger.reserve(leaving, 5, idempotency_key=f"gen:{uuid.uuid4()}")
    ledger.settle(settled.id)
    ledger.reserve(leaving, 3, idempotency_key=f"gen:{uuid.uuid4()}")  # still open: work in flight
    generation = sql(
        "INSERT INTO generations (user_id, tool_id, params, source_key, result_key, status, "
        "credits_charged, reservation_id, cache_key) VALUES (%s, 'resize', '{}', %s, %s, "
        "'succeeded', 5, %s, 'generation:abc') RETURNING id",
        (leaving, f"users/{leaving}/uploads/a.jpg", f"users/{leaving}/generations/g.jpg", settled.id),
    )[0][0]
    cache.set(
        "generation:abc",
        {"generation_id": str(generation), "result_key": f"users/{leaving}/g.jpg"},
        3600,
        owner=leaving,
    )
    sql(
        "INSERT INTO journal_attachments (entry_id, author_id, kind, content_type, object_key, "
        "declared_bytes, "
        "transcript, language) VALUES (%s, %s, 'audio', 'audio/wav', %s, 10, %s, 'english')",
        (entries[1], leaving, f"users/{leaving}/journal/note.wav", f"{NAME} said hello"),
    )
    put("UPLOADS_BUCKET", f"users/{leaving}/journal/note.wav", b"RIFF....WAVE")
    put("UPLOADS_BUCKET", f"users/{leaving}/uploads/a.jpg")
    put("UPLOADS_BUCKET", f"users/{leaving}/uploads/never-used.jpg")
    put("GENERATIONS_BUCKET", f"users/{leaving}/generations/g.jpg")
    put("UPLOADS_BUCKET", f"users/{partner}/uploads/partners.jpg")
    sql(
        "INSERT INTO entitlements (user_id, entitlement_id, source, expires_at, last_event_at) "
        "VALUES (%s, 'premium', 'revenuecat', now() + interval '30 days', now())",
        (leaving,),
    )
    paid = sql(
        """INSERT INTO orders (user_id, product_id, provider, status, amount_minor, currency,
                                      provider_order_id, provider_checkout_id, paid_at)
                  VALUES (%s, 'credits_200', 'stripe', 'paid', 1499, 'USD', 'cs_test_leaving001',
                          'cs_test_leaving001', now()) RETURNING id""",
        (leaving,),
    )[0][0]
    sql(
        """INSERT INTO payments (order_id, provider, provider_transaction_id, status, amount_minor, currency,
                                 raw, payment_intent_id)
           VALUES (%s, 'stripe', 'cs_test_leaving001', 'paid', 1499, 'USD', %s, 'pi_test_leaving001')""",
        (paid, json.dumps({"customer_details": {"email": EMAIL, "name": NAME}})),
    )
    sql(
        """INSERT INTO orders (user_id, product_id, provider, status, amount_minor, currency,
                               provider_order_id, provider_checkout_id)
           VALUES (%s, 'credits_50', 'paymob', 'pending', 25000, 'EGP', '91000123', 'pi_test_leaving002')""",
        (leaving,),
    )
    sql(
        "INSERT INTO revenuecat_aliases (app_user_id, user_id) VALUES ('$RCAnonymousID:leaving01', %s)",
        (leaving,),
    )
    deliveries = [
        (
            "stripe",
            "evt_leaving_1",
            "processed",
            json.dumps(
                {
                    "data": {
                        "object": {
                            "id": "cs_test_leaving001",
                            "client_reference_id": str(leaving),
                            "customer_details": {"email": EMAIL, "name": NAME},
                        }
                    }
                }
            ),
        ),
        (
            "revenuecat",
            "rc-leaving-1",
            "processed",
            json.dumps({"event": {"app_user_id": str(leaving).upper()}}),
        ),
        (
            "revenuecat",
            "rc-leaving-2",
            "unmatched",
            json.dumps(
                {"event": {"app_user_id": "$RCAnonymousID:leaving01", "subscriber_attributes": EMAIL}}
            ),
        ),
        (
            "stripe",
            "evt_someone_else",
            "processed",
            json.dumps({"data": {"object": {"id": "cs_test_other"}}}),
        ),
    ]
    for provider, event_id, status, body in deliveries:
        inbox_id = sql(
            "INSERT INTO webhook_inbox (provider, event_id, body, signature_ok, status, headers) "
            'VALUES (%s, %s, %s, true, %s, \'{"user-agent": "x"}\') RETURNING id',
            (provider, event_id, body, status),
        )[0][0]
        if status == "unmatched":
            sql(
                "INSERT INTO revenuecat_pending (app_user_id, inbox_id) "
                "VALUES ('$RCAnonymousID:leaving01', %s)",
                (inbox_id,),
            )
    assert call("POST", "/me/exports", leaving, headers={"idempotency-key": str(uuid.uuid4())})[0] == 202
    lambdas.invoke("account", {"job": "exports"})
    assert keys_under("EXPORTS_BUCKET", f"users/{leaving}/")
    assert sql("SELECT count(*) FROM idempotency_records WHERE owner = %s", (leaving,)) == [(1,)]
    assert sql("SELECT count(*) FROM rate_limit_windows WHERE subject = %s", (str(leaving),))[0][0] > 0
    return {
        "leaving": leaving,
        "partner": partner,
        "token": token,
        "entries": entries,
        "partners_entry": partners_entry,
        "pair": pair,
        "paid_order": paid,
    }


def test_a_deleted_account_leaves_only_a_tombstone_and_pseudonymised_accounting():
    # Given a user with data everywhere
    given = user_with_everything()
    leaving, partner = given["leaving"], given["partner"]
    ledger_rows = sql("SELECT count(*) FROM credit_ledger WHERE user_id = %s", (leaving,))[0][0]
    # When they delete their account (confirming with their own id)
    status, receipt = call("DELETE", "/me", leaving, {"confirm_user_id": str(leaving)}, token=given["token"])
    assert status == 200 and receipt["status"] == "deleted" and receipt["storage"] == "deleted", receipt
    followups = finish_followups()
    assert followups["errors"] == 0 and followups["pending"] == {
        "unlogged": 0,
        "prefixes": 0,
        "scrubs": 0,
        "overdue": 0,
    }, followups
    # Then nothing in any table names them, but the tombstone and the deletions log
    assert rows_mentioning(str(leaving)) == {"users": 1, "account_deletions": 1}
    assert sql("SELECT email, credits, deleted_at IS NOT NULL FROM users WHERE id = %s", (leaving,)) == [
        (None, 0, True)
    ]
    for personal in (EMAIL, NAME, "$RCAnonymousID:leaving01", "cs_test_leaving001", "pi_test_leaving001"):
        assert rows_mentioning(personal).keys() <= {"orders", "payments"}, personal
    assert rows_mentioning(EMAIL) == {} and rows_mentioning(NAME) == {}
    # And no object under their prefix in any bucket; the log copy is in the backups bucket
    for bucket in ("UPLOADS_BUCKET", "GENERATIONS_BUCKET", "EXPORTS_BUCKET"):
        assert keys_under(bucket, f"users/{leaving}/") == [], bucket
    assert keys_under("UPLOADS_BUCKET", f"users/{partner}/") == [f"users/{partner}/uploads/partners.jpg"]
    log = json.loads(
        storage.read(os.environ["BACKUPS_BUCKET"], f"deletions/test/{leaving}.json", max_bytes=1024)
    )
    assert log == {"format": 1, "user_id": str(leaving), "deleted_at": log["deleted_at"]}
    # And accounting kept its rows under one new id, whose balance is 0 = the sum of its rows
    (pseudonym,) = {r[0] for r in sql("SELECT user_id FROM orders")}
    assert pseudonym != leaving
    assert sql("SELECT email, credits, deleted_at IS NOT NULL FROM users WHERE id = %s", (pseudonym,)) == [
        (None, 0, True)
    ]
    kinds = sql("SELECT kind, amount FROM credit_ledger WHERE user_id = %s ORDER BY id", (pseudonym,))
    assert len(kinds) == ledger_rows + 2  # + the open reservation's refund, + the forfeited balance
    assert kinds[-2:] == [("refund", 3), ("adjust", -95)] and sum(a for _, a in kinds) == 0
    assert ledger.ledger_matches_balance()
    assert sql("SELECT DISTINCT status FROM credit_reservations") in (
        [("settled",), ("refunded",)],
        [("refunded",), ("settled",)],
    )
    assert sql("SELECT raw FROM payments") == [({"redacted": "account deleted"},)]
    assert sql("SELECT count(*) FROM orders") == [(2,)]
    # And the partner keeps their own entry, made private, and reads why in their trail
    assert sql("SELECT id, visibility FROM journal_entries") == [(given["partners_entry"], "private")]
    status, trail = call("GET", "/pairs/audit", partner)
    assert trail["events"][0]["action"] == "unlinked" and trail["events"][0]["actor"] == "deleted"
    assert trail["events"][0]["details"] == {"reason": "account_deleted"}
    assert call("GET", "/pairs/current", partner)[0] == 404
    # And the webhook deliveries that named them lost their body (an unfinished one is parked)
    assert sql("SELECT event_id, status, body FROM webhook_inbox ORDER BY id") == [
        ("evt_leaving_1", "processed", b""),
        ("rc-leaving-1", "processed", b""),
        ("rc-leaving-2", "parked", b""),
        ("evt_someone_else", "processed", json.dumps({"data": {"object": {"id": "cs_test_other"}}}).encode()),
    ]
    assert sql("SELECT count(*) FROM cache_entries") == [(1,)]  # the shared entry only
    # And their old token, or a new one, is refused everywhere; deleting again is the same receipt
    assert call("GET", "/me", leaving, token=given["token"])[1]["error"]["code"] == "account_deleted"
    assert call("POST", "/pairs/invites", leaving)[0] == 401
    assert call("DELETE", "/me", leaving, {"confirm_user_id": str(leaving)}) == (200, receipt)


def rc_delivery(app_user_id: str) -> dict:
    sample = json.loads((ROOT / "events" / "revenuecat-webhook" / "initial-purchase.json").read_text())
    body = json.loads(sample["body"])
    body["event"].update(
        id=str(uuid.uuid4()).upper(),
        app_user_id=app_user_id,
        original_app_user_id=app_user_id,
        aliases=[app_user_id],
        transaction_id="2000000999",
        original_transaction_id="2000000999",
    )
    return lambdas.url_event(
        "POST",
        "/",
        raw_body=json.dumps(body),
        headers={"content-type": "application/json", "authorization": WEBHOOK_ENV["REVENUECAT_WEBHOOK_AUTH"]},
    )


def stripe_delivery(event: dict) -> dict:
    payload = json.dumps(event)
    return lambdas.url_event(
        "POST",
        "/",
        raw_body=payload,
        headers={
            "content-type": "application/json",
            "stripe-signature": fake_stripe.signature(payload, WEBHOOK_ENV["STRIPE_WEBHOOK_SECRET"]),
        },
    )


def test_webhooks_for_a_deleted_account_are_parked_never_applied():
    given = user_with_everything()
    leaving = given["leaving"]
    assert call("DELETE", "/me", leaving, {"confirm_user_id": str(leaving)})[0] == 200
    before = {
        t: sql(f'SELECT count(*) FROM "{t}"')[0][0]
        for t in ("entitlements", "credit_ledger", "users", "revenuecat_aliases", "payments")
    }
    # RevenueCat: a purchase naming the deleted id
    event = rc_delivery(str(leaving))
    for expected in ("parked", "duplicate"):
        result = lambdas.invoke("revenuecat-webhook", event)
        assert result["statusCode"] == 200 and json.loads(result["body"])["status"] == expected, result
    # Stripe: a refund of the (pseudonymised) paid order
    refund = fake_stripe.event(
        "charge.refunded",
        fake_stripe.charge("pi_test_leaving001", amount=1499, currency="USD", amount_refunded=1499),
    )
    result = lambdas.invoke("stripe-webhook", stripe_delivery(refund))
    assert result["statusCode"] == 200 and json.loads(result["body"]) == {"status": "parked"}, result
    # Paymob: the pending order paid after all
    callback = fake_paymob.transaction(91000123, 25000, "EGP", id=777001)
    paid = lambdas.url_event(
        "POST",
        "/",
        raw_body=json.dumps(callback),
        headers={"content-type": "application/json"},
        query={"hmac": fake_paymob.hmac_for(callback["obj"], WEBHOOK_ENV["PAYMOB_HMAC_SECRET"])},
    )
    result = lambdas.invoke("paymob-webhook", paid)
    assert result["statusCode"] == 200 and json.loads(result["body"]) == {"status": "parked"}, result
    # Then nothing was applied or re-created, and each delivery is kept, parked, without its body
    after = {t: sql(f'SELECT count(*) FROM "{t}"')[0][0] for t in before}
    assert after == before
    assert sql("SELECT status FROM orders ORDER BY provider") == [("pending",), ("paid",)]
    parked = sql(
        "SELECT provider, body, headers, last_error FROM webhook_inbox WHERE status = 'parked' "
        "AND provider <> 'revenuecat' OR event_id = %s ORDER BY provider",
        (json.loads(event["body"])["event"]["id"],),
    )
    assert [(p, b, h, e) for p, b, h, e in parked] == [
        ("paymob", b"", {}, "account deleted"),
        ("revenuecat", b"", {}, "account deleted"),
        ("stripe", b"", {}, "account deleted"),
    ]


def test_a_write_racing_the_deletion_waits_and_is_refused():
    given = user_with_everything()
    leaving = given["leaving"]
    outcome: dict[str, object] = {}
    with psycopg.connect(os.environ["DATABASE_URL"]) as deleting:
        # Given the deletion running (its transaction open, the user's row locked)
        lambdas.load_handler("analyze-entry")
        assert deleting.execute("SELECT delete_account(%s)", (leaving,)).fetchone()[0] == "deleted"

        def write():  # a journal entry through analyze-entry, with a token taken before
            event = lambdas.url_event("POST", "/entries", body={"content": "late", "analyze": False},
                                      headers={"authorization": f"Bearer {mint_token(leaving)}"})
            try:
                result = lambdas.invoke("analyze-entry", event)
                outcome["write"] = (result["statusCode"], json.loads(result["body"])["error"]["code"])
            finally:
                db.reset()

        def provision():
            try:
                outcome["provision"] = auth.ensure_user(leaving)
            except AccountDeleted:
                outcome["provision"] = "refused"
            finally:
                db.reset()

        threads = [threading.Thread(target=write), threading.Thread(target=provision)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        assert "write" not in outcome  # When a write for that user arrives, it waits
        deleting.commit()
    for thread in threads:
        thread.join(10)
    # Then the write is refused once the deletion committed; a provisioning in between found
    # the row (it read before the commit: nothing created), and after it the id is refused
    assert outcome == {"write": (401, "account_deleted"), "provision": False}
    assert sql("SELECT count(*) FROM journal_entries WHERE author_id = %s", (leaving,)) == [(0,)]
    with pytest.raises(AccountDeleted):
        auth.ensure_user(leaving)
    assert sql("SELECT count(*) FROM users WHERE id = %s AND deleted_at IS NOT NULL", (leaving,)) == [(1,)]


def test_a_failed_object_deletion_is_retried_by_cache_cleanup_until_done(monkeypatch):
    from common import config

    leaving = uuid.uuid4()
    assert call("GET", "/me", leaving)[0] == 200
    put("UPLOADS_BUCKET", f"users/{leaving}/uploads/a.jpg")
    uploads, backups = os.environ["UPLOADS_BUCKET"], os.environ["BACKUPS_BUCKET"]
    # Given S3 failing for the uploads bucket and the backups bucket during the deletion
    monkeypatch.setenv("UPLOADS_BUCKET", "no-such-bucket")
    monkeypatch.setenv("BACKUPS_BUCKET", "no-such-bucket")
    config.settings.cache_clear()
    status, receipt = call("DELETE", "/me", leaving, {"confirm_user_id": str(leaving)})
    # Then the account is deleted, the storage is pending, and the failure recorded
    assert status == 200 and receipt["storage"] == "pending"
    assert sql("SELECT last_error FROM account_object_deletions WHERE bucket_setting = 'UPLOADS_BUCKET'") == [
        ("NoSuchBucket",)
    ]
    assert sql("SELECT logged_at FROM account_deletions") == [(None,)]
    # When S3 works again and cache-cleanup runs (the retry's backoff elapsed)
    monkeypatch.setenv("UPLOADS_BUCKET", uploads)
    monkeypatch.setenv("BACKUPS_BUCKET", backups)
    config.settings.cache_clear()
    sql("UPDATE account_object_deletions SET next_attempt_at = now() WHERE last_error IS NOT NULL")
    report = lambdas.invoke("cache-cleanup", {"max_seconds": 60})
    assert report["accounts"]["errors"] == 0 and report["accounts"]["logs_written"] == 1, report["accounts"]
    assert report["accounts"]["objects_deleted"] == 1
    # Then the objects are gone and the log written; the prefix is swept once more later
    assert keys_under("UPLOADS_BUCKET", f"users/{leaving}/") == []
    assert call("DELETE", "/me", leaving, {"confirm_user_id": str(leaving)})[1]["storage"] == "deleted"
    put("UPLOADS_BUCKET", f"users/{leaving}/uploads/late.jpg")  # an upload form used after the deletion
    sql("UPDATE account_object_deletions SET keep_until = now(), next_attempt_at = now()")
    report = lambdas.invoke("cache-cleanup", {"max_seconds": 60})
    assert report["accounts"]["objects_deleted"] == 1 and report["accounts"]["prefixes_done"] == 3
    assert keys_under("UPLOADS_BUCKET", f"users/{leaving}/") == []
    assert sql("SELECT count(*) FROM account_object_deletions") == [(0,)]
    assert report["accounts"]["pending"]["overdue"] == 0


def test_a_restore_of_an_earlier_backup_deletes_the_account_again(monkeypatch, tmp_path):
    # Given a backup taken while the user existed
    stage = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("STAGE", stage)
    from common import config

    config.settings.cache_clear()
    given = user_with_everything()
    leaving, partner = given["leaving"], given["partner"]
    backup = lambdas.invoke("backup-export", {})
    assert backup["status"] == "complete", backup
    # And then the account deleted, and another user made and deleted after the backup
    assert call("DELETE", "/me", leaving, {"confirm_user_id": str(leaving)})[0] == 200
    later = uuid.uuid4()
    assert call("GET", "/me", later)[0] == 200
    assert call("DELETE", "/me", later, {"confirm_user_id": str(later)})[0] == 200
    # When the earlier backup is restored into a new database
    server = postgres.with_database(os.environ["DATABASE_URL"], "postgres")
    name = f"acct_restore_{uuid.uuid4().hex[:8]}"
    target = postgres.create_database(server, name)
    try:
        report = restore_backup.restore(
            os.environ["BACKUPS_BUCKET"],
            stage,
            backup["run"],
            target,
            workdir=tmp_path,
            progress=False,
            log=lambda _line: None,
        )
        # Then the log was re-applied: the user is deleted again, the later one is a tombstone
        assert report.deletions == {"deleted": 1, "tombstoned": 1}
        left = rows_mentioning(str(leaving), url=target)
        # (and its prefixes, which cache-cleanup sweeps again)
        assert left.keys() <= {"users", "account_deletions", "account_object_deletions"}
        assert left["users"] == 1 and left["account_deletions"] == 1
        assert rows_mentioning(EMAIL, url=target) == {} and rows_mentioning(NAME, url=target) == {}
        assert sql(
            "SELECT count(*) FROM users WHERE id = %s AND deleted_at IS NOT NULL", (later,), url=target
        ) == [(1,)]
        assert sql("SELECT count(*) FROM orders", url=target) == [(2,)]
        assert sql("SELECT author_id, visibility FROM journal_entries", url=target) == [(partner, "private")]
        # and the restored database refuses the deleted ids' tokens
        monkeypatch.setenv("DATABASE_URL", target)
        db.reset()
        for user in (leaving, later):
            with pytest.raises(AccountDeleted):
                auth.ensure_user(user)
        # and restoring again is the same (the log applies once)
        db.reset()
    finally:
        db.reset()
        postgres.drop_database(server, name)


def test_an_export_running_while_the_account_is_deleted_leaves_no_archive(monkeypatch):
    # Given an export whose archive is being written when the account is deleted
    leaving = uuid.uuid4()
    assert call("GET", "/me", leaving)[0] == 200
    assert call("POST", "/me/exports", leaving)[0] == 202
    from account import archive

    real_build = archive.build

    def build_then_delete(export_id, user_id, **kw):
        built = real_build(export_id, user_id, **kw)
        assert keys_under("EXPORTS_BUCKET", f"users/{leaving}/") == [built.key]
        sql("SELECT delete_account(%s)", (leaving,))  # a real deletion, committed meanwhile
        return built

    monkeypatch.setattr(archive, "build", build_then_delete)
    # When the job finishes that export
    result = lambdas.invoke("account", {"job": "exports"})
    # Then it completes nothing and the archive it wrote is gone
    assert result["exports"] == {"completed": 0, "failed": 0, "retried": 0}
    assert keys_under("EXPORTS_BUCKET", f"users/{leaving}/") == []
    assert sql("SELECT count(*) FROM account_exports") == [(0,)]


def test_the_seed_keeps_what_was_changed_through_the_api():
    from devkit import seed

    # Given the demo data, then the demo pair unlinked and the leaver's account deleted
    url = os.environ["DATABASE_URL"]
    seed.seed(url)
    assert call("DELETE", "/pairs/current", seed.PARTNER_USER_ID)[0] == 200
    leaver = seed.LEAVER_USER_ID
    assert call("DELETE", "/me", leaver, {"confirm_user_id": str(leaver)})[0] == 200
    # When make dev starts again (the seed runs)
    seed.seed(url)
    # Then the pair stays dissolved and the account deleted
    assert sql("SELECT count(*) FROM pair_members WHERE pair_id = %s", (seed.DEMO_PAIR_ID,)) == [(0,)]
    assert sql("SELECT deleted_at IS NOT NULL, email FROM users WHERE id = %s", (leaver,)) == [(True, None)]
    assert sql("SELECT count(*) FROM journal_entries WHERE author_id = %s", (leaver,)) == [(0,)]
