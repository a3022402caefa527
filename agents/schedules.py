"""When a schedule runs, without the database: cron expressions, slots in a time zone, DST, words.

Everything here is pure. Functions take the instant they reason about (``after=``, ``at=``) as
an aware datetime and return aware UTC datetimes; nothing reads the clock or the database.

Three kinds of timing (see :func:`timing_for`):

* **cron**: five fields (minute, hour, day of month, month, day of week) evaluated on the wall
  clock of an IANA time zone. Each field takes ``*``, numbers, ranges ``a-b``, steps ``*/n``,
  ``a-b/n`` and ``a/n``, comma lists, and names (``jan``..``dec``, ``sun``..``sat``; day 7 is
  Sunday too). ``@hourly``, ``@daily``/``@midnight``, ``@weekly``, ``@monthly`` and
  ``@yearly``/``@annually`` are shorthands. As in Vixie cron, when both the day of month and the
  day of week are restricted (neither starts with ``*``) a day matching either runs.
* **interval**: every N seconds on a fixed grid (``anchor + k * N``), so slots never drift.
* **once**: a single instant.

Daylight saving (cron only, the others are absolute instants):

* A local time that does not exist (the clocks jump over it) runs once, at the first valid
  instant after the jump: ``30 2 * * *`` in Europe/Paris runs at 03:00 on the spring day. Several
  skipped times collapse into that one run.
* A local time that happens twice (the clocks go back) runs once, the first time (``fold=0``).

:func:`dst_notices` finds the coming changes that affect an expression, so that the page can say
so when the schedule is saved.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache

# How far ahead a cron expression is searched for its next run. Eight years covers 29 February
# (with day-of-week restricted as well, a match comes much sooner).
SEARCH_DAYS = 8 * 366

MONTH_NAMES = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]  # fmt: skip
DAY_NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]

_MONTH_ALIASES = {name[:3].lower(): number for number, name in enumerate(MONTH_NAMES, 1)}
_DAY_ALIASES = {name[:3].lower(): number for number, name in enumerate(DAY_NAMES)}

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class CronError(ValueError):
    """The cron expression cannot be read; the message says where, in words."""


@dataclass(frozen=True)
class _Field:
    label: str
    low: int
    high: int
    aliases: dict[str, int]


_FIELDS = (
    _Field("Minute", 0, 59, {}),
    _Field("Hour", 0, 23, {}),
    _Field("Day of month", 1, 31, {}),
    _Field("Month", 1, 12, _MONTH_ALIASES),
    # 7 is accepted as Sunday and folded into 0.
    _Field("Day of week", 0, 7, _DAY_ALIASES),
)
_TOKEN = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>[0-9]+))?$")


def _value(field: _Field, text: str) -> int:
    if text in field.aliases:
        return field.aliases[text]
    if not text.isdigit():
        raise CronError(f"{field.label}: “{text}” is not a number or a known name.")
    number = int(text)
    if not field.low <= number <= field.high:
        raise CronError(f"{field.label}: {number} is out of range ({field.low} to {field.high}).")
    return number


def _parse_field(field: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        match = _TOKEN.match(part)
        if not match:
            raise CronError(f"{field.label}: “{part or text}” is not understood.")
        span, step = match["range"], match["step"]
        if span == "*":
            low, high = field.low, field.high
        elif "-" in span:
            first, last = span.split("-", 1)
            low, high = _value(field, first), _value(field, last)
            if low > high:
                raise CronError(f"{field.label}: the range {span} runs backwards.")
        else:
            low = _value(field, span)
            # "5/15" means from 5 to the end, in steps of 15; a bare "5" is just 5.
            high = field.high if step else low
        every = 1
        if step is not None:
            every = int(step)
            if every == 0:
                raise CronError(f"{field.label}: a step of 0 never advances.")
        values.update(range(low, high + 1, every))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A parsed five-field cron expression (minute hour day-of-month month day-of-week)."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    day_star: bool
    weekday_star: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        return _parse_cron(" ".join(str(text).split()))

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = day.isoweekday() % 7 in self.weekdays
        if self.day_star or self.weekday_star:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def local_times(self, start: datetime, *, days: int = SEARCH_DAYS) -> Iterator[datetime]:
        """Naive wall-clock times that match, from ``start`` (naive, inclusive) onwards."""
        first_day = start.date()
        for offset in range(days):
            day = first_day + timedelta(days=offset)
            if not self.matches_day(day):
                continue
            for hour in self.hours:
                if offset == 0 and hour < start.hour:
                    continue
                for minute in self.minutes:
                    candidate = datetime.combine(day, time(hour, minute))
                    if candidate >= start:
                        yield candidate


@cache
def _parse_cron(text: str) -> Cron:
    if not text:
        raise CronError("Enter a cron expression, such as “0 9 * * 1-5”.")
    text = MACROS.get(text.lower(), text)
    parts = text.split()
    if len(parts) != 5:
        raise CronError(
            f"A cron expression has five fields (minute hour day-of-month month day-of-week); "
            f"this one has {len(parts)}."
        )
    minutes, hours, days, months, weekdays = (
        _parse_field(field, part) for field, part in zip(_FIELDS, parts, strict=True)
    )
    weekdays = frozenset(d % 7 for d in weekdays)
    cron = Cron(
        text=text,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=days,
        months=months,
        weekdays=weekdays,
        day_star=parts[2].startswith("*"),
        weekday_star=parts[4].startswith("*"),
    )
    if cron.weekday_star and not any(
        day <= _longest_month(month) for month in months for day in days
    ):
        raise CronError("This expression never runs: no month has that day.")
    return cron


def _longest_month(month: int) -> int:
    return 29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31


# --- Time zones -------------------------------------------------------------------------------


@cache
def available_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def get_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone called ``name``; ValueError for anything else."""
    if name not in available_zones():
        raise ValueError(f"“{name}” is not an IANA time zone (such as Europe/Paris).")
    return zoneinfo.ZoneInfo(name)


