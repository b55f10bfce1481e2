"""The pydantic models of analyze-entry: the versioned ``Analysis`` of a journal entry,
and the entry as the API takes and returns it.

``AnalysisCore`` is what an analyser decides (mood, sentiment, emotions, tags, summary,
safety flag): it is the OpenAI structured-output schema, and the offline analyser fills
the same model. ``Analysis`` adds provenance (source, model, prompt and schema version)
and ``ekman``, which is always *derived* from the emotions by the published
GoEmotions-to-Ekman mapping, never taken from an analyser or from stored JSON, so the two
can't disagree.

Range checks live in validators rather than in JSON-schema keywords (``minimum``,
``maxItems``, ...): the schema sent to OpenAI then stays within the subset every
structured-output model accepts, and pydantic still refuses an out-of-range answer
(which the OpenAI analyser treats as malformed output and retries). Tags and the summary
are normalised rather than refused (see ``normalise_tags`` and ``clip_summary``).

Bump ``SCHEMA_VERSION`` when the shape or meaning of ``Analysis`` changes: it is part of
the cache key, so cached analyses of the old shape are not reused.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Literal, get_args
from uuid import UUID

from pydantic import AfterValidator, ConfigDict, Field, computed_field

from common.http import ApiModel

#: 2: `notes` (what the analysis left out); stored version 1 analyses still read
SCHEMA_VERSION: Literal[2] = 2

#: The GoEmotions taxonomy (Demszky et al., ACL 2020): 27 emotions and neutral.
GoEmotion = Literal[
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion",
    "curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment",
    "excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism",
    "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
]
GO_EMOTIONS: tuple[str, ...] = get_args(GoEmotion)

Ekman = Literal["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
EKMAN: tuple[str, ...] = get_args(Ekman)

#: The GoEmotions authors' published mapping of their labels to Ekman's six basic
#: emotions (the dataset's ekman_mapping.json); neutral stays neutral.
EKMAN_MAPPING: dict[str, tuple[str, ...]] = {
    "anger": ("anger", "annoyance", "disapproval"),
    "disgust": ("disgust",),
    "fear": ("fear", "nervousness"),
    "joy": ("joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism",
            "relief", "pride", "admiration", "desire", "caring"),
    "sadness": ("sadness", "disappointment", "embarrassment", "grief", "remorse"),
    "surprise": ("surprise", "realization", "confusion", "curiosity"),
    "neutral": ("neutral",),
}
EKMAN_OF: dict[str, str] = {label: ekman for ekman, labels in EKMAN_MAPPING.items() for label in labels}

#: The closed set of moods, each with its valence (+1 positive, 0 neutral, -1 negative).
Mood = Literal[
    "joyful", "grateful", "hopeful", "content", "calm", "neutral", "mixed",
    "anxious", "frustrated", "angry", "sad", "grieving",
]
MOOD_VALENCE: dict[str, int] = {
    "joyful": 1, "grateful": 1, "hopeful": 1, "content": 1, "calm": 1,
    "neutral": 0, "mixed": 0,
    "anxious": -1, "frustrated": -1, "angry": -1, "sad": -1, "grieving": -1,
}

Source = Literal["openai", "offline"]

MAX_TAGS = 8
MAX_TAG_CHARS = 32
MAX_SUMMARY_SENTENCES = 2
MAX_SUMMARY_CHARS = 300
MAX_TITLE_CHARS = 200
MAX_CONTENT_CHARS = 20_000


# --- validators ------------------------------------------------------------------------


def _unit_interval(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _signed_unit_interval(value: float) -> float:
    if not -1.0 <= value <= 1.0:
        raise ValueError("must be between -1 and 1")
    return value


def normalise_tags(tags: list[str]) -> list[str]:
    """Lower case, NFKC, no leading '#', words joined by '-', letters/digits/'-' only (any
    script), at most ``MAX_TAG_CHARS`` characters; empty ones and duplicates dropped; the
    first ``MAX_TAGS`` kept, in order."""
    out: list[str] = []
    for tag in tags:
        text = unicodedata.normalize("NFKC", tag).lower()
        text = re.sub(r"[^\w\s-]", "", text)
        text = re.sub(r"[\s_-]+", "-", text).strip("-")[:MAX_TAG_CHARS].strip("-")
        if text and text not in out:
            out.append(text)
    return out[:MAX_TAGS]


_SENTENCE = re.compile(r"[^.!?\u3002\uff01\uff1f\u061f]+(?:[.!?\u3002\uff01\uff1f\u061f]+|$)")


def clip_summary(text: str) -> str:
    """Whitespace collapsed, the first ``MAX_SUMMARY_SENTENCES`` sentences (split on . ! ?
    and their CJK / Arabic forms), at most ``MAX_SUMMARY_CHARS`` characters (cut at a word
    boundary, with an ellipsis)."""
    text = " ".join(text.split())
    sentences = [s.strip() for s in _SENTENCE.findall(text) if s.strip()]
    text = " ".join(sentences[:MAX_SUMMARY_SENTENCES])
    if len(text) > MAX_SUMMARY_CHARS:
        cut = text[: MAX_SUMMARY_CHARS - 1]
        text = (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:") + "\u2026"
    return text


def _emotions(emotions: list[Emotion]) -> list[Emotion]:
    """One entry per label (the strongest), strongest first; none at all means neutral."""
    best: dict[str, Emotion] = {}
    for emotion in emotions:
        if emotion.label not in best or emotion.intensity > best[emotion.label].intensity:
            best[emotion.label] = emotion
    if not best:
        return [Emotion(label="neutral", intensity=1.0)]
    return sorted(best.values(), key=lambda e: (-e.intensity, GO_EMOTIONS.index(e.label)))


# --- the analysis -----------------------------------------------------------------------


class Emotion(ApiModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: GoEmotion
    intensity: Annotated[float, AfterValidator(_unit_interval),
                         Field(description="How strongly the entry expresses it, 0 to 1.")]


class AnalysisCore(ApiModel):
    """What an analyser decides about one entry (the structured-output schema)."""

    model_config = ConfigDict(extra="forbid")

    mood: Mood = Field(description="The writer's overall mood, one of the listed values.")
    sentiment: Annotated[float, AfterValidator(_signed_unit_interval),
                         Field(description="Overall sentiment from -1 (very negative) to 1 (very positive).")]
    emotions: Annotated[list[Emotion], AfterValidator(_emotions),
                        Field(description="The GoEmotions labels the entry expresses, strongest first "
                                          "(neutral alone when none).")]
    tags: Annotated[list[str], AfterValidator(normalise_tags),
                    Field(description=f"At most {MAX_TAGS} short lower-case topic tags.")]
    summary: Annotated[str, AfterValidator(clip_summary),
                       Field(description=f"At most {MAX_SUMMARY_SENTENCES} sentences, in the language "
                                         "the entry is written in.")]
    safety_flag: bool = Field(description="True when the entry contains self-harm, suicide or crisis "
                                          "language; independent of the mood.")


class Analysis(AnalysisCore):
    """An entry's analysis as stored on the entry, cached and returned (version 2)."""

    model_config = ConfigDict(extra="ignore")  # stored JSON carries the derived `ekman`

    source: Source
    model: str
    prompt_version: str
    schema_version: Literal[1, 2] = SCHEMA_VERSION
    #: What the analysis could not take into account, e.g. photos answered offline.
    notes: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ekman(self) -> dict[Ekman, float]:
        """Each Ekman category's intensity: the strongest of its GoEmotions labels."""
        out: dict[str, float] = dict.fromkeys(EKMAN, 0.0)
        for emotion in self.emotions:
            ekman = EKMAN_OF[emotion.label]
            out[ekman] = max(out[ekman], emotion.intensity)
        return out  # type: ignore[return-value]

    @property
    def valence(self) -> int:
        return MOOD_VALENCE[self.mood]

    @classmethod
    def of(cls, core: AnalysisCore, *, source: Source, model: str, prompt_version: str,
           notes: list[str] | None = None) -> Analysis:
        return cls(**core.model_dump(), source=source, model=model, prompt_version=prompt_version,
                   notes=notes or [])


