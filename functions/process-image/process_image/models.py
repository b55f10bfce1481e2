"""Request and response bodies of the routes (pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class UploadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content_type: str = Field(min_length=3, max_length=100, description="image/jpeg, image/png, ...")
    size: int = Field(ge=1, description="bytes; the form accepts uploads up to this size")


class UploadOut(BaseModel):
    key: str  # pass as source_key to POST /generations
    url: str
    fields: dict[str, str]  # send as form fields, the file last (field name "file")
    expires_at: datetime
    max_bytes: int


class GenerationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool_id: str = Field(min_length=1, max_length=40)
    params: dict[str, Any] = Field(default_factory=dict)
    source_key: str = Field(min_length=1, max_length=1024)
    #: Optional: the ETag header S3 answered to the upload. With it a repeated request is
    #: answered from the cache without asking S3 about the source.
    source_etag: str | None = Field(default=None, min_length=1, max_length=130)


class GenerationOut(BaseModel):
    generation_id: str
    status: Literal["succeeded"]
    tool_id: str
    url: str
    expires_at: datetime
    cached: bool
    credits_charged: int
    balance: int
    content_type: str


class GenerationView(BaseModel):
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


class ToolOut(BaseModel):
    id: str
    name: str
    description: str
    kind: Literal["local", "ai"]
    credit_cost: int
    params_schema: dict[str, Any]
    enabled: bool
    available: bool  # enabled, and for AI tools an OpenAI key is configured
    version: int


class ToolsOut(BaseModel):
    tools: list[ToolOut]


class GenerationsOut(BaseModel):
    generations: list[GenerationView]
