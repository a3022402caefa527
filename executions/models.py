"""Executions: one row per run of an agent, the source of truth for its state.

State machine (every change is a compare-and-set UPDATE on the current status and attempt, plus
an ExecutionEvent row in the same transaction: ``executions.services.transition`` with the ORM,
or the one-statement claim and finish of ``executions.fastpath`` on Postgres, which a twin test
holds to the ORM path row for row)::

    (created) ──> queued ──> running ──> succeeded
                    │          │  ├───> failed        (permanent error, or no attempt left)
                    │          │  └───> retrying ──> running ...   (waits out the backoff)
                    │          │           │
                    └──────────┴───────────┴──> cancelled

``succeeded``, ``failed`` and ``cancelled`` are terminal: nothing moves a terminal execution
again. ``failed`` is the dead-letter set. A manual retry creates a new execution with
``retry_of`` set; it never changes the original.

Waiting is explicit. An execution that waits records why in ``wait_reason`` and until when in
``wait_until`` (None: until something else happens), set by the service that decides it::

    queued   ── delayed  (until not_before) ──┐
             ── held     (overlap policy "queue": until the agent's earlier run ends)
             ── broker   (handed to the broker: until a worker claims it)
    retrying ── backoff  (until the next attempt is due)
    queued or retrying, found by the claim over a limit (executions.capacity; ``waits_on``
    names the limit):
             ── slot     (concurrency limit: until a running run of the agent or queue ends)
             ── rate     (rate limit: until wait_until, when a start is allowed again)
             ── circuit  (circuit breaker open: until its probe, wait_until, or its close)
             ── paused   (agent paused: until it is resumed)
    running  ── steps    (a flow: until its current step ends)
             ── pause    (a flow: in a wait step, until wait_until)
    other running executions, succeeded, failed, cancelled: no wait reason

A flow (``agents.kinds.flow``) runs no code of its own: its one attempt stays open while its
steps run as child executions (``parent``, ``step_key``, ``step_index``), each recorded in a
:class:`FlowStep`; ``executions.flows`` advances it when a step ends.

Pages, API and admin show ``wait_reason``/``wait_until`` as they are; nothing re-derives them.
Adding a reason is one line in :class:`WaitReason` plus the service that sets it.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from agents.models import Protection

from .errors import Category


class Execution(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        RETRYING = "retrying", "Retrying"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "Manual"
        API = "api", "API"
        WEBHOOK = "webhook", "Webhook"
        SCHEDULE = "schedule", "Schedule"
        RETRY = "retry", "Retry"
        FLOW = "flow", "Flow"

    class WaitReason(models.TextChoices):
        """Why an active execution is not running now; the label is what people read."""

        NONE = "", "Not waiting"
        DELAYED = "delayed", "Delayed until its start time"
        HELD = "held", "Waiting for the agent's earlier run to finish"
        BROKER = "broker", "Waiting for a worker"
        BACKOFF = "backoff", "Waiting to retry"
        STEPS = "steps", "Waiting for its current step"
        PAUSE = "pause", "Waiting before its next step"
        SLOT = "slot", "Waiting for a free slot (concurrency limit)"
        RATE = "rate", "Waiting for its rate limit"
        CIRCUIT = "circuit", "Waiting for the circuit breaker"
        PAUSED = "paused", "Waiting for the agent to be resumed"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING, Status.RETRYING)
    TERMINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    ALLOWED_TRANSITIONS = {
        Status.QUEUED: {Status.RUNNING, Status.CANCELLED},
        Status.RUNNING: {Status.SUCCEEDED, Status.FAILED, Status.RETRYING, Status.CANCELLED},
        Status.RETRYING: {Status.RUNNING, Status.CANCELLED},
        Status.SUCCEEDED: set(),
        Status.FAILED: set(),
        Status.CANCELLED: set(),
    }

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # The foreign keys here have no index of their own where another index starts with them
    # (Meta: execution_agent_recent, execution_owner_recent, execution_one_per_schedule_slot) or
    # where most rows have none (parent, retry_of: partial indexes): every index is written at
    # each insert and at each change of status (bench/README.md).
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.CASCADE, related_name="executions", db_index=False
    )
    # Denormalised from agent.owner so per-user lists need no join.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="executions",
        db_index=False,
    )
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    input = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=200, blank=True)
    # The current (or last) attempt's number: 0 until the first attempt starts.
    attempt = models.PositiveSmallIntegerField(default=0)
    # Snapshot of the agent's policy when the execution was created.
    max_attempts = models.PositiveSmallIntegerField(default=1)
    # The agent's version when the execution was created (agents.Agent.version): its settings
    # then are agents.AgentVersion's (Agent.version_at). None: a run from before versions were
    # recorded.
    agent_version = models.PositiveIntegerField(null=True, blank=True)
    # Retrying: when the next attempt is due (the API's name for wait_until while retrying).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Why it waits and until when (see the module docstring); blank while running or finished.
    wait_reason = models.CharField(
        max_length=16, choices=WaitReason.choices, blank=True, default=WaitReason.NONE
    )
    wait_until = models.DateTimeField(null=True, blank=True)
    # Waiting for a limit (slot, rate, circuit, paused): the key of the Limiter it waits on,
    # so that the limit's release finds exactly its waiters (executions.capacity).
    waits_on = models.CharField(max_length=200, blank=True)
    # When its message was last handed to the broker (the republish pass measures from it).
    published_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error_category = models.CharField(max_length=20, choices=Category.choices, blank=True)
    error_title = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    # Exception type and traceback: staff only.
    error_detail = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.DurationField(null=True, blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    # NULL, not "": the unique constraint below applies only to executions with a key.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retried_as",
        db_index=False,
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="children",
        db_index=False,
    )
    step_index = models.PositiveSmallIntegerField(null=True, blank=True)
    # A flow's step: its key in the flow's definition.
    step_key = models.CharField(max_length=64, blank=True)
    # A flow's step: the retry settings the flow gave it, over its agent's own (see
    # retry_policy); None: the agent's.
    retry_override = models.JSONField(null=True, blank=True)
    # A flow: when its time limit strikes (running steps are cancelled, the rest skipped).
    deadline_at = models.DateTimeField(null=True, blank=True)
    # The last state the agent saved with ctx.checkpoint(), read by its next attempt.
    checkpoint = models.JSONField(null=True, blank=True)
    checkpoint_at = models.DateTimeField(null=True, blank=True)
    # A delayed run: not handed to a worker before this time.
    not_before = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    notified = models.BooleanField(default=False)
    # Scheduled runs: the schedule and the slot this execution is for (one per slot).
    schedule = models.ForeignKey(
        "agents.Schedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="executions",
        db_index=False,
    )
    scheduled_for = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # "My executions" (newest first, keyset on created_at, id).
            models.Index(fields=["owner", "-created_at", "-id"], name="execution_owner_recent"),
            # The agent page's recent runs and per-agent stats.
            models.Index(fields=["agent", "-created_at", "-id"], name="execution_agent_recent"),
            # Recovery passes (publish due, republish, reaper) and dashboards look only at active
            # executions, by why and until when they wait.
            models.Index(
                fields=["status", "wait_reason", "wait_until"],
                condition=Q(status__in=["queued", "running", "retrying"]),
                name="execution_active",
            ),
            # The agent page's recent schedule slots (agents.schedule_selectors): only the runs
            # a schedule started, so most inserts never touch it.
            models.Index(
                fields=["agent", "-scheduled_for", "-id"],
                condition=Q(scheduled_for__isnull=False),
                name="execution_agent_scheduled",
            ),
            # A limit's release: the runs waiting on it (executions.capacity).
            models.Index(
                fields=["waits_on", "created_at"],
                condition=~Q(waits_on=""),
                name="execution_waits_on",
            ),
            # The admin's failed runs and its dead letters (failed, not retried: counted up to
            # 10,000), newest first. Only failed rows: a run that succeeds never touches it.
            models.Index(
                fields=["-created_at", "-id"],
                condition=Q(status="failed"),
                name="execution_failed_recent",
            ),
            # Operations dashboard and metrics: windows of recent executions by status ...
            models.Index(fields=["created_at", "status"], name="execution_recent_status"),
            # ... and durations and failures of recently finished ones.
            models.Index(
                fields=["finished_at"],
                condition=Q(finished_at__isnull=False),
                name="execution_finished",
            ),
            # A flow's steps, and the retries of a run (the execution page; a deleted flow or
            # run): only the rows that have one.
            models.Index(
                fields=["parent"], condition=Q(parent__isnull=False), name="execution_parent"
            ),
            models.Index(
                fields=["retry_of"], condition=Q(retry_of__isnull=False), name="execution_retry_of"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "scheduled_for"],
                condition=Q(schedule__isnull=False),
                name="execution_one_per_schedule_slot",
            ),
            models.UniqueConstraint(
                fields=["agent", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="execution_idempotency_key_unique_per_agent",
            ),
        ]

    def __str__(self):
        return f"{self.agent_id}:{self.uuid}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def can_cancel(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def can_retry(self) -> bool:
        return self.status in (self.Status.FAILED, self.Status.CANCELLED)

    @property
    def worker_silent_for(self) -> float | None:
        """Seconds since a running attempt's worker last gave a sign of life (its heartbeat,
        stamped every CONVEYOR_HEARTBEAT_INTERVAL seconds), when that is longer than two
        intervals; None while it is heard from, or when the execution is not running."""
        if self.status != self.Status.RUNNING or self.heartbeat_at is None:
            return None
        silent = (timezone.now() - self.heartbeat_at).total_seconds()
        return silent if silent > 2 * settings.CONVEYOR_HEARTBEAT_INTERVAL else None

    @property
    def retry_policy(self):
        """The agent's retry policy, with what the flow that started this step overrides."""
        policy = self.agent.retry_policy
        return policy.overridden(self.retry_override) if self.retry_override else policy

    @property
    def is_flow_step(self) -> bool:
        return self.parent_id is not None

    @property
    def is_waiting(self) -> bool:
        return bool(self.wait_reason) and self.is_active

    @property
    def status_label(self) -> str:
        """What a person reads, counting attempts one way everywhere ("attempt N of M", M the
        most attempts allowed): "Retrying (attempt 2 of 4)" while waiting to start attempt 2,
        "Running (attempt 2 of 4)", "Failed after 3 attempts"."""
        if self.status == self.Status.RETRYING:
            return f"Retrying (attempt {self.attempt + 1} of {self.max_attempts})"
        if self.status == self.Status.RUNNING and self.attempt > 1:
            return f"Running (attempt {self.attempt} of {self.max_attempts})"
        if self.status == self.Status.FAILED and self.attempt > 1:
            return f"Failed after {self.attempt} attempts"
        return self.get_status_display()