# --- entries (the API's shapes) -----------------------------------------------------------


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


class EntryIn(ApiModel):
    """``POST /entries``. ``pair_id`` defaults to the author's pair for a shared entry."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=MAX_TITLE_CHARS)
    content: Annotated[str, AfterValidator(_not_blank), Field(min_length=1, max_length=MAX_CONTENT_CHARS)]
    visibility: Literal["private", "shared"] = "private"
    pair_id: UUID | None = None
    analyze: bool = True


class Attachment(ApiModel):
    """A voice note or photo of an entry, as its author and (for a shared entry) the
    partner read it. ``url`` is a presigned GET."""

    id: UUID
    kind: Literal["audio", "image"]
    content_type: str
    bytes: int | None  # known once an analysis has checked the upload
    duration_s: float | None  # audio
    transcript: str | None  # audio, once transcribed
    language: str | None  # audio: the transcript's language as the model names it (whisper-1: "english")
    description: str | None  # image, once described by the vision model
    checked: bool  # the upload was read and found to be what it claims
    url: str
    expires_at: datetime
    created_at: datetime


class Entry(ApiModel):
    """An entry with its analysis (``None`` until analysed) and its attachments."""

    id: UUID
    author_id: UUID
    pair_id: UUID | None
    title: str | None
    content: str
    visibility: Literal["private", "shared"]
    analysis: Analysis | None
    analyzed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    attachments: list[Attachment] = Field(default_factory=list)


class AttachmentIn(ApiModel):
    """``POST /entries/{id}/attachments``: what the author is about to upload."""

    model_config = ConfigDict(extra="forbid")

    content_type: str = Field(min_length=3, max_length=100,
                              description="audio/mp4 (m4a), audio/mpeg, audio/wav, audio/webm, audio/ogg, "
                                          "image/jpeg, image/png, image/webp, image/heic")
    size: int = Field(ge=1, description="bytes; the form accepts uploads up to this size")


class AttachmentUpload(ApiModel):
    """A presigned POST form for one attachment: send ``fields`` then the file (form field
    ``file``) to ``url``, then analyse the entry."""

    attachment_id: UUID
    kind: Literal["audio", "image"]
    key: str
    url: str
    fields: dict[str, str]
    expires_at: datetime
    max_bytes: int
