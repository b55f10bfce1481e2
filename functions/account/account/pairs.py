"""Couples pair up by invite code: invites, join, the current pair, unlink, the audit.

The database decides the invariants (migrations 0001, 0012): a user is in one pair at
most (``pair_members.user_id`` unique), a pair has two members at most and a dissolved
pair none (trigger ``pair_members_limit``), an invite is used once (its row is locked by
the join that uses it, which checks ``used_at`` under that lock). A join locks both
users' rows in id order, then the invite row (every path that takes both locks takes
them in that order, so none can deadlock): two users racing for one code queue on the
inviter's row, and the second finds the code used; two users joining each other's codes
at once queue the same way, and the second finds themselves paired.

Every pair action is written to ``pair_audit`` (entries shared or unshared by a trigger
on journal_entries). Invite codes are never logged; only their SHA-256 is stored.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from account import codes
from account.models import (
    AuditEvent,
    AuditOut,
    Entitlement,
    InviteOut,
    InvitesOut,
    OpenInvite,
    PairOut,
    Partner,
    RevokedOut,
    SharedEntries,
    UnlinkedOut,
)
from account.settings import settings
from common import db
from common.errors import (
    ACCOUNT_DELETED_CONSTRAINT,
    AccountDeleted,
    AppError,
    Conflict,
    InvalidInput,
    NotFound,
)
from common.observability import logger

#: The hourly join-attempt limit's rate-limit route (per user).
JOIN_ATTEMPTS_ROUTE = "account:join-attempts"


class AlreadyPaired(Conflict):
    code = "already_paired"


class NotPaired(NotFound):
    code = "not_paired"


class CodeGone(AppError):
    """The code existed but can't be used any more (expired, used, revoked)."""

    status = 410


# --- Queries ---------------------------------------------------------------------------

#: FOR NO KEY UPDATE serialises pairing changes of these users without blocking the
#: key-share locks that other functions' inserts take on them.
LOCK_USERS = "SELECT id FROM users WHERE id = ANY(%(ids)s) ORDER BY id FOR NO KEY UPDATE"

PAIR_OF = "SELECT user_id, pair_id FROM pair_members WHERE user_id = ANY(%(ids)s)"

COUNT_OPEN_INVITES = """
SELECT count(*) AS n FROM pair_invites
 WHERE inviter_id = %(user_id)s AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
"""

INSERT_INVITE = """
INSERT INTO pair_invites (inviter_id, code_sha256, expires_at)
VALUES (%(user_id)s, %(digest)s, now() + make_interval(secs => %(ttl)s))
RETURNING id, created_at, expires_at
"""

AUDIT = """
INSERT INTO pair_audit (pair_id, action, actor_id, details, visible_to)
VALUES (%(pair_id)s, %(action)s, %(actor_id)s, %(details)s, %(visible_to)s)
"""

LIST_INVITES = """
SELECT id, created_at, expires_at FROM pair_invites
 WHERE inviter_id = %(user_id)s AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
 ORDER BY created_at
"""

REVOKE_INVITE = """
UPDATE pair_invites SET revoked_at = now()
 WHERE id = %(id)s AND inviter_id = %(user_id)s AND used_at IS NULL AND revoked_at IS NULL
RETURNING id
"""

INVITE_OF = "SELECT id, used_at, revoked_at FROM pair_invites WHERE id = %(id)s AND inviter_id = %(user_id)s"

INVITE_BY_CODE = "SELECT id, inviter_id, used_by, pair_id FROM pair_invites WHERE code_sha256 = %(digest)s"

#: Taken after the users' rows (see _join).
LOCK_INVITE = """
SELECT id, expires_at <= now() AS expired, used_at, used_by, pair_id, revoked_at
  FROM pair_invites WHERE id = %(id)s
   FOR UPDATE
"""

NEW_PAIR = "INSERT INTO pairs DEFAULT VALUES RETURNING id, created_at"

ADD_MEMBERS = "INSERT INTO pair_members (pair_id, user_id) SELECT %(pair_id)s, unnest(%(ids)s::uuid[])"

