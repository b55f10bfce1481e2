"""The floor of scripts/bench/hit_path.py: what a process-image cache hit does apart from
its own domain work, on the common layer alone. The same JSON body validated into a
model of GenerationIn's fields, the caller admitted (JWT, rate limit, user row: one round
trip, as the hit's), one Count metric, and a response of GenerationOut's model and size.
No plan, cache key, cache read, balance or URL signing: no implementation of the hit
can cost less than this through the same stack."""

from datetime import UTC, datetime
from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ConfigDict, Field

from common import http
from common.http import ApiModel
from common.observability import metrics

app = http.make_resolver()

#: As long as a presigned S3 GET URL of a generation (the hit answers one)
URL = ("https://generations-bucket.s3.amazonaws.com/users/00000000-0000-0000-0000-000000000000/generations/"
       "00000000-0000-0000-0000-000000000000.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
       "AKIAEXAMPLEEXAMPLE00%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z"
       "&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=" + "0" * 64)


class FloorIn(ApiModel):
    """process-image's GenerationIn, field for field."""

    model_config = ConfigDict(extra="forbid")

    tool_id: str = Field(min_length=1, max_length=40)
    params: dict[str, Any] = Field(default_factory=dict)
    source_key: str = Field(min_length=1, max_length=1024)
    source_etag: str | None = Field(default=None, min_length=1, max_length=130)


class FloorOut(ApiModel):
    """process-image's GenerationOut (an image tool's), field for field."""

    generation_id: str
    status: Literal["succeeded"]
    tool_id: str
    url: str | None
    expires_at: datetime | None
    cached: bool
    credits_charged: int
    balance: int
    content_type: str
    result: dict[str, Any] | None = None


@app.post("/floor")
def floor(body: FloorIn) -> FloorOut:
    """A cache hit's shape without its work: the same body validated, the caller admitted,
    one Count metric, a response of the same model and size. No plan, cache key, cache
    read, balance or URL signing."""
    user = http.current_user(app)
    metrics.add_metric(name="CacheHit", unit=MetricUnit.Count, value=1)
    return FloorOut(generation_id=str(user.user_id), status="succeeded", tool_id=body.tool_id, url=URL,
                    expires_at=datetime.now(UTC), cached=True, credits_charged=0, balance=999_999,
                    content_type="image/jpeg")


handler = http.make_handler(app)
