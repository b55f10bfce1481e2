"""account's Lambda handler: the routes of its function URL, and its scheduled job.

    GET    /me                     who the caller is: balance, entitlements, pair
    DELETE /me                     delete the account ({"confirm_user_id": <own id>}): 200
    POST   /me/exports             start an export of the caller's data: 202
    GET    /me/exports/<id>        its status, and a download URL when done
    POST   /pairs/invites          an invite code for the partner: 201
    GET    /pairs/invites          the caller's open invites
    DELETE /pairs/invites/<id>     revoke one
    POST   /pairs/join             join with a code ({"code": ...}): 201
    GET    /pairs/current          the pair: partner, shared entitlements and entries
    DELETE /pairs/current          unlink
    GET    /pairs/audit            the pair events the caller may read, newest first

Every route needs a Bearer JWT and counts against the caller's rate limit; POSTs honour
``Idempotency-Key``. A deleted account's tokens answer 401 ``account_deleted`` everywhere
but DELETE /me, which answers its receipt again. The same function runs the export queue
when its schedule invokes it with ``{"job": "exports"}`` (``jobs``, imported then only).
See docs/account.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel

from account import deletion, exports, pairs, profile
from account.models import (
    AuditOut,
    DeleteIn,
    DeletionOut,
    ExportOut,
    InviteOut,
    InvitesOut,
    JoinIn,
    MeOut,
    PairOut,
    RevokedOut,
    UnlinkedOut,
)
from account.settings import settings
from common import http
from common.errors import AccountDeleted, InvalidInput, NotFound
from common.ids import as_uuid

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
    from pydantic import BaseModel

app = http.make_resolver(max_body_bytes=16 * 1024)


def _created(model: BaseModel, status: int) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON,
                    body=model.model_dump(mode="json"))


def _json_responses(status: int, model: type[BaseModel], description: str) -> dict[int, OpenAPIResponse]:
    return {status: {"description": description, "content": {"application/json": {"model": model}}}}


# --- the account -----------------------------------------------------------------------


@app.get("/me")
def get_me() -> MeOut:
    user = http.current_user(app)
    return profile.me(user.user_id)


@app.delete("/me")
def delete_me(body: DeleteIn) -> DeletionOut:
    try:
        user = http.current_user(app)
    except AccountDeleted:  # deleted already (a retry): the same receipt, nothing done again
        from common import auth

        principal = auth.authenticate(app.current_event.headers.get("authorization"))
        deletion.confirm(principal.user_id, body.confirm_user_id)
        return deletion.receipt(principal.user_id)
    deletion.confirm(user.user_id, body.confirm_user_id)
    return deletion.delete(user.user_id)


@app.post("/me/exports", status_code=202,
          responses=_json_responses(202, ExportOut, "queued (or the export already in progress)"))
def start_export() -> Response[ExportOut]:
    user = http.current_user(app)
    started = http.idempotent(app, lambda: exports.start(user.user_id), model=ExportOut, user=user,
                              payload={})
    return _created(started, 202)


@app.get("/me/exports/<export_id>")
def get_export(export_id: str) -> ExportOut:
    user = http.current_user(app)
    return exports.status(user.user_id, export_id)


# --- pairs -----------------------------------------------------------------------------


@app.post("/pairs/invites", status_code=201,
          responses=_json_responses(201, InviteOut, "a new invite code (shown once)"))
def create_invite() -> Response[InviteOut]:
    user = http.current_user(app)
    # A retry gets the same code back: the stored answer lives no longer than the code.
    invite = http.idempotent(app, lambda: pairs.create_invite(user.user_id), model=InviteOut,
                             user=user, payload={}, expires_after_seconds=settings().INVITE_TTL_S)
    return _created(invite, 201)


@app.get("/pairs/invites")
def list_invites() -> InvitesOut:
    user = http.current_user(app)
    return pairs.open_invites(user.user_id)


@app.delete("/pairs/invites/<invite_id>")
def revoke_invite(invite_id: str) -> RevokedOut:
    user = http.current_user(app)
    try:
        iid = as_uuid(invite_id)
    except InvalidInput:
        raise NotFound("no such invite") from None
    return pairs.revoke_invite(user.user_id, iid)


@app.post("/pairs/join", status_code=201, responses=_json_responses(201, PairOut, "paired"))
def join_pair(body: JoinIn) -> Response[PairOut]:
    user = http.current_user(app)
    pair = http.idempotent(app, lambda: pairs.join(user.user_id, body.code), model=PairOut, user=user)
    return _created(pair, 201)


@app.get("/pairs/current")
def current_pair() -> PairOut:
    user = http.current_user(app)
    return pairs.current(user.user_id)


@app.delete("/pairs/current")
def unlink_pair() -> UnlinkedOut:
    user = http.current_user(app)
    return pairs.unlink(user.user_id)


#: Audit ids are Postgres bigints: a larger cursor is a 422, not a query that fails.
BIGINT_MAX = 2**63 - 1


@app.get("/pairs/audit")
def pair_audit(limit: Annotated[int, Query(ge=1, le=100)] = 50,
               before: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None) -> AuditOut:
    user = http.current_user(app)
    return pairs.audit(user.user_id, limit=limit, before=before)


# --- the handler -----------------------------------------------------------------------

_url_handler = http.make_handler(app)


def handler(event: dict[str, Any], context: Any) -> Any:
    """Function URL requests go to the resolver; the schedule's events to the job."""
    if isinstance(event, dict) and "requestContext" in event:
        return _url_handler(event, context)
    from account import jobs

    return jobs.handler(event, context)