USE_INVITE = """
UPDATE pair_invites SET used_at = now(), used_by = %(user_id)s, pair_id = %(pair_id)s WHERE id = %(id)s
"""

#: A user in a pair has no open invites: theirs end when they pair (with why, in the audit).
REVOKE_OPEN_INVITES = """
UPDATE pair_invites SET revoked_at = now()
 WHERE inviter_id = ANY(%(ids)s) AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
RETURNING id, inviter_id
"""

#: The invite's own audit row joins the pair's trail, readable by both from now on.
INVITE_JOINS_PAIR = """
UPDATE pair_audit SET pair_id = %(pair_id)s, visible_to = %(members)s
 WHERE action = 'invite_created' AND pair_id IS NULL AND details ->> 'invite_id' = %(invite_id)s
"""

CURRENT = """
SELECT p.id AS pair_id, p.created_at AS since, partner.user_id AS partner_id, partner.joined_at
  FROM pair_members me
  JOIN pairs p ON p.id = me.pair_id
  JOIN pair_members partner ON partner.pair_id = me.pair_id AND partner.user_id <> me.user_id
 WHERE me.user_id = %(user_id)s
"""

SHARED_ENTRIES = """
SELECT count(*) FILTER (WHERE author_id = %(user_id)s) AS mine,
       count(*) FILTER (WHERE author_id <> %(user_id)s) AS partner
  FROM journal_entries
 WHERE pair_id = %(pair_id)s AND visibility = 'shared'
"""

MY_PAIR = "SELECT pair_id FROM pair_members WHERE user_id = %(user_id)s"

UNLINK = "SELECT unlink_pair(%(pair_id)s, %(user_id)s, 'unlinked') AS members, now() AS at"

#: The audit rows the viewer may read (GIN index on visible_to), newest first.
AUDIT_PAGE = """
SELECT id, pair_id, action, actor_id, entry_id, details, created_at
  FROM pair_audit
 WHERE visible_to @> ARRAY[%(user_id)s]::uuid[]
   AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
 ORDER BY id DESC
 LIMIT %(limit)s
"""


# --- Invites ---------------------------------------------------------------------------


def create_invite(user_id: UUID) -> InviteOut:
    """A new invite code for an unpaired user (409 already_paired, 409 too_many_invites)."""
    import psycopg

    s = settings()
    with db.transaction() as conn:
        conn.execute(LOCK_USERS, {"ids": [user_id]})
        if conn.execute(PAIR_OF, {"ids": [user_id]}).fetchone():
            raise AlreadyPaired("you are already in a pair; unlink first")
        if db.one_row(conn.execute(COUNT_OPEN_INVITES, {"user_id": user_id}))["n"] >= s.INVITE_MAX_OPEN:
            raise Conflict(f"you have {s.INVITE_MAX_OPEN} open invites; revoke one or wait for it to expire",
                           code="too_many_invites")
        for _ in range(3):  # 60 random bits: a collision is astronomically rare, but cheap to handle
            code = codes.new_code()
            try:
                with conn.transaction():
                    params = {"user_id": user_id, "ttl": s.INVITE_TTL_S,
                              "digest": codes.digest(code)}
                    row = db.one_row(conn.execute(INSERT_INVITE, params))
                break
            except psycopg.errors.UniqueViolation:
                continue
        else:
            raise RuntimeError("could not draw an unused invite code")
        _audit(conn, None, "invite_created", user_id, [user_id], invite_id=row["id"])
    logger.info("invite created", extra={"invite_id": str(row["id"])})
    return InviteOut(invite_id=row["id"], code=codes.display(code), created_at=row["created_at"],
                     expires_at=row["expires_at"])


def open_invites(user_id: UUID) -> InvitesOut:
    rows = db.execute(LIST_INVITES, {"user_id": user_id}, idempotent=True).fetchall()
    return InvitesOut(invites=[OpenInvite(invite_id=r["id"], created_at=r["created_at"],
                                          expires_at=r["expires_at"]) for r in rows])