class ExecutionEvent(models.Model):
    """One row per status change: the audit trail and the execution's timeline."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=10, blank=True)
    to_status = models.CharField(max_length=10, choices=Execution.Status.choices)
    at = models.DateTimeField()
    attempt = models.PositiveSmallIntegerField(default=0)
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.from_status or 'new'} -> {self.to_status}"


class ExecutionAttempt(models.Model):
    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        LOST = "lost", "Worker lost"

    # Looked up by execution through execution_attempt_number_unique (execution, number).
    execution = models.ForeignKey(
        Execution, on_delete=models.CASCADE, related_name="attempts", db_index=False
    )
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # Blank while the attempt runs.
    outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True)
    error_category = models.CharField(max_length=20, choices=Category.choices, blank=True)
    error_message = models.TextField(blank=True)
    # The wait before the next attempt, when this one was followed by a retry.
    retry_delay = models.FloatField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "number"], name="execution_attempt_number_unique"
            )
        ]

    def __str__(self):
        return f"attempt {self.number}"

    @property
    def duration(self):
        if self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class ExecutionLog(models.Model):
    class Level(models.TextChoices):
        DEBUG = "debug", "Debug"
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="logs")
    attempt = models.PositiveSmallIntegerField(default=0)
    at = models.DateTimeField()
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"[{self.level}] {self.message[:60]}"


class FlowStep(models.Model):
    """One step of one flow execution: created for every step of the definition when the flow
    starts, and the record that makes starting it happen once (unique per flow and key; a step
    starts only by a compare-and-set from ``pending``).

    ``type`` is ``run`` (a child execution of another agent), ``wait`` or ``group`` (a parallel
    group; its members are ``run`` records with ``group`` set to its key). ``index`` is the
    position of the top-level step in the definition (members share their group's).
    """

    class Type(models.TextChoices):
        RUN = "run", "Run an agent"
        WAIT = "wait", "Wait"
        GROUP = "group", "Parallel group"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        SKIPPED = "skipped", "Skipped"

    ENDED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.SKIPPED)

    flow = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=64)
    index = models.PositiveSmallIntegerField()
    group = models.CharField(max_length=64, blank=True)
    type = models.CharField(max_length=8, choices=Type.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # The child execution that runs this step (run steps, once started).
    execution = models.OneToOneField(
        Execution, null=True, blank=True, on_delete=models.SET_NULL, related_name="flow_step"
    )
    # A retried flow reuses a step that succeeded in the flow it retries: the run it reuses.
    reused_from = models.ForeignKey(
        Execution, null=True, blank=True, on_delete=models.SET_NULL, related_name="reused_by"
    )
    # The step's definition when the flow started (a flow edited meanwhile runs as it was).
    spec = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    # What a person reads about how it ended, when not succeeded ("Skipped: the flow ...").
    note = models.CharField(max_length=300, blank=True)
    # A step that could not start (no execution to say why): the error's category.
    error_category = models.CharField(max_length=20, choices=Category.choices, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    wait_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["index", "id"]
        constraints = [
            models.UniqueConstraint(fields=["flow", "key"], name="flow_step_unique_key"),
        ]
        indexes = [
            # The recovery pass: steps still running (their child may have ended unnoticed).
            models.Index(
                fields=["status"],
                condition=Q(status__in=["running", "waiting"]),
                name="flow_step_active",
            ),
        ]

    def __str__(self):
        return f"{self.flow_id}:{self.key}"

    @property
    def is_ended(self) -> bool:
        return self.status in self.ENDED

    @property
    def is_reused(self) -> bool:
        return self.reused_from_id is not None


class Limiter(models.Model):
    """The state of one limit, and the row its claims lock (executions.capacity).

    ``key`` names what is limited: ``agent:<uuid>``, ``queue:<name>`` or ``host:<host>``. A
    claim that a limit applies to locks the row (SELECT ... FOR UPDATE), so of the workers on
    any number of machines one at a time counts and decides. Holds the rate limit's recent
    starts and the circuit breaker's state.
    """

    class State(models.TextChoices):
        CLOSED = "closed", "Closed"
        OPEN = "open", "Open"
        HALF_OPEN = "half_open", "Half-open (a probe run is under way)"

    key = models.CharField(max_length=200, unique=True)
    # Rate limit: when the recent starts began (epoch seconds, oldest first).
    starts = models.JSONField(default=list, blank=True)
    # Circuit breaker.
    state = models.CharField(max_length=10, choices=State.choices, default=State.CLOSED)
    failures = models.PositiveIntegerField(default=0)
    first_failure_at = models.DateTimeField(null=True, blank=True)
    last_failure = models.TextField(blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    # Open: when the next probe may start. Half-open: the probe run (its execution's pk).
    probe_at = models.DateTimeField(null=True, blank=True)
    probe_execution = models.BigIntegerField(null=True, blank=True)
    cooldown = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["state"], condition=~Q(state="closed"), name="limiter_not_closed"),
        ]

    def __str__(self):
        return self.key


class Destination(Protection):
    """Limits that operators set for one destination host, shared by every http agent that
    calls it: a rate limit and a circuit breaker (executions.capacity)."""

    host = models.CharField(
        max_length=253,
        unique=True,
        help_text="The host name as in the agents' URLs, e.g. api.example.com (no port).",
    )
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["host"]

    def __str__(self):
        return self.host


class BulkAction(models.Model):
    """A retry or cancel of every execution that a filter selects, asked for by their owner and
    done in the background in batches (``executions.bulk``).

    The set is fixed when the action is created: executions that match ``filter`` and existed
    then (``id`` up to ``upto_id``); runs that fail later are not swept in. ``last_id`` is how
    far the batches have gone, so a task that is sent again or restarted continues where the
    last committed batch ended, and a finished action does nothing more. Status::

        pending ──> running ──> done
                       └──────> failed   (an unexpected error stopped it; ``error`` says which)
    """

    class Action(models.TextChoices):
        RETRY = "retry", "Retry"
        CANCEL = "cancel", "Cancel"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to start"
        RUNNING = "running", "In progress"
        DONE = "done", "Done"
        FAILED = "failed", "Stopped by an error"

    class Via(models.TextChoices):
        PAGE = "page", "Executions page"
        API = "api", "API"

    FINAL_STATUSES = (Status.DONE, Status.FAILED)

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Who asked for it; it acts on their own executions only.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bulk_actions"
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    via = models.CharField(max_length=10, choices=Via.choices)
    # The filter as executions.filters.ExecutionFilter reads it (normalised_filter).
    filter = models.JSONField(default=dict, blank=True)
    # The last execution id that existed when the action was created: the set's bound.
    upto_id = models.BigIntegerField(default=0)
    # How many executions the preview the person confirmed announced (None: no preview).
    previewed = models.PositiveIntegerField(null=True, blank=True)
    # How many it was to act on when it was created.
    total = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # Retried or cancelled; left alone (already retried, already finished, agent paused ...);
    # refused as not valid (an input the agent no longer takes).
    done = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Why executions were skipped or failed: {code: count}.
    reasons = models.JSONField(default=dict, blank=True)
    # The highest execution id a committed batch has gone through.
    last_id = models.BigIntegerField(default=0)
    # The executions it made or changed (ids): the retries it created, the executions it
    # cancelled. The list's filter ``bulk=<uuid>`` shows them; at most BULK_MAX, added by each
    # batch in its own transaction. An id whose execution was deleted later selects nothing.
    execution_ids = models.JSONField(default=list, blank=True)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Stamped by every batch: an unfinished action not stamped lately has lost its task.
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The owner's recent actions (the executions page, the API's list).
            models.Index(fields=["owner", "-created_at", "-id"], name="bulkaction_owner_recent"),
        ]

    def __str__(self):
        return f"{self.get_action_display()} {self.uuid}"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def processed(self) -> int:
        return self.done + self.skipped + self.failed

    @property
    def percent(self) -> int:
        if not self.total:
            return 100 if self.is_final else 0
        return min(100, round(100 * self.processed / self.total))
