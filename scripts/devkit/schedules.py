"""EventBridge Scheduler expressions for local runs: ``rate(value unit)``, ``cron(...)``
with AWS's six fields (minutes hours day-of-month month day-of-week year, ``?`` allowed,
day-of-week 1-7 = SUN-SAT) and ``at(yyyy-mm-ddThh:mm:ss)``, in the schedule's timezone.

cron fields go to ``croniter`` after translating AWS's dialect to its five-field one;
the year field, which croniter lacks, filters the candidates it yields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_CRON = re.compile(r"cron\((.+)\)")
_AT = re.compile(r"at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_MAX_YEAR = 2199  # the last year EventBridge accepts in a cron expression


class ScheduleError(ValueError):
    """An expression EventBridge Scheduler would reject, or that this module can't run."""


@dataclass(frozen=True)
class Expression:
    text: str
    timezone: str = "UTC"

    @property
    def kind(self) -> str:
        return self.text.split("(", 1)[0]

    def next_after(self, after: datetime) -> datetime | None:
        """The first run strictly after ``after`` (aware datetime); None when none is left."""
        tz = ZoneInfo(self.timezone)
        if m := _RATE.fullmatch(self.text):
            return after + timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2).rstrip("s")])
        if m := _AT.fullmatch(self.text):
            when = datetime.fromisoformat(m.group(1)).replace(tzinfo=tz)
            return when if when > after else None
        return _next_cron(self.text, after.astimezone(tz))


def parse(text: str, timezone: str = "UTC") -> Expression:
    """Validate ``text`` and return the expression; raises ScheduleError."""
    text = text.strip()
    try:
        ZoneInfo(timezone)
    except Exception:  # ZoneInfoNotFoundError, ValueError for malformed keys
        raise ScheduleError(f"unknown ScheduleExpressionTimezone {timezone!r}") from None
    if m := _RATE.fullmatch(text):
        if int(m.group(1)) < 1:
            raise ScheduleError(f"{text}: the rate must be a positive whole number")
        return Expression(text, timezone)
    if _AT.fullmatch(text):
        return Expression(text, timezone)
    if _CRON.fullmatch(text):
        _croniter_fields(text)  # raises on a malformed expression
        return Expression(text, timezone)
    raise ScheduleError(f"unsupported schedule expression {text!r}: use rate(...), cron(...) or at(...)")


def _dow(field: str) -> str:
    """AWS day-of-week (1-7 = SUN-SAT, nL = last weekday n) to croniter's (0-6, Ln)."""
    parts = []
    for part in field.split(","):
        if m := re.fullmatch(r"(\d)L", part):
            parts.append(f"L{int(m.group(1)) - 1}")
            continue
        head, tail = re.fullmatch(r"([^#/]*)(.*)", part).groups()  # type: ignore[union-attr]
        # only the days shift; "#k" (k-th weekday) and "/s" (step) keep their numbers
        parts.append(re.sub(r"\d+", lambda d: str(int(d.group()) - 1), head) + tail)
    return ",".join(parts)


def _years(field: str) -> set[int] | None:
    if field in ("*", "?"):
        return None
    years: set[int] = set()
    for part in field.split(","):
        rng, _, step = part.partition("/")
        if rng == "*":
            start, end = 1970, _MAX_YEAR
        elif "-" in rng:
            start, end = (int(v) for v in rng.split("-", 1))
        else:
            start = end = int(rng)
            if step:
                end = _MAX_YEAR
        years.update(range(start, end + 1, int(step or 1)))
    return years


def _croniter_fields(text: str) -> tuple[str, set[int] | None]:
    from croniter import croniter

    fields = _CRON.fullmatch(text).group(1).split()  # type: ignore[union-attr]
    if len(fields) != 6:
        raise ScheduleError(f"{text}: AWS cron takes 6 fields (minutes hours day-of-month month "
                            f"day-of-week year), got {len(fields)}")
    minute, hour, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise ScheduleError(f"{text}: exactly one of day-of-month and day-of-week must be '?'")
    five = " ".join([minute, hour, "*" if dom == "?" else dom, month, "*" if dow == "?" else _dow(dow)])
    try:
        years = _years(year)
    except ValueError:
        raise ScheduleError(f"{text}: bad year field {year!r}") from None
    if not croniter.is_valid(five):
        raise ScheduleError(f"{text}: not a valid cron expression")
    return five, years


def _next_cron(text: str, after: datetime) -> datetime | None:
    from croniter import croniter

    five, years = _croniter_fields(text)
    it = croniter(five, after)
    candidate: datetime = it.get_next(datetime)
    while years is not None and candidate.year not in years:
        later = [y for y in years if y > candidate.year]
        if not later:
            return None
        start = candidate.replace(year=min(later), month=1, day=1, hour=0, minute=0, second=0) - timedelta(
            seconds=1)
        it = croniter(five, start)
        candidate = it.get_next(datetime)
    return candidate
