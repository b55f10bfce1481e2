"""Voice and photo notes on journal entries (analyze-entry), end to end: the handler as
Lambda invokes it, a real Postgres, moto S3 (files uploaded through the presigned POST,
read back through the presigned GET), the fake OpenAI speaking audio transcriptions and
chat completions with image input to the real SDK. Voice notes are real files encoded at
test time (devkit.voice), photos are drawn with Pillow."""

from __future__ import annotations

import io
import json
import os
import uuid

import psycopg
import pytest
import requests
from PIL import ExifTags, Image

from common import db, storage
from common.auth import mint_token
from devkit import fake_openai, lambdas, voice
from devkit.fake_openai import Scripted

FUNCTION = "analyze-entry"
COMPLETIONS = "/v1/chat/completions"
TRANSCRIPTIONS = "/v1/audio/transcriptions"
SECRET = "Marrakesh-umbrella-4417"  # said in a voice note: must never reach a log
PHOTO_SECRET = "a red kite over Brighton pier"  # a photo's description: never logged
MAKE = "JournalCam-91b2"
AUDIO = list(voice.FORMATS)
IMAGES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "heif": "image/heic"}
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture(scope="module", autouse=True)
def _s3_client(s3_endpoint):
    storage.reset()


@pytest.fixture(autouse=True)
def fresh(clean_db, s3_endpoint, monkeypatch):
    for name in ("ANALYZE_ENTITLEMENT", "ANALYZE_PROVIDER", "ANALYZE_FALLBACK_OFFLINE",
                 "ANALYZE_AUDIO_MAX_SECONDS", "ANALYZE_AUDIO_MAX_BYTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANALYZE_OPENAI_TIMEOUT_S", "5")
    monkeypatch.setenv("ANALYZE_TRANSCRIBE_TIMEOUT_S", "5")
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


def call(method: str, path: str, user, body=None, headers=None) -> tuple[int, dict]:
    hdrs = dict(headers or {})
    if user is not None:
        hdrs["authorization"] = f"Bearer {mint_token(user)}"
    result = lambdas.invoke(FUNCTION, lambdas.url_event(method, path, body=body, headers=hdrs))
    return result["statusCode"], json.loads(result["body"]) if result.get("body") else {}


def users(database_url: str, n: int) -> list[uuid.UUID]:
    made = [uuid.uuid4() for _ in range(n)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for user in made:
            conn.execute("INSERT INTO users (id) VALUES (%s)", (user,))
    return made


def pair(database_url: str, a, b) -> uuid.UUID:
    with psycopg.connect(database_url, autocommit=True) as conn:
        pair_id = conn.execute("INSERT INTO pairs DEFAULT VALUES RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO pair_members (pair_id, user_id) VALUES (%s, %s), (%s, %s)",
                     (pair_id, a, pair_id, b))
    return pair_id


def entry(user, visibility="private", content="A quiet day at home. I felt calm.") -> str:
    status, body = call("POST", "/entries", user, {"title": "Today", "content": content,
                                                   "visibility": visibility, "analyze": False})
    assert status == 201, body
    return body["id"]


def attach(user, entry_id: str, data: bytes, content_type: str) -> dict:
    status, form = call("POST", f"/entries/{entry_id}/attachments", user,
                        {"content_type": content_type, "size": len(data)})
    assert status == 201, form
    posted = requests.post(form["url"], data=form["fields"], files={"file": ("note", data)}, timeout=10)
    assert posted.status_code in (200, 204), posted.text
    return form


def analyse(user, entry_id: str) -> tuple[int, dict]:
    return call("POST", f"/entries/{entry_id}/analyze", user)


def picture(fmt: str = "jpeg", size=(96, 64)) -> bytes:
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = MAKE
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 30.0, 0.0)
    out = io.BytesIO()
    if fmt == "heif":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    im.save(out, fmt.upper(), exif=exif.tobytes())
    return out.getvalue()


def analysis_answer(**overrides) -> dict:
    return {"mood": "calm", "sentiment": 0.4, "emotions": [{"label": "relief", "intensity": 0.5}],
            "tags": ["sea"], "summary": "The author walked by the sea.", "safety_flag": False, **overrides}


def user_document(openai_fake) -> dict:
    """The JSON document the analysis request sent as its user message."""
    request = openai_fake.calls(COMPLETIONS)[-1]
    return json.loads(request.json()["messages"][1]["content"])


