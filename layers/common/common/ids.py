"""Our keys are UUIDs: an id from outside becomes one here, or a 422."""

import uuid

from common.errors import InvalidInput


def as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput("not a valid id") from None
