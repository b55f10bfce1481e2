"""DELETE /me: the account is deleted by the database's ``delete_account()`` (migration
0012) in one transaction, then its follow-ups run for a few seconds (the deletions log,
the objects under the user's prefix); what is left, cache-cleanup finishes.

Idempotent: deleting a deleted account answers the same receipt (the route lets this one
request through although the token's account is deleted; every other route answers 401).
"""

from __future__ import annotations

from uuid import UUID

from account.models import DeletionOut
from account.settings import settings
from common import db
from common.errors import InvalidInput
from common.observability import logger

DELETE = "SELECT delete_account(%(user_id)s) AS status"

#: Storage is pending until every prefix was swept empty once (it is swept again at
#: keep_until, for an upload that was in flight).
RECEIPT = """
SELECT d.deleted_at,
       EXISTS (SELECT 1 FROM account_object_deletions o
                WHERE o.prefix = %(prefix)s
                  AND (o.next_attempt_at < o.keep_until OR o.last_error IS NOT NULL)) AS storage_pending
  FROM account_deletions d
 WHERE d.user_id = %(user_id)s
"""


def confirm(user_id: UUID, confirm_user_id: UUID) -> None:
    """The explicit confirmation: the body names the caller's own id."""
    if confirm_user_id != user_id:
        raise InvalidInput("confirm_user_id must be your own user id (GET /me)", code="confirmation_mismatch")


def delete(user_id: UUID) -> DeletionOut:
    with db.transaction() as conn:
        status = db.one_row(conn.execute(DELETE, {"user_id": user_id}))["status"]
    logger.info("account deleted", extra={"status": status})
    if status == "deleted":
        from common import accounts

        done = accounts.run_followups(settings().DELETE_FOLLOWUP_BUDGET_S, user_id=user_id)
        logger.info("deletion follow-ups", extra={"followups": done.as_dict()})
    return receipt(user_id)


def receipt(user_id: UUID) -> DeletionOut:
    params = {"user_id": user_id, "prefix": f"users/{user_id}/"}
    row = db.one_row(db.execute(RECEIPT, params, idempotent=True))
    return DeletionOut(status="deleted", deleted_at=row["deleted_at"],
                       storage="pending" if row["storage_pending"] else "deleted")
