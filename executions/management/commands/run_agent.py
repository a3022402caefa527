"""``manage.py run_agent``: start a run of an agent from the command line and, with ``--wait``,
watch it to the end.

Watching is a client polling the execution's row (the engine itself never polls): the status,
each attempt as it ends, the logs as they are written, then the result or the friendly error.
On a terminal the status is a live progress line; otherwise (piped, in tests) status changes
are printed line by line. A flow's steps are printed as they end (how, how long, in how many
attempts, or that a retried flow reused one), in place of the flow's own single attempt.

Exit status: 0 when the run succeeded (or was only started, without ``--wait``); 1 when it
failed or was cancelled, or the command was used wrongly; 3 when ``--timeout`` ran out first;
130 after Ctrl-C. Neither of the last two cancels the run: it goes on in the background.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import uuid
from datetime import timedelta
from operator import itemgetter

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from agents.kinds.base import InvalidInputError
from agents.models import Agent
from executions.errors import CATEGORIES
from executions.humanize import seconds_in_words
from executions.models import Execution, ExecutionAttempt, ExecutionLog, FlowStep
from executions.services import ExecutionRefused, execution_request

POLL_INTERVAL = 0.2  # seconds between two looks at the row while waiting
QUEUED_HINT_AFTER = 10  # seconds queued before suggesting that no worker may be running
EXIT_WAIT_TIMEOUT = 3
EXIT_INTERRUPTED = 130  # the shell's convention for "stopped by Ctrl-C"
AGENTS_LISTED = 30


def find_agent(reference: str) -> Agent:
    """The agent named ``<owner>/<agent name>`` or with the UUID ``reference``."""
    try:
        agent_uuid = uuid.UUID(reference)
    except ValueError:
        agent_uuid = None
    if agent_uuid is not None:
        agent = Agent.objects.select_related("owner").filter(uuid=agent_uuid).first()
        if agent is None:
            raise CommandError(f"No agent has the UUID {agent_uuid}.")
        return agent

    owner_name, slash, name = reference.partition("/")
    if not (slash and owner_name and name):
        raise CommandError(
            f"Name the agent as <owner>/<agent name> (for example demo/flaky) or by its UUID, "
            f"not “{reference}”."
        )
    User = get_user_model()
    owner = User._default_manager.filter(**{User.USERNAME_FIELD: owner_name}).first()
    if owner is None:
        raise CommandError(f"There is no user named “{owner_name}”.")
    agent = Agent.objects.select_related("owner").filter(owner=owner, name=name).first()
    if agent is None:
        names = list(Agent.objects.filter(owner=owner).values_list("name", flat=True))
        if not names:
            raise CommandError(f"{owner_name} has no agent named “{name}”; they have no agents.")
        more = len(names) - AGENTS_LISTED
        listed = ", ".join(names[:AGENTS_LISTED]) + (f" and {more} more" if more > 0 else "")
        raise CommandError(f"{owner_name} has no agent named “{name}”. Their agents: {listed}.")
    return agent


def parse_input(text: str | None):
    """The JSON given with --input; no --input means a null input."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"--input is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        if "\n" not in text and len(text) <= 200:
            message += f"\n  {text}\n  {' ' * exc.pos}^"
        message += (
            "\nQuote the whole value for the shell, for example --input '{\"fail_times\": 1}'."
        )
        raise CommandError(message) from None


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a number of seconds above 0, not “{text}”")
    return value


def duration_in_words(delta: timedelta | None) -> str:
    if delta is None:
        return "?"
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return seconds_in_words(seconds)


def seconds_text(seconds: float) -> str:
    """0.5 -> "0.5 s", 2.0 -> "2 s", 90 -> "1 min 30 s"."""
    return f"{seconds:.3g} s" if seconds < 60 else seconds_in_words(seconds)


