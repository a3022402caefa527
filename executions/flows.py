"""Running flows: lay out a flow's steps, advance it when a step ends, stop it.

A flow execution (an agent of kind ``flow``, see ``agents.kinds.flow`` for the definition)
runs no code of its own. Its life:

1. **Start** (:func:`flow_start`, the ``executions.start_flow`` task): in one transaction the
   flow is claimed (queued -> running, attempt 1, like any execution), one :class:`FlowStep`
   is written per step of its definition (members of a parallel group too), steps a retried
   flow can reuse are marked so, and the first step is started.
2. **Advance** (:func:`flow_advance`): when a step's execution reaches a final state, its
   transaction asks, on commit, for the ``executions.advance_flow`` task. The advance reads the
   steps' executions, records how they ended, and starts what comes next: the next step, every
   member of a parallel group, or a wait (the flow then waits ``pause`` until ``wait_until``;
   no worker is held). It finishes the flow when the last step has succeeded, and fails it when
   a step failed (a group: once all its members have ended).
3. **Recovery** (:func:`advance_stalled`, in the dispatcher's tick): flows whose step ended
   without an advance (the process died between the commit and the message), waits that are
   over, and flows past their time limit (:func:`flow_time_out`).

Exactly once: a step starts only by a compare-and-set of its FlowStep from ``pending`` (unique
per flow and key), in the transaction that creates its execution, so repeated or concurrent
advances never start a step twice; the flow's own status changes are compare-and-sets
(``services.transition``).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.kinds.base import InvalidInputError
from agents.kinds.flow import FlowReferenceError, parse_when, render, step_type, wait_key
from agents.models import Agent

from .errors import CATEGORIES, Category
from .humanize import seconds_in_words
from .models import Execution, ExecutionAttempt, FlowStep
from .services import (
    ExecutionRefused,
    _close_attempt,
    attempt_closed,
    execution_cancel,
    execution_claim,
    execution_request,
    success_fields,
    transition,
)

logger = logging.getLogger("conveyor.flows")
Status = Execution.Status
WaitReason = Execution.WaitReason
Step = FlowStep.Status

# The recovery pass leaves a step that ended this recently to the advance its end asked for.
ADVANCE_GRACE = timedelta(seconds=5)

_ENDED_AS = {
    Status.SUCCEEDED: Step.SUCCEEDED,
    Status.FAILED: Step.FAILED,
    Status.CANCELLED: Step.CANCELLED,
}


# --- Start ----------------------------------------------------------------------------------


def flow_start(
    *, execution_id: int, expected_attempt: int, worker: str = "", at: datetime | None = None
) -> bool:
    """Claim a waiting flow, lay out its steps and start the first, in one transaction.
    Returns whether this call claimed it (a duplicate message claims nothing)."""
    at = at or timezone.now()
    with transaction.atomic():
        claimed = execution_claim(
            execution_id=execution_id, expected_attempt=expected_attempt, worker=worker, at=at
        )
        if claimed is None:
            return False
        flow_begin(flow=claimed[0], at=at)
    return True


def flow_begin(*, flow: Execution, at: datetime) -> None:
    """Lay out a just-claimed flow's steps and start the first (in the claim's transaction)."""
    with transaction.atomic():
        config = flow.agent.config or {}
        timeout = config.get("timeout")
        flow.deadline_at = at + timedelta(seconds=timeout) if timeout else None
        flow.heartbeat_at = None
        Execution.objects.filter(pk=flow.pk).update(deadline_at=flow.deadline_at, heartbeat_at=None)
        _lay_out(flow, config.get("steps") or [], at=at)
        depth = _depth(flow)
        if depth > settings.CONVEYOR_FLOW_MAX_DEPTH:
            _finish_failed(
                flow,
                at=at,
                category=Category.CONFIGURATION,
                message=(
                    f"This flow was started by other flows {depth - 1} levels deep; flows nest "
                    f"at most {settings.CONVEYOR_FLOW_MAX_DEPTH} deep. Run it on its own, or "
                    "flatten the flows that start it."
                ),
                reason="Nested too deep",
            )
            return
        _advance(flow, at=at)
    logger.info("flow started", extra={"action": "flow_started", "execution_id": str(flow.uuid)})


def _depth(flow: Execution) -> int:
    depth, parent_id = 1, flow.parent_id
    while parent_id is not None and depth <= settings.CONVEYOR_FLOW_MAX_DEPTH:
        depth += 1
        parent_id = Execution.objects.filter(pk=parent_id).values_list("parent_id", flat=True)[0]
    return depth


def _lay_out(flow: Execution, steps: list[dict], *, at: datetime) -> None:
    """One FlowStep per step; a retry of a flow reuses the steps that succeeded in the flow it
    retries (by key, as long as every step before them was reused too)."""
    reusable = _reusable(flow)
    flow_retry = (flow.agent.config or {}).get("retry")
    records: list[FlowStep] = []
    reusing = True
    for index, spec in enumerate(steps):
        kind = step_type(spec)
        key = spec.get("key") or wait_key(index)
        top = FlowStep(
            flow=flow, key=key, index=index, type=kind, spec=_with_retry(spec, flow_retry)
        )
        members = [
            FlowStep(
                flow=flow,
                key=m["key"],
                index=index,
                group=key,
                type=FlowStep.Type.RUN,
                spec=_with_retry(m, flow_retry),
            )
            for m in spec.get("parallel") or []
        ]
        for record in (top, *members):
            original = reusable.get(record.key) if reusing else None
            if original is not None and original.type == record.type:
                record.status = Step.SUCCEEDED
                record.result = original.result
                record.reused_from_id = original.reused_from_id or original.execution_id
                record.started_at = record.finished_at = at
                record.note = (
                    "Already waited in the run this one retries."
                    if record.type == FlowStep.Type.WAIT
                    else "Reused: it succeeded in the run this one retries."
                )
        if kind == FlowStep.Type.GROUP and members:
            if all(m.status == Step.SUCCEEDED for m in members):
                top.status, top.started_at, top.finished_at = Step.SUCCEEDED, at, at
            else:  # its members that succeeded are reused; the others run again
                top.status, top.reused_from_id, top.result, top.note = Step.PENDING, None, None, ""
        reusing = reusing and top.status == Step.SUCCEEDED
        records += [top, *members]
    FlowStep.objects.bulk_create(records)


def _with_retry(spec: dict, flow_retry: dict | None) -> dict:
    """A run step's definition with the retry settings it runs with: its own, else the
    flow's (else none: its agent's own)."""
    if step_type(spec) != FlowStep.Type.RUN or spec.get("retry") or not flow_retry:
        return spec
    return {**spec, "retry": flow_retry}


def _reusable(flow: Execution) -> dict[str, FlowStep]:
    """The steps that succeeded in the flow this one retries, by key."""
    if flow.retry_of_id is None:
        return {}
    done = FlowStep.objects.filter(flow_id=flow.retry_of_id, status=Step.SUCCEEDED)
    return {s.key: s for s in done}


# --- Advance --------------------------------------------------------------------------------


def flow_advance(*, flow_id: int, at: datetime | None = None) -> None:
    """Record how the flow's running steps ended and start what comes next (or finish it).
    Safe to call any number of times, from any process."""
    at = at or timezone.now()
    with transaction.atomic():
        flow = (
            Execution.objects.select_for_update(of=("self",))
            .select_related("agent")
            .filter(pk=flow_id)
            .first()
        )
        if flow is None:
            return
        if flow.status != Status.RUNNING:
            _collect(list(_steps(flow)), at=at)  # show how steps that were stopping ended
            return
        _advance(flow, at=at)


def _steps(flow: Execution):
    return (
        FlowStep.objects.filter(flow=flow)
        .select_related("execution__agent")
        .order_by("index", "id")
    )


def _advance(flow: Execution, *, at: datetime) -> None:
    steps = list(_steps(flow))
    _collect(steps, at=at)
    while True:
        top = [s for s in steps if not s.group]
        members = {s.key: [m for m in steps if m.group == s.key] for s in top}
        for group in (s for s in top if s.type == FlowStep.Type.GROUP):
            _settle_group(group, members[group.key], at=at)
        stopped = next((s for s in top if s.status in (Step.FAILED, Step.CANCELLED)), None)
        if stopped is not None:
            _fail_on(flow, stopped, members.get(stopped.key, []), steps, at=at)
            return
        current = next((s for s in top if s.status != Step.SUCCEEDED), None)
        if current is None:
            _finish_succeeded(flow, steps, at=at)
            return
        if current.status == Step.PENDING:
            scope = _scope(flow, steps)
            if current.type == FlowStep.Type.WAIT:
                _start_wait(current, scope, at=at)
            elif current.type == FlowStep.Type.GROUP:
                for member in members[current.key]:
                    if member.status == Step.PENDING:
                        _start_run(flow, member, scope, at=at)
                current.status, current.started_at = Step.RUNNING, at
                FlowStep.objects.filter(pk=current.pk, status=Step.PENDING).update(
                    status=Step.RUNNING, started_at=at
                )
            else:
                _start_run(flow, current, scope, at=at)
            continue  # a step that could not start, or a wait already over, moves on at once
        _show_progress(flow, steps, current, at=at)
        return


def _collect(steps: list[FlowStep], *, at: datetime) -> None:
    """Record the end of steps whose execution has ended, and of waits that are over."""
    for step in steps:
        if step.status == Step.RUNNING and step.execution is not None:
            child = step.execution
            if child.status not in Execution.TERMINAL_STATUSES:
                continue
            fields = {
                "status": _ENDED_AS[child.status],
                "finished_at": child.finished_at or at,
                "result": child.result if child.status == Status.SUCCEEDED else None,
            }
            _set(step, Step.RUNNING, **fields)
        elif step.status == Step.WAITING and step.wait_until and step.wait_until <= at:
            _set(step, Step.WAITING, status=Step.SUCCEEDED, finished_at=at)


def _set(step: FlowStep, seen: str, **fields: Any) -> bool:
    """Compare-and-set a step from the status it was read with."""
    won = FlowStep.objects.filter(pk=step.pk, status=seen).update(**fields)
    if won:
        for name, value in fields.items():
            setattr(step, name, value)
    else:
        step.refresh_from_db()
    return bool(won)


def _settle_group(group: FlowStep, members: list[FlowStep], *, at: datetime) -> None:
    if group.status not in (Step.RUNNING,) or any(not m.is_ended for m in members):
        return
    failed = [m for m in members if m.status != Step.SUCCEEDED]
    fields: dict[str, Any] = {"finished_at": at}
    if failed:
        fields["status"] = (
            Step.FAILED if any(m.status == Step.FAILED for m in failed) else Step.CANCELLED
        )
    else:
        fields.update(status=Step.SUCCEEDED, result={m.key: m.result for m in members})
    _set(group, Step.RUNNING, **fields)


def _scope(flow: Execution, steps: list[FlowStep]) -> dict[str, Any]:
    return {
        "input": flow.input,
        "steps": {s.key: {"result": s.result} for s in steps if s.status == Step.SUCCEEDED},
    }


def _start_run(flow: Execution, step: FlowStep, scope: dict, *, at: datetime) -> None:
    """Start a run step's execution, once: the compare-and-set from pending decides."""
    if not _set(step, Step.PENDING, status=Step.RUNNING, started_at=at):
        return
    spec = step.spec
    try:
        agent = Agent.objects.filter(owner_id=flow.owner_id, uuid=spec.get("agent")).first()
        if agent is None:
            raise _CannotStart(
                Category.CONFIGURATION,
                "the agent it runs no longer exists. Edit the flow to choose another.",
            )
        child = execution_request(
            agent=agent,
            trigger=Execution.Trigger.FLOW,
            input=render(spec.get("input"), scope),
            parent=flow,
            step_index=step.index,
            step_key=step.key,
            retry_override=spec.get("retry"),
            reason=f"Step “{step.key}” of flow {flow.uuid}",
            at=at,
        )
    except FlowReferenceError as exc:
        _could_not_start(step, Category.INVALID_INPUT, str(exc), at=at)
    except InvalidInputError as exc:
        _could_not_start(step, Category.INVALID_INPUT, exc.message, at=at)
    except ExecutionRefused as exc:
        _could_not_start(step, Category.CONFIGURATION, exc.message, at=at)
    except _CannotStart as exc:
        _could_not_start(step, exc.category, exc.message, at=at)
    else:
        step.execution = child
        FlowStep.objects.filter(pk=step.pk).update(execution=child)


