"""analyze-entry's function URL: parse, call ``logic``, shape the response.

    POST /entries                 store an entry (and analyse it): 201
    POST /entries/{id}/analyze    (re)analyse one of the caller's entries: 200
    GET  /entries/{id}            an entry the caller may read: 200, else 404

Every route needs a Bearer JWT; the POST routes count against
ANALYZE_RATE_LIMIT_PER_MINUTE. ``POST /entries`` honours an ``Idempotency-Key``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

from analyze_entry import logic
from analyze_entry.schema import Entry, EntryIn
from common import http

#: Entries are at most 20,000 characters (80 KB of UTF-8) plus a title.
app = http.make_resolver(max_body_bytes=128 * 1024)


@app.post("/entries", status_code=201)
def create_entry(body: EntryIn) -> Response[Entry]:
    user = http.current_user(app, route_limit=_analyse_limit())
    stored = http.idempotent(app, lambda: logic.create_entry(user.user_id, body).model_dump(mode="json"),
                             user=user)
    return _json(201, stored)


@app.post("/entries/<entry_id>/analyze")
def analyze_entry(entry_id: str) -> Entry:
    user = http.current_user(app, route_limit=_analyse_limit())
    return logic.reanalyse_entry(user.user_id, entry_id)


@app.get("/entries/<entry_id>")
def get_entry(entry_id: str) -> Entry:
    user = http.current_user(app)
    return logic.get_entry(user.user_id, entry_id)


def _analyse_limit() -> int:
    # Imported on first use: pydantic-settings costs ~50 ms, which the layer's own
    # settings pay on the first request anyway.
    from analyze_entry.settings import settings

    return settings().ANALYZE_RATE_LIMIT_PER_MINUTE


def _json(status: int, body: dict[str, Any]) -> Response[Entry]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


handler = http.make_handler(app)
