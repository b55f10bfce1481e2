"""Face analysis, the catalog's analysis tool ``face_analysis``: where the faces are, and per
face its shape, hair colour and length, and suggestions that are valid parameters of the
catalog's ``hairstyle`` and ``hair_color`` tools (so the app can offer one-tap edits).

Two providers, chosen per request (the model is part of the cache key):

- **OpenAI vision** when a key is configured: one chat completion with the photo (upright,
  at most ``VISION_MAX_SIDE`` px, no metadata) and a strict structured output
  (``answer_schema``, named ``face_analysis_v<SCHEMA_VERSION>``). The hairstyle and colour
  enums in that schema are the catalog tools' own, so every suggestion is a value the
  tools accept; each is validated against the tool's schema again all the same. The
  instructions are the tool's versioned prompt template. Timeouts, retries and error
  mapping are the image edits' (``ai_tools.provider_errors``); malformed output is asked
  for again, ``AI_ANALYSIS_ATTEMPTS`` requests in all, then 502.
- **Offline** otherwise: dlib's HOG frontal-face detector (compiled into the dlib wheel:
  no model file, no download). It finds upright frontal and near-frontal faces at least
  ~8% of the image's long side (smaller in small images) and says nothing about them: face
  shape, hair and suggestions stay empty and ``empty_fields`` names them.

No sensitive attributes: the result has no field for age, gender, ethnicity, skin colour,
health, emotions, attractiveness or identity; the prompt forbids inferring them and the
strict schema leaves the model no place to put them. Nothing about the faces is logged.

``openai``, ``dlib`` and ``numpy`` are imported on first use.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import BadGateway, InvalidInput
from common.observability import logger, traced
from process_image import ai_tools, catalog
from process_image.models import (
    Box,
    Face,
    FaceAnalysis,
    FaceShape,
    Hair,
    HairColor,
    HairLength,
    ImageSize,
    Suggestion,
)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.shared_params import ResponseFormatJSONSchema

    from process_image import images
    from process_image.catalog import Tool
    from process_image.settings import Settings

#: The result's shape (models.FaceAnalysis) and the provider schema's; in the cache key.
SCHEMA_VERSION = 1
#: Raise when what is sent or how answers are read changes (image size, detector options).
ENGINE_VERSION = 1
#: The offline provider's model name: the dlib-bin version pinned in requirements.txt.
OFFLINE_MODEL = "dlib-20.0.1-hog-frontal"
MAX_FACES = 10
MAX_SUGGESTIONS = 3
VISION_MAX_SIDE = 1024
OFFLINE_MAX_SIDE = 1024
#: Images smaller than this (long side) are upsampled once, so faces down to ~40 px count.
OFFLINE_UPSAMPLE_BELOW = 640
#: The detector's score a face needs (dlib's default is 0): weak detections near 0 are,
#: on photos, mostly patterns in clothes and backgrounds.
OFFLINE_MIN_SCORE = 0.3
#: Suggestion tools and the one parameter each suggestion fills.
SUGGESTION_TOOLS = {"hairstyle": "style", "hair_color": "color"}
OFFLINE_EMPTY_FIELDS = ["faces[].face_shape", "faces[].hair.color", "faces[].hair.length",
                        "faces[].suggestions"]
OFFLINE_NOTE = ("Answered offline (no OpenAI key configured): face boxes only, for upright, roughly "
                "frontal faces at least about 8% of the photo's long side; face shape, hair and "
                "suggestions need the OpenAI provider.")

_detector: Any = None
_detector_lock = threading.Lock()


@dataclass(frozen=True)
class Provider:
    name: Literal["openai", "offline"]
    model: str
    credit_cost: int
    key: str | None = None


def provider(tool: Tool, settings: Settings) -> Provider:
    """Who answers this request: OpenAI when a key is configured, else offline."""
    key = ai_tools.api_key()
    if key:
        return Provider("openai", tool.model or settings.AI_VISION_MODEL, tool.credit_cost, key)
    cost = tool.offline_credit_cost if tool.offline_credit_cost is not None else tool.credit_cost
    return Provider("offline", OFFLINE_MODEL, cost)


def suggestion_tools(known: catalog.Catalog | None = None) -> dict[str, Tool]:
    """The enabled suggestion tools (a disabled one gets no suggestions), from ``known``
    (a catalog snapshot whose version the caller checks) or else read now."""
    tools = [known.tools[t] for t in SUGGESTION_TOOLS if t in known.tools] if known is not None else \
        catalog.tools_by_id(list(SUGGESTION_TOOLS))
    return {t.id: t for t in tools if t.enabled}


@traced
def run(tool: Tool, decoded: images.Decoded, who: Provider, suggestions: dict[str, Tool], *,
        user_id: str, settings: Settings, deadline: float | None = None) -> FaceAnalysis:
    started = time.perf_counter()
    if who.name == "openai":
        result = _openai(tool, decoded, who, suggestions, user_id=user_id, settings=settings,
                         deadline=deadline)
    else:
        result = _offline(decoded)
    # Counts and timing only: nothing about the faces themselves.
    logger.info("face analysis done", extra={"provider": who.name, "model": who.model,
                                             "faces": result.face_count,
                                             "ms": round((time.perf_counter() - started) * 1000)})
    return result


# --- OpenAI vision ------------------------------------------------------------------------


class _AnswerBox(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float
    y: float
    width: float
    height: float


class _AnswerFace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    box: _AnswerBox
    face_shape: FaceShape | None
    hair_color: HairColor | None
    hair_length: HairLength | None
    hairstyles: list[str]
    hair_colors: list[str]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    faces: list[_AnswerFace]


def answer_schema(suggestions: dict[str, Tool]) -> dict[str, Any]:
    """The strict structured-output schema (the subset every structured-output model
    accepts: types, enums, every property required, no extra properties). The suggestion
    enums are the catalog tools' current values."""

    def nullable(values: tuple[str, ...]) -> dict[str, Any]:
        return {"type": ["string", "null"], "enum": [*values, None]}

    def choices(tool_id: str) -> dict[str, Any]:
        tool = suggestions.get(tool_id)
        spec = tool.params_schema.get("properties", {}).get(SUGGESTION_TOOLS[tool_id], {}) if tool else {}
        values = [v for v in spec.get("enum") or [] if isinstance(v, str)]
        # No enabled tool (or no values): an always-empty list.
        items = {"type": "string", "enum": values} if values else {"type": "string", "enum": ["none"]}
        return {"type": "array", "items": items, "description": f"at most {MAX_SUGGESTIONS}, best first"}

    number = {"type": "number"}
    face = {
        "type": "object", "additionalProperties": False,
        "required": ["box", "face_shape", "hair_color", "hair_length", "hairstyles", "hair_colors"],
        "properties": {
            "box": {"type": "object", "additionalProperties": False,
                    "required": ["x", "y", "width", "height"],
                    "description": "fractions of the image's width and height, 0 to 1",
                    "properties": {"x": number, "y": number, "width": number, "height": number}},
            "face_shape": nullable(get_args(FaceShape)),
            "hair_color": nullable(get_args(HairColor)),
            "hair_length": nullable(get_args(HairLength)),
            "hairstyles": choices("hairstyle"),
            "hair_colors": choices("hair_color"),
        },
    }
    return {"type": "object", "additionalProperties": False, "required": ["faces"],
            "properties": {"faces": {"type": "array", "items": face, "description": "largest face first"}}}


