"""analyze-entry end to end, invoked as Lambda invokes it (devkit.lambdas.invoke): a real
Postgres, the fake OpenAI server speaking the chat completions API to the real SDK."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from common import db
from common.auth import mint_token
from common.observability import logger
from devkit import ROOT, fake_openai, lambdas
from devkit.fake_openai import Scripted

FUNCTION = "analyze-entry"
COMPLETIONS = "/v1/chat/completions"
# Routes that emit no metric of their own make Powertools warn; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
SECRET = "Zanzibar-lighthouse-7731"  # a phrase that must never reach a log or an error

JOYFUL = ("Best day", "We got the keys to our first home today! I am so happy and grateful, "
          "we danced in the empty living room and laughed all evening.")
GRIEVING = ("Dad", "Dad passed away this morning. I can't stop crying. I miss him so much and "
            "the funeral is on Friday.")


# --- fixtures and helpers --------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh(clean_db, monkeypatch):
    """A clean database, fresh connections and this function's settings re-read."""
    for name in ("ANALYZE_ENTITLEMENT", "ANALYZE_PROVIDER", "ANALYZE_FALLBACK_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    lambdas.load_handler(FUNCTION)
    from analyze_entry.settings import settings

    settings.cache_clear()
    db.reset()
    yield
    settings.cache_clear()
    db.reset()


def setenv(monkeypatch, **values: str) -> None:
    from analyze_entry.settings import settings

    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()


def call(method: str, path: str, user: uuid.UUID | None, body=None, headers=None) -> tuple[int, dict]:
    hdrs = dict(headers or {})
    if user is not None:
        hdrs["authorization"] = f"Bearer {mint_token(user)}"
    result = lambdas.invoke(FUNCTION, lambdas.url_event(method, path, body=body, headers=hdrs))
    return result["statusCode"], json.loads(result["body"]) if result.get("body") else {}


def create(user: uuid.UUID, content: str, *, title: str | None = None, **fields) -> tuple[int, dict]:
    return call("POST", "/entries", user, {"title": title, "content": content, **fields})


def sql(database_url: str, query: str, params=None) -> list[tuple]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def new_users(database_url: str, n: int) -> list[uuid.UUID]:
    users = [uuid.uuid4() for _ in range(n)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for user in users:
            conn.execute("INSERT INTO users (id) VALUES (%s)", (user,))
    return users


def pair(database_url: str, a: uuid.UUID, b: uuid.UUID) -> uuid.UUID:
    with psycopg.connect(database_url, autocommit=True) as conn:
        pair_id = conn.execute("INSERT INTO pairs DEFAULT VALUES RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO pair_members (pair_id, user_id) VALUES (%s, %s), (%s, %s)",
                     (pair_id, a, pair_id, b))
    return pair_id


def model_answer(**overrides) -> dict:
    answer = {"mood": "joyful", "sentiment": 0.8,
              "emotions": [{"label": "joy", "intensity": 0.9}, {"label": "gratitude", "intensity": 0.6},
                           {"label": "excitement", "intensity": 0.4}],
              "tags": ["Home", "#new-home", "partner", "home"],
              "summary": "The author and their partner moved into their first home. They celebrated "
                         "by dancing. It was a long day.",
              "safety_flag": False}
    return {**answer, **overrides}


# --- offline path ------------------------------------------------------------------------


def test_offline_analysis_is_stored_with_the_entry(database_url):
    # Given no OpenAI key, When a user writes a joyful entry
    (user,) = new_users(database_url, 1)
    status, entry = create(user, JOYFUL[1], title=JOYFUL[0])
    # Then it is stored with an offline analysis in the versioned schema
    assert status == 201
    analysis = entry["analysis"]
    assert analysis["source"] == "offline" and analysis["schema_version"] == 2
    assert analysis["model"].startswith("vader-3.3.2") and analysis["prompt_version"] == "offline-1"
    assert analysis["mood"] == "joyful" and analysis["sentiment"] > 0.3
    assert set(analysis["ekman"]) == {"anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"}
    assert analysis["ekman"]["joy"] == max(e["intensity"] for e in analysis["emotions"]
                                           if e["label"] in ("joy", "gratitude", "amusement"))
    assert entry["analyzed_at"] is not None and entry["visibility"] == "private" and entry["pair_id"] is None
    stored = sql(database_url, "SELECT analysis->>'mood' FROM journal_entries WHERE id = %s", (entry["id"],))
    assert stored == [("joyful",)]


def test_joyful_and_grieving_entries_land_on_opposite_sides(database_url):
    from analyze_entry.schema import MOOD_VALENCE

    (user,) = new_users(database_url, 1)
    _, joyful = create(user, JOYFUL[1], title=JOYFUL[0])
    _, grieving = create(user, GRIEVING[1], title=GRIEVING[0])
    assert MOOD_VALENCE[joyful["analysis"]["mood"]] == 1 and joyful["analysis"]["sentiment"] > 0
    assert grieving["analysis"]["mood"] == "grieving" and grieving["analysis"]["sentiment"] < 0
    assert grieving["analysis"]["emotions"][0]["label"] == "grief"


def test_entry_without_analysis(database_url):
    (user,) = new_users(database_url, 1)
    status, entry = create(user, "Nothing much today.", analyze=False)
    assert status == 201 and entry["analysis"] is None and entry["analyzed_at"] is None


# --- OpenAI path -------------------------------------------------------------------------


def test_openai_structured_output_is_parsed_into_the_schema(database_url, openai_fake):
    # Given the provider answers with a valid structured output
    openai_fake.script(COMPLETIONS, Scripted(body=fake_openai.chat_completion(model_answer())))
    (user,) = new_users(database_url, 1)
    # When the user writes an entry
    status, entry = create(user, JOYFUL[1], title=JOYFUL[0])
    # Then the analysis is the model's, normalised and with provenance
    assert status == 201
    analysis = entry["analysis"]
    assert analysis["source"] == "openai" and analysis["model"] == "gpt-4o-mini"
    assert analysis["prompt_version"] == "entry-analysis-2"
    assert analysis["tags"] == ["home", "new-home", "partner"]
    assert analysis["summary"].count(".") == 2  # clipped to two sentences
    assert analysis["ekman"]["joy"] == 0.9
    # And the request asked for the strict schema, with the entry as JSON data only
    (request,) = openai_fake.calls(COMPLETIONS)
    sent = request.json()
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["strict"] is True
    system, user_message = sent["messages"]
    assert system["role"] == "system" and JOYFUL[1] not in system["content"]
    assert json.loads(user_message["content"]) == {"entry": {"title": JOYFUL[0], "content": JOYFUL[1]}}


@pytest.mark.parametrize("bad", [
    "not json at all",
    json.dumps(model_answer(sentiment=3.5)),
    json.dumps(model_answer(mood="ecstatic")),
    json.dumps({"mood": "joyful"}),
])
def test_malformed_output_is_retried_then_fails_cleanly(database_url, openai_fake, monkeypatch, log_text,
                                                        bad):
    # Given fallback is off and the provider keeps answering malformed output
    setenv(monkeypatch, ANALYZE_FALLBACK_OFFLINE="false")
    openai_fake.script(COMPLETIONS, *[Scripted(body=fake_openai.chat_completion(bad))] * 2)
    (user,) = new_users(database_url, 1)
    # When the user writes an entry
    status, body = create(user, f"{SECRET} felt odd today.")
    # Then it was asked twice, answered 502 with a clear code, and nothing was stored
    assert len(openai_fake.calls(COMPLETIONS)) == 2
    assert status == 502 and body["error"]["code"] == "analysis_invalid"
    assert sql(database_url, "SELECT count(*) FROM journal_entries") == [(0,)]
    assert SECRET not in json.dumps(body) and SECRET not in log_text()
    assert "malformed output" in log_text()


def test_malformed_then_valid_output_succeeds(database_url, openai_fake):
    openai_fake.script(COMPLETIONS, Scripted(body=fake_openai.chat_completion("{")),
                       Scripted(body=fake_openai.chat_completion(model_answer())))
    (user,) = new_users(database_url, 1)
    status, entry = create(user, JOYFUL[1])
    assert status == 201 and entry["analysis"]["source"] == "openai"
    assert len(openai_fake.calls(COMPLETIONS)) == 2


@pytest.mark.parametrize("fallback", ["true", "false"])
def test_timeout_falls_back_to_offline_when_enabled(database_url, openai_fake, monkeypatch, fallback):
    # Given a provider slower than the timeout, with one SDK retry
    setenv(monkeypatch, ANALYZE_FALLBACK_OFFLINE=fallback, ANALYZE_OPENAI_TIMEOUT_S="0.2",
           ANALYZE_OPENAI_MAX_RETRIES="1")
    slow = Scripted(body=fake_openai.chat_completion(model_answer()), delay=1.0)
    openai_fake.script(COMPLETIONS, slow, slow)
    (user,) = new_users(database_url, 1)
    # When the user writes an entry
    status, body = create(user, GRIEVING[1])
    # Then the request was tried twice (bounded), and the answer is offline or a 504
    assert len(openai_fake.calls(COMPLETIONS)) == 2
    if fallback == "true":
        assert status == 201 and body["analysis"]["source"] == "offline"
        assert body["analysis"]["mood"] == "grieving"
    else:
        assert status == 504 and body["error"]["code"] == "analysis_provider_timeout"


def test_provider_error_falls_back_to_offline(database_url, openai_fake, monkeypatch):
    setenv(monkeypatch, ANALYZE_OPENAI_MAX_RETRIES="0")
    openai_fake.script(COMPLETIONS, Scripted(status=500, body={"error": {"message": "boom"}}))
    (user,) = new_users(database_url, 1)
    status, entry = create(user, JOYFUL[1])
    assert status == 201 and entry["analysis"]["source"] == "offline"


def test_cache_hit_does_not_call_the_provider(database_url, openai_fake):
    openai_fake.script(COMPLETIONS, *[Scripted(body=fake_openai.chat_completion(model_answer()))] * 3)
    alice, bob = new_users(database_url, 2)
    # Given an analysed entry
    _, first = create(alice, JOYFUL[1], title=JOYFUL[0])
    assert len(openai_fake.calls(COMPLETIONS)) == 1
    # When the same user writes the same text again, and re-analyses the first entry
    _, again = create(alice, JOYFUL[1], title=JOYFUL[0])
    status, reanalysed = call("POST", f"/entries/{first['id']}/analyze", alice)
    # Then the provider was not called again, and the analyses are the same
    assert status == 200 and len(openai_fake.calls(COMPLETIONS)) == 1
    assert again["analysis"] == first["analysis"] == reanalysed["analysis"]
    # But another user's identical text, or a changed title, is a new analysis
    create(bob, JOYFUL[1], title=JOYFUL[0])
    create(alice, JOYFUL[1], title="Moving day")
    assert len(openai_fake.calls(COMPLETIONS)) == 3


def test_cache_key_covers_user_text_model_prompt_and_schema():
    from analyze_entry import logic

    user = uuid.uuid4()
    digest = logic.text_digest("t", "c")
    base = logic.cache_key(user, digest, "gpt-4o-mini", "entry-analysis-1")
    assert base == logic.cache_key(user, logic.text_digest("t", "c"), "gpt-4o-mini", "entry-analysis-1")
    others = {logic.cache_key(uuid.uuid4(), digest, "gpt-4o-mini", "entry-analysis-1"),
              logic.cache_key(user, logic.text_digest("t", "c!"), "gpt-4o-mini", "entry-analysis-1"),
              logic.cache_key(user, logic.text_digest(None, "c"), "gpt-4o-mini", "entry-analysis-1"),
              logic.cache_key(user, digest, "gpt-4.1-mini", "entry-analysis-1"),
              logic.cache_key(user, digest, "gpt-4o-mini", "entry-analysis-2")}
    assert base not in others and len(others) == 5


# --- visibility ----------------------------------------------------------------------------


def test_visibility_matrix(database_url):
    # Given a pair (author, partner), a stranger, and a private and a shared entry
    author, partner, stranger = new_users(database_url, 3)
    pair_id = pair(database_url, author, partner)
    _, private = create(author, "Just for me.", analyze=False)
    status, shared = create(author, "For us both.", visibility="shared", analyze=False)
    assert status == 201 and shared["pair_id"] == str(pair_id)
    expected = {  # (reader, entry) -> status
        (author, "private"): 200, (author, "shared"): 200,
        (partner, "private"): 404, (partner, "shared"): 200,
        (stranger, "private"): 404, (stranger, "shared"): 404,
    }
    entries = {"private": private["id"], "shared": shared["id"]}
    # When each reads each, Then only the allowed reads succeed (the rest look absent)
    for (reader, kind), want in expected.items():
        status, body = call("GET", f"/entries/{entries[kind]}", reader)
        assert status == want, (reader, kind)
        if want == 200:
            assert body["id"] == entries[kind]
        else:
            assert body["error"]["code"] == "not_found"
    # And only the author may re-analyse
    assert call("POST", f"/entries/{shared['id']}/analyze", partner)[0] == 404
    assert call("POST", f"/entries/{shared['id']}/analyze", author)[0] == 200


def test_visibility_is_enforced_in_sql(database_url):
    author, partner, stranger = new_users(database_url, 3)
    pair(database_url, author, partner)
    create(author, "Just for me.", analyze=False)
    _, shared = create(author, "For us both.", visibility="shared", analyze=False)
    visible = "SELECT id::text FROM journal_entries_visible_to(%s) ORDER BY created_at"
    assert len(sql(database_url, visible, (author,))) == 2
    assert sql(database_url, visible, (partner,)) == [(shared["id"],)]
    assert sql(database_url, visible, (stranger,)) == []
    # When the pair is dissolved, the former partner no longer sees the shared entry
    sql(database_url, "DELETE FROM pair_members WHERE user_id = %s", (partner,))
    assert sql(database_url, visible, (partner,)) == []
    assert call("GET", f"/entries/{shared['id']}", partner)[0] == 404


def test_pair_rules(database_url):
    author, partner, other_a, other_b, loner = new_users(database_url, 5)
    pair(database_url, author, partner)
    other_pair = pair(database_url, other_a, other_b)
    # A shared entry needs a pair; a pair must be the author's own
    status, body = create(loner, "Hello", visibility="shared", analyze=False)
    assert status == 422 and body["error"]["code"] == "no_pair"
    status, body = create(author, "Hello", visibility="shared", pair_id=str(other_pair), analyze=False)
    assert status == 403 and body["error"]["code"] == "not_pair_member"
    # And the database refuses it even when the code is bypassed
    with pytest.raises(psycopg.errors.CheckViolation, match="member of its pair"):
        sql(database_url, "INSERT INTO journal_entries (author_id, pair_id, content, visibility) "
                          "VALUES (%s, %s, 'x', 'shared')", (author, other_pair))


def test_refused_writes_do_not_carry_the_text(database_url):
    # Postgres reports a failing row in full; the error raised must not carry the text
    from analyze_entry import entries

    (user,) = new_users(database_url, 1)
    with pytest.raises(entries.EntryWriteFailed) as info:  # shared without a pair (0001's CHECK)
        entries.insert(user, pair_id=None, title=SECRET, content=SECRET, visibility="shared", analysis=None)
    assert SECRET not in str(info.value) and info.value.__suppress_context__
    assert "journal_entries_check" in str(info.value)


def test_bad_ids_and_bad_input(database_url):
    (user,) = new_users(database_url, 1)
    assert call("GET", "/entries/not-a-uuid", user)[0] == 404
    assert call("GET", f"/entries/{uuid.uuid4()}", user)[0] == 404
    assert call("GET", f"/entries/{uuid.uuid4()}", None)[0] == 401
    status, body = create(user, "   ")
    assert status == 422 and body["error"]["code"] == "invalid_input"
    status, body = create(user, "x", visibility="public")
    assert status == 422


def test_idempotency_key_stores_one_entry(database_url):
    (user,) = new_users(database_url, 1)
    key = {"idempotency-key": str(uuid.uuid4())}
    first = call("POST", "/entries", user, {"content": "Once only."}, key)
    second = call("POST", "/entries", user, {"content": "Once only."}, key)
    assert first[0] == second[0] == 201 and first[1]["id"] == second[1]["id"]
    assert sql(database_url, "SELECT count(*) FROM journal_entries") == [(1,)]


# --- entitlement gate -----------------------------------------------------------------------


def test_entitlement_gate(database_url, monkeypatch):
    # Given analysis needs "premium"
    setenv(monkeypatch, ANALYZE_ENTITLEMENT="premium")
    author, partner = new_users(database_url, 2)
    pair(database_url, author, partner)
    # When a user without it asks for an analysis, Then 402 and nothing is stored
    status, body = create(author, JOYFUL[1])
    assert status == 402 and body["error"]["code"] == "entitlement_required"
    assert "premium" in body["error"]["message"]
    assert sql(database_url, "SELECT count(*) FROM journal_entries") == [(0,)]
    # But storing without analysis is free, and re-analysing it is gated too
    status, entry = create(author, JOYFUL[1], analyze=False)
    assert status == 201
    assert call("POST", f"/entries/{entry['id']}/analyze", author)[0] == 402
    # When the partner subscribes, the pair's entitlement opens analysis to the author
    sql(database_url, "INSERT INTO entitlements (user_id, entitlement_id, source, expires_at, last_event_at) "
                      "VALUES (%s, 'premium', 'revenuecat', now() + interval '30 days', now())", (partner,))
    status, entry = call("POST", f"/entries/{entry['id']}/analyze", author)
    assert status == 200 and entry["analysis"]["source"] == "offline"


# --- privacy -------------------------------------------------------------------------------


def test_no_entry_text_is_logged(database_url, openai_fake, monkeypatch, log_text):
    # Given the logger at DEBUG, and entries whose title, text, tags and summary are distinctive
    level = logger.log_level
    logger.setLevel("DEBUG")
    title = f"{SECRET} title"
    content = f"{SECRET} I feel so happy and grateful today, we went to the beach."
    answer = model_answer(tags=[f"{SECRET}-tag"], summary=f"{SECRET} summary.")
    openai_fake.script(COMPLETIONS, Scripted(body=fake_openai.chat_completion(answer)),
                       Scripted(body=fake_openai.chat_completion("{" + SECRET)),
                       Scripted(body=fake_openai.chat_completion(json.dumps(answer)[:-3])))
    author, partner = new_users(database_url, 2)
    pair(database_url, author, partner)
    try:
        # When they go through every route, the OpenAI path, its failures and the offline path
        _, entry = create(author, content, title=title, visibility="shared")
        call("GET", f"/entries/{entry['id']}", partner)
        create(author, content + " again", title=title)  # two malformed answers: offline fallback
        monkeypatch.delenv("OPENAI_API_KEY")
        create(author, content + " offline", title=title)
        create(author, "   ", title=title)  # refused by validation
    finally:
        logger.setLevel(level)
    # Then the logs tell what happened, without any of the text
    logs = log_text()
    assert "entry analysed" in logs and "malformed output" in logs and "answering offline" in logs
    assert SECRET not in logs
    assert "happy and grateful" not in logs and "beach" not in logs


# --- events and scripts ------------------------------------------------------------------


def test_sample_events_route(database_url):
    (user,) = new_users(database_url, 1)
    events = {p.stem: json.loads(p.read_text()) for p in (ROOT / "events" / FUNCTION).glob("*.json")}
    assert {"create-entry", "analyze-entry", "get-entry"} <= set(events)  # test_events.py runs them all

    def run(name: str, entry_id: str | None = None) -> tuple[int, dict]:
        event = json.loads(json.dumps(events[name]))
        event["headers"]["authorization"] = f"Bearer {mint_token(user)}"
        if entry_id:
            path = event["rawPath"].replace("00000000-0000-4000-8000-0000000e0001", entry_id)
            event["rawPath"] = event["requestContext"]["http"]["path"] = path
        result = lambdas.invoke(FUNCTION, event)
        return result["statusCode"], json.loads(result["body"])

    status, entry = run("create-entry")
    assert status == 201 and entry["visibility"] == "private"
    assert run("analyze-entry", entry["id"])[0] == 200
    status, read = run("get-entry", entry["id"])
    assert status == 200 and read["id"] == entry["id"] and read["analysis"] is not None


def test_link_pair_script(database_url):
    # Given three users seen for the first time
    a, b, c = (uuid.uuid4() for _ in range(3))
    script = ROOT / "scripts" / "link-pair"
    # When the command links two of them, Then it prints their new pair
    run = subprocess.run([sys.executable, str(script), str(a), str(b), "--database-url", database_url],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    pair_id = uuid.UUID(run.stdout.strip())
    members = sql(database_url, "SELECT user_id FROM pair_members WHERE pair_id = %s", (pair_id,))
    assert {m for (m,) in members} == {a, b}
    assert script.stat().st_mode & 0o111
    # And linking them again is a no-op, while pairing one of them with a third user fails
    link = runpy.run_path(str(script), run_name="link_pair")["link"]
    assert link(b, a) == (pair_id, False)
    with pytest.raises(ValueError, match="already in pair"):
        link(a, c)


def test_concurrent_links_of_one_user_make_one_pair(database_url):
    link = runpy.run_path(str(ROOT / "scripts" / "link-pair"), run_name="link_pair")["link"]
    a, b, c = new_users(database_url, 3)

    def attempt(partner: uuid.UUID) -> str:
        try:
            link(a, partner)
            return "linked"
        except ValueError:
            return "refused"
        finally:
            db.reset()

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(attempt, [b, c]))
    assert outcomes == ["linked", "refused"]
    assert sql(database_url, "SELECT count(*) FROM pairs") == [(1,)]