def objects(prefix: str) -> list[str]:
    listed = storage.s3().list_objects_v2(Bucket=os.environ["UPLOADS_BUCKET"], Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def rows(database_url: str, entry_id: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT kind, transcript, language, description FROM journal_attachments "
                            "WHERE entry_id = %s ORDER BY created_at", (entry_id,)).fetchall()


# --- upload forms ---------------------------------------------------------------------------


def test_forms_are_bound_to_a_key_under_the_authors_prefix(database_url):
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    status, form = call("POST", f"/entries/{entry_id}/attachments", author,
                        {"content_type": "audio/mp4", "size": 1000})
    assert status == 201 and form["kind"] == "audio" and form["max_bytes"] == 1000
    assert form["key"] == f"users/{author}/journal/{entry_id}/{form['attachment_id']}.m4a"
    assert form["fields"]["Content-Type"] == "audio/mp4"


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"content_type": "audio/flac", "size": 10}, 422, "unsupported_media_type"),
    ({"content_type": "image/gif", "size": 10}, 422, "unsupported_media_type"),
    ({"content_type": "text/html", "size": 10}, 422, "unsupported_media_type"),
    ({"content_type": "audio/mpeg", "size": 25 * 1024 * 1024 + 1}, 413, "payload_too_large"),
    ({"content_type": "image/png", "size": 20 * 1024 * 1024 + 1}, 413, "payload_too_large"),
    ({"content_type": "image/png", "size": 0}, 422, "invalid_input"),
])
def test_forms_refuse_other_types_and_sizes(database_url, body, status, code):
    (author,) = users(database_url, 1)
    got, answer = call("POST", f"/entries/{entry(author)}/attachments", author, body)
    assert (got, answer["error"]["code"]) == (status, code)


def test_only_the_author_gets_forms_and_the_number_is_bounded(database_url, monkeypatch):
    author, partner, stranger = users(database_url, 3)
    pair(database_url, author, partner)
    entry_id = entry(author, "shared")
    body = {"content_type": "image/jpeg", "size": 100}
    assert call("POST", f"/entries/{entry_id}/attachments", partner, body)[0] == 404
    assert call("POST", f"/entries/{entry_id}/attachments", stranger, body)[0] == 404
    assert call("POST", f"/entries/{uuid.uuid4()}/attachments", author, body)[0] == 404
    setenv(monkeypatch, ANALYZE_MAX_ATTACHMENTS="2")
    statuses = [call("POST", f"/entries/{entry_id}/attachments", author, body)[0] for _ in range(3)]
    assert statuses == [201, 201, 409]


# --- voice notes ----------------------------------------------------------------------------


@pytest.mark.parametrize("extension", AUDIO)
def test_each_voice_note_type_is_transcribed_and_feeds_the_analysis(database_url, openai_fake, extension):
    # Given an entry with a voice note in this container
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    data = voice.voice_note(extension, 2.5, live=extension == "webm")
    attach(author, entry_id, data, voice.content_type(extension))
    openai_fake.script(TRANSCRIPTIONS, Scripted(body=fake_openai.transcription(
        "I walked by the sea today and felt calm.", language="english", duration=2.5)))
    openai_fake.script(COMPLETIONS, Scripted(body=fake_openai.chat_completion(analysis_answer())))
    # When the author analyses it
    status, body = analyse(author, entry_id)
    # Then the note was sent as it is, its transcript and language are on the entry, and
    # the analysis read it as the author's words
    assert status == 200, body
    (sent,) = openai_fake.calls(TRANSCRIPTIONS)
    fields = fake_openai.multipart_fields(sent)
    assert fields["file"] == data and fields["model"] == b"whisper-1"
    assert fields["response_format"] == b"verbose_json"
    (note,) = body["attachments"]
    assert note["kind"] == "audio" and note["transcript"] == "I walked by the sea today and felt calm."
    assert note["language"] == "english" and note["checked"] and note["bytes"] == len(data)
    assert 2.3 < note["duration_s"] < 2.8
    document = user_document(openai_fake)
    assert document["entry"]["voice_notes"] == [{"transcript": "I walked by the sea today and felt calm.",
                                                 "language": "english"}]
    assert body["analysis"]["mood"] == "calm" and body["analysis"]["notes"] == []
    # and the author downloads the note through its presigned URL
    assert requests.get(note["url"], timeout=10).content == data