def response_format(suggestions: dict[str, Tool]) -> ResponseFormatJSONSchema:
    return {"type": "json_schema", "json_schema": {"name": f"face_analysis_v{SCHEMA_VERSION}", "strict": True,
                                                   "schema": answer_schema(suggestions)}}


def _openai(tool: Tool, decoded: images.Decoded, who: Provider, suggestions: dict[str, Tool], *, user_id: str,
            settings: Settings, deadline: float | None) -> FaceAnalysis:
    assert who.key is not None
    if not tool.prompt_template:
        from common.errors import ConfigError

        raise ConfigError(f"tool {tool.id} has no prompt template")
    source = ai_tools.provider_input(decoded, VISION_MAX_SIDE, quality=90)
    image_url = f"data:{source.content_type};base64,{base64.b64encode(source.data).decode()}"
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": tool.prompt_template},
        {"role": "user", "content": [
            {"type": "text", "text": "Analyse the faces in this photo."},
            {"type": "image_url", "image_url": {"url": image_url, "detail": "high"}},
        ]},
    ]
    attempts = settings.AI_ANALYSIS_ATTEMPTS
    timeout = ai_tools.attempt_timeout(settings, attempts * (settings.AI_MAX_RETRIES + 1), deadline)
    client = ai_tools.client_for(who.key).with_options(max_retries=settings.AI_MAX_RETRIES, timeout=timeout)
    fmt = response_format(suggestions)
    for attempt in range(1, attempts + 1):
        with ai_tools.provider_errors("face analysis", tool.id, who.model, timeout):
            completion = client.chat.completions.create(
                model=who.model, messages=messages, response_format=fmt,
                safety_identifier=ai_tools.safety_identifier(user_id),
            )
        choice = completion.choices[0] if completion.choices else None
        message = choice.message if choice else None
        refused = (message is not None and message.refusal) or (
            choice is not None and choice.finish_reason == "content_filter")
        if refused:
            raise InvalidInput("the image service refused this image", code="content_rejected")
        reason: str | list[str] | None = None
        if choice is None or message is None or not message.content:
            reason = "empty"
        elif choice.finish_reason != "stop":
            reason = f"finish_reason:{choice.finish_reason}"
        else:
            try:
                answer = _Answer.model_validate_json(message.content)
            except ValidationError as exc:
                # pydantic's text quotes the answer: locations and types only.
                reason = sorted({f"{'.'.join(map(str, e['loc']))}:{e['type']}" for e in exc.errors()})[:10]
        if reason is None:
            return _from_answer(answer, who, source.width, source.height, suggestions)
        logger.warning("face analysis answered malformed output",
                       extra={"model": who.model, "attempt": attempt, "attempts": attempts, "reason": reason})
    raise BadGateway("the image service gave no valid analysis")


