"""What one provider's part of a run did, and the time it may take."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Outcomes that are not a heal (an event no webhook brought, recorded now by reconcile):
#: a duplicate was delivered (or healed) before; unmatched found nothing to apply to; an
#: order with no transaction was abandoned at checkout (nothing was lost); an invalid
#: answer was not recorded.
NOT_HEALED = frozenset({"duplicate", "unmatched", "no_transaction", "invalid"})


@dataclass
class Deadline:
    """Stop starting work when less than ``margin_ms`` is left of the invocation."""

    remaining_ms: Callable[[], int]
    margin_ms: int

    def passed(self) -> bool:
        return self.remaining_ms() <= self.margin_ms


@dataclass
class Report:
    provider: str
    checked: int = 0  # events listed, orders inquired, subscribers fetched
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    complete: bool = True  # False: stopped early (deadline, provider error); the rest waits
    note: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def healed(self) -> int:
        return sum(n for status, n in self.outcomes.items() if status not in NOT_HEALED)

    def stop(self, note: str, *, error: bool = False) -> Report:
        self.complete = False
        self.note = note
        self.errors += error
        return self

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "healed": self.healed, "outcomes": dict(self.outcomes),
                "errors": self.errors, "complete": self.complete, "note": self.note,
                "seconds": round(time.monotonic() - self.started, 3)}
