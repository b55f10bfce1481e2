"""Request and response bodies of the routes (pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from common.http import ApiModel


class UploadIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    content_type: str = Field(min_length=3, max_length=100, description="image/jpeg, image/png, ...")
    size: int = Field(ge=1, description="bytes; the form accepts uploads up to this size")


class UploadOut(ApiModel):
    key: str  # pass as source_key to POST /generations
    url: str
    fields: dict[str, str]  # send as form fields, the file last (field name "file")
    expires_at: datetime
    max_bytes: int


class GenerationIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    tool_id: str = Field(min_length=1, max_length=40)
    params: dict[str, Any] = Field(default_factory=dict)
    source_key: str = Field(min_length=1, max_length=1024)
    #: Optional: the ETag header S3 answered to the upload. With it a repeated request is
    #: answered from the cache without asking S3 about the source; without it S3 is asked
    #: (HEAD) until the upload is sealed (its form expired: generations._is_sealed).
    source_etag: str | None = Field(default=None, min_length=1, max_length=130)


# --- face analysis (the analysis tools' result) -------------------------------------------
# No field exists for age, gender, ethnicity, skin colour, health, emotions,
# attractiveness or identity: neither provider is asked for them, and neither could
# return them (docs/process-image.md, "Face analysis").

FaceShape = Literal["oval", "round", "square", "oblong", "heart", "diamond", "triangle"]
HairColor = Literal["black", "dark_brown", "brown", "light_brown", "blonde", "red", "auburn", "grey", "white",
                    "other"]
HairLength = Literal["bald", "buzzed", "short", "medium", "long", "very_long"]


class Box(ApiModel):
    """Where a face is, in fractions of the (upright) image's width and height."""

    x: float = Field(ge=0, le=1, description="left edge")
    y: float = Field(ge=0, le=1, description="top edge")
    width: float = Field(ge=0, le=1)
    height: float = Field(ge=0, le=1)


class Hair(ApiModel):
    color: HairColor | None = Field(description="as it looks in the photo; null: not seen, or not analysed")
    length: HairLength | None


class Suggestion(ApiModel):
    """A one-tap edit: POST /generations with this tool_id and params (valid for the tool's
    current version)."""

    tool_id: Literal["hairstyle", "hair_color"]
    params: dict[str, str]


class Face(ApiModel):
    box: Box
    face_shape: FaceShape | None
    hair: Hair
    suggestions: list[Suggestion]


class ImageSize(ApiModel):
    width: int
    height: int


class FaceAnalysis(ApiModel):
    """``face_analysis``'s result (schema version 1)."""

    schema_version: Literal[1] = 1
    provider: Literal["openai", "offline"]
    model: str
    image: ImageSize  # the upright image analysed (EXIF orientation applied)
    face_count: int
    faces: list[Face]  # largest first, at most 10
    #: Fields this provider never fills (they are null / empty in every face).
    empty_fields: list[str]
    notes: list[str]


class GenerationOut(ApiModel):
    generation_id: str
    status: Literal["succeeded"]
    tool_id: str
    url: str | None  # image tools: the result; analysis tools: null (see result)
    expires_at: datetime | None
    cached: bool
    credits_charged: int
    balance: int
    content_type: str  # image/... or application/json (analysis tools)
    result: FaceAnalysis | None = None  # analysis tools


class GenerationView(ApiModel):
    generation_id: str
    tool_id: str
    status: Literal["succeeded", "failed"]
    params: dict[str, Any]
    url: str | None
    expires_at: datetime | None
    content_type: str | None
    width: int | None
    height: int | None
    credits_charged: int
    error_code: str | None
    created_at: datetime
    result: FaceAnalysis | None = None  # analysis tools


class ToolOut(ApiModel):
    id: str
    name: str
    description: str
    kind: Literal["local", "ai", "analysis"]
    credit_cost: int  # what a run costs now (analysis tools: the answering provider's price)
    params_schema: dict[str, Any]
    enabled: bool
    available: bool  # enabled, and for AI tools an OpenAI key is configured
    version: int
    #: Who answers now: AI tools "openai"; analysis tools "openai" or "offline"; local tools null.
    provider: Literal["openai", "offline"] | None = None


class ToolsOut(ApiModel):
    tools: list[ToolOut]


class GenerationsOut(ApiModel):
    generations: list[GenerationView]
