"""account end to end, invoked as Lambda invokes it (devkit.lambdas.invoke): the real
Postgres, moto S3. Pairing (every route and refusal, the guess limit, the join race),
the pair audit, GET /me, exports (the queue, the archive, expiry, retries) and the
deletion's refusals. The deletion's completeness, webhooks after it and restores are in
test_account_deletion.py; the export's flat memory in test_account_export_memory.py."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
import zipfile

import psycopg
import pytest
import requests

from common import auth, db
from common.auth import mint_token
from devkit import lambdas

FUNCTION = "account"
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture(autouse=True)
def fresh(clean_db, s3_endpoint):
    from common import config, storage

    storage.reset()  # another test may have left a client of another S3 endpoint
    config.settings.cache_clear()
    lambdas.load_handler(FUNCTION)
    from account.settings import settings

    settings.cache_clear()
    db.reset()
    yield
    settings.cache_clear()
    db.reset()


def setenv(monkeypatch, **values: str) -> None:
    from account.settings import settings

    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()


def call(
    method: str,
    path: str,
    user: uuid.UUID | None,
    body=None,
    headers=None,
    query: dict[str, str] | None = None,
) -> tuple[int, dict]:
    hdrs = dict(headers or {})
    if user is not None:
        hdrs["authorization"] = f"Bearer {mint_token(user)}"
    result = lambdas.invoke(FUNCTION, lambdas.url_event(method, path, body=body, headers=hdrs, query=query))
    return result["statusCode"], json.loads(result["body"]) if result.get("body") else {}


def sql(query: str, params=None) -> list[tuple]:
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def invite(user: uuid.UUID) -> dict:
    status, body = call("POST", "/pairs/invites", user)
    assert status == 201, body
    return body


def pair_up(a: uuid.UUID, b: uuid.UUID) -> dict:
    status, body = call("POST", "/pairs/join", b, {"code": invite(a)["code"]})
    assert status == 201, body
    return body


def run_exports() -> dict:
    return lambdas.invoke(FUNCTION, {"job": "exports"})


def error(result: tuple[int, dict]) -> tuple[int, str]:
    status, body = result
    return status, body.get("error", {}).get("code", "")


# --- invites and join ------------------------------------------------------------------


def test_two_users_pair_with_a_code_and_both_see_the_pair_and_its_audit():
    # Given Ana's invite
    ana, ben = uuid.uuid4(), uuid.uuid4()
    code = invite(ana)
    assert len(code["code"]) == 14 and code["code"].count("-") == 2
    # When Ben types it sloppily (lower case, spaces, O for 0)
    typed = code["code"].lower().replace("-", " ").replace("0", "o")
    status, pair = call("POST", "/pairs/join", ben, {"code": typed})
    # Then they are a pair, seen alike from both sides
    assert status == 201, pair
    assert pair["partner"]["user_id"] == str(ana)
    status, seen = call("GET", "/pairs/current", ana)
    assert status == 200 and seen["pair_id"] == pair["pair_id"] and seen["partner"]["user_id"] == str(ben)
    assert seen["shared_entries"] == {"mine": 0, "partner": 0} and seen["entitlements"] == []
    # And both read the same trail: the invite, then the join
    for user, joined_by in ((ana, "partner"), (ben, "you")):
        status, trail = call("GET", "/pairs/audit", user)
        assert status == 200
        assert [(e["action"], e["actor"]) for e in trail["events"]] == [
            ("joined", joined_by),
            ("invite_created", "you" if joined_by == "partner" else "partner"),
        ]
        assert {e["pair_id"] for e in trail["events"]} == {pair["pair_id"]}
    # And only the code's hash is stored
    stored = sql("SELECT code_sha256 FROM pair_invites WHERE id = %s", (code["invite_id"],))[0][0]
    assert len(stored) == 32 and code["code"].replace("-", "").encode() not in bytes(stored)
    assert call("GET", "/me", ana)[1]["pair"]["partner_id"] == str(ben)


def test_joining_refusals_are_clear_and_change_nothing(monkeypatch):
    ana, ben, cat, dan = (uuid.uuid4() for _ in range(4))
    code = invite(ana)["code"]
    assert error(call("POST", "/pairs/join", ana, {"code": code})) == (422, "own_code")
    assert error(call("POST", "/pairs/join", ben, {"code": "NOT-A-CODE"})) == (422, "invalid_code")
    assert error(call("POST", "/pairs/join", ben, {"code": "ZZZZ-ZZZZ-ZZZZ"})) == (404, "unknown_code")
    assert error(call("POST", "/pairs/join", ben, {"code": "x" * 65})) == (422, "invalid_input")
    assert error(call("POST", "/pairs/join", ben, {})) == (422, "invalid_input")
    # expired
    expired = invite(cat)
    sql(
        "UPDATE pair_invites SET created_at = now() - interval '2 days', "
        "expires_at = now() - interval '1 day' WHERE id = %s",
        (expired["invite_id"],),
    )
    assert error(call("POST", "/pairs/join", ben, {"code": expired["code"]})) == (410, "code_expired")
    # revoked
    revoked = invite(cat)
    assert call("DELETE", f"/pairs/invites/{revoked['invite_id']}", cat)[0] == 200
    assert error(call("POST", "/pairs/join", ben, {"code": revoked["code"]})) == (410, "code_revoked")
    assert sql("SELECT count(*) FROM pairs")[0][0] == 0
    # used: Ben joins Ana; Dan can't use the same code, and paired people can't join or invite
    assert call("POST", "/pairs/join", ben, {"code": code})[0] == 201
    assert error(call("POST", "/pairs/join", dan, {"code": code})) == (410, "code_used")
    other = invite(dan)["code"]
    assert error(call("POST", "/pairs/join", ben, {"code": other})) == (409, "already_paired")
    assert error(call("POST", "/pairs/invites", ana)) == (409, "already_paired")
    # joining again with the code that made one's pair answers the pair (a retry)
    status, again = call("POST", "/pairs/join", ben, {"code": code})
    assert status == 201 and again["partner"]["user_id"] == str(ana)
    assert (
        sql("SELECT count(*) FROM pairs")[0][0] == 1 and sql("SELECT count(*) FROM pair_members")[0][0] == 2
    )


def test_an_inviter_who_pairs_elsewhere_loses_their_open_invites():
    ana, ben, cat = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    anas = invite(ana)
    pair_up(ben, ana)  # Ana joins Ben's invite
    assert error(call("POST", "/pairs/join", cat, {"code": anas["code"]})) == (410, "code_revoked")
    _, trail = call("GET", "/pairs/audit", ana)
    revoked = [e for e in trail["events"] if e["action"] == "invite_revoked"]
    assert revoked and revoked[0]["details"] == {"invite_id": anas["invite_id"], "reason": "paired"}
    assert revoked[0]["pair_id"] is None
    assert call("GET", "/pairs/invites", ana)[1] == {"invites": []}


def test_open_invites_are_capped_listed_and_revoked(monkeypatch):
    setenv(monkeypatch, INVITE_MAX_OPEN="2")
    ana = uuid.uuid4()
    first, second = invite(ana), invite(ana)
    assert error(call("POST", "/pairs/invites", ana)) == (409, "too_many_invites")
    status, listed = call("GET", "/pairs/invites", ana)
    assert status == 200 and [i["invite_id"] for i in listed["invites"]] == [
        first["invite_id"],
        second["invite_id"],
    ]
    assert "code" not in json.dumps(listed)
    assert call("DELETE", f"/pairs/invites/{first['invite_id']}", ana) == (
        200,
        {"invite_id": first["invite_id"], "status": "revoked"},
    )
    assert call("DELETE", f"/pairs/invites/{first['invite_id']}", ana)[0] == 200  # again: the same
    assert error(call("DELETE", f"/pairs/invites/{second['invite_id']}", uuid.uuid4())) == (404, "not_found")
    assert error(call("DELETE", "/pairs/invites/not-an-id", ana)) == (404, "not_found")
    assert invite(ana)["code"]  # room again
    ben = uuid.uuid4()
    assert call("POST", "/pairs/join", ben, {"code": second["code"]})[0] == 201
    assert error(call("DELETE", f"/pairs/invites/{second['invite_id']}", ana)) == (409, "code_used")


def test_an_idempotency_key_returns_the_same_invite_and_the_same_join():
    ana, ben = uuid.uuid4(), uuid.uuid4()
    key = {"idempotency-key": str(uuid.uuid4())}
    first = call("POST", "/pairs/invites", ana, headers=key)
    assert first[0] == 201 and call("POST", "/pairs/invites", ana, headers=key) == first
    assert sql("SELECT count(*) FROM pair_invites")[0][0] == 1
    join_key = {"idempotency-key": str(uuid.uuid4())}
    joined = call("POST", "/pairs/join", ben, {"code": first[1]["code"]}, headers=join_key)
    assert (
        joined[0] == 201
        and call("POST", "/pairs/join", ben, {"code": first[1]["code"]}, headers=join_key) == joined
    )
    other = call("POST", "/pairs/join", ben, {"code": "AAAA-BBBB-CCCC"}, headers=join_key)
    assert error(other) == (422, "idempotency_key_reused")
    # the stored answer (it holds the code) lives no longer than the invite
    expiry = sql("SELECT expires_at - created_at FROM idempotency_records WHERE owner = %s", (ana,))
    assert expiry and expiry[0][0].total_seconds() <= 24 * 3600 + 60


def test_guessing_codes_is_rate_limited_per_user(monkeypatch):
    setenv(monkeypatch, JOIN_ATTEMPTS_PER_HOUR="5")
    ana, guesser, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    code = invite(ana)["code"]
    for n in range(5):
        assert error(call("POST", "/pairs/join", guesser, {"code": f"AAAA-AAAA-AAA{n}"})) == (
            404,
            "unknown_code",
        )
    # the sixth attempt is refused, even with the right code, and says when to retry
    result = lambdas.invoke(
        FUNCTION,
        lambdas.url_event(
            "POST",
            "/pairs/join",
            body={"code": code},
            headers={"authorization": f"Bearer {mint_token(guesser)}"},
        ),
    )
    assert result["statusCode"] == 429 and int(result["headers"]["Retry-After"]) > 0
    assert sql("SELECT count(*) FROM pairs")[0][0] == 0
    # another user is not affected
    assert call("POST", "/pairs/join", other, {"code": code})[0] == 201


RACE = """
import json, multiprocessing, sys
from devkit.lambdas import invoke, load_handler