class _CannotStart(Exception):
    def __init__(self, category: str, message: str):
        super().__init__(message)
        self.category, self.message = category, message


def _could_not_start(step: FlowStep, category: str, why: str, *, at: datetime) -> None:
    _set(
        step,
        Step.RUNNING,
        status=Step.FAILED,
        finished_at=at,
        note=f"Could not start: {why}"[:300],
        error_category=category,
    )


def _start_wait(step: FlowStep, scope: dict, *, at: datetime) -> None:
    wait = step.spec.get("wait") or {}
    if "seconds" in wait:
        until = at + timedelta(seconds=wait["seconds"])
    else:
        try:
            value = render(wait.get("until"), scope)
        except FlowReferenceError as exc:
            if _set(step, Step.PENDING, status=Step.RUNNING, started_at=at):
                _could_not_start(step, Category.INVALID_INPUT, str(exc), at=at)
            return
        until = parse_when(value)
        if until is None:
            if _set(step, Step.PENDING, status=Step.RUNNING, started_at=at):
                _could_not_start(
                    step,
                    Category.INVALID_INPUT,
                    f"the time to wait until, {value!r}, is not a time (ISO 8601).",
                    at=at,
                )
            return
        until = min(until, at + timedelta(seconds=settings.CONVEYOR_FLOW_MAX_WAIT))
    if until <= at:
        _set(step, Step.PENDING, status=Step.SUCCEEDED, started_at=at, finished_at=at)
    else:
        _set(step, Step.PENDING, status=Step.WAITING, started_at=at, wait_until=until)


