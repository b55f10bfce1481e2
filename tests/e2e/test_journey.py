"""A whole journey over HTTP through the local runner, as `make dev` serves it: the
template's functions in worker processes, a fresh database (migrated and seeded), moto
S3, the Paymob and Stripe fakes. The demo user uploads a photo and edits it (once paid,
once cached), buys credit packs on the web with Paymob and Stripe, gets a RevenueCat
subscription that their partner shares, writes a shared journal entry that the partner
reads. Two new users pair through the account API, share an entry, one exports their
data (the export schedule run on demand), the partner unlinks, and the other deletes
their account. Then the housekeeping runs on demand and the backup is restored into
another fresh database, which must hold the same rows; the backup taken before the
deletion, restored, does not bring the deleted account back."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from typing import Any

import requests

from devkit import ROOT, fake_paymob, fake_stripe, postgres, s3, seed
from devkit import restore as restore_backup
from tests.e2e.conftest import Local

DEMO, PARTNER = seed.DEMO_USER_ID, seed.PARTNER_USER_ID


def balance(local: Local, user: uuid.UUID = DEMO) -> int:
    status, me = local.call("GET", "/account/me", user=user)
    assert status == 200, me
    return me["balance"]


def test_journey(local: Local, tmp_path, monkeypatch) -> None:
    start = balance(local)
    assert start == seed.DEMO_CREDITS

    # -- a photo: presigned POST to S3, then a paid local edit, then the same edit cached
    photo = seed.demo_images()[0]
    status, form = local.call("POST", "/process-image/uploads", user=DEMO,
                              body={"content_type": "image/jpeg", "size": len(photo)})
    assert status == 200, form
    uploaded = requests.post(form["url"], data=form["fields"], timeout=30,
                             files={"file": ("me.jpg", photo, "image/jpeg")})
    assert uploaded.status_code in (200, 201, 204), uploaded.text
    status, tools = local.call("GET", "/process-image/tools", user=DEMO)
    cost = next(t["credit_cost"] for t in tools["tools"] if t["id"] == "resize")
    request = {"tool_id": "resize", "params": {"width": 200, "fit": "contain"}, "source_key": form["key"]}
    status, generated = local.call("POST", "/process-image/generations", user=DEMO, body=request)
    assert status == 201 and generated["cached"] is False and generated["credits_charged"] == cost, generated
    result = requests.get(generated["url"], timeout=30)
    assert result.status_code == 200 and result.content[:2] == b"\xff\xd8"  # a JPEG
    status, again = local.call("POST", "/process-image/generations", user=DEMO, body=request)
    assert status == 200 and again["cached"] is True and again["credits_charged"] == 0, again
    assert again["generation_id"] == generated["generation_id"]
    assert balance(local) == start - cost

    # -- credits on the web: a Paymob intention, then its signed processed callback (twice)
    status, order = local.call("POST", "/checkout/paymob", user=DEMO, body={"product_id": "credits_50"},
                               headers={"idempotency-key": str(uuid.uuid4())})
    assert status == 201, order
    paymob = local.services.paymob
    intention = next(i for i in paymob.intentions.values() if i["special_reference"] == order["order_id"])
    callback = fake_paymob.transaction(
        intention["intention_order_id"], order["amount_minor"], order["currency"],
        id=paymob.next_transaction_id(), merchant_order_id=order["order_id"])
    hmac = fake_paymob.hmac_for(callback["obj"], local.env("paymob-webhook")["PAYMOB_HMAC_SECRET"])
    for expected in ("paid", "duplicate"):
        status, answer = local.call("POST", f"/paymob-webhook/?hmac={hmac}", body=callback)
        assert (status, answer["status"]) == (200, expected), answer
    assert balance(local) == start - cost + 50

    # -- and a Stripe Checkout Session, completed by a signed event
    status, order = local.call("POST", "/checkout/stripe", user=DEMO, body={"product_id": "credits_200"})
    assert status == 201, order
    session = local.services.stripe.sessions[order["session_id"]]
    completed = fake_stripe.completed_session(session)
    payload = json.dumps(fake_stripe.event("checkout.session.completed", completed))
    signature = fake_stripe.signature(payload, local.env("stripe-webhook")["STRIPE_WEBHOOK_SECRET"])
    status, answer = local.call("POST", "/stripe-webhook/", data=payload.encode(),
                                headers={"content-type": "application/json", "stripe-signature": signature})
    assert (status, answer["status"]) == (200, "paid"), answer
    assert balance(local) == start - cost + 50 + 200

    # -- a RevenueCat subscription of the demo user, which their partner shares
    sample = json.loads((ROOT / "events" / "revenuecat-webhook" / "initial-purchase.json").read_text())
    delivery = json.loads(sample["body"])
    delivery["event"]["id"] = str(uuid.uuid4()).upper()
    status, answer = local.call("POST", "/revenuecat-webhook/", body=delivery, headers={
        "authorization": local.env("revenuecat-webhook")["REVENUECAT_WEBHOOK_AUTH"].split(",")[0]})
    assert (status, answer["status"]) == (200, "processed"), answer
    status, partner = local.call("GET", "/account/me", user=PARTNER)
    assert status == 200
    assert {(e["entitlement_id"], e["owner"]) for e in partner["entitlements"]} == {("premium", "pair")}

    # -- a shared journal entry, analysed, read by the partner and by nobody else
    entry_in = {"title": "Saturday", "content": "We hiked to the lake and laughed all day. I feel grateful.",
                "visibility": "shared", "analyze": True}
    status, entry = local.call("POST", "/analyze-entry/entries", user=DEMO, body=entry_in)
    assert status == 201 and entry["pair_id"] == str(seed.DEMO_PAIR_ID) and entry["analysis"], entry
    status, analysed = local.call("POST", f"/analyze-entry/entries/{entry['id']}/analyze", user=DEMO)
    assert status == 200 and analysed["analysis"]["mood"] == entry["analysis"]["mood"], analysed
    status, read = local.call("GET", f"/analyze-entry/entries/{entry['id']}", user=PARTNER)
    assert status == 200 and read["content"] == entry_in["content"] and read["analysis"], read
    assert local.call("GET", f"/analyze-entry/entries/{entry['id']}", user=uuid.uuid4())[0] == 404

    # -- two new users pair with an invite code, and share an entry
    ana, ben = uuid.uuid4(), uuid.uuid4()
    status, invite = local.call("POST", "/account/pairs/invites", user=ana,
                                headers={"idempotency-key": str(uuid.uuid4())})
    assert status == 201 and invite["code"], invite
    status, pair = local.call("POST", "/account/pairs/join", user=ben, body={"code": invite["code"].lower()})
    assert status == 201 and pair["partner"]["user_id"] == str(ana), pair
    status, shared = local.call("POST", "/analyze-entry/entries", user=ana, body={
        "title": "Us", "content": "A quiet Sunday together, and I feel grateful.", "visibility": "shared"})
    assert status == 201 and shared["pair_id"] == pair["pair_id"], shared
    assert local.call("GET", f"/analyze-entry/entries/{shared['id']}", user=ben)[0] == 200
    status, trail = local.call("GET", "/account/pairs/audit", user=ben)
    assert [e["action"] for e in trail["events"]] == ["entry_shared", "joined", "invite_created"], trail

    # -- Ana exports her data: queued, run by the account function's schedule, downloaded
    status, export = local.call("POST", "/account/me/exports", user=ana)
    assert status == 202 and export["status"] == "queued", export
    status, job = local.call("POST", "/_schedules/account")
    assert status == 200 and job["result"]["exports"]["completed"] == 1, job
    status, export = local.call("GET", f"/account/me/exports/{export['export_id']}", user=ana)
    assert status == 200 and export["status"] == "completed", export
    archive = zipfile.ZipFile(io.BytesIO(requests.get(export["url"], timeout=30).content))
    assert [e["content"] for e in json.loads(archive.read("journal_entries.json"))] == [shared["content"]]

    # -- Ben unlinks: the entry is Ana's alone again
    status, unlinked = local.call("DELETE", "/account/pairs/current", user=ben)
    assert status == 200 and unlinked["status"] == "unlinked", unlinked
    assert local.call("GET", f"/analyze-entry/entries/{shared['id']}", user=ben)[0] == 404
    assert local.call("GET", "/account/pairs/current", user=ana)[0] == 404

    # -- a backup while Ana's account exists; then she deletes it
    status, before = local.call("POST", "/_schedules/backup-export")
    assert status == 200 and before["result"]["status"] == "complete", before
    time.sleep(1.1)  # backup runs are named by the second
    status, receipt = local.call("DELETE", "/account/me", user=ana, body={"confirm_user_id": str(ana)})
    assert status == 200 and receipt["status"] == "deleted", receipt
    status, refused = local.call("GET", "/account/me", user=ana)
    assert status == 401 and refused["error"]["code"] == "account_deleted", refused
    assert local.call("GET", "/account/pairs/audit", user=ben)[1]["events"][0]["action"] == "unlinked"

    # -- housekeeping on demand
    status, cleanup = local.call("POST", "/_schedules/cache-cleanup")
    assert status == 200 and cleanup["status"] == "ok", cleanup
    status, backup = local.call("POST", "/_schedules/backup-export")
    assert status == 200 and backup["result"]["status"] == "complete", backup
    run = backup["result"]["run"]
    stage = backup["result"]["prefix"].split("/")[1]

    # -- the backup, restored into a fresh database, holds the same rows
    target = postgres.create_database(local.server_url, f"e2e_restore_{uuid.uuid4().hex[:10]}")
    # restore reads S3 with the layer's client: point it at this run's S3, not one an
    # earlier test in the process left cached
    from common import storage

    for name, value in s3.environment(local.services.s3_endpoint).items():
        monkeypatch.setenv(name, value)
    storage.reset()
    try:
        report = restore_backup.restore(s3.LOCAL_BUCKETS["BACKUPS_BUCKET"], stage, run, target,
                                        workdir=tmp_path, progress=False, log=lambda _line: None)
        assert report.run == run
        tables = [t.name for t in report.tables]
        assert {"users", "credit_ledger", "orders", "payments", "journal_entries"} <= set(tables)
        assert same_rows(local.database_url, target, tables)
        # and the backup taken before Ana's deletion, restored, re-applies it
        earlier = postgres.create_database(local.server_url, f"e2e_earlier_{uuid.uuid4().hex[:10]}")
        try:
            report = restore_backup.restore(s3.LOCAL_BUCKETS["BACKUPS_BUCKET"], stage,
                                            before["result"]["run"], earlier, workdir=tmp_path,
                                            progress=False, log=lambda _line: None)
            assert report.deletions == {"deleted": 1}
            assert rows(earlier, "SELECT count(*) FROM journal_entries WHERE author_id = %s", ana) == [(0,)]
            assert rows(earlier, "SELECT deleted_at IS NOT NULL FROM users WHERE id = %s", ana) == [(True,)]
        finally:
            postgres.drop_database(local.server_url, earlier.rsplit("/", 1)[1].split("?")[0])
    finally:
        postgres.drop_database(local.server_url, target.rsplit("/", 1)[1].split("?")[0])
        storage.reset()  # the next test's S3 may be another server


def rows(url: str, query: str, *params: Any) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def same_rows(source: str, target: str, tables: list[str]) -> bool:
    """Every table's rows, compared as sorted text (the backup was taken with nothing
    running after it, so the source still holds exactly what it saved)."""
    import psycopg
    from psycopg import sql

    def rows(url: str, table: str) -> list[str]:
        with psycopg.connect(url) as conn:
            query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
            return sorted(r[0] for r in conn.execute(query))

    different = [t for t in tables if rows(source, t) != rows(target, t)]
    assert not different, f"tables that differ after the restore: {different}"
    return True
