"""face_analysis (process-image's analysis tool) end to end: the handler as Lambda invokes it,
real Postgres, moto S3 (the photo uploaded through the presigned form), the fake OpenAI
speaking chat completions with image input and structured output to the real SDK, and the
offline dlib detector on a real face (tests/fixtures/face.jpg)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from common import db, ledger, storage
from devkit import ROOT, fake_openai
from tests.integration.test_process_image import (
    MAKE,
    call,
    clear_settings,
    generation_count,
    generations_objects,
    gps_exif,
    new_user,
    photo,
    reservations,
    setenv,
    upload,
)

COMPLETIONS = "/v1/chat/completions"
FACE = (ROOT / "tests" / "fixtures" / "face.jpg").read_bytes()
SENSITIVE = {"age", "gender", "sex", "ethnic", "ethnicity", "race", "skin", "health", "emotion", "emotions",
             "mood", "attractive", "attractiveness", "beauty", "identity", "name", "person"}


@pytest.fixture(scope="module", autouse=True)
def _s3_client(s3_endpoint):
    storage.reset()


@pytest.fixture(autouse=True)
def _env(clean_db, s3_endpoint, monkeypatch):
    setenv(monkeypatch, AI_TIMEOUT_S="10", AI_MAX_RETRIES="1")
    yield
    db.reset()
    clear_settings()  # the next reader sees the environment as monkeypatch restores it


def face_with_exif() -> bytes:
    """The fixture face, carrying camera EXIF and a GPS position that must never leave."""
    out = io.BytesIO()
    Image.open(io.BytesIO(FACE)).save(out, "JPEG", quality=90, exif=gps_exif())
    return out.getvalue()


def analyse(user, key, headers=None):
    return call("POST", "/generations", user, {"tool_id": "face_analysis", "params": {}, "source_key": key},
                headers)


def answer(**face) -> dict:
    one = {"box": {"x": 0.3, "y": 0.1, "width": 0.25, "height": 0.3}, "face_shape": "oval",
           "hair_color": "dark_brown", "hair_length": "short",
           "hairstyles": ["pixie_cut", "short_bob", "not_a_style", "pixie_cut"],
           "hair_colors": ["auburn", "copper_red", "honey_blonde", "jet_black"]}
    return {"faces": [{**one, **face}]}


def scripted(content) -> fake_openai.Scripted:
    return fake_openai.Scripted(body=fake_openai.chat_completion(content))


def result_count(user) -> int:
    with db.transaction() as conn:
        return conn.execute("SELECT count(*) AS n FROM generations WHERE user_id = %s AND result IS NOT NULL",
                            (user,)).fetchone()["n"]


# --- offline ------------------------------------------------------------------------------


def test_offline_finds_the_face_charges_the_offline_price_and_repeats_free():
    # Given no OpenAI key and a user who uploaded a portrait
    user = new_user(10)
    key = upload(user, face_with_exif())
    # When they ask for a face analysis
    status, body = analyse(user, key)
    # Then one face is found, charged at the offline price, and the fields it can't fill are named
    assert status == 201, body
    assert body["credits_charged"] == 1 and body["balance"] == 9
    assert body["url"] is None and body["content_type"] == "application/json"
    result = body["result"]
    assert result["provider"] == "offline" and result["model"].startswith("dlib-")
    assert result["schema_version"] == 1 and result["image"] == {"width": 320, "height": 320}
    assert result["face_count"] == 1
    (face,) = result["faces"]
    box = face["box"]
    assert 0.25 < box["x"] < 0.45 and 0.05 < box["y"] < 0.25 and 0.1 < box["width"] < 0.3
    assert face["face_shape"] is None and face["hair"] == {"color": None, "length": None}
    assert face["suggestions"] == []
    assert set(result["empty_fields"]) == {"faces[].face_shape", "faces[].hair.color", "faces[].hair.length",
                                           "faces[].suggestions"}
    assert result["notes"] and "offline" in result["notes"][0]
    # No object is stored; the JSON is in the generation row and readable back
    assert generations_objects(user) == [] and result_count(user) == 1
    status, view = call("GET", f"/generations/{body['generation_id']}", user)
    assert status == 200 and view["result"] == result and view["url"] is None
    # A repeat is free and answered from the cache
    status, again = analyse(user, key)
    assert status == 200 and again["cached"] and again["credits_charged"] == 0
    assert again["result"] == result and again["generation_id"] == body["generation_id"]
    assert ledger.balance(user) == 9 and ledger.ledger_matches_balance(user)
    assert reservations(user) == ["settled"]


def test_offline_photo_without_faces_is_an_empty_answer():
    user = new_user(10)
    status, body = analyse(user, upload(user, photo()))
    assert status == 201 and body["result"]["face_count"] == 0 and body["result"]["faces"] == []


def test_offline_faces_in_a_group_are_largest_first():
    big = Image.open(io.BytesIO(FACE))
    canvas = Image.new("RGB", (960, 480), (200, 200, 200))
    canvas.paste(big.resize((480, 480)), (0, 0))
    canvas.paste(big.resize((390, 390)), (520, 0))
    out = io.BytesIO()
    canvas.save(out, "PNG")
    user = new_user(10)
    status, body = analyse(user, upload(user, out.getvalue(), "image/png"))
    assert status == 201, body
    faces = body["result"]["faces"]
    assert body["result"]["face_count"] == len(faces) == 2
    assert faces[0]["box"]["x"] < 0.5 < faces[1]["box"]["x"]  # the bigger one, on the left, first
    assert faces[0]["box"]["width"] > faces[1]["box"]["width"]


def test_tools_show_the_analysis_tool_with_its_provider_and_price(openai_fake, monkeypatch):
    user = new_user(0)
    tools = {t["id"]: t for t in call("GET", "/tools", user)[1]["tools"]}
    assert tools["face_analysis"]["kind"] == "analysis" and tools["face_analysis"]["provider"] == "openai"
    assert tools["face_analysis"]["credit_cost"] == 3 and tools["face_analysis"]["available"]
    monkeypatch.delenv("OPENAI_API_KEY")
    tools = {t["id"]: t for t in call("GET", "/tools", user)[1]["tools"]}
    assert tools["face_analysis"]["provider"] == "offline" and tools["face_analysis"]["credit_cost"] == 1
    assert tools["face_analysis"]["available"] and tools["resize"]["provider"] is None


# --- OpenAI vision -----------------------------------------------------------------------


def test_openai_vision_end_to_end_with_valid_suggestions_only(openai_fake):
    # Given a key, and a model answer with one face (and some suggestions no tool accepts)
    openai_fake.script(COMPLETIONS, scripted(answer()))
    user = new_user(20)
    key = upload(user, face_with_exif())
    # When the user asks for a face analysis
    status, body = analyse(user, key)
    # Then the answer is charged at the full price and holds only valid one-tap edits
    assert status == 201, body
    assert body["credits_charged"] == 3 and body["balance"] == 17
    result = body["result"]
    assert result["provider"] == "openai" and result["model"] == "gpt-4o-mini"
    assert result["empty_fields"] == [] and result["face_count"] == 1
    (face,) = result["faces"]
    assert face["face_shape"] == "oval" and face["hair"] == {"color": "dark_brown", "length": "short"}
    assert face["box"] == {"x": 0.3, "y": 0.1, "width": 0.25, "height": 0.3}
    assert face["suggestions"] == [
        {"tool_id": "hairstyle", "params": {"style": "pixie_cut"}},
        {"tool_id": "hairstyle", "params": {"style": "short_bob"}},
        {"tool_id": "hair_color", "params": {"color": "auburn"}},
        {"tool_id": "hair_color", "params": {"color": "copper_red"}},
        {"tool_id": "hair_color", "params": {"color": "honey_blonde"}},
    ]
    # Each suggestion runs as it is (the one-tap edit)
    openai_fake.script("/v1/images/edits", fake_openai.Scripted(body=fake_openai.image_result()))
    suggestion = face["suggestions"][0]
    status, edit = call("POST", "/generations", user, {**suggestion, "source_key": key})
    assert status == 201 and edit["credits_charged"] == 8
    # The request: strict versioned schema whose enums are the catalog's, the photo without
    # metadata, the tool's prompt, a hashed user id
    (request,) = openai_fake.calls(COMPLETIONS)
    sent = request.json()
    fmt = sent["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "face_analysis_v1"
    props = fmt["json_schema"]["schema"]["properties"]["faces"]["items"]["properties"]
    assert "pixie_cut" in props["hairstyles"]["items"]["enum"]
    assert "auburn" in props["hair_colors"]["items"]["enum"]
    assert sent["model"] == "gpt-4o-mini" and "Never infer" in sent["messages"][0]["content"]
    (image,) = fake_openai.image_inputs(request)
    assert Image.open(io.BytesIO(image)).format == "JPEG" and MAKE.encode() not in image
    assert str(user) not in request.body.decode() and len(sent["safety_identifier"]) == 64
    # A repeat is free: no provider call, no charge
    status, again = analyse(user, key)
    assert status == 200 and again["cached"] and again["result"] == result
    assert len(openai_fake.calls(COMPLETIONS)) == 1
    assert ledger.balance(user) == 9 and ledger.ledger_matches_balance(user)


def test_default_fake_answer_is_a_valid_instance_of_the_schema(openai_fake):
    user = new_user(20)
    status, body = analyse(user, upload(user, FACE))
    assert status == 201, body
    (face,) = body["result"]["faces"]
    assert face["face_shape"] == "oval"
    assert face["suggestions"] == [{"tool_id": "hairstyle", "params": {"style": "short_bob"}},
                                   {"tool_id": "hair_color", "params": {"color": "jet_black"}}]


def test_offline_and_openai_answers_are_cached_apart(openai_fake, monkeypatch):
    user = new_user(20)
    key = upload(user, FACE)
    monkeypatch.delenv("OPENAI_API_KEY")
    offline = analyse(user, key)[1]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-local-0000000000")
    status, online = analyse(user, key)
    assert status == 201 and online["result"]["provider"] == "openai"
    assert online["generation_id"] != offline["generation_id"]
    assert ledger.balance(user) == 20 - 1 - 3


def test_a_new_version_of_a_suggested_tool_is_a_new_analysis(openai_fake, database_url):
    import psycopg

    user = new_user(20)
    key = upload(user, FACE)
    first = analyse(user, key)[1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE tools SET prompt_version = prompt_version + 1 WHERE id = 'hair_color'")
    try:
        status, second = analyse(user, key)
        assert status == 201 and second["generation_id"] != first["generation_id"]
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM tool_versions WHERE tool_id = 'hair_color' AND version > 1")
            conn.execute("ALTER TABLE tools DISABLE TRIGGER tools_version_guard")
            conn.execute("UPDATE tools SET prompt_version = 1 WHERE id = 'hair_color'")
            conn.execute("ALTER TABLE tools ENABLE TRIGGER tools_version_guard")


# --- failures: refunded --------------------------------------------------------------------


def assert_refunded(user, balance):
    assert ledger.balance(user) == balance and ledger.ledger_matches_balance(user)
    assert reservations(user) == ["refunded"] and generation_count(user) == 0


def test_timeout_is_504_after_one_retry_and_refunded(openai_fake, monkeypatch):
    setenv(monkeypatch, AI_TIMEOUT_S="0.3", AI_ANALYSIS_ATTEMPTS="1")
    slow = fake_openai.Scripted(body=fake_openai.chat_completion(answer()), delay=1.0)
    openai_fake.script(COMPLETIONS, slow, slow, slow)
    user = new_user(20)
    status, body = analyse(user, upload(user, FACE))
    assert (status, body["error"]["code"]) == (504, "provider_timeout")
    assert len(openai_fake.calls(COMPLETIONS)) == 2
    assert_refunded(user, 20)


def test_server_error_is_502_and_refunded(openai_fake):
    failing = fake_openai.Scripted(status=500, body=fake_openai.error_body("boom", "server_error"))
    openai_fake.script(COMPLETIONS, failing, failing)
    user = new_user(20)
    status, body = analyse(user, upload(user, FACE))
    assert (status, body["error"]["code"]) == (502, "provider_error")
    assert_refunded(user, 20)


@pytest.mark.parametrize("bad", [
    "not json",
    {"faces": [{"box": {"x": 0, "y": 0, "width": 1, "height": 1}}]},  # fields missing
    answer(face_shape="egg"),  # outside the enum
    {"faces": [{**answer()["faces"][0], "age": 30}]},  # a field the schema does not have
])
def test_malformed_answers_are_asked_again_then_502_and_refunded(openai_fake, bad):
    openai_fake.script(COMPLETIONS, scripted(bad), scripted(bad))
    user = new_user(20)
    status, body = analyse(user, upload(user, FACE))
    assert (status, body["error"]["code"]) == (502, "provider_error")
    assert len(openai_fake.calls(COMPLETIONS)) == 2
    assert_refunded(user, 20)


def test_malformed_then_valid_answer_is_charged_once(openai_fake):
    openai_fake.script(COMPLETIONS, scripted("{"), scripted(answer()))
    user = new_user(20)
    status, body = analyse(user, upload(user, FACE))
    assert status == 201 and body["result"]["face_count"] == 1
    assert ledger.balance(user) == 17 and reservations(user) == ["settled"]


def test_refusal_is_422_and_refunded(openai_fake):
    refusal = fake_openai.chat_completion("")
    refusal["choices"][0]["message"].update(content=None, refusal="I can't help with that.")
    openai_fake.script(COMPLETIONS, fake_openai.Scripted(body=refusal))
    user = new_user(20)
    status, body = analyse(user, upload(user, FACE))
    assert (status, body["error"]["code"]) == (422, "content_rejected")
    assert_refunded(user, 20)


def test_moderation_block_is_422_and_refunded(openai_fake):
    blocked = fake_openai.error_body("rejected by the safety system", "invalid_request_error",
                                     "moderation_blocked")
    openai_fake.script(COMPLETIONS, fake_openai.Scripted(status=400, body=blocked))
    user = new_user(20)
    status, body = analyse(user, upload(user, FACE))
    assert (status, body["error"]["code"]) == (422, "content_rejected")
    assert_refunded(user, 20)


# --- limits: clear 4xx, nothing charged ------------------------------------------------------


def test_corrupt_image_is_422_and_refunded(openai_fake):
    user = new_user(20)
    status, body = analyse(user, upload(user, FACE[: len(FACE) // 3]))
    assert (status, body["error"]["code"]) == (422, "invalid_image")
    assert openai_fake.calls(COMPLETIONS) == []
    assert_refunded(user, 20)


def test_oversized_source_is_413_and_refunded(monkeypatch):
    user = new_user(20)
    noise = io.BytesIO()
    Image.effect_noise((100, 100), 64).save(noise, "PNG")
    key = upload(user, noise.getvalue(), "image/png")
    setenv(monkeypatch, IMAGE_MAX_UPLOAD_BYTES="2048")
    status, body = analyse(user, key)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert_refunded(user, 20)


def test_parameters_are_refused_and_nothing_is_charged():
    user = new_user(20)
    key = upload(user, FACE)
    status, body = call("POST", "/generations", user,
                        {"tool_id": "face_analysis", "params": {"detail": "all"}, "source_key": key})
    assert (status, body["error"]["code"]) == (422, "invalid_params")
    assert reservations(user) == [] and ledger.balance(user) == 20


def test_without_credits_is_402_and_nothing_runs(openai_fake):
    user = new_user(2)
    status, body = analyse(user, upload(user, FACE))
    assert (status, body["error"]["code"]) == (402, "insufficient_credits")
    assert openai_fake.calls(COMPLETIONS) == [] and reservations(user) == []


def test_another_users_photo_is_404_and_free():
    owner, other = new_user(10), new_user(10)
    status, _ = analyse(other, upload(owner, FACE))
    assert status == 404 and reservations(other) == []


# --- no sensitive attributes ---------------------------------------------------------------


def _names(schema, out=None) -> set[str]:
    out = set() if out is None else out
    if isinstance(schema, dict):
        for name, value in schema.items():
            if name == "properties":
                out |= set(value)
            _names(value, out)
    elif isinstance(schema, list):
        for value in schema:
            _names(value, out)
    return out


def test_no_field_for_sensitive_attributes_in_the_result_or_the_provider_schema():
    from process_image import catalog, face_analysis
    from process_image.models import FaceAnalysis

    fields = _names(FaceAnalysis.model_json_schema()) | _names(
        face_analysis.answer_schema(face_analysis.suggestion_tools()))
    assert fields and not {f for f in fields if set(f.lower().split("_")) & SENSITIVE}, fields
    tool = catalog.enabled_tool("face_analysis")
    assert "Never infer" in tool.prompt_template and "ethnicity" in tool.prompt_template


def test_faces_are_not_logged(openai_fake, log_text):
    openai_fake.script(COMPLETIONS, scripted(answer(hair_color="auburn")))
    user = new_user(20)
    assert analyse(user, upload(user, FACE))[0] == 201
    text = log_text()
    assert "auburn" not in text and "oval" not in text and base64.b64encode(FACE[:30]).decode() not in text
    assert "face analysis done" in text


def test_sample_event_for_face_analysis_is_well_formed():
    event = json.loads((ROOT / "events" / "process-image" / "create-analysis.json").read_text())
    assert json.loads(event["body"])["tool_id"] == "face_analysis"