def _show_progress(flow: Execution, steps: list[FlowStep], current: FlowStep, *, at) -> None:
    """The flow's progress (the share of steps ended), what it does now, and why it waits."""
    leaves = [s for s in steps if s.type != FlowStep.Type.GROUP]
    done = sum(1 for s in leaves if s.is_ended)
    top = [s for s in steps if not s.group]
    position = top.index(current) + 1
    if current.status == Step.WAITING:
        wait = {"wait_reason": WaitReason.PAUSE, "wait_until": current.wait_until}
        doing = f"Step {position} of {len(top)}: waiting ({current.key})"
    else:
        wait = {"wait_reason": WaitReason.STEPS, "wait_until": None}
        doing = f"Step {position} of {len(top)}: {current.key}"
    fields = {
        "progress": int(100 * done / len(leaves)) if leaves else 0,
        "progress_message": doing[:200],
        **wait,
    }
    Execution.objects.filter(pk=flow.pk, status=Status.RUNNING).update(**fields)
    for name, value in fields.items():
        setattr(flow, name, value)


# --- Finish ---------------------------------------------------------------------------------


def _finish_succeeded(flow: Execution, steps: list[FlowStep], *, at: datetime) -> None:
    top = [s for s in steps if not s.group]
    if (flow.agent.config or {}).get("result") == "all":
        result = {s.key: s.result for s in top if s.type != FlowStep.Type.WAIT}
    else:
        last = [s for s in top if s.type != FlowStep.Type.WAIT]
        result = last[-1].result if last else None
    won = transition(
        flow,
        to=Status.SUCCEEDED,
        at=at,
        reason=f"All {len(top)} steps ended" if len(top) != 1 else "Its step ended",
        wait_reason=WaitReason.NONE,
        wait_until=None,
        progress_message="",
        **success_fields(result=result, at=at, started_at=flow.started_at or at),
    )
    if won:
        _close_attempt(
            flow.pk,
            flow.attempt,
            **attempt_closed(outcome=ExecutionAttempt.Outcome.SUCCEEDED, at=at),
        )
        logger.info(
            "flow succeeded", extra={"action": "flow_succeeded", "execution_id": str(flow.uuid)}
        )


