"""Demo agent functions that show the engine off. `seed_demo` creates an agent for each.

Input keys are optional; the defaults make a good demonstration.
"""

import csv
import io
import json
import time

from celery.exceptions import SoftTimeLimitExceeded

from .functions import agent_function
from .kinds.base import CancelledError, InvalidInputError, PermanentError, RetryableError


def _number(input, key, default, *, minimum=0.0, maximum=3600.0):
    if input is None:
        return default
    if not isinstance(input, dict):
        raise InvalidInputError('The input must be a JSON object, for example {"seconds": 5}.')
    value = input.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"“{key}” must be a number, not {value!r}.")
    if not minimum <= value <= maximum:
        raise InvalidInputError(f"“{key}” must be between {minimum:g} and {maximum:g}.")
    return value


@agent_function(
    "demo.echo", description="Returns its input unchanged.", input_example={"hello": "world"}
)
def echo(ctx, input):
    ctx.log("info", "Echoing the input back.")
    return input


def _flaky_input(input):
    fail_times = int(_number(input, "fail_times", 2, maximum=100))
    return fail_times, _number(input, "seconds", 0, maximum=60)


@agent_function(
    "demo.flaky",
    description="Fails with a temporary error on the first attempts, then succeeds.",
    validate_input=_flaky_input,
    input_example={"fail_times": 2, "seconds": 0},
)
def flaky(ctx, input):
    fail_times, seconds = _flaky_input(input)
    # A real call would send this key with its request (as the http kind's Idempotency-Key
    # option does): it is the same on every attempt of this run, so the service can tell a
    # retry of this run from a new one. The demo only records it with its logs.
    key = ctx.idempotency_key
    if seconds:  # "seconds": how long each attempt works before it fails or succeeds
        ctx.progress(10, "Calling the demo service")
        time.sleep(seconds)
    if ctx.attempt <= fail_times:
        ctx.log(
            "warning",
            f"Simulating a temporary outage (attempt {ctx.attempt}).",
            idempotency_key=key,
        )
        raise RetryableError(
            f"The demo service is temporarily unavailable (simulated failure {ctx.attempt} "
            f"of {fail_times})."
        )
    ctx.log("info", f"Succeeded on attempt {ctx.attempt}.", idempotency_key=key)
    return {"succeeded_on_attempt": ctx.attempt}


def _slow_input(input):
    seconds = _number(input, "seconds", 10)
    steps = int(_number(input, "steps", 10, minimum=1, maximum=1000))
    return seconds, steps


@agent_function(
    "demo.slow",
    description="Works for a while in steps, reporting progress; stops when cancelled.",
    validate_input=_slow_input,
    input_example={"seconds": 10, "steps": 10},
)
def slow(ctx, input):
    seconds, steps = _slow_input(input)
    # "cooperative": false plays a badly behaved agent that ignores cancellation and its soft
    # time limit, to show the worker stopping it by force.
    cooperative = not (isinstance(input, dict) and input.get("cooperative") is False)
    for step in range(1, steps + 1):
        if cooperative and ctx.is_cancelled():
            raise CancelledError()
        try:
            time.sleep(seconds / steps)
        except SoftTimeLimitExceeded:
            if cooperative:
                raise
            ctx.log("warning", "Ignoring the time limit.")
        ctx.progress(step * 100 / steps, f"Step {step} of {steps}")
        ctx.log("info", f"Finished step {step} of {steps}.", step=step)
    return {"steps": steps, "seconds": seconds}


@agent_function("demo.broken", description="Always fails with a permanent error.")
def broken(ctx, input):
    ctx.log("info", "Looking up the demo record.")
    raise PermanentError(
        "The demo record does not exist (this agent always fails, to show a permanent error).",
        category="invalid_input",
    )


def _count_input(input):
    to = int(_number(input, "to", 20, minimum=1, maximum=10000))
    return to, _number(input, "seconds", 0.5, maximum=60)


@agent_function(
    "demo.count",
    description="Counts to a number slowly, saving a checkpoint after each; a later attempt "
    "resumes from the last checkpoint.",
    validate_input=_count_input,
    input_example={"to": 20, "seconds": 0.5},
)
def count(ctx, input):
    to, seconds = _count_input(input)
    # Where an earlier attempt got to (it may have been killed or timed out): go on from there.
    start = (ctx.last_checkpoint or {}).get("done", 0)
    if start:
        ctx.log("info", f"Resuming from the checkpoint: {start} of {to} already counted.")
    for number in range(start + 1, to + 1):
        if ctx.is_cancelled():
            raise CancelledError()
        time.sleep(seconds)
        ctx.checkpoint({"done": number})
        ctx.progress(number * 100 / to, f"Counted {number} of {to}")
    return {"counted": to, "resumed_from": start, "attempt": ctx.attempt}


def _report_input(input):
    return int(_number(input, "days", 7, minimum=1, maximum=366))


@agent_function(
    "demo.report",
    description="Writes a small sales report as two files, a CSV table and a JSON summary, to "
    "download from the run's page.",
    validate_input=_report_input,
    input_example={"days": 7},
)
def report(ctx, input):
    days = _report_input(input)
    ctx.progress(10, "Gathering the figures")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["day", "orders", "revenue"])
    orders_total, revenue_total = 0, 0.0
    for day in range(1, days + 1):
        # Made-up but repeatable figures.
        orders = 10 + (day * 7) % 13
        revenue = round(orders * 12.5, 2)
        orders_total += orders
        revenue_total += revenue
        writer.writerow([day, orders, f"{revenue:.2f}"])
        ctx.log("debug", f"Day {day}: {orders} orders.", day=day, orders=orders)
    ctx.save_artifact("report.csv", table.getvalue())
    summary = {"days": days, "orders": orders_total, "revenue": round(revenue_total, 2)}
    ctx.save_artifact("summary.json", json.dumps(summary, indent=2) + "\n")
    ctx.log("info", f"Wrote the report of {days} days: {orders_total} orders.")
    return summary
