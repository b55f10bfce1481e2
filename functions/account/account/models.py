"""Request and response bodies of the account routes (pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from common.http import ApiModel

# --- profile ---------------------------------------------------------------------------


class Entitlement(ApiModel):
    entitlement_id: str
    source: str
    expires_at: datetime | None  # None: no expiry
    owner: Literal["self", "pair"]  # the caller's own, or their partner's (shared by the pair)


class PairSummary(ApiModel):
    pair_id: UUID
    partner_id: UUID
    since: datetime


class MeOut(ApiModel):
    user_id: UUID
    email: str | None
    created_at: datetime
    balance: int  # credits
    entitlements: list[Entitlement]
    pair: PairSummary | None


class DeleteIn(ApiModel):
    """The explicit confirmation: the caller's own user id (GET /me says it)."""

    model_config = ConfigDict(extra="forbid")

    confirm_user_id: UUID


class DeletionOut(ApiModel):
    status: Literal["deleted"]
    deleted_at: datetime
    #: "deleted": every object in S3 is gone; "pending": the rest is deleted by the
    #: housekeeping schedule within minutes.
    storage: Literal["deleted", "pending"]


# --- exports ---------------------------------------------------------------------------


class ExportOut(ApiModel):
    export_id: UUID
    status: Literal["queued", "running", "completed", "failed", "expired"]
    created_at: datetime
    completed_at: datetime | None
    expires_at: datetime | None  # when the archive is deleted
    size_bytes: int | None
    sha256: str | None  # of the archive
    url: str | None  # a presigned GET of the archive, while completed
    url_expires_at: datetime | None
    error_code: str | None


# --- pairs -----------------------------------------------------------------------------


class InviteOut(ApiModel):
    invite_id: UUID
    #: Give it to your partner: POST /pairs/join {"code": ...}. Shown once (only its hash
    #: is stored).
    code: str
    created_at: datetime
    expires_at: datetime


class OpenInvite(ApiModel):
    invite_id: UUID
    created_at: datetime
    expires_at: datetime


class InvitesOut(ApiModel):
    invites: list[OpenInvite]


class RevokedOut(ApiModel):
    invite_id: UUID
    status: Literal["revoked"]


class JoinIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    #: As shown (XXXX-XXXX-XXXX); case, spaces and hyphens don't matter.
    code: str = Field(min_length=1, max_length=64)


class Partner(ApiModel):
    user_id: UUID
    joined_at: datetime


class SharedEntries(ApiModel):
    mine: int
    partner: int


class PairOut(ApiModel):
    pair_id: UUID
    since: datetime
    partner: Partner
    #: What the pair may use: each member's active entitlements serve both ("self": the
    #: caller's, "pair": the partner's).
    entitlements: list[Entitlement]
    shared_entries: SharedEntries


class UnlinkedOut(ApiModel):
    pair_id: UUID
    status: Literal["unlinked"]
    unlinked_at: datetime


class AuditEvent(ApiModel):
    id: int
    pair_id: UUID | None  # None for an invite not used yet
    action: Literal["invite_created", "invite_revoked", "joined", "unlinked", "entry_shared",
                    "entry_unshared"]
    #: "you", "partner" (the other member then), "deleted" (an account deleted since), or
    #: "operator" (a pair made with scripts/link-pair).
    actor: Literal["you", "partner", "deleted", "operator"]
    entry_id: UUID | None
    details: dict[str, str]
    at: datetime


class AuditOut(ApiModel):
    events: list[AuditEvent]
    #: Pass as ``before`` for the next (older) page; None at the end.
    next_before: int | None