def _fail_on(
    flow: Execution,
    step: FlowStep,
    members: list[FlowStep],
    steps: list[FlowStep],
    *,
    at: datetime,
) -> None:
    """A step (or a member of a group) failed or was cancelled: the flow ends so."""
    culprit = next(
        (m for m in members if m.status == Step.FAILED),
        next((m for m in members if m.status == Step.CANCELLED), step),
    )
    where = f"Step “{culprit.key}”" + (
        f" (in parallel group “{step.key}”)" if culprit is not step else ""
    )
    child = culprit.execution
    if culprit.status == Step.CANCELLED:
        category, detail = Category.CANCELLED, ""
        message = f"{where} was cancelled, so the flow stopped."
    elif child is None:
        category, detail = culprit.error_category or Category.CONFIGURATION, ""
        message = f"{where} {culprit.note[:1].lower()}{culprit.note[1:]}"
    else:
        category, detail = child.error_category or Category.INTERNAL, child.error_detail
        attempts = "1 attempt" if child.attempt == 1 else f"{child.attempt} attempts"
        retries = child.max_attempts - 1
        allowed = {0: "no retries", 1: "1 retry"}.get(retries, f"{retries} retries")
        info = CATEGORIES.get(category)
        retried = info is not None and child.retry_policy.retries(
            category=category, retryable=info.retryable
        )
        # The retries it had, when they could have helped (its message says when they could not).
        had = f" ({allowed} allowed)" if retried or retries == 0 else ""
        message = f"{where} failed after {attempts}{had}: {child.error_message}"
    _skip_rest(flow, steps, why="Skipped: an earlier step did not succeed.", at=at)
    if category == Category.CANCELLED:
        with contextlib.suppress(ExecutionRefused):  # already ended: nothing to do
            execution_cancel(execution=flow, by=f"its step “{culprit.key}”", at=at, message=message)
        return
    _finish_failed(
        flow,
        at=at,
        category=category,
        message=message,
        detail=detail,
        reason=f"Step “{culprit.key}” did not succeed",
    )