def revoke_invite(user_id: UUID, invite_id: UUID) -> RevokedOut:
    """Revoke one of the user's open invites; again is fine; a used one is 409."""
    with db.transaction() as conn:
        if conn.execute(REVOKE_INVITE, {"id": invite_id, "user_id": user_id}).fetchone():
            _audit(conn, None, "invite_revoked", user_id, [user_id], invite_id=invite_id)
            return RevokedOut(invite_id=invite_id, status="revoked")
        row = conn.execute(INVITE_OF, {"id": invite_id, "user_id": user_id}).fetchone()
    if row is None:
        raise NotFound("no such invite")
    if row["used_at"] is not None:
        raise Conflict("this invite was used; unlink the pair instead", code="code_used")
    return RevokedOut(invite_id=invite_id, status="revoked")


# --- Join ------------------------------------------------------------------------------


def join(user_id: UUID, code: str) -> PairOut:
    """Pair the caller with the code's inviter. Refusals: 422 invalid_code (not a code),
    404 unknown_code, 422 own_code, 410 code_used / code_revoked / code_expired, 409
    already_paired (the caller or the inviter is in a pair), 429 past
    JOIN_ATTEMPTS_PER_HOUR attempts (every attempt counts, so codes can't be guessed).
    Joining again with the code that made the caller's current pair answers that pair."""
    from common import ratelimit

    ratelimit.hit(str(user_id), JOIN_ATTEMPTS_ROUTE, limit=settings().JOIN_ATTEMPTS_PER_HOUR, window_s=3600)
    canonical = codes.canonical(code)
    if canonical is None:
        raise InvalidInput("that is not an invite code (12 letters and digits, XXXX-XXXX-XXXX)",
                           code="invalid_code")
    pair_id = _join(user_id, codes.digest(canonical))
    return current(user_id, expected=pair_id)


def _join(user_id: UUID, digest: bytes) -> UUID:
    import psycopg

    with db.transaction() as conn:
        found = conn.execute(INVITE_BY_CODE, {"digest": digest}).fetchone()
        if found is None:
            raise NotFound("no invite has this code", code="unknown_code")
        if found["used_by"] == user_id:
            retried: UUID = found["pair_id"]  # a retry of the join that used it
            return retried
        inviter = found["inviter_id"]
        if inviter == user_id:
            raise InvalidInput("this is your own invite: give it to your partner", code="own_code")
        # Users first, then the invite, in every path that takes both: no lock cycle.
        members = sorted([user_id, inviter])
        conn.execute(LOCK_USERS, {"ids": members})
        invite = conn.execute(LOCK_INVITE, {"id": found["id"]}).fetchone()
        if invite is None:  # its inviter's account was deleted meanwhile
            raise NotFound("no invite has this code", code="unknown_code")
        if invite["used_by"] == user_id:
            retried = invite["pair_id"]
            return retried
        paired = {row["user_id"] for row in conn.execute(PAIR_OF, {"ids": members})}
        if user_id in paired:
            raise AlreadyPaired("you are already in a pair; unlink first")
        if invite["used_at"] is not None:
            raise CodeGone("this invite was already used", code="code_used")
        if invite["revoked_at"] is not None:
            raise CodeGone("this invite was revoked", code="code_revoked")
        if invite["expired"]:
            raise CodeGone("this invite has expired; ask for a new one", code="code_expired")
        if inviter in paired:
            raise AlreadyPaired("the person who invited you is already in a pair")
        try:
            with conn.transaction():
                pair = db.one_row(conn.execute(NEW_PAIR))
                conn.execute(ADD_MEMBERS, {"pair_id": pair["id"], "ids": members})
        except psycopg.errors.IntegrityError as exc:
            if exc.diag.constraint_name == ACCOUNT_DELETED_CONSTRAINT:
                # the caller's account, deleted before the locks (an inviter's deletion takes
                # their invites with it: unknown_code above)
                raise AccountDeleted("this account has been deleted") from None
            # a pairing outside this code path won (scripts/link-pair)
            raise AlreadyPaired(f"already in a pair ({exc.diag.constraint_name})") from None
        conn.execute(USE_INVITE, {"id": invite["id"], "user_id": user_id, "pair_id": pair["id"]})
        conn.execute(INVITE_JOINS_PAIR, {"pair_id": pair["id"], "members": members,
                                         "invite_id": str(invite["id"])})
        for revoked in conn.execute(REVOKE_OPEN_INVITES, {"ids": members}).fetchall():
            _audit(conn, None, "invite_revoked", revoked["inviter_id"], [revoked["inviter_id"]],
                   invite_id=revoked["id"], reason="paired")
        _audit(conn, pair["id"], "joined", user_id, members, invite_id=invite["id"])
    joined: UUID = pair["id"]
    logger.info("pair joined", extra={"pair_id": str(joined), "invite_id": str(invite["id"])})
    return joined