def test_a_transcribed_note_is_not_sent_again_and_the_same_file_elsewhere_hits_the_cache(
        database_url, openai_fake):
    author, other = users(database_url, 2)
    data = voice.voice_note("m4a", 1.5)
    first = entry(author)
    attach(author, first, data, "audio/mp4")
    assert analyse(author, first)[0] == 200
    assert analyse(author, first)[0] == 200  # kept on the attachment: no new call
    second = entry(author, content="Another day.")
    attach(author, second, data, "audio/mp4")
    status, body = analyse(author, second)  # same content: from the cache
    assert status == 200 and body["attachments"][0]["transcript"] == fake_openai.DEFAULT_TRANSCRIPT
    assert len(openai_fake.calls(TRANSCRIPTIONS)) == 1
    third = entry(other)
    attach(other, third, data, "audio/mp4")
    assert analyse(other, third)[0] == 200  # another user's identical file is never an answer
    assert len(openai_fake.calls(TRANSCRIPTIONS)) == 2


def test_voice_note_too_long_is_422_before_any_provider_call(database_url, openai_fake, monkeypatch):
    setenv(monkeypatch, ANALYZE_AUDIO_MAX_SECONDS="2")
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    attach(author, entry_id, voice.voice_note("ogg", 3.0), "audio/ogg")
    status, body = analyse(author, entry_id)
    assert (status, body["error"]["code"]) == (422, "audio_too_long")
    assert openai_fake.requests == []
    assert call("GET", f"/entries/{entry_id}", author)[1]["analysis"] is None


@pytest.mark.parametrize(("data", "content_type"), [
    (os.urandom(4000), "audio/mpeg"),  # noise
    (b"RIFF\x00\x00\x00\x00WAVEjunkjunk" * 50, "audio/wav"),  # a header, no audio
    (b"", "audio/webm"),  # replaced below by a truncated WebM
    (None, "audio/ogg"),  # a photo uploaded as a voice note
])
def test_corrupt_or_mislabelled_voice_notes_are_422_and_nothing_is_sent(database_url, openai_fake, data,
                                                                         content_type):
    if data == b"":
        data = voice.voice_note("webm", 1.0)[:60]
    elif data is None:
        data = picture("png")
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    attach(author, entry_id, data, content_type)
    status, body = analyse(author, entry_id)
    assert (status, body["error"]["code"]) == (422, "invalid_audio"), body
    assert openai_fake.requests == []


def test_provider_refusing_the_file_is_422_and_its_outage_504(database_url, openai_fake, monkeypatch):
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    attach(author, entry_id, voice.voice_note("mp3", 1.0), "audio/mpeg")
    unreadable = fake_openai.error_body("Audio file might be corrupted or unsupported",
                                        "invalid_request_error")
    openai_fake.script(TRANSCRIPTIONS, Scripted(status=400, body=unreadable))
    status, body = analyse(author, entry_id)
    assert (status, body["error"]["code"]) == (422, "invalid_audio")
    setenv(monkeypatch, ANALYZE_TRANSCRIBE_TIMEOUT_S="0.3", ANALYZE_OPENAI_MAX_RETRIES="1")
    slow = Scripted(body=fake_openai.transcription(), delay=1.0)
    openai_fake.script(TRANSCRIPTIONS, slow, slow)
    status, body = analyse(author, entry_id)
    assert (status, body["error"]["code"]) == (504, "analysis_provider_timeout")
    assert len(openai_fake.calls(TRANSCRIPTIONS)) == 3  # one refused, then a try and one retry
    assert rows(database_url, entry_id)[0][1] is None


def test_not_uploaded_is_409_and_deleting_it_unblocks(database_url, openai_fake):
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    _, form = call("POST", f"/entries/{entry_id}/attachments", author,
                   {"content_type": "audio/wav", "size": 10})
    status, body = analyse(author, entry_id)
    assert (status, body["error"]["code"]) == (409, "attachment_not_uploaded")
    assert call("DELETE", f"/entries/{entry_id}/attachments/{form['attachment_id']}", author)[0] == 204
    assert analyse(author, entry_id)[0] == 200


