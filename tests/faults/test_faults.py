"""An operator's bad day: Conveyor loses nothing.

Each scenario starts its own stack (tests/faults/harness.py: a private Postgres cluster, a
private Redis, an executions worker, a maintenance worker that runs the dispatcher tick, celery
beat sending a tick a second), drives a few hundred executions of an ``http`` agent through
``execution_request`` (quick and slow runs, runs that fail once or twice and retry, runs that
fail for good), injects one fault, and then requires, within ``RECOVERY_LIMIT`` seconds of the
fault:

* every execution reached a final state (succeeded, failed or cancelled): none stuck queued,
  running or retrying;
* none is lost: every execution created is in the database;
* no attempt called the receiver twice, and none called it without being recorded
  (calls <= attempts, per execution);
* a side effect is repeated only inside the at-least-once window: an execution's work is done
  again only after one of its attempts was cut off (closed as lost or failed while its call had
  been accepted), never more often than it had such attempts. Where the fault cuts no attempt,
  every execution must make exactly the attempts and end in the state its input plans, and no
  side effect may repeat.

A repeat is a side effect the receiver accepted (answered 200) more than once for one
execution; each scenario reports how many there were.

The agents have the default time limit (300 s): a run cut off with its worker comes back
through its heartbeat (CONVEYOR_HEARTBEAT_TIMEOUT, 20 s by default; tests/faults/settings.py
keeps the production heartbeat, which the normal suite's settings shorten) and the reaper, not
through the time limit. Scenarios where the fault takes messages away from the broker (a killed
worker's reserved retries, the retries a warm shutdown does not hand back, a Redis restarted
empty, Redis down while runs are created) run the
dispatcher with ``CONVEYOR_REPUBLISH_AFTER=10`` instead of 60 s, so that the republish pass
sends them again within the limit; each says so.

Each scenario writes one line to var/faults-report.txt (and the terminal): executions, lost,
stuck, repeated side effects, attempts closed as lost ("cut") and seconds from the fault until
every execution was final.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.faults.harness import (
    ACTIVE,
    EXECUTION_SLOTS,
    EXECUTIONS_QUEUE,
    alike,
    broker_backlog,
    duplicate_messages,
    plan,
    planned_attempts,
    planned_status,
    poison_messages,
    push_raw,
    send_task,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LOAD = 240  # executions per scenario
RECOVERY_LIMIT = 60  # seconds from the fault until every execution is final
REPUBLISH_AFTER = {"CONVEYOR_REPUBLISH_AFTER": "10"}
LONG_RUN = 15.0  # seconds a long run holds its slot (scenario 9)
SLOT_LATENESS = 3  # seconds a schedule's slot may start after it is due (ticks every 1 s)


def judge(
    stack,
    receiver,
    report,
    inputs: list[dict],
    *,
    fault_at: float,
    recovered_at: float | None,
    cuts_expected: bool,
    notes: str = "",
    problems: list[str] | None = None,
) -> None:
    """Record the scenario's line in the report, then assert what the module docstring says."""
    planned = {run["token"]: run for run in inputs}
    rows = stack.executions()
    problems = list(problems or [])
    lost = [token for token in planned if token not in rows]
    stuck = [row for row in rows.values() if row.status in ACTIVE]
    repeats = 0
    for token, row in rows.items():
        if token not in planned:
            problems.append(f"execution {row.id} was never asked for")
            continue
        calls, effects = receiver.calls[token], receiver.effects[token]
        refusals = calls - effects
        if calls > row.attempts:
            problems.append(
                f"execution {row.id}: {calls} calls to the receiver for {row.attempts} attempts"
            )
        if row.status == "succeeded" and not effects:
            problems.append(f"execution {row.id} succeeded without its side effect")
        if effects > 1:
            repeats += effects - 1
            # Attempts that were cut off after their call was accepted: those that did not
            # succeed, less those whose call the receiver refused.
            window = row.unsucceeded - refusals if cuts_expected else 0
            if effects - 1 > window:
                problems.append(
                    f"execution {row.id}: side effect done {effects} times; attempts "
                    f"{row.attempts} ({row.categories}), of which cut off at most {window}"
                )
        if not cuts_expected:
            want = (planned_attempts(planned[token]), planned_status(planned[token]))
            if (row.attempts, row.status) != want:
                problems.append(
                    f"execution {row.id} made {row.attempts} attempts and is {row.status}, "
                    f"planned {want[0]} and {want[1]} ({planned[token]}, {row.categories})"
                )
    cut = sum(row.lost for row in rows.values())
    recover = recovered_at - fault_at if recovered_at is not None else None
    # What the dispatcher's recovery passes did (executions/recovery.py logs each).
    recovery = (
        f"{stack.logged('lost attempt reaped')} reaped, "
        f"{stack.logged('stranded execution published again')} republished"
    )
    ok = not (lost or stuck or problems) and recover is not None
    report.record(
        stack.name,
        len(planned),
        len(lost),
        len(stuck),
        repeats,
        cut,
        f"{recover:.1f}" if recover is not None else f">{RECOVERY_LIMIT}",
        RECOVERY_LIMIT,
        "ok" if ok else "FAIL",
        f"{recovery}; {notes}" if notes else recovery,
    )
    if ok:
        return
    stuck_shown = ", ".join(str(row) for row in stuck[:20])
    raise AssertionError(
        f"{stack.name}: {len(lost)} lost, {len(stuck)} stuck ({stuck_shown}), "
        f"{'not recovered' if recover is None else f'recovered in {recover:.1f} s'} "
        f"(limit {RECOVERY_LIMIT} s); statuses {dict(stack.counts())}\n"
        + "\n".join(problems[:25])
        + f"\n{stack.log_tails()}"
    )


