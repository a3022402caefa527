"""Two runs side by side, for "it worked yesterday, what changed?".

:func:`compare_runs` computes everything the compare page and the API show, from the two
executions: the agent's settings each was created with (``agents.AgentVersion``, found by
``Execution.agent_version``) and their difference, the difference of the inputs and of the
results (:func:`json_diff`), the errors, the attempts with their outcomes and the waits before
them, the timings, and the logs aligned by attempt. The runs are put in the order they were
created: the earlier one on the left, the later one on the right, and every difference reads
from the earlier to the later.

:func:`resolve_other` finds the run to compare with from what a person or a client gives: the
previous run of the agent, its last success, or a run's id or address.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from agents.models import AgentVersion

from .models import Execution, ExecutionAttempt, ExecutionEvent, ExecutionLog

WaitReason = Execution.WaitReason

# At most this many changes of one JSON value are listed; the rest are counted.
DIFF_LIMIT = 200
# Deeper than this, a value is compared whole (a changed subtree is one change).
DIFF_DEPTH = 32
# At most this many log lines of each run are shown (the first ones, by attempt).
LOG_LINES = 300
# What the pages and the API accept for "compare with" besides a run's id or address.
PREVIOUS, LAST_SUCCESS = "previous", "last-success"


# --- The difference of two JSON values ------------------------------------------------------

_MISSING: Any = object()
_IDENTIFIER = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Change:
    """One difference between two JSON values, at ``path`` ("" is the whole value):
    ``added`` (only in the new one), ``removed`` (only in the old one) or ``changed``."""

    path: str
    kind: str
    old: Any = None
    new: Any = None

    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"

    @property
    def where(self) -> str:
        return self.path or "(the whole value)"

    @property
    def old_text(self) -> str:
        return "" if self.kind == self.ADDED else _text(self.old)

    @property
    def new_text(self) -> str:
        return "" if self.kind == self.REMOVED else _text(self.new)

    def as_dict(self) -> dict:
        data: dict[str, Any] = {"path": self.path, "change": self.kind}
        if self.kind != self.ADDED:
            data["old"] = self.old
        if self.kind != self.REMOVED:
            data["new"] = self.new
        return data


@dataclass
class Diff:
    """The changes from one JSON value to another, at most :data:`DIFF_LIMIT` of them listed
    (``more``: how many were left out)."""

    changes: list[Change] = field(default_factory=list)
    more: int = 0

    @property
    def same(self) -> bool:
        return not self.changes and not self.more

    @property
    def total(self) -> int:
        return len(self.changes) + self.more

    def as_dict(self) -> dict:
        return {
            "same": self.same,
            "changes": [c.as_dict() for c in self.changes],
            "more": self.more,
        }


def _text(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    except RecursionError:
        return "(nested too deeply to show)"


def _scalar_same(old: Any, new: Any) -> bool:
    """Equal as JSON scalars: 1 and 1.0 are one number; true is not 1; "1" is not 1."""
    if isinstance(old, bool) or isinstance(new, bool):
        return type(old) is type(new) and old == new
    if isinstance(old, int | float) and isinstance(new, int | float):
        return old == new
    return type(old) is type(new) and old == new


def _same(old: Any, new: Any) -> bool:
    """Equal as JSON values (see :func:`_scalar_same`), however deep: with a list of pairs to
    look at rather than recursion."""
    pending = [(old, new)]
    while pending:
        a, b = pending.pop()
        if isinstance(a, dict) and isinstance(b, dict):
            if a.keys() != b.keys():
                return False
            pending.extend((a[k], b[k]) for k in a)
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return False
            pending.extend(zip(a, b, strict=True))
        elif isinstance(a, dict | list) or isinstance(b, dict | list) or not _scalar_same(a, b):
            return False
    return True


def _key_path(path: str, key: str) -> str:
    if _IDENTIFIER.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def json_diff(old: Any, new: Any, *, limit: int = DIFF_LIMIT) -> Diff:
    """The changes from ``old`` to ``new`` (JSON values), by path: ``order.items[2].sku``,
    ``headers["Content-Type"]``. Objects are compared key by key in the keys' alphabetical order
    (Postgres keeps an object's keys in an order of its own, SQLite as written: the same two
    runs must read the same on both), lists item by item (items past the shorter
    list's end are added or removed); anything else, or a value nested deeper than
    :data:`DIFF_DEPTH`, changes as a whole. Pure: no database, no clock."""
    diff = Diff()

    def add(change: Change) -> None:
        if len(diff.changes) < limit:
            diff.changes.append(change)
        else:
            diff.more += 1

    def walk(old: Any, new: Any, path: str, depth: int) -> None:
        if old is _MISSING:
            add(Change(path, Change.ADDED, new=new))
        elif new is _MISSING:
            add(Change(path, Change.REMOVED, old=old))
        elif depth < DIFF_DEPTH and isinstance(old, dict) and isinstance(new, dict):
            for key in sorted({*old, *new}):
                walk(
                    old.get(key, _MISSING), new.get(key, _MISSING), _key_path(path, key), depth + 1
                )
        elif depth < DIFF_DEPTH and isinstance(old, list) and isinstance(new, list):
            for index in range(max(len(old), len(new))):
                walk(
                    old[index] if index < len(old) else _MISSING,
                    new[index] if index < len(new) else _MISSING,
                    f"{path}[{index}]",
                    depth + 1,
                )
        elif not _same(old, new):
            add(Change(path, Change.CHANGED, old=old, new=new))

    walk(old, new, "", 0)
    return diff


# --- Two runs --------------------------------------------------------------------------------


class CompareRefused(Exception):
    """The run to compare with could not be found (``code`` "not_found", a 404) or was not
    given in a way that can be read (``code`` "invalid", a 400)."""

    def __init__(self, message: str, *, code: str = "not_found"):
        super().__init__(message)
        self.message = message
        self.code = code


_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


def resolve_other(execution: Execution, given: str, *, owner) -> Execution:
    """The run of ``owner`` to compare ``execution`` with: ``previous`` (the run of the same
    agent created just before it), ``last-success`` (the agent's latest successful run other
    than it), or a run's id, or an address with one in it (a copied execution page URL).
    Raises :class:`CompareRefused` saying what was wrong."""
    given = (given or "").strip()
    runs = Execution.objects.filter(owner=owner).select_related("agent")
    if given == PREVIOUS:
        other = (
            runs.filter(agent_id=execution.agent_id)
            .filter(
                Q(created_at__lt=execution.created_at)
                | Q(created_at=execution.created_at, id__lt=execution.pk)
            )
            .order_by("-created_at", "-id")
            .first()
        )
        if other is None:
            raise CompareRefused("This agent has no run before this one.")
        return other
    if given == LAST_SUCCESS:
        other = (
            runs.filter(agent_id=execution.agent_id, status=Execution.Status.SUCCEEDED)
            .exclude(pk=execution.pk)
            .order_by("-created_at", "-id")
            .first()
        )
        if other is None:
            raise CompareRefused("This agent has no other run that succeeded.")
        return other
    if not given:
        raise CompareRefused(
            "Give the id or the address of the run to compare with.", code="invalid"
        )
    found = _UUID.search(given)
    if found is None:
        raise CompareRefused(
            f"“{given[:100]}” is not a run's id or address: paste the id shown under a run's "
            "title, or the address of its page.",
            code="invalid",
        )
    public_id = uuid.UUID(found.group(0))
    other = runs.filter(uuid=public_id).first()
    if other is None:
        raise CompareRefused(f"You have no run with the id {public_id}.")
    if other.pk == execution.pk:
        raise CompareRefused(
            "That is this run: choose another one to compare with.", code="invalid"
        )
    return other


@dataclass
class AttemptRow:
    """One attempt of a run, with the wait before it (after the run was created, or after the
    attempt before it ended) and why it waited, in words."""

    attempt: ExecutionAttempt
    waited: timedelta | None
    waits: list[str]

    @property
    def outcome(self) -> str:
        return self.attempt.get_outcome_display() if self.attempt.outcome else "Running"

    def as_dict(self) -> dict:
        a = self.attempt
        return {
            "number": a.number,
            "outcome": a.outcome or "running",
            "worker": a.worker,
            "started_at": a.started_at,
            "finished_at": a.finished_at,
            "duration": _seconds(a.duration),
            "error_category": a.error_category,
            "error_message": a.error_message,
            "retry_delay": a.retry_delay,
            "waited_before": _seconds(self.waited),
            "waits": self.waits,
        }


@dataclass
class RunSide:
    """One of the two runs as the comparison shows it."""

    execution: Execution
    settings: AgentVersion | None
    attempts: list[AttemptRow]
    logs: dict[int, list[ExecutionLog]]
    hidden_logs: int
    total: timedelta | None

    @property
    def queued(self) -> timedelta | None:
        """How long it waited for its first attempt (None: it has not started)."""
        return self.attempts[0].waited if self.attempts else None

    @property
    def version_words(self) -> str:
        if self.settings is None:
            return "configuration not recorded for this run"
        return f"version {self.settings.version}"

    def as_dict(self) -> dict:
        e = self.execution
        return {
            "id": str(e.uuid),
            "agent": {"id": str(e.agent.uuid), "name": e.agent.name},
            "status": e.status,
            "status_label": e.status_label,
            "trigger": e.trigger,
            "created_at": e.created_at,
            "started_at": e.started_at,
            "finished_at": e.finished_at,
            "agent_version": e.agent_version,
            "configuration_version": self.settings.version if self.settings else None,
            "configuration": self.settings.snapshot if self.settings else None,
            "input": e.input,
            "result": e.result,
            "error": (
                {
                    "category": e.error_category,
                    "title": e.error_title,
                    "message": e.error_message,
                }
                if e.error_title or e.error_message
                else None
            ),
            "attempts": [row.as_dict() for row in self.attempts],
            "timings": {
                "queued": _seconds(self.queued),
                "attempts": [_seconds(row.attempt.duration) for row in self.attempts],
                "total": _seconds(self.total),
            },
            "logs_not_shown": self.hidden_logs,
        }


@dataclass
class ConfigComparison:
    """The settings each run was created with, and how they differ."""

    before: AgentVersion | None
    after: AgentVersion | None
    diff: Diff

    @property
    def recorded(self) -> bool:
        return self.before is not None and self.after is not None

    @property
    def changed(self) -> bool:
        return self.recorded and not self.diff.same

    @property
    def words(self) -> str:
        before, after = self.before, self.after
        if before is None and after is None:
            return "Configuration not recorded for either run (they are older than the record)."
        if before is None or after is None:
            which = "the earlier run" if before is None else "the later run"
            return f"Configuration not recorded for {which}: it cannot be compared."
        if before.pk == after.pk:
            return f"Same configuration (version {before.version})."
        if self.diff.same:
            return f"Same configuration (versions {before.version} and {after.version})."
        return (
            f"Configuration changed between these runs: version {before.version} → {after.version}."
        )

    def as_dict(self) -> dict:
        return {
            "recorded": self.recorded,
            "changed": self.changed,
            "summary": self.words,
            "before_version": self.before.version if self.before else None,
            "after_version": self.after.version if self.after else None,
            "diff": self.diff.as_dict() if self.recorded else None,
        }


@dataclass
class LogPair:
    """The log lines of one attempt number in each run (0: before the first attempt)."""

    number: int
    before: list[ExecutionLog]
    after: list[ExecutionLog]

    @property
    def sides(self) -> tuple[list[ExecutionLog], list[ExecutionLog]]:
        return (self.before, self.after)


@dataclass
class Comparison:
    before: RunSide
    after: RunSide
    config: ConfigComparison
    input: Diff
    result: Diff
    attempts: list[tuple[AttemptRow | None, AttemptRow | None]]
    logs: list[LogPair]

    @property
    def sides(self) -> tuple[RunSide, RunSide]:
        return (self.before, self.after)

    @property
    def same_agent(self) -> bool:
        return self.before.execution.agent_id == self.after.execution.agent_id

    def as_dict(self) -> dict:
        return {
            "same_agent": self.same_agent,
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
            "configuration": self.config.as_dict(),
            "input": self.input.as_dict(),
            "result": self.result.as_dict(),
            "logs": [
                {
                    "attempt": pair.number,
                    "before": [_log(line) for line in pair.before],
                    "after": [_log(line) for line in pair.after],
                }
                for pair in self.logs
            ],
        }


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else round(value.total_seconds(), 3)


def _log(line: ExecutionLog) -> dict:
    return {"at": line.at, "level": line.level, "message": line.message}


def _label(reason: str) -> str:
    return WaitReason(reason).label if reason in WaitReason.values else reason


def _waits(events: list[ExecutionEvent], logs: list[ExecutionLog]) -> dict[int, list[str]]:
    """Why the run waited before each attempt, by the attempt's number, in words, from its
    events (created waiting, waiting to retry) and the lines the limits logged."""
    waits: dict[int, list[str]] = {}

    def add(before_attempt: int, words: str) -> None:
        seen = waits.setdefault(before_attempt, [])
        if words and words not in seen:
            seen.append(words)

    for event in events:
        reason = (event.data or {}).get("wait_reason") or ""
        if event.to_status == Execution.Status.RETRYING:
            reason = reason or WaitReason.BACKOFF
        if reason:
            add(event.attempt + 1, _label(reason))
    for line in logs:
        reason = (line.data or {}).get("wait_reason") or ""
        if reason:
            add(line.attempt + 1, _label(reason))
    return waits


def _side(execution: Execution, *, now: datetime) -> RunSide:
    attempts = list(execution.attempts.all())
    events = list(execution.events.all())
    waiting_lines = list(execution.logs.filter(data__has_key="wait_reason"))
    waits = _waits(events, waiting_lines)
    rows, last_end = [], execution.created_at
    for attempt in attempts:
        waited = attempt.started_at - last_end if last_end else None
        rows.append(AttemptRow(attempt, waited, waits.get(attempt.number, [])))
        last_end = attempt.finished_at
    lines = list(execution.logs.order_by("id")[: LOG_LINES + 1])
    hidden = 0
    if len(lines) > LOG_LINES:
        lines = lines[:LOG_LINES]
        hidden = execution.logs.count() - LOG_LINES
    logs: dict[int, list[ExecutionLog]] = {}
    for line in lines:
        logs.setdefault(line.attempt, []).append(line)
    end = execution.finished_at or (None if execution.is_terminal else now)
    settings = execution.agent.version_at(execution.agent_version)
    return RunSide(
        execution=execution,
        settings=settings,
        attempts=rows,
        logs=logs,
        hidden_logs=hidden,
        total=(end - execution.created_at) if end else None,
    )


def compare_runs(*, one: Execution, other: Execution, now: datetime | None = None) -> Comparison:
    """The comparison of two runs (of the same agent or not), the earlier one first. The
    caller has checked that both are the viewer's."""
    now = now or timezone.now()
    before, after = sorted((one, other), key=lambda e: (e.created_at, e.pk))
    left, right = _side(before, now=now), _side(after, now=now)
    config = ConfigComparison(
        before=left.settings,
        after=right.settings,
        diff=(
            json_diff(left.settings.snapshot, right.settings.snapshot)
            if left.settings and right.settings
            else Diff()
        ),
    )
    count = max(len(left.attempts), len(right.attempts))
    attempts = [
        (
            left.attempts[i] if i < len(left.attempts) else None,
            right.attempts[i] if i < len(right.attempts) else None,
        )
        for i in range(count)
    ]
    numbers = sorted({*left.logs, *right.logs})
    logs = [LogPair(n, left.logs.get(n, []), right.logs.get(n, [])) for n in numbers]
    return Comparison(
        before=left,
        after=right,
        config=config,
        input=json_diff(before.input, after.input),
        result=json_diff(before.result, after.result),
        attempts=attempts,
        logs=logs,
    )