@dataclass(frozen=True)
class LocalTime:
    """A wall-clock time resolved to one instant, and how (``ok``, ``gap`` or ``fold``)."""

    at: datetime
    how: str


def resolve(naive: datetime, zone: zoneinfo.ZoneInfo) -> LocalTime:
    """The instant a scheduled wall-clock time runs at in ``zone``, with the DST policy."""
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    at = first.astimezone(UTC)
    if first.utcoffset() == second.utcoffset():
        return LocalTime(at, "ok")
    if at.astimezone(zone).replace(tzinfo=None) == naive:
        # It happens twice: the first time (fold=0) is the one that runs.
        return LocalTime(at, "fold")
    # It does not exist. PEP 495: fold=0 reads it with the offset from before the jump, fold=1
    # with the one after, so the jump lies between those two readings.
    return LocalTime(_transition(second.astimezone(UTC), at, zone), "gap")


def _transition(low: datetime, high: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first instant in (low, high] whose UTC offset is the one ``high`` has."""
    target = high.astimezone(zone).utcoffset()
    lo, hi = int(low.timestamp()), int(high.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


# --- Timings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CronTiming:
    cron: Cron
    zone: zoneinfo.ZoneInfo

    def next_after(self, after: datetime) -> datetime | None:
        local = after.astimezone(self.zone).replace(tzinfo=None, second=0, microsecond=0)
        for naive in self.cron.local_times(local):
            at = resolve(naive, self.zone).at
            if at > after:
                return at
        return None

    def latest(self, at: datetime, *, since: datetime) -> datetime | None:
        """The last slot in [since, at], or None."""
        found = None
        # Search back from ``at`` in growing windows, so that a frequent expression does not
        # walk from ``since`` through every slot of a long outage.
        for window in (
            timedelta(minutes=2), timedelta(hours=2), timedelta(days=2), timedelta(days=32),
            timedelta(days=367), timedelta(days=SEARCH_DAYS),
        ):  # fmt: skip
            floor = since - timedelta(microseconds=1)
            start = max(at - window, floor)
            candidate = self.next_after(start)
            if candidate is not None and candidate <= at:
                found = candidate
                break
            if start == floor:  # searched all the way back to ``since``
                break
        if found is None:
            return None
        while (following := self.next_after(found)) is not None and following <= at:
            found = following
        return found


@dataclass(frozen=True)
class IntervalTiming:
    seconds: int
    anchor: datetime

    def next_after(self, after: datetime) -> datetime:
        step = timedelta(seconds=self.seconds)
        if after < self.anchor:
            return self.anchor
        return self.anchor + ((after - self.anchor) // step + 1) * step

    def latest(self, at: datetime, *, since: datetime) -> datetime | None:
        step = timedelta(seconds=self.seconds)
        if at < self.anchor:
            return None
        found = self.anchor + ((at - self.anchor) // step) * step
        return found if found >= since else None


@dataclass(frozen=True)
class OnceTiming:
    at: datetime

    def next_after(self, after: datetime) -> datetime | None:
        return self.at if self.at > after else None

    def latest(self, at: datetime, *, since: datetime) -> datetime | None:
        return self.at if since <= self.at <= at else None


Timing = CronTiming | IntervalTiming | OnceTiming


def timing_for(
    *,
    kind: str,
    cron: str = "",
    timezone: str = "UTC",
    interval_seconds: int | None = None,
    run_at: datetime | None = None,
    anchor: datetime | None = None,
) -> Timing:
    """The timing of a schedule's fields. ``anchor`` is any slot of an interval's grid."""
    if kind == "cron":
        return CronTiming(Cron.parse(cron), get_zone(timezone))
    if kind == "interval":
        if not interval_seconds or interval_seconds < 1:
            raise ValueError("An interval needs a positive number of seconds.")
        if anchor is None:
            raise ValueError("An interval needs an anchor slot.")
        return IntervalTiming(int(interval_seconds), anchor)
    if kind == "once":
        if run_at is None:
            raise ValueError("A one-off schedule needs a date and time.")
        return OnceTiming(run_at)
    raise ValueError(f"Unknown schedule kind {kind!r}.")


def next_runs(timing: Timing, *, after: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` slots strictly after ``after``."""
    runs: list[datetime] = []
    current = after
    while len(runs) < count and (current := timing.next_after(current)) is not None:
        runs.append(current)
    return runs


# --- Daylight saving ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DstNotice:
    """A coming clock change that moves some of the expression's runs."""

    kind: str  # "gap" (clocks go forward) or "fold" (clocks go back)
    day: date
    zone: str
    affected: tuple[time, ...]
    runs_at: time  # gap: the wall time the skipped runs happen at instead
    clocks_from: time
    clocks_to: time

    @property
    def message(self) -> str:
        when = f"{self.day:%a} {self.day.day} {self.day:%b %Y}"
        first, last = _hm(self.affected[0]), _hm(self.affected[-1])
        if self.kind == "gap":
            head = (
                f"On {when} the clocks in {self.zone} go forward from {_hm(self.clocks_from)} "
                f"to {_hm(self.clocks_to)}"
            )
            if len(self.affected) == 1:
                return f"{head}: the {first} run happens at {_hm(self.runs_at)} instead."
            return (
                f"{head}: the runs from {first} to {last} do not exist that day and run once, "
                f"at {_hm(self.runs_at)}."
            )
        head = (
            f"On {when} the clocks in {self.zone} go back from {_hm(self.clocks_from)} "
            f"to {_hm(self.clocks_to)}"
        )
        if len(self.affected) == 1:
            return f"{head}: {first} happens twice and the run happens once, the first time."
        return (
            f"{head}: {first} to {last} happen twice and each of those runs happens once, "
            f"the first time."
        )


def _hm(value: time) -> str:
    return f"{value.hour:02d}:{value.minute:02d}"


def transitions(
    zone: zoneinfo.ZoneInfo, *, start: datetime, days: int = 366
) -> list[tuple[datetime, timedelta, timedelta]]:
    """Offset changes of ``zone`` in [start, start + days]: (instant, before, after)."""
    found = []
    previous_at = start.astimezone(UTC)
    previous = previous_at.astimezone(zone).utcoffset()
    for _ in range(days):
        current_at = previous_at + timedelta(days=1)
        current = current_at.astimezone(zone).utcoffset()
        if current != previous:
            found.append((_transition(previous_at, current_at, zone), previous, current))
        previous_at, previous = current_at, current
    return found


def dst_notices(cron: Cron, zone_name: str, *, start: datetime, days: int = 366) -> list[DstNotice]:
    """The clock changes in the coming ``days`` that skip or repeat some of the runs."""
    zone = get_zone(zone_name)
    notices = []
    for at, before, after in transitions(zone, start=start, days=days):
        # Wall-clock times in [low, high) are skipped (gap) or happen twice (fold).
        if after > before:
            kind, low, high = "gap", (at + before), (at + after)
        else:
            kind, low, high = "fold", (at + after), (at + before)
        low, high = low.replace(tzinfo=None), high.replace(tzinfo=None)
        affected = []
        for naive in cron.local_times(low, days=2):
            if naive >= high:
                break
            affected.append(naive.time())
        if affected:
            notices.append(
                DstNotice(
                    kind=kind,
                    day=low.date(),
                    zone=zone_name,
                    affected=tuple(affected),
                    runs_at=high.time(),
                    # Forward: at ``low`` the clocks jump to ``high``. Back: at ``high`` they
                    # return to ``low``.
                    clocks_from=(low if kind == "gap" else high).time(),
                    clocks_to=(high if kind == "gap" else low).time(),
                )
            )
    return notices


# --- Words ----------------------------------------------------------------------------------


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _step(values, low: int, high: int) -> int | None:
    """n when ``values`` is exactly low, low+n, ... up to high (n > 1)."""
    values = sorted(values)
    if len(values) < 2 or values[0] != low:
        return None
    n = values[1] - values[0]
    if n > 1 and values == list(range(low, high + 1, n)):
        return n
    return None


def _spans(values) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for value in sorted(values):
        if spans and value == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], value)
        else:
            spans.append((value, value))
    return spans


