"""process-image's Lambda handler: routes of its function URL, wiring only.

    GET  /tools               the tools catalog
    POST /uploads             a presigned upload form for one image
    POST /generations         run a tool on an uploaded image, charged once
    GET  /generations         the caller's recent generations, newest first (?limit=)
    GET  /generations/<id>    one of the caller's generations, with a fresh URL

The caller's balance and entitlements are the account function's ``GET /me``.

Every route needs a Bearer JWT and counts against the caller's rate limit; POSTs honour
``Idempotency-Key``. The work is in the domain modules (docs/process-image.md).
"""

from __future__ import annotations

import time
from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Query

from common import http
from common.errors import AppError
from process_image import catalog
from process_image.models import (
    GenerationIn,
    GenerationOut,
    GenerationsOut,
    GenerationView,
    ToolOut,
    ToolsOut,
    UploadIn,
    UploadOut,
)

# generations and uploads (with the storage, cache and ledger modules they load) are
# imported by the routes that use them: a cold start answering GET /tools skips them.
app = http.make_resolver()


@app.get("/tools")
def list_tools() -> ToolsOut:
    http.current_user(app)
    from process_image import ai_tools

    tools = catalog.list_tools()
    ai_on = bool(ai_tools.api_key())
    return ToolsOut(tools=[_tool_out(t, ai_on) for t in tools])


def _tool_out(t: catalog.Tool, ai_on: bool) -> ToolOut:
    """A tool as the app sees it now: analysis tools are answered offline (at their
    offline price) without a key, AI image edits are unavailable."""
    cost, provider = t.credit_cost, None
    if t.is_ai:
        provider = "openai"
    elif t.is_analysis:
        provider = "openai" if ai_on else "offline"
        if not ai_on and t.offline_credit_cost is not None:
            cost = t.offline_credit_cost
    return ToolOut(id=t.id, name=t.name, description=t.description, kind=t.kind, credit_cost=cost,
                   params_schema=t.params_schema, enabled=t.enabled, version=t.prompt_version,
                   available=t.enabled and (not t.is_ai or ai_on), provider=provider)


@app.post("/uploads")
def create_upload(body: UploadIn) -> UploadOut:
    from process_image import uploads

    user = http.current_user(app)
    return http.idempotent(app, lambda: uploads.create_form(user.user_id, body.content_type, body.size),
                           model=UploadOut)


@app.post("/generations", responses={
    201: {"description": "the tool ran and the caller was charged",
          "content": {"application/json": {"model": GenerationOut}}},
    200: {"description": "an identical earlier request answered from the cache, free (cached: true)",
          "content": {"application/json": {"model": GenerationOut}}},
})
def create_generation(body: GenerationIn) -> Response[GenerationOut]:
    from process_image import generations

    principal = http.authenticated(app)
    try:
        planned = generations.plan(principal.user_id, body.tool_id, body.params, body.source_key,
                                   body.source_etag)
    except AppError:
        http.current_user(app)  # admitted first, as any request (429, a deleted account's 401)
        raise
    # With the source's ETag known (source_etag, a sealed upload) the cache lookup goes in the
    # admission's statement: a hit is one round trip.
    lookup = planned.lookup(principal.user_id)
    user, found = http.current_user_along(app, *lookup) if lookup else (http.current_user(app), None)
    deadline = time.monotonic() + app.lambda_context.get_remaining_time_in_millis() / 1000

    def run() -> GenerationOut:
        return generations.create(user.user_id, body.tool_id, body.params, body.source_key,
                                  source_etag=body.source_etag, deadline=deadline, planned=planned,
                                  found=found)

    result = http.idempotent(app, run, model=GenerationOut)
    # The model itself: Powertools' response validation takes an instance as it is and
    # serialises it once (a dict would be validated into a model again, then serialised).
    return Response(status_code=200 if result.cached else 201, content_type=content_types.APPLICATION_JSON,
                    body=result)


@app.get("/generations")
def list_generations(limit: Annotated[int, Query(ge=1, le=100)] = 10) -> GenerationsOut:
    from process_image import generations

    user = http.current_user(app)
    return GenerationsOut(generations=generations.recent(user.user_id, limit))


@app.get("/generations/<generation_id>")
def get_generation(generation_id: str) -> GenerationView:
    from process_image import generations

    user = http.current_user(app)
    return generations.get(user.user_id, generation_id)


handler = http.make_handler(app)
