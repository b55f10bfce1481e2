"""analyze-entry's function URL: parse, call ``logic``, shape the response.

    POST   /entries                               store an entry (and analyse it): 201
    POST   /entries/{id}/analyze                  (re)analyse one of the caller's entries,
                                                  voice and photo notes included: 200
    GET    /entries/{id}                          an entry the caller may read, with its
                                                  attachments' download URLs: 200, else 404
    DELETE /entries/{id}                          the author deletes an entry and its attachments: 204
    POST   /entries/{id}/attachments              an upload form for a voice note or photo: 201
    DELETE /entries/{id}/attachments/{attachment} the author removes one: 204

Every route needs a Bearer JWT; the POST routes count against
ANALYZE_RATE_LIMIT_PER_MINUTE. The POSTs that create something honour an ``Idempotency-Key``.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response, content_types

from analyze_entry import logic
from analyze_entry.schema import AttachmentIn, AttachmentUpload, Entry, EntryIn
from common import http

#: Entries are at most 20,000 characters (80 KB of UTF-8) plus a title.
app = http.make_resolver(max_body_bytes=128 * 1024)


@app.post("/entries", status_code=201)
def create_entry(body: EntryIn) -> Response[Entry]:
    user = http.current_user(app, route_limit=_analyse_limit())
    stored = http.idempotent(app, lambda: logic.create_entry(user.user_id, body), model=Entry, user=user)
    return _json(201, stored)


@app.post("/entries/<entry_id>/analyze")
def analyze_entry(entry_id: str) -> Entry:
    user = http.current_user(app, route_limit=_analyse_limit())
    return logic.reanalyse_entry(user.user_id, entry_id)


@app.get("/entries/<entry_id>")
def get_entry(entry_id: str) -> Entry:
    user = http.current_user(app)
    return logic.get_entry(user.user_id, entry_id)


@app.delete("/entries/<entry_id>", responses={204: {"description": "deleted, with its attachments"}})
def delete_entry(entry_id: str) -> Response[None]:
    user = http.current_user(app)
    logic.delete_entry(user.user_id, entry_id)
    return Response(status_code=204)


@app.post("/entries/<entry_id>/attachments", responses={
    201: {"description": "an upload form for the attachment",
          "content": {"application/json": {"model": AttachmentUpload}}},
})
def add_attachment(entry_id: str, body: AttachmentIn) -> Response[AttachmentUpload]:
    user = http.current_user(app, route_limit=_analyse_limit())
    form = http.idempotent(app, lambda: logic.add_attachment(user.user_id, entry_id, body),
                           model=AttachmentUpload, user=user)
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON,
                    body=form.model_dump(mode="json"))  # type: ignore[arg-type]  # the JSON form; Response[Model] documents the schema


@app.delete("/entries/<entry_id>/attachments/<attachment_id>",
            responses={204: {"description": "the attachment and its file are deleted"}})
def delete_attachment(entry_id: str, attachment_id: str) -> Response[None]:
    user = http.current_user(app)
    logic.delete_attachment(user.user_id, entry_id, attachment_id)
    return Response(status_code=204)


def _analyse_limit() -> int:
    # Imported on first use: building the settings model is paid by the first request
    # that reads a setting, never by the import.
    from analyze_entry.settings import settings

    return settings().ANALYZE_RATE_LIMIT_PER_MINUTE


def _json(status: int, body: Entry) -> Response[Entry]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON,
                    body=body.model_dump(mode="json"))  # type: ignore[arg-type]  # the JSON form; Response[Model] documents the schema


handler = http.make_handler(app)