def _plural_days(days: list[int]) -> str:
    return _join([DAY_NAMES[d] for d in days])


def _day_phrase(cron: Cron) -> tuple[str, str, bool]:
    """(prefix form, suffix form, restricted): "every weekday" / "on weekdays"."""
    all_days = cron.days == frozenset(range(1, 32))
    all_weekdays = cron.weekdays == frozenset(range(7))
    all_months = cron.months == frozenset(range(1, 13))
    day_restricted = not cron.day_star and not all_days
    weekday_restricted = not cron.weekday_star and not all_weekdays
    # With one of the two starred, the other decides alone.
    if cron.day_star and not all_days:
        day_restricted = True
    if cron.weekday_star and not all_weekdays:
        weekday_restricted = True
    months = sorted(cron.months)
    in_months = "" if all_months else " in " + _join([MONTH_NAMES[m - 1] for m in months])
    of_months = (
        "of every month" if all_months else "of " + _join([MONTH_NAMES[m - 1] for m in months])
    )

    parts_prefix, parts_suffix = [], []
    if day_restricted:
        days = sorted(cron.days)
        step = _step(days, 1, 31)
        if step:
            text = f"every {step} days from the 1st {of_months}"
        else:
            text = f"on the {_join([_ordinal(d) for d in days])} {of_months}"
        parts_prefix.append(text)
        parts_suffix.append(text)
    if weekday_restricted:
        weekdays = sorted(cron.weekdays)
        if weekdays == [1, 2, 3, 4, 5]:
            prefix, suffix = "every weekday", "on weekdays"
        elif weekdays == [0, 6]:
            prefix, suffix = "every Saturday and Sunday", "on weekends"
        else:
            names = [DAY_NAMES[d] for d in weekdays]
            prefix, suffix = f"every {_join(names)}", "on " + _join([n + "s" for n in names])
        if not day_restricted:
            prefix, suffix = prefix + in_months, suffix + in_months
        parts_prefix.append(prefix)
        parts_suffix.append(suffix)
    joiner = " or " if (day_restricted and weekday_restricted and not cron.day_star
                        and not cron.weekday_star) else " and "  # fmt: skip
    if parts_prefix:
        return joiner.join(parts_prefix), joiner.join(parts_suffix), True
    if not all_months:
        return "every day" + in_months, in_months.strip(), True
    return "every day", "", False