def _finish_failed(
    flow: Execution,
    *,
    at: datetime,
    category: str,
    message: str,
    reason: str,
    detail: str = "",
) -> bool:
    won = transition(
        flow,
        to=Status.FAILED,
        at=at,
        reason=reason,
        event_data={"category": category},
        **_ended_fields(flow, at),
        error_category=category,
        error_title=CATEGORIES[category].title,
        error_message=message,
        error_detail=detail,
    )
    if won:
        _close_attempt(
            flow.pk,
            flow.attempt,
            **attempt_closed(
                outcome=ExecutionAttempt.Outcome.FAILED, at=at, category=category, message=message
            ),
        )
        logger.info(
            "flow failed",
            extra={"action": "flow_failed", "execution_id": str(flow.uuid), "category": category},
        )
    return won


def _ended_fields(flow: Execution, at: datetime) -> dict[str, Any]:
    return {
        "finished_at": at,
        "duration": (at - flow.started_at) if flow.started_at else None,
        "next_attempt_at": None,
        "wait_reason": WaitReason.NONE,
        "wait_until": None,
        "heartbeat_at": None,
    }


def _skip_rest(flow: Execution, steps: list[FlowStep], *, why: str, at: datetime) -> None:
    for step in steps:
        if step.status in (Step.PENDING, Step.WAITING):
            _set(step, step.status, status=Step.SKIPPED, finished_at=at, note=why)


# --- Stop: cancel and time limit ------------------------------------------------------------