load_handler("account")
import jwt, psycopg  # noqa: the warm container's lazy imports, before forking

rounds = json.loads(sys.stdin.read())
ctx = multiprocessing.get_context("fork")
answers = []
for events in rounds:
    start, results = ctx.Barrier(len(events)), ctx.Queue()

    def container(index, event):
        start.wait()  # every request of the round at once
        response = invoke("account", event)
        results.put((index, {"status": response["statusCode"], "body": json.loads(response["body"])}))

    procs = [ctx.Process(target=container, args=(i, e)) for i, e in enumerate(events)]
    for p in procs:
        p.start()
    answers.append([answer for _, answer in sorted(results.get(timeout=60) for _ in procs)])
    for p in procs:
        p.join()
sys.stderr.write("RESULTS " + json.dumps(answers) + chr(10))
"""


def join_event(user: uuid.UUID, code: str) -> dict:
    return lambdas.url_event(
        "POST", "/pairs/join", body={"code": code}, headers={"authorization": f"Bearer {mint_token(user)}"}
    )


def race(rounds: list[list[dict]]) -> list[list[dict]]:
    done = subprocess.run(
        [sys.executable, "-c", RACE],
        input=json.dumps(rounds),
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("RESULTS ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[0][8:])


def test_users_racing_for_one_code_make_exactly_one_pair_every_time():
    # Given 12 rounds: three users race for one invite, and two users join each other's
    # invites at the same moment
    rounds, cases = [], []
    for _ in range(12):
        inviter, racers = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
        code = invite(inviter)["code"]
        left, right = uuid.uuid4(), uuid.uuid4()
        left_code, right_code = invite(left)["code"], invite(right)["code"]
        rounds.append(
            [
                *(join_event(r, code) for r in racers),
                join_event(left, right_code),
                join_event(right, left_code),
            ]
        )
        cases.append((inviter, racers, left, right))
    # When each round's requests run at once, in separate containers
    answers = race(rounds)
    # Then every round made exactly one pair of the three racers and one of the crossed two
    for (inviter, racers, left, right), answer in zip(cases, answers, strict=True):
        racing, crossed = answer[:3], answer[3:]
        assert sorted(a["status"] for a in racing) == [201, 410, 410], racing
        assert {a["body"]["error"]["code"] for a in racing if a["status"] == 410} == {"code_used"}
        assert sorted(a["status"] for a in crossed) in ([201, 201], [201, 409], [201, 410]), crossed
        members = sql(
            "SELECT pair_id, user_id FROM pair_members WHERE user_id = ANY(%s)", ([inviter, *racers],)
        )
        assert len(members) == 2 and len({m[0] for m in members}) == 1
        crossed_pairs = sql("SELECT pair_id FROM pair_members WHERE user_id = ANY(%s)", ([left, right],))
        assert len(crossed_pairs) == 2 and crossed_pairs[0] == crossed_pairs[1]
    assert sql("SELECT count(*) FROM pairs")[0][0] == 24
    assert sql("SELECT max(n) FROM (SELECT count(*) AS n FROM pair_members GROUP BY pair_id) s")[0][0] == 2


def test_the_database_refuses_a_third_member_and_members_of_a_dissolved_pair():
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pair_id = pair_up(a, b)["pair_id"]
    for user in (c,):
        auth.ensure_user(user)
    with pytest.raises(psycopg.errors.CheckViolation, match="two members at most"):
        sql("INSERT INTO pair_members (pair_id, user_id) VALUES (%s, %s)", (pair_id, c))
    assert call("DELETE", "/pairs/current", a)[0] == 200
    with pytest.raises(psycopg.errors.CheckViolation, match="dissolved"):
        sql("INSERT INTO pair_members (pair_id, user_id) VALUES (%s, %s)", (pair_id, c))


# --- the current pair, unlink, audit ---------------------------------------------------


def share_entry(author: uuid.UUID, text: str = "a shared thought") -> str:
    pair = sql("SELECT pair_id FROM pair_members WHERE user_id = %s", (author,))[0][0]
    return str(
        sql(
            "INSERT INTO journal_entries (author_id, pair_id, content, visibility) "
            "VALUES (%s, %s, %s, 'shared') RETURNING id",
            (author, pair, text),
        )[0][0]
    )


def test_the_pair_shows_what_it_shares_and_unlinking_makes_entries_private():
    ana, ben = uuid.uuid4(), uuid.uuid4()
    pair_id = pair_up(ana, ben)["pair_id"]
    sql(
        "INSERT INTO entitlements (user_id, entitlement_id, source, expires_at, last_event_at) "
        "VALUES (%s, 'premium', 'revenuecat', now() + interval '30 days', now())",
        (ana,),
    )
    entry = share_entry(ana)
    share_entry(ben)
    share_entry(ben)
    status, seen = call("GET", "/pairs/current", ben)
    assert status == 200 and seen["shared_entries"] == {"mine": 2, "partner": 1}
    assert [(e["entitlement_id"], e["owner"]) for e in seen["entitlements"]] == [("premium", "pair")]
    # entries shared are in the trail, by the database's trigger; unsharing too
    sql("UPDATE journal_entries SET visibility = 'private' WHERE id = %s", (entry,))
    sql("UPDATE journal_entries SET visibility = 'shared' WHERE id = %s", (entry,))
    status, trail = call("GET", "/pairs/audit", ben)
    actions = [(e["action"], e["actor"]) for e in trail["events"]]
    assert actions[:5] == [
        ("entry_shared", "partner"),
        ("entry_unshared", "partner"),
        ("entry_shared", "you"),
        ("entry_shared", "you"),
        ("entry_shared", "partner"),
    ]
    assert trail["events"][0]["entry_id"] == entry
    # When Ben unlinks
    status, unlinked = call("DELETE", "/pairs/current", ben)
    assert status == 200 and unlinked["pair_id"] == pair_id and unlinked["status"] == "unlinked"
    # Then the pair is gone for both, entries are private to their authors, Ben no longer
    # uses Ana's premium, and both read why
    for user in (ana, ben):
        assert error(call("GET", "/pairs/current", user)) == (404, "not_paired")
        status, trail = call("GET", "/pairs/audit", user)
        assert trail["events"][0]["action"] == "unlinked" and trail["events"][0]["details"] == {
            "reason": "unlinked"
        }
    assert call("GET", "/pairs/audit", ana)[1]["events"][0]["actor"] == "partner"
    assert sql("SELECT DISTINCT visibility FROM journal_entries") == [("private",)]
    assert (
        sql("SELECT count(*) FROM journal_entries_visible_to(%s) WHERE author_id = %s", (ben, ana))[0][0] == 0
    )
    assert call("GET", "/me", ben)[1]["entitlements"] == []
    assert error(call("DELETE", "/pairs/current", ben)) == (404, "not_paired")
    # and they can pair again (a new pair; old entries stay private)
    assert pair_up(ben, ana)["pair_id"] != pair_id


def test_the_audit_pages_newest_first_and_is_readable_only_by_the_members():
    ana, ben, eve = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pair_up(ana, ben)
    for _ in range(4):
        share_entry(ana)
    status, page = call("GET", "/pairs/audit", ben, query={"limit": "3"})
    assert status == 200 and len(page["events"]) == 3 and page["next_before"] == page["events"][-1]["id"]
    status, rest = call("GET", "/pairs/audit", ben, query={"limit": "3", "before": str(page["next_before"])})
    assert [e["action"] for e in rest["events"]] == ["entry_shared", "joined", "invite_created"]
    assert rest["next_before"] == rest["events"][-1]["id"]
    assert call("GET", "/pairs/audit", ben, query={"before": str(rest["events"][-1]["id"])})[1] == {
        "events": [],
        "next_before": None,
    }
    assert call("GET", "/pairs/audit", eve)[1] == {"events": [], "next_before": None}
    assert error(call("GET", "/pairs/audit", ben, query={"limit": "0"})) == (422, "invalid_input")
    assert error(call("GET", "/pairs/audit", ben, query={"limit": "x"})) == (422, "invalid_input")
    # a cursor beyond a bigint (found by make fuzz: it answered 500)
    assert error(call("GET", "/pairs/audit", ben, query={"before": "36893488147419103231"})) == (
        422, "invalid_input")


def test_every_route_needs_a_valid_token():
    routes = [
        ("GET", "/me", None),
        ("DELETE", "/me", {"confirm_user_id": str(uuid.uuid4())}),
        ("POST", "/me/exports", None),
        ("GET", f"/me/exports/{uuid.uuid4()}", None),
        ("POST", "/pairs/invites", None),
        ("GET", "/pairs/invites", None),
        ("DELETE", f"/pairs/invites/{uuid.uuid4()}", None),
        ("POST", "/pairs/join", {"code": "x"}),
        ("GET", "/pairs/current", None),
        ("DELETE", "/pairs/current", None),
        ("GET", "/pairs/audit", None),
    ]
    for method, path, body in routes:
        assert error(call(method, path, None, body)) == (401, "unauthorized"), (method, path)
        forged = {"authorization": f"Bearer {mint_token(uuid.uuid4(), secret='another-secret-0123456789')}"}
        assert error(call(method, path, None, body, headers=forged)) == (401, "unauthorized"), (method, path)
    assert sql("SELECT count(*) FROM users")[0][0] == 0


def test_garbage_bodies_are_4xx():
    user = uuid.uuid4()
    hdrs = {"authorization": f"Bearer {mint_token(user)}", "content-type": "application/json"}
    for raw in (
        b"{",
        b"\x00\xff",
        '{"code": "\ud800"}'.encode("utf-8", "surrogatepass"),
        b"[]",
        b"null",
        json.dumps({"code": "A" * 10}).encode() * 2000,
    ):
        result = lambdas.invoke(
            FUNCTION, lambdas.url_event("POST", "/pairs/join", headers=hdrs, raw_body=raw)
        )
        assert 400 <= result["statusCode"] < 500, (raw[:20], result)
        result = lambdas.invoke(FUNCTION, lambdas.url_event("DELETE", "/me", headers=hdrs, raw_body=raw))
        assert 400 <= result["statusCode"] < 500, (raw[:20], result)
    assert sql("SELECT count(*) FROM users WHERE deleted_at IS NOT NULL")[0][0] == 0


# --- GET /me ---------------------------------------------------------------------------


def test_me_shows_the_profile_balance_entitlements_and_pair():
    from common import ledger

    ana, ben = uuid.uuid4(), uuid.uuid4()
    token = mint_token(ana, claims={"email": "ana@example.test"})
    result = lambdas.invoke(
        FUNCTION, lambdas.url_event("GET", "/me", headers={"authorization": f"Bearer {token}"})
    )
    assert result["statusCode"] == 200
    ledger.grant(ana, 25, reason="test", source="test", ref=str(uuid.uuid4()))
    pair_id = pair_up(ana, ben)["pair_id"]
    sql(
        "INSERT INTO entitlements (user_id, entitlement_id, source, expires_at, last_event_at) "
        "VALUES (%s, 'premium', 'stripe', now() + interval '1 day', now())",
        (ben,),
    )
    status, me = call("GET", "/me", ana)
    assert status == 200
    assert me["user_id"] == str(ana) and me["email"] == "ana@example.test" and me["balance"] == 25
    assert [(e["entitlement_id"], e["owner"]) for e in me["entitlements"]] == [("premium", "pair")]
    assert me["pair"]["pair_id"] == pair_id and me["pair"]["partner_id"] == str(ben)


# --- exports ---------------------------------------------------------------------------


def storage_keys(bucket_var: str, prefix: str) -> list[str]:
    from common import storage

    listed = storage.s3().list_objects_v2(Bucket=os.environ[bucket_var], Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def put_object(bucket_var: str, key: str, data: bytes) -> None:
    from common import storage

    storage.s3().put_object(Bucket=os.environ[bucket_var], Key=key, Body=data)


def test_an_export_is_queued_run_by_the_schedule_and_downloaded():
    from common import ledger

    ana, ben = uuid.uuid4(), uuid.uuid4()
    pair_up(ana, ben)
    ledger.grant(ana, 40, reason="test", source="test", ref=str(uuid.uuid4()))
    entry = share_entry(ana, "Der Fluss, la rivière, 川 — and a \u2028 separator")
    sql('UPDATE journal_entries SET analysis = \'{"mood": "calm"}\' WHERE id = %s', (entry,))
    share_entry(ben, "Ben's own entry")
    put_object("UPLOADS_BUCKET", f"users/{ana}/uploads/a.jpg", b"\xff\xd8photo")
    put_object("GENERATIONS_BUCKET", f"users/{ana}/generations/g.jpg", b"\xff\xd8edited")
    put_object("UPLOADS_BUCKET", f"users/{ben}/uploads/b.jpg", b"\xff\xd8not-hers")
    # When Ana asks for an export (twice: the second answers the same one)
    status, queued = call("POST", "/me/exports", ana)
    assert status == 202 and queued["status"] == "queued" and queued["url"] is None
    assert call("POST", "/me/exports", ana) == (202, queued)
    assert call("GET", f"/me/exports/{queued['export_id']}", ana) == (200, queued)
    # And the schedule runs
    assert run_exports()["exports"] == {"completed": 1, "failed": 0, "retried": 0}
    status, done = call("GET", f"/me/exports/{queued['export_id']}", ana)
    # Then the archive holds her data and only hers
    assert status == 200 and done["status"] == "completed" and done["url"] and done["size_bytes"] > 0
    archive = requests.get(done["url"], timeout=10)
    assert archive.status_code == 200 and len(archive.content) == done["size_bytes"]
    import hashlib

    assert hashlib.sha256(archive.content).hexdigest() == done["sha256"]
    zf = zipfile.ZipFile(io.BytesIO(archive.content))
    assert zf.testzip() is None
    names = set(zf.namelist())
    assert {
        "README.txt",
        "account.json",
        "credits_ledger.json",
        "orders.json",
        "payments.json",
        "entitlements.json",
        "journal_entries.json",
        "generations.json",
        "pair.json",
        "manifest.json",
        "journal_attachments.json",
        "media/uploads/a.jpg",
        "media/generations/g.jpg",
    } == names
    entries = json.loads(zf.read("journal_entries.json"))
    assert [(e["content"], e["analysis"]) for e in entries] == [
        ("Der Fluss, la rivière, 川 — and a \u2028 separator", {"mood": "calm"})
    ]
    assert json.loads(zf.read("account.json"))["balance"] == 40
    assert json.loads(zf.read("credits_ledger.json"))[0]["amount"] == 40
    assert zf.read("media/uploads/a.jpg") == b"\xff\xd8photo"
    assert json.loads(zf.read("pair.json"))["current"]["partner_id"] == str(ben)
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["rows"]["journal_entries.json"] == 1 and manifest["media"] == {"count": 2, "bytes": 15}
    # under her prefix, and nobody else can see it
    key = sql("SELECT object_key FROM account_exports WHERE id = %s", (queued["export_id"],))[0][0]
    assert key == f"users/{ana}/exports/{queued['export_id']}.zip"
    assert error(call("GET", f"/me/exports/{queued['export_id']}", ben)) == (404, "not_found")
    assert error(call("GET", "/me/exports/not-an-id", ana)) == (404, "not_found")
    # a new export may start now that this one is done
    status, second = call("POST", "/me/exports", ana)
    assert status == 202 and second["export_id"] != queued["export_id"]


def test_exports_are_limited_per_day_and_one_at_a_time(monkeypatch):
    setenv(monkeypatch, EXPORTS_PER_DAY="2")
    ana = uuid.uuid4()
    for _ in range(2):
        assert call("POST", "/me/exports", ana)[0] == 202
        run_exports()
    result = lambdas.invoke(
        FUNCTION,
        lambdas.url_event("POST", "/me/exports", headers={"authorization": f"Bearer {mint_token(ana)}"}),
    )
    assert result["statusCode"] == 429 and result["headers"]["Retry-After"]
    # the database allows one export in progress per user
    sql("INSERT INTO account_exports (user_id) VALUES (%s)", (ana,))
    with pytest.raises(psycopg.errors.UniqueViolation):
        sql("INSERT INTO account_exports (user_id) VALUES (%s)", (ana,))


def test_archives_expire_and_cache_cleanup_deletes_them():
    from common import accounts, storage

    ana = uuid.uuid4()
    export_id = call("POST", "/me/exports", ana)[1]["export_id"]
    run_exports()
    key = sql("SELECT object_key FROM account_exports WHERE id = %s", (export_id,))[0][0]
    sql("UPDATE account_exports SET expires_at = now() - interval '1 second' WHERE id = %s", (export_id,))
    status, seen = call("GET", f"/me/exports/{export_id}", ana)
    assert status == 200 and seen["status"] == "expired" and seen["url"] is None
    assert storage.head(os.environ["EXPORTS_BUCKET"], key) is not None
    assert accounts.expire_exports() == 1
    assert storage.head(os.environ["EXPORTS_BUCKET"], key) is None
    assert sql("SELECT status, object_key FROM account_exports WHERE id = %s", (export_id,)) == [
        ("expired", None)
    ]
    assert call("GET", f"/me/exports/{export_id}", ana)[1]["status"] == "expired"


def test_a_failing_export_is_retried_then_failed_and_a_dead_run_is_taken_over(monkeypatch):
    setenv(monkeypatch, EXPORT_MAX_ATTEMPTS="2")
    ana = uuid.uuid4()
    export_id = call("POST", "/me/exports", ana)[1]["export_id"]
    monkeypatch.setenv("EXPORTS_BUCKET", "no-such-bucket")
    from common import config

    config.settings.cache_clear()
    assert run_exports()["exports"] == {"completed": 0, "failed": 0, "retried": 1}  # the next run retries
    assert call("GET", f"/me/exports/{export_id}", ana)[1]["status"] == "queued"
    assert run_exports()["exports"] == {"completed": 0, "failed": 1, "retried": 0}
    _, seen = call("GET", f"/me/exports/{export_id}", ana)
    assert seen["status"] == "failed" and seen["error_code"] == "NoSuchBucket"
    monkeypatch.undo()
    config.settings.cache_clear()
    assert storage_keys("EXPORTS_BUCKET", f"users/{ana}/") == []
    # a run that died (its invocation timed out) is taken over once it is stale
    setenv(monkeypatch, EXPORT_STALE_AFTER_S="60")
    export_id = call("POST", "/me/exports", ana)[1]["export_id"]
    sql(
        "UPDATE account_exports SET status = 'running', attempts = 1, "
        "started_at = now() - interval '2 minutes' WHERE id = %s",
        (export_id,),
    )
    assert run_exports()["exports"]["completed"] == 1
    assert sql("SELECT status, attempts FROM account_exports WHERE id = %s", (export_id,)) == [
        ("completed", 2)
    ]


def test_the_job_refuses_unknown_input():
    with pytest.raises(Exception, match="validation error"):
        run_exports_with({"job": "exports", "typo": 1})
    with pytest.raises(Exception, match="validation error"):
        run_exports_with({"job": "backups"})


def run_exports_with(event: dict) -> dict:
    return lambdas.invoke(FUNCTION, event)


# --- DELETE /me: the confirmation --------------------------------------------------------


def test_deleting_needs_the_explicit_confirmation_and_is_idempotent():
    ana = uuid.uuid4()
    assert call("GET", "/me", ana)[0] == 200
    assert error(call("DELETE", "/me", ana)) == (422, "invalid_input")
    assert error(call("DELETE", "/me", ana, {"confirm_user_id": str(uuid.uuid4())})) == (
        422,
        "confirmation_mismatch",
    )
    assert error(call("DELETE", "/me", ana, {"confirm_user_id": "yes"})) == (422, "invalid_input")
    assert sql("SELECT deleted_at FROM users WHERE id = %s", (ana,)) == [(None,)]
    status, receipt = call("DELETE", "/me", ana, {"confirm_user_id": str(ana)})
    assert status == 200 and receipt["status"] == "deleted" and receipt["storage"] == "deleted"
    # again, with the same (old) token: the same receipt, nothing done again
    assert call("DELETE", "/me", ana, {"confirm_user_id": str(ana)}) == (200, receipt)
    assert error(call("DELETE", "/me", ana, {"confirm_user_id": str(uuid.uuid4())})) == (
        422,
        "confirmation_mismatch",
    )
    # every other route refuses the old token, and a new token for the same id
    for method, path in (
        ("GET", "/me"),
        ("POST", "/pairs/invites"),
        ("POST", "/me/exports"),
        ("GET", "/pairs/current"),
    ):
        assert error(call(method, path, ana)) == (401, "account_deleted")
    assert sql("SELECT count(*) FROM users WHERE id = %s", (ana,)) == [(1,)]  # the tombstone, not re-made


def test_a_pair_made_by_an_operator_says_so_and_deleted_accounts_are_refused():
    import runpy

    from devkit import ROOT

    link = runpy.run_path(str(ROOT / "scripts" / "link-pair"), run_name="link_pair")["link"]
    ana, ben, gone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pair_id, created = link(ana, ben)
    assert created
    _, trail = call("GET", "/pairs/audit", ben)
    assert [(e["action"], e["actor"], e["pair_id"]) for e in trail["events"]] == [
        ("joined", "operator", str(pair_id))
    ]
    assert call("GET", "/me", gone)[0] == 200
    assert call("DELETE", "/me", gone, {"confirm_user_id": str(gone)})[0] == 200
    with pytest.raises(ValueError, match="deleted their account"):
        link(gone, uuid.uuid4())