def start_load(stack, count: int = LOAD, *, seed: int) -> list[dict]:
    """Create ``count`` executions and return once the worker is busy with them."""
    inputs = plan(count, seed=seed)
    answer = stack.create(inputs)
    assert not answer["refused"], answer["refused"][:5]
    stack.wait_running(EXECUTION_SLOTS // 2)
    time.sleep(1.5)  # well into the slow runs
    return inputs


def test_worker_child_sigkill(fault_stack, receiver, fault_report):
    """Pool children killed with SIGKILL while connected to the receiver (the kernel's
    OOM killer, say): the worker replaces them, and the reaper retries the attempts they held
    once their heartbeat stops. The call was accepted, so the retry may repeat its effect."""
    stack = fault_stack()
    inputs = start_load(stack, seed=1)
    worker = stack.executions_worker()

    fault_at = time.monotonic()
    killed = []
    while len(killed) < 3 and time.monotonic() < fault_at + 15:
        calling = stack.children_calling(worker, receiver.port)
        if not calling:
            time.sleep(0.05)
            continue
        calling[0].kill()
        killed.append(calling[0].pid)
        time.sleep(1)
    recovered_at = stack.wait_final(len(inputs), deadline=fault_at + RECOVERY_LIMIT)

    problems = [] if worker.proc.poll() is None else ["the worker's main process died"]
    if len(killed) < 3:
        problems.append(f"only {len(killed)} children were caught connected to the receiver")
    judge(
        stack,
        receiver,
        fault_report,
        inputs,
        fault_at=fault_at,
        recovered_at=recovered_at,
        cuts_expected=True,
        notes=f"{len(killed)} children killed while connected to the receiver",
        problems=problems,
    )


def test_worker_main_sigkill(fault_stack, receiver, fault_report):
    """The worker's main process killed with SIGKILL, then a new worker started: the runs it
    held come back through the reaper, the retries it held through the republish pass
    (CONVEYOR_REPUBLISH_AFTER=10)."""
    stack = fault_stack(**REPUBLISH_AFTER)
    inputs = start_load(stack, seed=2)
    worker = stack.executions_worker()

    fault_at = time.monotonic()
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(timeout=10)
    stack.start_worker("executions")
    replaced = time.monotonic() - fault_at
    recovered_at = stack.wait_final(len(inputs), deadline=fault_at + RECOVERY_LIMIT)

    judge(
        stack,
        receiver,
        fault_report,
        inputs,
        fault_at=fault_at,
        recovered_at=recovered_at,
        cuts_expected=True,
        notes=f"new worker ready {replaced:.1f} s after the kill",
    )


def test_worker_sigterm_warm_shutdown(fault_stack, receiver, fault_report):
    """SIGTERM during runs (a deploy): Celery's warm shutdown lets the running attempts finish
    and hands back the messages it held; a new worker takes over. Nothing is cut, nothing
    repeats. On Redis the hand-back is not always whole: a worker once took 34 s to stop and
    handed back 1 message while 80 retries it held (countdown messages) stayed in Redis'
    unacknowledged set, for the visibility timeout; the republish pass
    (CONVEYOR_REPUBLISH_AFTER=10) sends them again from the database, and the report counts
    them ("N republished")."""
    stack = fault_stack(**REPUBLISH_AFTER)
    inputs = start_load(stack, seed=3)
    worker = stack.executions_worker()

    fault_at = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(timeout=RECOVERY_LIMIT)
    stopped = time.monotonic() - fault_at
    stack.start_worker("executions")
    recovered_at = stack.wait_final(len(inputs), deadline=fault_at + RECOVERY_LIMIT)

    judge(
        stack,
        receiver,
        fault_report,
        inputs,
        fault_at=fault_at,
        recovered_at=recovered_at,
        cuts_expected=False,
        notes=f"warm shutdown took {stopped:.1f} s (exit code {worker.proc.returncode})",
    )


def test_redis_restarted_empty(fault_stack, receiver, fault_report):
    """Redis killed during the load and started again, empty, on the same port: every message
    waiting in it is gone. Workers and beat reconnect by themselves; the republish pass
    (CONVEYOR_REPUBLISH_AFTER=10) sends the lost runs again from the database."""
    stack = fault_stack(**REPUBLISH_AFTER)
    inputs = start_load(stack, seed=4)

    fault_at = time.monotonic()
    stack.redis.stop()
    stack.redis.start()
    recovered_at = stack.wait_final(len(inputs), deadline=fault_at + RECOVERY_LIMIT)

    alive = [w.nodename for w in stack.workers if w.proc.poll() is not None]
    judge(
        stack,
        receiver,
        fault_report,
        inputs,
        fault_at=fault_at,
        recovered_at=recovered_at,
        cuts_expected=False,
        problems=[f"worker {name} exited" for name in alive],
    )


def test_redis_down_while_creating(fault_stack, receiver, fault_report):
    """Redis down while executions are created: creating one still succeeds (the row waits in
    the database), or is refused in words; once Redis is back, the republish pass
    (CONVEYOR_REPUBLISH_AFTER=10) hands the waiting runs to the workers."""
    stack = fault_stack(**REPUBLISH_AFTER)
    before = start_load(stack, count=LOAD // 3, seed=5)

    stack.redis.stop()
    down_at = time.monotonic()
    during = plan(LOAD // 6, seed=55)
    answer = stack.create(during)
    time.sleep(max(0.0, 5 - (time.monotonic() - down_at)))  # down at least 5 s
    stack.redis.start()
    fault_at = time.monotonic()  # measured from Redis back up
    after = plan(LOAD - len(before) - len(during), seed=555)
    assert not stack.create(after)["refused"]

    refused = {token for token, _ in answer["refused"]}
    unclear = [error for _, error in answer["refused"] if not error.startswith("ExecutionRefused")]
    inputs = before + [run for run in during if run["token"] not in refused] + after
    recovered_at = stack.wait_final(len(inputs), deadline=fault_at + RECOVERY_LIMIT)

    judge(
        stack,
        receiver,
        fault_report,
        inputs,
        fault_at=fault_at,
        recovered_at=recovered_at,
        cuts_expected=False,
        notes=(
            f"{len(answer['created'])} created and {len(refused)} refused while Redis was "
            f"down ({answer['seconds']:.1f} s); recover_s from Redis back"
        ),
        problems=[f"creation failed without a clear answer: {error}" for error in unclear[:5]],
    )


def test_postgres_restarted(fault_stack, receiver, fault_report):
    """Postgres restarted (``pg_ctl restart -m fast``) in the middle of the load: every
    connection is cut. The workers and beat recover by themselves, without a restart; an
    attempt whose end could not be written is reaped and retried."""
    stack = fault_stack()
    inputs = start_load(stack, seed=6)

    fault_at = time.monotonic()
    stack.postgres.restart()
    restarted = time.monotonic() - fault_at
    recovered_at = stack.wait_final(len(inputs), deadline=fault_at + RECOVERY_LIMIT)

    problems = [f"worker {w.nodename} exited" for w in stack.workers if w.proc.poll() is not None]
    judge(
        stack,
        receiver,
        fault_report,
        inputs,
        fault_at=fault_at,
        recovered_at=recovered_at,
        cuts_expected=True,
        notes=f"restart took {restarted:.1f} s",
        problems=problems,
    )


def test_poison_messages(fault_stack, receiver, fault_report):
    """Messages that are not valid run messages, on the executions queue's list while runs go
    on: not JSON, a body that is not base64, a base64 body that is not JSON, run messages with
    bad arguments (not a number, none, an unknown keyword, an execution that does not exist), a
    message for a task that does not exist. The worker drops them (or sets them aside) and keeps
    consuming; the runs created after them run too, and nothing is left in the broker."""
    stack = fault_stack()
    inputs = start_load(stack, count=LOAD * 2 // 3, seed=7)
    worker = stack.executions_worker()
    url = stack.redis.url

    fault_at = time.monotonic()
    for entry in poison_messages(EXECUTIONS_QUEUE).values():
        push_raw(url, EXECUTIONS_QUEUE, entry)
    send_task(url, EXECUTIONS_QUEUE, "executions.run_execution", args=["not-an-id"])
    send_task(url, EXECUTIONS_QUEUE, "executions.run_execution", args=[])
    send_task(url, EXECUTIONS_QUEUE, "executions.run_execution", kwargs={"no_such": 1})
    send_task(url, EXECUTIONS_QUEUE, "executions.run_execution", args=[2**31 - 1])
    send_task(url, EXECUTIONS_QUEUE, "executions.no_such_task", args=[1])
    more = plan(LOAD - len(inputs), seed=77)
    assert not stack.create(more)["refused"]
    inputs += more
    recovered_at = stack.wait_final(len(inputs), deadline=fault_at + RECOVERY_LIMIT)

    exited = worker.proc.poll()
    problems = [] if exited is None else [f"the executions worker exited (code {exited})"]
    deadline = time.monotonic() + 10
    while True:  # the last republished duplicates may still be on their way
        waiting, unacked, aside = broker_backlog(url, EXECUTIONS_QUEUE)
        if (waiting, unacked) == (0, 0) or time.monotonic() > deadline or exited is not None:
            break
        time.sleep(0.2)
    if (waiting, unacked) != (0, 0):
        problems.append(
            f"left in the broker: {waiting} messages waiting, {unacked} delivered and not "
            "acknowledged"
        )
    judge(
        stack,
        receiver,
        fault_report,
        inputs,
        fault_at=fault_at,
        recovered_at=recovered_at,
        cuts_expected=False,
        notes=(
            f"8 poison messages taken off the queue, {aside} of them set aside"
            if (waiting, unacked) == (0, 0)
            else f"8 poison messages; {waiting} messages left waiting"
        ),
        problems=problems,
    )


def test_duplicate_delivery(fault_stack, receiver, fault_report):
    """Every run message delivered four times (the original and three byte-for-byte copies,
    each right behind it, so that copies arrive while the original runs): each execution still
    makes exactly its planned attempts, and no side effect repeats."""
    stack = fault_stack(executions_worker=False)
    inputs = plan(LOAD, seed=8)
    assert not stack.create(inputs)["refused"]
    waiting = duplicate_messages(stack.redis.url, EXECUTIONS_QUEUE, copies=3)

    fault_at = time.monotonic()  # measured from the worker's start
    stack.start_worker("executions")
    recovered_at = stack.wait_final(len(inputs), deadline=fault_at + RECOVERY_LIMIT)

    judge(
        stack,
        receiver,
        fault_report,
        inputs,
        fault_at=fault_at,
        recovered_at=recovered_at,
        cuts_expected=False,
        notes=f"{waiting} messages for {len(inputs)} executions",
        problems=[] if waiting == 4 * len(inputs) else [f"{waiting} messages waiting"],
    )


def test_schedule_due_while_every_slot_is_busy(fault_stack, receiver, fault_report):
    """Every slot of the executions worker busy with a long run, a backlog behind them, and a
    schedule's slot due: the dispatcher runs on its own maintenance worker, so the slot's
    execution is started on time (it then waits for a free slot like any other run)."""
    stack = fault_stack()
    slot_input = alike(1, delay=0.05)[0]
    run_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=12)
    schedule = stack.driver(
        "schedule", {"agent": stack.agent_id, "run_at": run_at.isoformat(), "input": slot_input}
    )["schedule"]
    fault_at = time.monotonic() + (run_at - datetime.now(UTC)).total_seconds()  # the slot
    long_runs = alike(EXECUTION_SLOTS, delay=LONG_RUN)
    assert not stack.create(long_runs)["refused"]
    stack.wait_running(EXECUTION_SLOTS)
    backlog = plan(LOAD - EXECUTION_SLOTS - 1, seed=9)
    assert not stack.create(backlog)["refused"]

    started = busy = None
    while started is None and time.monotonic() < fault_at + 15:
        late = stack.sql(
            "SELECT extract(epoch FROM created_at - scheduled_for) FROM executions_execution "
            "WHERE schedule_id = %s",
            (schedule,),
        )
        if late:
            started = float(late[0][0])
            busy = stack.sql(
                "SELECT count(*) FROM executions_execution "
                "WHERE status = 'running' AND (input->>'delay')::float = %s",
                (LONG_RUN,),
            )[0][0]
        time.sleep(0.1)
    inputs = [slot_input, *long_runs, *backlog]
    recovered_at = stack.wait_final(len(inputs), deadline=fault_at + RECOVERY_LIMIT)

    problems = []
    if started is None:
        problems.append("the schedule's slot did not start within 15 s")
    elif started > SLOT_LATENESS:
        problems.append(f"the schedule's slot started {started:.1f} s late")
    if busy is not None and busy < EXECUTION_SLOTS:
        problems.append(f"only {busy} long runs held a slot when the schedule was due")
    judge(
        stack,
        receiver,
        fault_report,
        inputs,
        fault_at=fault_at,
        recovered_at=recovered_at,
        cuts_expected=False,
        notes=(
            f"slot started {started:.1f} s after due, {busy} of {EXECUTION_SLOTS} slots busy "
            "with long runs; recover_s from the slot"
            if started is not None
            else "slot never started"
        ),
        problems=problems,
    )