def _time_phrase(cron: Cron) -> tuple[str, bool]:
    """(phrase, at_times): "at 09:00 and 17:00" (True) or "every 15 minutes" (False)."""
    minutes, hours = list(cron.minutes), list(cron.hours)
    all_minutes = len(minutes) == 60
    all_hours = len(hours) == 24
    minute_step = _step(minutes, 0, 59)

    if all_hours:
        if all_minutes:
            return "every minute", False
        if minute_step:
            return f"every {minute_step} minutes", False
        if len(minutes) == 1:
            return ("every hour on the hour" if minutes[0] == 0
                    else f"every hour at :{minutes[0]:02d}"), False  # fmt: skip
    if len(minutes) * len(hours) <= 4:
        times = [f"{h:02d}:{m:02d}" for h in hours for m in minutes]
        return "at " + _join(times), True
    hour_step = _step(hours, 0, 23)
    if len(minutes) == 1 and hour_step:
        at = "on the hour" if minutes[0] == 0 else f"at :{minutes[0]:02d}"
        return f"every {hour_step} hours {at}", False
    if all_minutes:
        minute_words = "every minute"
    elif minute_step:
        minute_words = f"every {minute_step} minutes"
    else:
        minute_words = "at " + _join([f":{m:02d}" for m in minutes]) + " past the hour"
    if all_hours:
        return minute_words, False
    spans = _spans(hours)
    hour_words = _join([
        f"from {lo:02d}:00 to {hi:02d}:59" if lo != hi else f"from {lo:02d}:00 to {lo:02d}:59"
        for lo, hi in spans
    ])  # fmt: skip
    return f"{minute_words} {hour_words}", False


def describe_cron(text: str, zone_name: str) -> str:
    """A cron expression in words: "every weekday at 09:00 Europe/Paris"."""
    cron = Cron.parse(text)
    time_words, at_times = _time_phrase(cron)
    prefix, suffix, restricted = _day_phrase(cron)
    if at_times:
        words = f"{prefix} {time_words}"
    elif restricted:
        words = f"{time_words} {suffix}"
    else:
        words = time_words
    # Every UTC offset in use is a whole number of quarter hours, so these patterns run at the
    # same instants in every zone, and naming the zone would only add noise.
    step = 1 if len(cron.minutes) == 60 else _step(cron.minutes, 0, 59)
    minute_only = not restricted and len(cron.hours) == 24 and step in (1, 3, 5, 15)
    return words if minute_only else f"{words} {zone_name}"


def describe_interval(seconds: int) -> str:
    """Every N seconds in the largest whole unit: "every 2 seconds", "every 90 minutes"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            count = seconds // size
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return f"every {seconds} seconds"  # pragma: no cover (size 1 always divides)