class Command(BaseCommand):
    help = (
        "Start a run of an agent, named <owner>/<agent name> or by its UUID. With --wait, watch "
        "it to the end: exit status 0 when it succeeded, 1 when it failed or was cancelled, 3 "
        "when --timeout ran out (the run goes on)."
    )

    def add_arguments(self, parser):
        parser.add_argument("agent", help="<owner>/<agent name> (e.g. demo/flaky) or agent UUID")
        parser.add_argument(
            "--input",
            metavar="JSON",
            default=None,
            help="The run's input as JSON, e.g. '{\"fail_times\": 1}' (default: null).",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Watch the run (status, attempts, logs) until it ends; print its result.",
        )
        parser.add_argument(
            "--timeout",
            metavar="SECONDS",
            type=positive_seconds,
            default=600.0,
            help="With --wait: stop waiting after this long (default 600). The run goes on.",
        )

    def handle(self, *args, **options):
        agent = find_agent(options["agent"])
        payload = parse_input(options["input"])
        try:
            execution = execution_request(
                agent=agent, trigger=Execution.Trigger.MANUAL, input=payload
            )
        except InvalidInputError as exc:
            raise CommandError(f"The input was refused: {exc.message}") from None
        except ExecutionRefused as exc:
            raise CommandError(exc.message) from None
        ref = f"{agent.owner.get_username()}/{agent.name}"
        if not options["wait"]:
            self.stdout.write(f"Execution {execution.uuid} of {ref}: {execution.status_label}.")
            return
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"Execution {execution.uuid} of {ref} started. Waiting for it to finish "
                "(Ctrl-C stops waiting; the run goes on)."
            )
        Watch(self, execution, timeout=options["timeout"], verbosity=options["verbosity"]).run()


