"""GET /me: the caller's balance, usable entitlements (own and pair) and recent generations."""

from __future__ import annotations

import uuid
from typing import Any

from common import ledger
from process_image import generations
from process_image import settings as settings_module


def me(user_id: uuid.UUID) -> dict[str, Any]:
    from common import entitlements  # the webhooks' part of the layer; only /me reads it here

    s = settings_module.get()
    return {
        "user_id": str(user_id),
        "balance": ledger.balance(user_id),
        "entitlements": entitlements.active_entitlements(user_id),
        "recent_generations": generations.recent(user_id, s.RECENT_GENERATIONS),
    }