# --- The current pair ------------------------------------------------------------------


def current(user_id: UUID, *, expected: UUID | None = None) -> PairOut:
    """The caller's pair: partner, entitlements the pair may use, shared entry counts."""
    from common import entitlements

    row = db.execute(CURRENT, {"user_id": user_id}, idempotent=True).fetchone()
    if row is None or (expected is not None and row["pair_id"] != expected):
        if expected is not None:
            raise CodeGone("this invite was already used", code="code_used")
        raise NotPaired("you are not in a pair")
    counts = db.one_row(db.execute(SHARED_ENTRIES, {"user_id": user_id, "pair_id": row["pair_id"]},
                                   idempotent=True))
    usable = entitlements.active_entitlements(user_id)
    return PairOut(pair_id=row["pair_id"], since=row["since"],
                   partner=Partner(user_id=row["partner_id"], joined_at=row["joined_at"]),
                   entitlements=[Entitlement(**e) for e in usable],
                   shared_entries=SharedEntries(mine=counts["mine"], partner=counts["partner"]))


def unlink(user_id: UUID) -> UnlinkedOut:
    """Dissolve the caller's pair (``unlink_pair``): shared entries become private to their
    authors, each keeps their own entitlements, both read it in the audit."""
    with db.transaction() as conn:
        conn.execute(LOCK_USERS, {"ids": [user_id]})
        mine = conn.execute(MY_PAIR, {"user_id": user_id}).fetchone()
        if mine is None:
            raise NotPaired("you are not in a pair")
        result = db.one_row(conn.execute(UNLINK, {"pair_id": mine["pair_id"], "user_id": user_id}))
    logger.info("pair unlinked", extra={"pair_id": str(mine["pair_id"]), "members": len(result["members"])})
    return UnlinkedOut(pair_id=mine["pair_id"], status="unlinked", unlinked_at=result["at"])


# --- Audit -----------------------------------------------------------------------------


def audit(user_id: UUID, *, limit: int, before: int | None) -> AuditOut:
    """The pair events the caller may read (their pairs, current and former, and their
    own invites), newest first."""
    rows = db.execute(AUDIT_PAGE, {"user_id": user_id, "limit": limit, "before": before},
                      idempotent=True).fetchall()
    events = [AuditEvent(id=r["id"], pair_id=r["pair_id"], action=r["action"],
                         actor=_actor(r["actor_id"], user_id, r["details"]), entry_id=r["entry_id"],
                         details={k: str(v) for k, v in r["details"].items()}, at=r["created_at"])
              for r in rows]
    return AuditOut(events=events, next_before=events[-1].id if len(events) == limit else None)


def _actor(actor_id: UUID | None, viewer: UUID, details: dict[str, Any]) -> str:
    if actor_id is None:
        return "operator" if details.get("via") == "operator" else "deleted"
    return "you" if actor_id == viewer else "partner"


def _audit(conn: Any, pair_id: UUID | None, action: str, actor_id: UUID, visible_to: list[UUID],
           **details: Any) -> None:
    from psycopg.types.json import Jsonb

    conn.execute(AUDIT, {"pair_id": pair_id, "action": action, "actor_id": actor_id,
                         "details": Jsonb({k: str(v) for k, v in details.items()}), "visible_to": visible_to})
