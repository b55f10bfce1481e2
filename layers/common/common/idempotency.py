"""Client idempotency keys: a Powertools idempotency persistence layer on Postgres.

``PostgresPersistenceLayer`` implements the four storage operations of Powertools'
``BasePersistenceLayer`` on the ``idempotency_records`` table with the semantics of its
DynamoDB layer:

- ``_put_record`` inserts an INPROGRESS record in one statement. A record that exists
  is taken over only when it has expired, or when it is INPROGRESS and its in-progress
  expiry (the previous invocation's Lambda deadline) has passed; otherwise
  ``IdempotencyItemAlreadyExistsError`` is raised and Powertools reads the record to
  return its stored result (COMPLETED), to refuse a concurrent duplicate (INPROGRESS:
  ``IdempotencyAlreadyInProgressError``) or a different payload under the same key
  (``IdempotencyValidationError``).
- ``_update_record`` stores the result (COMPLETED); ``_delete_record`` forgets a failed
  attempt so it can be retried.

Times are the caller's clock, as in the DynamoDB layer, so the database's decisions agree
with the checks Powertools makes in process (``DataRecord.is_expired``).

``run_idempotent`` is the entry point routes use (through ``common.http.idempotent``); it
also says whether the answer was a replay (``Outcome.replayed``), which ``common.http``
turns into the ``Idempotent-Replayed`` response header.
Importing this module imports the Powertools idempotency utility, which imports boto3
(~300 ms): only functions with idempotent routes pay it, on first use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    BasePersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from pydantic import BaseModel

from common import db

#: Record ids are ``<KEY_PREFIX>#<sha256 of [scope, key]>``.
KEY_PREFIX = "client"

# Insert, or take over a record that has expired or whose in-progress holder timed out;
# returns a row only when this call now owns the record.
PUT_RECORD = """
INSERT INTO idempotency_records AS r (id, status, expires_at, in_progress_expiry_ms, payload_hash, owner)
VALUES (%(id)s, %(status)s, to_timestamp(%(expiry)s), %(in_progress_expiry_ms)s, %(payload_hash)s, %(owner)s)
ON CONFLICT (id) DO UPDATE
   SET status = excluded.status, expires_at = excluded.expires_at,
       in_progress_expiry_ms = excluded.in_progress_expiry_ms,
       response_data = NULL, payload_hash = excluded.payload_hash, created_at = now(), owner = excluded.owner
 WHERE r.expires_at < to_timestamp(%(now_s)s)
    OR (r.status = 'INPROGRESS' AND r.in_progress_expiry_ms < %(now_ms)s)
RETURNING r.id
"""

GET_RECORD = """
SELECT id, status, extract(epoch FROM expires_at)::bigint AS expiry, in_progress_expiry_ms,
       response_data, payload_hash
  FROM idempotency_records
 WHERE id = %(id)s
"""

UPDATE_RECORD = """
UPDATE idempotency_records
   SET status = %(status)s, expires_at = to_timestamp(%(expiry)s), response_data = %(response_data)s,
       payload_hash = %(payload_hash)s
 WHERE id = %(id)s
"""

DELETE_RECORD = "DELETE FROM idempotency_records WHERE id = %(id)s"


@dataclass(frozen=True)
class Outcome[M: BaseModel]:
    """What ``run_idempotent`` answered: the result, and whether it is a stored one."""

    result: M
    replayed: bool


class PostgresPersistenceLayer(BasePersistenceLayer):
    """Idempotency records in Postgres, through this thread's ``common.db`` connection.

    ``owner`` (the user whose request it is) is stored with each record, so that an
    account deletion finds the user's records (their ids are hashes)."""

    def __init__(self, owner: Any = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Powertools' constructor is unannotated
        self.owner = owner

    def _get_record(self, idempotency_key: str) -> DataRecord:
        row = db.execute(GET_RECORD, {"id": idempotency_key}, idempotent=True).fetchone()
        if row is None:
            raise IdempotencyItemNotFoundError
        return DataRecord(
            idempotency_key=row["id"],
            status=row["status"],
            expiry_timestamp=row["expiry"],
            in_progress_expiry_timestamp=row["in_progress_expiry_ms"],
            response_data=row["response_data"] or "",
            payload_hash=row["payload_hash"] or "",
        )

    def _put_record(self, data_record: DataRecord) -> None:
        now = time.time()
        params = {
            "id": data_record.idempotency_key,
            "status": data_record.status,
            "expiry": data_record.expiry_timestamp,
            "in_progress_expiry_ms": data_record.in_progress_expiry_timestamp,
            "payload_hash": data_record.payload_hash or None,
            "owner": self.owner,
            "now_s": int(now),
            "now_ms": int(now * 1000),
        }
        # Not retried on a dropped connection: the first attempt may have committed.
        if db.execute(PUT_RECORD, params).fetchone() is None:
            raise IdempotencyItemAlreadyExistsError

    def _update_record(self, data_record: DataRecord) -> None:
        params = {
            "id": data_record.idempotency_key,
            "status": data_record.status,
            "expiry": data_record.expiry_timestamp,
            "response_data": data_record.response_data,
            "payload_hash": data_record.payload_hash or None,
        }
        db.execute(UPDATE_RECORD, params, idempotent=True)

    def _delete_record(self, data_record: DataRecord) -> None:
        db.execute(DELETE_RECORD, {"id": data_record.idempotency_key}, idempotent=True)


def run_idempotent[M: BaseModel](
    scope: str,
    idempotency_key: str | None,
    payload: Any,
    fn: Callable[[], M],
    *,
    model: type[M],
    expires_after_seconds: int = 24 * 3600,
    lambda_context: Any = None,
    owner: Any = None,
) -> Outcome[M]:
    """Run ``fn`` at most once per (``scope``, ``idempotency_key``) while the record lives.

    - no key: ``fn`` runs, nothing is stored;
    - first call: INPROGRESS is stored, ``fn`` runs, its result (a ``model``) is stored
      COMPLETED as the model's JSON and returned;
    - a replay gets the stored JSON validated back into ``model``;
    - repeat with the same payload: the stored result, ``fn`` not called (``replayed``);
    - repeat while the first runs: ``IdempotencyAlreadyInProgressError``;
    - repeat with another payload: ``IdempotencyValidationError``;
    - ``fn`` raised: the record is deleted and the exception propagates (retry allowed);
    - expired record, or an INPROGRESS one past its holder's Lambda deadline (taken from
      ``lambda_context``): ``fn`` runs again.

    ``owner`` (a user id) is stored with the record: an account deletion removes them.
    """
    if not idempotency_key:
        return Outcome(fn(), replayed=False)
    if callable(getattr(payload, "model_dump", None)):
        payload = payload.model_dump(mode="json")
    config = IdempotencyConfig(
        event_key_jmespath="[scope, key]",
        payload_validation_jmespath="payload",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=expires_after_seconds,
        hash_function="sha256",
    )
    if lambda_context is not None:
        config.register_lambda_context(lambda_context)

    ran = False

    # A layer per call: Powertools configures a layer once and keeps that configuration.
    @idempotent_function(data_keyword_argument="request", persistence_store=PostgresPersistenceLayer(owner),
                         config=config, key_prefix=KEY_PREFIX, output_serializer=PydanticSerializer(model))
    def once(request: dict[str, Any]) -> M:
        nonlocal ran
        ran = True
        return fn()

    result = once(request={"scope": scope, "key": idempotency_key, "payload": payload})
    # Powertools answers a stored result without calling the function: that is a replay.
    return Outcome(result, replayed=not ran)
