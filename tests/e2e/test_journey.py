"""A whole journey over HTTP through the local runner, as `make dev` serves it: the
template's functions in worker processes, a fresh database (migrated and seeded), moto
S3, the Paymob and Stripe fakes. The demo user uploads a photo and edits it (once paid,
once cached), buys credit packs on the web with Paymob and Stripe, gets a RevenueCat
subscription that their partner shares, writes a shared journal entry that the partner
reads; then the housekeeping runs on demand and the backup is restored into another
fresh database, which must hold the same rows."""

from __future__ import annotations

import json
import os
import uuid

import requests

from devkit import ROOT, fake_paymob, fake_stripe, postgres, s3, seed
from devkit import restore as restore_backup
from tests.e2e.conftest import Local

DEMO, PARTNER = seed.DEMO_USER_ID, seed.PARTNER_USER_ID


def balance(local: Local, user: uuid.UUID = DEMO) -> int:
    status, me = local.call("GET", "/process-image/me", user=user)
    assert status == 200, me
    return me["balance"]


def test_journey(local: Local, tmp_path) -> None:
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
    status, partner = local.call("GET", "/process-image/me", user=PARTNER)
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

    # -- housekeeping on demand
    status, cleanup = local.call("POST", "/_schedules/cache-cleanup")
    assert status == 200 and cleanup["status"] == "ok", cleanup
    status, backup = local.call("POST", "/_schedules/backup-export")
    assert status == 200 and backup["result"]["status"] == "complete", backup
    run = backup["result"]["run"]
    stage = backup["result"]["prefix"].split("/")[1]

    # -- the backup, restored into a fresh database, holds the same rows
    target = postgres.create_database(local.server_url, f"e2e_restore_{uuid.uuid4().hex[:10]}")
    os.environ.update(s3.environment(local.services.s3_endpoint))  # restore reads S3 with boto3
    try:
        report = restore_backup.restore(s3.LOCAL_BUCKETS["BACKUPS_BUCKET"], stage, run, target,
                                        workdir=tmp_path, progress=False, log=lambda _line: None)
        assert report.run == run
        tables = [t.name for t in report.tables]
        assert {"users", "credit_ledger", "orders", "payments", "journal_entries"} <= set(tables)
        assert same_rows(local.database_url, target, tables)
    finally:
        postgres.drop_database(local.server_url, target.rsplit("/", 1)[1].split("?")[0])


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