def _from_answer(answer: _Answer, who: Provider, width: int, height: int,
                 suggestions: dict[str, Tool]) -> FaceAnalysis:
    faces = []
    for face in answer.faces:
        box = _box(face.box.x, face.box.y, face.box.width, face.box.height)
        if box is None:
            continue
        offered = (_suggestions("hairstyle", face.hairstyles, suggestions)
                   + _suggestions("hair_color", face.hair_colors, suggestions))
        faces.append(Face(box=box, face_shape=face.face_shape,
                          hair=Hair(color=face.hair_color, length=face.hair_length), suggestions=offered))
    faces = _largest(faces)
    return FaceAnalysis(provider="openai", model=who.model, image=ImageSize(width=width, height=height),
                        face_count=len(faces), faces=faces, empty_fields=[], notes=[])


def _suggestions(tool_id: str, values: list[str], tools: dict[str, Tool]) -> list[Suggestion]:
    """Values the tool's current schema accepts, deduplicated, at most MAX_SUGGESTIONS."""
    tool = tools.get(tool_id)
    if tool is None:
        return []
    out: list[Suggestion] = []
    for value in values:
        params = {SUGGESTION_TOOLS[tool_id]: value}
        try:
            catalog.canonical_params(tool, params)
        except InvalidInput:
            continue
        suggestion = Suggestion(tool_id=tool_id, params=params)
        if suggestion not in out:
            out.append(suggestion)
    return out[:MAX_SUGGESTIONS]


# --- offline: dlib's HOG detector ---------------------------------------------------------


def _offline(decoded: images.Decoded) -> FaceAnalysis:
    import numpy as np
    from PIL import Image, ImageOps

    im = decoded.image
    width, height = im.size
    gray = im.convert("L")
    if max(gray.size) > OFFLINE_MAX_SIDE:
        gray = ImageOps.contain(gray, (OFFLINE_MAX_SIDE, OFFLINE_MAX_SIDE), Image.Resampling.BILINEAR)
    upsample = 1 if max(gray.size) < OFFLINE_UPSAMPLE_BELOW else 0
    rects, _scores, _kinds = detector().run(np.asarray(gray), upsample, OFFLINE_MIN_SCORE)
    w, h = gray.size
    faces = []
    for rect in rects:
        box = _box(rect.left() / w, rect.top() / h, rect.width() / w, rect.height() / h)
        if box is not None:
            faces.append(Face(box=box, face_shape=None, hair=Hair(color=None, length=None), suggestions=[]))
    faces = _largest(faces)
    return FaceAnalysis(provider="offline", model=OFFLINE_MODEL, image=ImageSize(width=width, height=height),
                        face_count=len(faces), faces=faces, empty_fields=list(OFFLINE_EMPTY_FIELDS),
                        notes=[OFFLINE_NOTE])


def detector() -> Any:
    """dlib's frontal face detector, made once per container (~0.1-0.7 s: it is built from
    data compiled into the library)."""
    global _detector
    if _detector is None:
        with _detector_lock:
            if _detector is None:
                import dlib

                _detector = dlib.get_frontal_face_detector()
    return _detector


# --- both ---------------------------------------------------------------------------------


def _box(x: float, y: float, width: float, height: float) -> Box | None:
    """The box clipped to the image, in [0, 1]; None when nothing of it is inside."""
    left, top = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    right, bottom = min(max(x + width, 0.0), 1.0), min(max(y + height, 0.0), 1.0)
    if right <= left or bottom <= top:
        return None
    return Box(x=round(left, 4), y=round(top, 4), width=round(right - left, 4), height=round(bottom - top, 4))


def _largest(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: -(f.box.width * f.box.height))[:MAX_FACES]
