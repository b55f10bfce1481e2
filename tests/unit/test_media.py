"""analyze-entry's file checks (media.py) and process-image's face-analysis parts that need
no database: audio durations per container (real files encoded by devkit.voice), WebM
with and without a Duration element, truncated and mislabelled files; the strict
structured-output schema and box clipping of face analysis."""

from __future__ import annotations

import importlib.metadata
import io

import pytest

from devkit import lambdas, voice

lambdas.load_handler("analyze-entry")
from analyze_entry import media  # noqa: E402


@pytest.mark.parametrize("extension", list(voice.FORMATS))
def test_duration_of_each_container(extension):
    data = voice.voice_note(extension, 3.0)
    assert 2.9 < media.audio_duration(data, extension) < 3.2


def test_webm_without_duration_is_measured_from_its_blocks():
    live = voice.voice_note("webm", 4.0, live=True)  # MediaRecorder-style: unknown sizes, no Duration
    assert 3.9 < media.webm_duration(live) < 4.1
    recorded = voice.voice_note("webm", 4.0)
    at = recorded.find(bytes.fromhex("4489"))  # hide the Duration element: blocks decide
    hidden = recorded[:at] + bytes.fromhex("4488") + recorded[at + 2:]
    assert 3.9 < media.webm_duration(hidden) < 4.1


@pytest.mark.parametrize("extension", list(voice.FORMATS))
def test_a_header_alone_or_noise_is_invalid(extension):
    data = voice.voice_note(extension, 1.0)
    for bad in (data[:24], b"\x00" * 2000, data[:4] + b"\xff" * 500):
        with pytest.raises(media.InvalidAudio):
            media.audio_duration(bad, extension)


def test_the_signature_must_match_the_declared_type():
    ogg = voice.voice_note("ogg", 1.0)
    for other in ("m4a", "mp3", "wav", "webm"):
        with pytest.raises(media.InvalidAudio):
            media.audio_duration(ogg, other)


def test_photos_are_made_upright_small_jpegs_without_metadata():
    from PIL import ExifTags, Image

    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "Cam-3391"
    out = io.BytesIO()
    Image.new("RGB", (3000, 2000), (10, 20, 30)).save(out, "JPEG", exif=exif.tobytes())
    jpeg = media.vision_jpeg(out.getvalue(), max_pixels=40_000_000)
    im = Image.open(io.BytesIO(jpeg))
    assert im.format == "JPEG" and max(im.size) == media.VISION_MAX_SIDE and im.height > im.width
    assert not im.getexif() and b"Cam-3391" not in jpeg
    with pytest.raises(media.ImageTooLarge):
        media.vision_jpeg(out.getvalue(), max_pixels=1_000_000)
    with pytest.raises(media.InvalidImage):
        media.vision_jpeg(b"GIF89a" + b"\x00" * 100, max_pixels=40_000_000)


# --- face analysis ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face():
    lambdas.load_handler("process-image")
    from process_image import catalog, face_analysis

    return face_analysis, catalog


def _objects(schema):
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            yield schema
        for value in schema.values():
            yield from _objects(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _objects(value)


def test_the_provider_schema_is_strict_and_uses_the_tools_enums(face):
    face_analysis, catalog = face
    tools = {
        "hairstyle": catalog.Tool(id="hairstyle", name="H", kind="ai", credit_cost=8, prompt_template="x",
                                  prompt_version=1, model=None, enabled=True,
                                  params_schema={"properties": {"style": {"enum": ["pixie_cut", "braids"]}}}),
    }
    fmt = face_analysis.response_format(tools)
    assert fmt["json_schema"]["strict"] is True and fmt["json_schema"]["name"] == "face_analysis_v1"
    objects = list(_objects(fmt["json_schema"]["schema"]))
    assert objects and all(o["additionalProperties"] is False and set(o["required"]) == set(o["properties"])
                           for o in objects)
    face_props = fmt["json_schema"]["schema"]["properties"]["faces"]["items"]["properties"]
    assert face_props["hairstyles"]["items"]["enum"] == ["pixie_cut", "braids"]
    assert face_props["hair_colors"]["items"]["enum"] == ["none"]  # no such tool: nothing to suggest


def test_boxes_are_clipped_to_the_image(face):
    face_analysis, _ = face
    box = face_analysis._box(-0.1, 0.9, 0.5, 0.3)
    assert (box.x, box.y, box.width, box.height) == (0.0, 0.9, 0.4, 0.1)
    assert face_analysis._box(1.2, 0.1, 0.3, 0.3) is None


def test_the_offline_model_names_the_installed_dlib(face):
    face_analysis, _ = face
    version = importlib.metadata.version("dlib-bin").split(".post")[0]
    assert f"dlib-{version}-hog-frontal" == face_analysis.OFFLINE_MODEL
