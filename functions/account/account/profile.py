"""GET /me: who the caller is, their balance, what they may use, their pair.

``GET /me`` lives here, in the account function, the home of the user resource
(GET /me, DELETE /me, /me/exports). process-image lists recent generations at
``GET /generations`` instead (docs/account.md, "Where GET /me lives").
"""

from __future__ import annotations

from uuid import UUID

from account.models import Entitlement, MeOut, PairSummary
from common import db
from common.errors import NotFound

ME = "SELECT id, email, created_at, credits FROM users WHERE id = %(user_id)s"

PAIR = """
SELECT me.pair_id, partner.user_id AS partner_id, p.created_at AS since
  FROM pair_members me
  JOIN pairs p ON p.id = me.pair_id
  JOIN pair_members partner ON partner.pair_id = me.pair_id AND partner.user_id <> me.user_id
 WHERE me.user_id = %(user_id)s
"""


def me(user_id: UUID) -> MeOut:
    from common import entitlements

    row = db.execute(ME, {"user_id": user_id}, idempotent=True).fetchone()
    if row is None:  # provisioned by current_user just before: only a deletion in between
        raise NotFound("no such user")
    pair = db.execute(PAIR, {"user_id": user_id}, idempotent=True).fetchone()
    return MeOut(user_id=row["id"], email=row["email"], created_at=row["created_at"], balance=row["credits"],
                 entitlements=[Entitlement(**e) for e in entitlements.active_entitlements(user_id)],
                 pair=PairSummary(**pair) if pair else None)