def test_object_over_the_byte_limit_is_413(database_url, openai_fake, monkeypatch):
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    attach(author, entry_id, voice.voice_note("wav", 1.0), "audio/wav")  # 32 KB
    setenv(monkeypatch, ANALYZE_AUDIO_MAX_BYTES="4096")
    status, body = analyse(author, entry_id)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert openai_fake.requests == []


# --- photos ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(IMAGES))
def test_each_photo_type_is_described_without_metadata_and_feeds_the_analysis(database_url, openai_fake, fmt):
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    data = picture(fmt)
    attach(author, entry_id, data, IMAGES[fmt])
    openai_fake.script(COMPLETIONS, Scripted(body=fake_openai.chat_completion(PHOTO_SECRET)),
                       Scripted(body=fake_openai.chat_completion(analysis_answer())))
    status, body = analyse(author, entry_id)
    assert status == 200, body
    describe, _analysis = openai_fake.calls(COMPLETIONS)
    (sent,) = fake_openai.image_inputs(describe)
    assert Image.open(io.BytesIO(sent)).format == "JPEG" and MAKE.encode() not in sent
    assert describe.json()["model"] == "gpt-4o-mini"
    (photo,) = body["attachments"]
    assert photo["kind"] == "image" and photo["description"] == PHOTO_SECRET and photo["transcript"] is None
    assert user_document(openai_fake)["entry"]["photos"] == [{"description": PHOTO_SECRET}]
    assert requests.get(photo["url"], timeout=10).content == data


def test_corrupt_or_oversized_photos_are_422(database_url, openai_fake, monkeypatch):
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    attach(author, entry_id, picture("jpeg")[:200], "image/jpeg")
    status, body = analyse(author, entry_id)
    assert (status, body["error"]["code"]) == (422, "invalid_image")
    other = entry(author)
    big = io.BytesIO()
    Image.new("L", (5000, 4000)).save(big, "PNG")
    attach(author, other, big.getvalue(), "image/png")
    setenv(monkeypatch, ANALYZE_IMAGE_MAX_PIXELS="10000000")
    status, body = analyse(author, other)
    assert (status, body["error"]["code"]) == (422, "image_too_large")
    assert openai_fake.requests == []


def test_vision_failure_leaves_the_photo_out_with_a_note(database_url, openai_fake):
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    attach(author, entry_id, picture(), "image/jpeg")
    failing = Scripted(status=500, body=fake_openai.error_body("boom", "server_error"))
    openai_fake.script(COMPLETIONS, failing, failing,
                       Scripted(body=fake_openai.chat_completion(analysis_answer())))
    status, body = analyse(author, entry_id)
    assert status == 200 and body["analysis"]["source"] == "openai"
    assert body["analysis"]["notes"] == ["1 photo(s) left out: the vision provider failed."]
    assert "photos" not in user_document(openai_fake)["entry"]


# --- offline -------------------------------------------------------------------------------


def test_offline_photos_are_left_out_with_a_note(database_url):
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    attach(author, entry_id, picture(), "image/jpeg")
    status, body = analyse(author, entry_id)
    assert status == 200 and body["analysis"]["source"] == "offline"
    assert body["analysis"]["notes"] == ["1 photo(s) left out: describing photos needs the OpenAI provider."]
    assert body["attachments"][0]["checked"] and body["attachments"][0]["description"] is None


def test_offline_voice_note_is_503_ai_unavailable_but_a_kept_transcript_is_used(database_url, openai_fake,
                                                                                monkeypatch):
    (author,) = users(database_url, 1)
    entry_id = entry(author, content="Nothing much.")
    attach(author, entry_id, voice.voice_note("webm", 1.0), "audio/webm")
    setenv(monkeypatch, ANALYZE_PROVIDER="offline")
    status, body = analyse(author, entry_id)
    assert (status, body["error"]["code"]) == (503, "ai_unavailable")
    assert openai_fake.requests == []
    # Transcribed once with the provider, the note is then read offline too
    setenv(monkeypatch, ANALYZE_PROVIDER="auto")
    happy = fake_openai.transcription("I am so happy and grateful.")
    openai_fake.script(TRANSCRIPTIONS, Scripted(body=happy))
    assert analyse(author, entry_id)[0] == 200
    setenv(monkeypatch, ANALYZE_PROVIDER="offline")
    status, body = analyse(author, entry_id)
    assert status == 200 and body["analysis"]["source"] == "offline"
    assert body["analysis"]["mood"] in ("joyful", "grateful") and body["analysis"]["sentiment"] > 0