class Watch:
    """Follows one execution until it ends, printing what happens to it."""

    def __init__(
        self, command: BaseCommand, execution: Execution, *, timeout: float, verbosity: int
    ):
        self.out = command.stdout
        self.style = command.style
        self.execution = execution
        self.timeout = timeout
        self.verbosity = verbosity
        self.live = self.out.isatty() and verbosity >= 1
        self.bar_shown = False
        self.bar_text = ""
        self.last_log_id = 0
        self.attempts_shown: set[int] = set()
        self.is_flow = bool(getattr(execution.agent.kind_impl, "is_flow", False))
        self.steps_shown: set[int] = set()
        self.last_status = None
        self.queued_hint_given = False
        self.started = time.monotonic()
        encoding = (getattr(self.out._out, "encoding", "") or "").lower()
        unicode = encoding.replace("-", "") == "utf8"
        self.bar_chars = ("█", "░", "…") if unicode else ("#", "-", "")

    def run(self) -> None:
        deadline = self.started + self.timeout
        try:
            while True:
                self.poll()
                if self.execution.is_terminal:
                    break
                if time.monotonic() >= deadline:
                    self.clear_bar()
                    raise CommandError(
                        f"Stopped waiting after {seconds_text(self.timeout)}: execution "
                        f"{self.execution.uuid} is still {self.execution.status_label.lower()}. "
                        "It goes on in the background.",
                        returncode=EXIT_WAIT_TIMEOUT,
                    )
                time.sleep(POLL_INTERVAL)
        except KeyboardInterrupt:
            self.clear_bar()
            self.out.write(
                f"\nStopped waiting (the run was not cancelled): execution "
                f"{self.execution.uuid} is {self.execution.status_label.lower()}."
            )
            raise SystemExit(EXIT_INTERRUPTED) from None
        self.clear_bar()
        self.report_end()

    # -- one look at the row ------------------------------------------------------------------
    def poll(self) -> None:
        execution = self.execution
        # Row, then attempts, then logs: each read sees everything committed with what the one
        # before it saw (a finished row with its last attempt, a closed attempt with its logs).
        execution.refresh_from_db()
        attempts = list(
            ExecutionAttempt.objects.filter(execution_id=execution.pk, finished_at__isnull=False)
            .exclude(number__in=self.attempts_shown)
            .order_by("number")
        )
        logs = list(
            ExecutionLog.objects.filter(
                execution_id=execution.pk, id__gt=self.last_log_id
            ).order_by("id")
        )
        steps = self.ended_steps() if self.is_flow else []
        lines = []
        if self.verbosity >= 1:
            # An attempt's logs, then how it ended; several attempts may end between two looks.
            events = [((log.attempt, 0, log.id), self.log_line(log)) for log in logs]
            if not self.is_flow:  # a flow's one attempt says nothing its steps do not
                events += [((a.number, 1, 0), self.attempt_line(a)) for a in attempts]
            lines += [line for _, line in sorted(events, key=itemgetter(0))]
            lines += [self.step_line(step) for step in steps]
            status = (execution.status, execution.attempt)
            if self.is_flow:  # the step it is at (or waits in)
                status += (execution.progress_message,)
            if not self.live and status != self.last_status and not execution.is_terminal:
                lines.append((self.status_line(), None))
            self.last_status = status
            if self.queued_too_long():
                self.queued_hint_given = True
                lines.append(
                    (
                        f"Still queued after {QUEUED_HINT_AFTER} s: is a worker running? Start one "
                        f"with: celery -A config worker -Q {settings.CONVEYOR_EXECUTIONS_QUEUE},"
                        f"{settings.CONVEYOR_MAINTENANCE_QUEUE}",
                        self.style.WARNING,
                    )
                )
        if logs:
            self.last_log_id = logs[-1].id
        self.attempts_shown.update(attempt.number for attempt in attempts)
        self.steps_shown.update(step.pk for step in steps)
        if lines:
            self.clear_bar()
            for text, style in lines:
                self.out.write(text, style_func=style)
        if self.live and not execution.is_terminal:
            self.draw_bar()

    def ended_steps(self) -> list[FlowStep]:
        """A flow's steps that ended since the last look, in the order they ended (read after
        the row: a finished flow's steps have all ended, in its transaction or before)."""
        return list(
            FlowStep.objects.filter(flow_id=self.execution.pk, status__in=FlowStep.ENDED)
            .exclude(pk__in=self.steps_shown)
            .select_related("execution", "reused_from")
            .order_by("finished_at", "index", "id")
        )

    def queued_too_long(self) -> bool:
        return (
            not self.queued_hint_given
            and self.execution.status == Execution.Status.QUEUED
            and self.execution.attempt == 0
            and time.monotonic() - self.started >= QUEUED_HINT_AFTER
        )

    # -- what gets printed ----------------------------------------------------------------------
    def status_line(self):
        execution = self.execution
        text = f"Status: {execution.status_label}"
        if execution.status == Execution.Status.RETRYING and execution.next_attempt_at:
            at = timezone.localtime(execution.next_attempt_at)
            text += f", next attempt at {at:%H:%M:%S}"
        elif self.is_flow and execution.status == Execution.Status.RUNNING:
            if execution.progress_message:
                text += f" · {execution.progress_message}"
        elif execution.status == Execution.Status.QUEUED and execution.is_waiting:
            text += f" ({execution.get_wait_reason_display().lower()}"
            if execution.wait_until is not None:
                # As the pages write it: "30 Nov 2026, 05:37:19".
                until = timezone.localtime(execution.wait_until)
                text += f": {until.day} {until:%b %Y, %H:%M:%S}"
            text += ")"
        return text

    def log_line(self, log: ExecutionLog):
        at = timezone.localtime(log.at)
        text = f"  {at:%H:%M:%S}  {log.level.upper():<7}  {log.message}"
        if self.verbosity >= 2 and log.data:
            text += "  " + json.dumps(log.data, ensure_ascii=False)
        style = {"warning": self.style.WARNING, "error": self.style.ERROR}.get(log.level)
        return text, style

    def attempt_line(self, attempt: ExecutionAttempt):
        head = f"Attempt {attempt.number} of {self.execution.max_attempts}"
        took = duration_in_words(attempt.duration)
        Outcome = ExecutionAttempt.Outcome
        if attempt.outcome == Outcome.SUCCEEDED:
            return f"{head} succeeded in {took}.", self.style.SUCCESS
        if attempt.outcome == Outcome.FAILED:
            category = CATEGORIES.get(attempt.error_category)
            kind = f" ({attempt.get_error_category_display()})" if category else ""
            text = f"{head} failed{kind} after {took}: {attempt.error_message}"
            if attempt.retry_delay is not None:
                text += f" Retrying in {seconds_text(attempt.retry_delay)}."
            return text, self.style.WARNING
        outcome = attempt.get_outcome_display().lower()
        detail = f": {attempt.error_message}" if attempt.error_message else "."
        return f"{head} {outcome} after {took}{detail}", self.style.WARNING

    def step_line(self, step: FlowStep):
        """How a flow's step ended, e.g. "Step 2 “transform”: succeeded in 2.1 s (2 attempts)."."""
        Status = FlowStep.Status
        where = f"Step {step.index + 1} “{step.key}”"
        if step.group:
            where += f" (in “{step.group}”)"
        status = step.get_status_display().lower()
        if step.reused_from is not None:
            earlier = step.reused_from
            body = (
                f"reused, not run again: it succeeded {self.run_words(earlier)} as execution "
                f"{earlier.uuid}"
            )
        elif step.type == FlowStep.Type.WAIT and step.status == Status.SUCCEEDED and step.note:
            body = step.note[:1].lower() + step.note[1:].rstrip(".")  # "already waited in ..."
        elif step.type == FlowStep.Type.WAIT and step.status == Status.SUCCEEDED:
            body = f"waited {duration_in_words(self.step_duration(step))}"
        elif step.execution is not None:
            body = f"{status} {self.run_words(step.execution, step)}"
        elif step.type == FlowStep.Type.GROUP and self.step_duration(step) is not None:
            body = f"{status} in {duration_in_words(self.step_duration(step))}"
        else:
            body = status
        text = f"{where}: {body}."
        if step.note and step.status != Status.SUCCEEDED:  # a success's note is said above
            # "Skipped: an earlier step did not succeed." says the status already.
            label, colon, why = step.note.partition(": ")
            if colon and body == status and label.lower() == status:
                text = f"{where}: {status}: {why}"
            else:
                text += f" {step.note}"
        style = {
            Status.SUCCEEDED: self.style.SUCCESS,
            Status.FAILED: self.style.WARNING,
            Status.CANCELLED: self.style.WARNING,
        }.get(step.status)
        return text, style

    @staticmethod
    def step_duration(step: FlowStep) -> timedelta | None:
        if step.started_at is None or step.finished_at is None:
            return None
        return step.finished_at - step.started_at

    def run_words(self, run: Execution, step: FlowStep | None = None) -> str:
        """ "in 2.1 s (2 attempts)" for a step's execution."""
        took = run.duration
        if took is None and step is not None:
            took = self.step_duration(step)
        text = f"in {duration_in_words(took)}"
        if run.attempt:
            text += f" ({run.attempt} attempt{'s' if run.attempt != 1 else ''})"
        return text

    def report_end(self) -> None:
        execution = self.execution
        attempts = f"{execution.attempt} attempt{'s' if execution.attempt != 1 else ''}"
        took = duration_in_words(execution.duration) if execution.duration else None
        if execution.status == Execution.Status.SUCCEEDED:
            self.out.write(f"Succeeded in {took} ({attempts}).", style_func=self.style.SUCCESS)
            self.out.write("Result:")
            self.out.write(json.dumps(execution.result, indent=2, ensure_ascii=False))
            return
        self.out.write(
            f"{execution.status_label}: {execution.error_title or 'no reason recorded'}",
            style_func=self.style.ERROR,
        )
        if execution.error_message:
            self.out.write(f"  {execution.error_message}")
        raise CommandError(f"Execution {execution.uuid} {execution.get_status_display().lower()}.")

    # -- the live line on a terminal ------------------------------------------------------------
    def draw_bar(self) -> None:
        execution = self.execution
        full, empty, ellipsis = self.bar_chars
        filled = round(execution.progress * 20 / 100)
        text = f"[{full * filled}{empty * (20 - filled)}] {execution.progress:3d}%  "
        text += execution.status_label
        if execution.status == Execution.Status.RETRYING and execution.next_attempt_at:
            left = (execution.next_attempt_at - timezone.now()).total_seconds()
            text += f" · next attempt in {max(0, round(left))} s"
        elif execution.status == Execution.Status.QUEUED and execution.is_waiting:
            text += f" · {execution.get_wait_reason_display().lower()}"
        elif execution.progress_message:
            text += f" · {execution.progress_message}"
        text += f"  ({round(time.monotonic() - self.started)} s)"
        width = shutil.get_terminal_size((80, 24)).columns - 1
        if len(text) > width:
            text = text[: max(0, width - len(ellipsis))] + ellipsis
        if self.bar_shown and text == self.bar_text:
            return
        self.out.write("\r" + text + "\033[K", ending="")
        self.out.flush()
        self.bar_shown, self.bar_text = True, text

    def clear_bar(self) -> None:
        if self.bar_shown:
            self.out.write("\r\033[K", ending="")
            self.out.flush()
            self.bar_shown = False
