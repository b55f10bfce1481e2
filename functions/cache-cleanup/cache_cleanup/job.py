"""The cleanup run: every purge takes turns, one bounded batch at a time, until all are
done or the time budget is spent.

Taking turns (rather than finishing one table before the next) means a large backlog in
one table, say after an outage, cannot starve the others: every run makes progress on
each. A purge is done when a batch comes back short. The run stops cleanly before the
Lambda deadline: it starts a batch only if the time left exceeds the safety margin plus
twice the slowest batch so far. Whatever is left is picked up by the next run; the report
says how much (``remaining_expired``, counted up to ``REMAINING_CAP`` per table).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cache_cleanup import purge

#: Remaining rows are counted up to this many per table (a count reads the index range,
#: so it is capped like everything else); a value equal to the cap means "at least".
REMAINING_CAP = 100_000


class Budget:
    """The time a run may use: the Lambda deadline and the event's ``max_seconds``."""

    def __init__(self, remaining_ms: Callable[[], int], *, max_seconds: float | None = None,
                 margin_ms: int = 1000):
        self._remaining_ms = remaining_ms  # context.get_remaining_time_in_millis
        self._started = time.monotonic()
        self._max_seconds = max_seconds
        self._margin_s = margin_ms / 1000
        self._slowest_s = 0.0

    def left_s(self) -> float:
        left = self._remaining_ms() / 1000
        if self._max_seconds is not None:
            left = min(left, self._max_seconds - (time.monotonic() - self._started))
        return left

    def allows_batch(self) -> bool:
        return self.left_s() > self._margin_s + 2 * self._slowest_s

    @property
    def slowest_s(self) -> float:
        return self._slowest_s

    def timed(self, fn: Any, *args: Any) -> Any:
        started = time.monotonic()
        try:
            return fn(*args)
        finally:
            self._slowest_s = max(self._slowest_s, time.monotonic() - started)


@dataclass
class Report:
    deleted: dict[str, int] = field(default_factory=lambda: {p.name: 0 for p in purge.PURGES})
    refunded: int = 0
    remaining_expired: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    dry_run: bool = False
    batches: int = 0
    slowest_batch_s: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"deleted": dict(self.deleted), "refunded": self.refunded,
                "remaining_expired": dict(self.remaining_expired), "complete": self.complete,
                "dry_run": self.dry_run, "batches": self.batches,
                "slowest_batch_ms": round(self.slowest_batch_s * 1000, 1), "seconds": round(self.seconds, 3)}


def run(budget: Budget, limits: purge.Limits, *, batch_size: int, dry_run: bool = False,
        pause_s: float = 0.0) -> Report:
    """Purge expired rows and refund stale reservations within ``budget``.

    ``pause_s`` is slept after each round of batches while work remains: it leaves the
    database's CPU to the application's own queries between rounds (measured with
    scripts/bench/cleanup.py). ``dry_run`` changes nothing and reports what is eligible
    (``remaining_expired``).
    Safe to run twice at once: the purges skip rows the other run has locked, and a
    reservation is refunded at most once (its status changes once).
    """
    started = time.monotonic()
    report = Report(dry_run=dry_run)
    pending: list[str] = [] if dry_run else [purge.RESERVATIONS, *(p.name for p in purge.PURGES)]
    by_name = {p.name: p for p in purge.PURGES}
    while pending and budget.allows_batch():
        for name in list(pending):
            if not budget.allows_batch():
                break
            report.batches += 1
            if name == purge.RESERVATIONS:
                seen, refunded = budget.timed(purge.refund_stale, limits, batch_size)
                report.refunded += refunded
            else:
                seen = budget.timed(by_name[name].batch, limits, batch_size)
                report.deleted[name] += seen
            if seen < batch_size:
                pending.remove(name)
        if pending and pause_s:
            time.sleep(pause_s)
    report.complete = not pending
    report.slowest_batch_s = budget.slowest_s
    report.remaining_expired = {p.name: p.remaining(limits, REMAINING_CAP) for p in purge.PURGES}
    report.remaining_expired[purge.RESERVATIONS] = purge.stale_remaining(limits, REMAINING_CAP)
    if dry_run:
        report.complete = not any(report.remaining_expired.values())
    report.seconds = time.monotonic() - started
    return report