# --- visibility and deletion ----------------------------------------------------------------


def test_attachments_are_read_by_the_author_and_the_partner_of_a_shared_entry_only(database_url):
    author, partner, stranger = users(database_url, 3)
    pair_id = pair(database_url, author, partner)
    shared, private = entry(author, "shared"), entry(author)
    data = picture()
    attach(author, shared, data, "image/jpeg")
    attach(author, private, data, "image/jpeg")
    status, seen = call("GET", f"/entries/{shared}", partner)
    assert status == 200 and requests.get(seen["attachments"][0]["url"], timeout=10).content == data
    assert call("GET", f"/entries/{shared}", author)[1]["attachments"]
    assert call("GET", f"/entries/{private}", partner)[0] == 404
    assert call("GET", f"/entries/{shared}", stranger)[0] == 404
    # Nobody but the author adds or deletes them
    attachment = seen["attachments"][0]["id"]
    assert call("DELETE", f"/entries/{shared}/attachments/{attachment}", partner)[0] == 404
    assert call("DELETE", f"/entries/{shared}", partner)[0] == 404
    assert call("DELETE", f"/entries/{shared}", stranger)[0] == 404
    # Leaving the pair hides them at once
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM pair_members WHERE pair_id = %s AND user_id = %s", (pair_id, partner))
    assert call("GET", f"/entries/{shared}", partner)[0] == 404


def test_visibility_is_the_databases(database_url):
    author, partner, stranger = users(database_url, 3)
    pair(database_url, author, partner)
    shared = entry(author, "shared")
    attach(author, shared, picture(), "image/jpeg")
    from analyze_entry import entries

    assert len(entries.visible_attachments(author, uuid.UUID(shared))) == 1
    assert len(entries.visible_attachments(partner, uuid.UUID(shared))) == 1
    assert entries.visible_attachments(stranger, uuid.UUID(shared)) == []
    with psycopg.connect(database_url, autocommit=True) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO journal_attachments (entry_id, author_id, kind, content_type, object_key, "
                     "declared_bytes) VALUES (%s, %s, 'image', 'image/jpeg', %s, 1)",
                     (shared, partner, f"users/{partner}/journal/{shared}/x.jpg"))


def test_attachments_go_with_their_entry(database_url):
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    attach(author, entry_id, picture(), "image/jpeg")
    form = attach(author, entry_id, voice.voice_note("wav", 0.5), "audio/wav")
    prefix = f"users/{author}/journal/{entry_id}/"
    assert len(objects(prefix)) == 2
    assert call("DELETE", f"/entries/{entry_id}/attachments/{form['attachment_id']}", author)[0] == 204
    assert len(objects(prefix)) == 1 and len(rows(database_url, entry_id)) == 1
    assert call("DELETE", f"/entries/{entry_id}", author)[0] == 204
    assert objects(prefix) == [] and rows(database_url, entry_id) == []
    assert call("GET", f"/entries/{entry_id}", author)[0] == 404
    assert call("DELETE", f"/entries/{entry_id}", author)[0] == 404


# --- privacy ----------------------------------------------------------------------------------


def test_transcripts_and_photo_contents_never_reach_the_logs(database_url, openai_fake, log_text):
    (author,) = users(database_url, 1)
    entry_id = entry(author)
    attach(author, entry_id, voice.voice_note("m4a", 1.0), "audio/mp4")
    attach(author, entry_id, picture(), "image/jpeg")
    openai_fake.script(TRANSCRIPTIONS, Scripted(body=fake_openai.transcription(f"The code is {SECRET}.")))

    def answer(request):
        if fake_openai.image_inputs(request):
            return fake_openai.chat_completion(PHOTO_SECRET)
        return fake_openai.chat_completion(analysis_answer(summary=f"The author mentions {SECRET}."))

    openai_fake.script(COMPLETIONS, Scripted(body=answer), Scripted(body=answer))
    status, body = analyse(author, entry_id)
    assert status == 200 and SECRET in body["attachments"][0]["transcript"]
    assert call("GET", f"/entries/{entry_id}", author)[0] == 200
    text = log_text()
    assert "voice note transcribed" in text and "photo described" in text
    assert SECRET not in text and PHOTO_SECRET not in text and "red kite" not in text