def flow_stop(*, flow: Execution, at: datetime, why: str) -> list[str]:
    """Stop a flow that has just ended (cancelled, or failed at its time limit): cancel the
    steps that run, skip those that wait or have not started, close the flow's attempt.
    Returns the keys of the steps that were running. Call it in the transaction that ended it.
    """
    steps = list(_steps(flow))
    running = []
    for step in steps:
        if step.status != Step.RUNNING or step.type == FlowStep.Type.GROUP:
            continue
        running.append(step.key)
        child = step.execution
        if child is not None and child.is_active:
            with contextlib.suppress(ExecutionRefused):  # it ended meanwhile: recorded below
                execution_cancel(execution=child, by="its flow", at=at)
            child.refresh_from_db()
        if child is not None and child.is_terminal and child.status != Status.CANCELLED:
            _collect([step], at=at)
        else:
            _set(step, Step.RUNNING, status=Step.CANCELLED, finished_at=at, note=f"Stopped: {why}.")
    for group in (s for s in steps if s.type == FlowStep.Type.GROUP and s.status == Step.RUNNING):
        _set(group, Step.RUNNING, status=Step.CANCELLED, finished_at=at, note=f"Stopped: {why}.")
    _skip_rest(flow, steps, why=f"Skipped: {why}.", at=at)
    outcome = ExecutionAttempt.Outcome.CANCELLED
    if flow.status == Status.FAILED:
        outcome = ExecutionAttempt.Outcome.FAILED
    _close_attempt(
        flow.pk,
        flow.attempt,
        **attempt_closed(
            outcome=outcome,
            at=at,
            category=flow.error_category if outcome == ExecutionAttempt.Outcome.FAILED else "",
            message=flow.error_message if outcome == ExecutionAttempt.Outcome.FAILED else "",
        ),
    )
    return running


def flow_time_out(*, flow_id: int, at: datetime | None = None) -> bool:
    """The flow's time limit has passed: cancel its running steps, skip the rest, and fail it
    (category timeout) naming the step that was running. Returns whether it did."""
    at = at or timezone.now()
    with transaction.atomic():
        flow = (
            Execution.objects.select_for_update(of=("self",))
            .select_related("agent")
            .filter(pk=flow_id, status=Status.RUNNING, deadline_at__lte=at)
            .first()
        )
        if flow is None:
            return False
        steps = list(_steps(flow))
        _collect(steps, at=at)
        running = [s.key for s in steps if s.type == FlowStep.Type.RUN and s.status == Step.RUNNING]
        waiting = [s.key for s in steps if s.status == Step.WAITING]
        limit = seconds_in_words((flow.deadline_at - flow.started_at).total_seconds())
        if len(running) == 1:
            doing = f"step “{running[0]}” was still running"
        elif running:
            doing = f"steps {', '.join(f'“{k}”' for k in running)} were still running"
        elif waiting:
            doing = f"it was still waiting (step “{waiting[0]}”)"
        else:
            doing = "it had not finished"
        message = (
            f"The flow did not finish within its time limit of {limit}: {doing}. Conveyor "
            "cancelled what was running and skipped the steps after it. Raise the flow's time "
            "limit if its steps need longer, or find out why the step is slow."
        )
        won = _finish_failed(
            flow,
            at=at,
            category=Category.TIMEOUT,
            message=message,
            reason=f"Time limit of {limit} passed",
        )
        if won:
            flow_stop(flow=flow, at=at, why="the flow's time limit passed")
    return won


# --- Recovery -------------------------------------------------------------------------------


def advance_stalled(*, at: datetime, limit: int = 1000) -> int:
    """The dispatcher's pass for flows: advance those a step's end did not advance (its
    message was lost), those whose wait is over, and time out those past their limit."""
    ended = Execution.TERMINAL_STATUSES
    stalled = set(
        FlowStep.objects.filter(
            status=Step.RUNNING,
            flow__status=Status.RUNNING,
            execution__status__in=ended,
            execution__finished_at__lte=at - ADVANCE_GRACE,
        ).values_list("flow_id", flat=True)[:limit]
    )
    stalled |= set(
        Execution.objects.filter(
            status=Status.RUNNING, wait_reason=WaitReason.PAUSE, wait_until__lte=at
        ).values_list("pk", flat=True)[:limit]
    )
    late = list(
        Execution.objects.filter(status=Status.RUNNING, deadline_at__lte=at).values_list(
            "pk", flat=True
        )[:limit]
    )
    done = 0
    for flow_id in late:
        done += flow_time_out(flow_id=flow_id, at=at)
        stalled.discard(flow_id)
    for flow_id in sorted(stalled):
        flow_advance(flow_id=flow_id, at=at)
        done += 1
    if done:
        logger.info(
            "flows advanced by the recovery pass",
            extra={"action": "flows_recovered", "advanced": len(stalled), "timed_out": len(late)},
        )
    return done
