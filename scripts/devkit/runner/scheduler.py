"""The schedules of the template's functions, fired when due."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from devkit import cfn, schedules

if TYPE_CHECKING:
    from devkit.runner.app import Runner


@dataclass
class ScheduledRun:
    function: str
    schedule: cfn.Schedule
    expression: schedules.Expression
    next_run: datetime | None = None


class Scheduler:
    """Fires every enabled schedule when due, each run in a thread of its own (Scheduler
    invokes asynchronously, so a slow run never delays another)."""

    def __init__(self, runner: Runner, now: datetime | None = None):
        self.runner = runner
        self.entries: list[ScheduledRun] = []
        now = now or datetime.now(UTC)
        for fn in runner.functions.values():
            for sched in fn.schedule_list:
                try:
                    expression = schedules.parse(sched.expression, sched.timezone)
                except schedules.ScheduleError as exc:
                    raise cfn.TemplateError(f"{fn.name}, schedule {sched.name}: {exc}") from None
                entry = ScheduledRun(fn.name, sched, expression)
                entry.next_run = expression.next_after(now) if sched.enabled else None
                self.entries.append(entry)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_pending(self, now: datetime) -> list[threading.Thread]:
        """Start the runs due at ``now`` and schedule their next ones."""
        started = []
        for entry in self.entries:
            if entry.next_run is not None and entry.next_run <= now:
                entry.next_run = entry.expression.next_after(now)
                thread = threading.Thread(target=self.runner.run_schedule, args=(entry.function,),
                                          kwargs={"schedule": entry.schedule.name}, daemon=True)
                thread.start()
                started.append(thread)
        return started

    def _loop(self) -> None:
        while not self._stop.is_set():
            pending = [e.next_run for e in self.entries if e.next_run is not None]
            if not pending:
                return
            wait = (min(pending) - datetime.now(UTC)).total_seconds()
            if self._stop.wait(min(max(wait, 0), 30)):
                return
            self.run_pending(datetime.now(UTC))

    def start(self) -> None:
        if any(e.next_run for e in self.entries):
            self._thread = threading.Thread(target=self._loop, daemon=True, name="scheduler")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
