import contextlib
import json
import uuid
from collections.abc import Mapping

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from common.rates import canonical_rate, rate_validator
from executions.retry import DEFAULT_RETRY_ON, RetryPolicy

from .secrets import EncryptedSecretsField

# Letters and digits of any script (``\w`` is Unicode-aware): "Relevé", "Отчёт", "日報" are names.
# No slash: ``run_agent owner/name`` splits on it.
name_validator = RegexValidator(
    r"\A[^\W_][\w .-]*\Z",
    "Use letters, digits, spaces, dots, dashes and underscores, starting with a letter or digit.",
)


def queue_about(name: str) -> str:
    """What a declared queue is for and its limit, in words ("" when nothing is said)."""
    queue = settings.CONVEYOR_QUEUES.get(name) or {}
    about = [(queue.get("description") or "").rstrip(".")]
    if queue.get("concurrency"):
        about.append(f"at most {queue['concurrency']} at once")
    return "; ".join(part for part in about if part)


def queue_label(name: str) -> str:
    """A declared queue as people choose it: "reports — Long reports; at most 2 at once"."""
    about = queue_about(name)
    return f"{name} — {about}" if about else name


def queue_validator(value: str) -> None:
    """An agent's runs go to one of the queues operators declared (``CONVEYOR_QUEUES``, see
    config/queues.py), which workers listen on. Never to the maintenance queue: its worker must
    stay free for the dispatcher, or schedules and recovery would wait behind long runs; nor to
    the notifications queue, whose worker delivers messages. An agent saved before its queue was
    taken out of the settings keeps running there; saving it again asks for a declared queue."""
    if value in settings.CONVEYOR_QUEUES:
        return
    choices = ", ".join(
        f"“{name}” ({about})" if (about := queue_about(name)) else f"“{name}”"
        for name in settings.CONVEYOR_QUEUES
    )
    if value.strip() == settings.CONVEYOR_MAINTENANCE_QUEUE:
        why = (
            f"“{value}” is Conveyor's maintenance queue (schedules, delayed runs, recovery); "
            "agent runs cannot use it."
        )
    elif value.strip() == settings.CONVEYOR_NOTIFICATIONS_QUEUE:
        why = f"“{value}” is Conveyor's notifications queue; agent runs cannot use it."
    else:
        why = f"“{value}” is not one of this installation's queues."
    raise ValidationError(f"{why} Choose one of: {choices}.", code="unknown_queue")


# Defaults are callables so the settings in force when a row is created apply.
def default_max_retries():
    return settings.CONVEYOR_DEFAULT_MAX_RETRIES


def default_retry_backoff():
    return settings.CONVEYOR_DEFAULT_RETRY_BACKOFF


def default_retry_backoff_max():
    return settings.CONVEYOR_DEFAULT_RETRY_BACKOFF_MAX


def default_retry_jitter():
    return settings.CONVEYOR_DEFAULT_RETRY_JITTER


def default_timeout():
    return settings.CONVEYOR_DEFAULT_TIMEOUT


def default_queue():
    return settings.CONVEYOR_EXECUTIONS_QUEUE


def default_retry_on():
    return list(DEFAULT_RETRY_ON)


class Protection(models.Model):
    """A rate limit and a circuit breaker (executions.capacity): an agent's own, and a
    destination host's that operators set for every http agent calling it
    (executions.Destination). One set of fields, so one set of rules."""

    rate_limit = models.CharField(
        max_length=20,
        blank=True,
        validators=[rate_validator],
        help_text="At most this many starts per period, e.g. 5/min or 100/hour (empty: no limit).",
    )
    breaker_threshold = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(100)],
        help_text="Stop starting runs after this many failures in a row of errors that may pass "
        "(timeouts, refused connections, 5xx), until a probe run succeeds (0: never stop).",
    )
    breaker_window = models.PositiveIntegerField(
        default=300,
        validators=[MinValueValidator(1), MaxValueValidator(86400)],
        help_text="Seconds within which those failures count as in a row.",
    )
    breaker_cooldown = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(86400)],
        help_text="Seconds to wait before one probe run is let through; doubled each time the "
        "probe fails (at most an hour).",
    )

    class Meta:
        abstract = True

    def clean(self):
        super().clean()
        # One spelling of a rate (5/min), whichever was typed ("5 / minute", "5/M").
        if self.rate_limit:
            with contextlib.suppress(ImproperlyConfigured):  # the field's validator says why
                self.rate_limit = canonical_rate(self.rate_limit)


# The settings of an agent that shape its runs, recorded in each AgentVersion (with the names of
# its secrets). Not its name, description, notifications, retention or webhook: they change what
# is said about a run or who may start one, not how it runs.
VERSIONED_FIELDS = (
    "kind",
    "config",
    "max_retries",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "retry_on",
    "timeout",
    "queue",
    "priority",
    "overlap_policy",
    "max_concurrency",
    "rate_limit",
    "breaker_threshold",
    "breaker_window",
    "breaker_cooldown",
    "log_level",
)


class Agent(Protection):
    """A named, owned, configured unit of automated work. Each run is an Execution."""

    class NotifyOn(models.TextChoices):
        FAILURE = "failure", "When a run fails for good"
        SUCCESS = "success", "When a run succeeds"
        ALWAYS = "always", "When a run ends, whatever the outcome"
        NEVER = "never", "Never"

    class LogLevel(models.TextChoices):
        DEBUG = "debug", "Debug (everything)"
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error only"

    class Overlap(models.TextChoices):
        SKIP = "skip", "Skip the slot while a run is still active"
        ALLOW = "allow", "Start anyway, alongside the active run"
        QUEUE = "queue", "Queue it to start after the active run"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agents"
    )
    name = models.CharField(max_length=100, validators=[name_validator])
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=20)
    config = models.JSONField(default=dict, blank=True)
    # Write-only: never rendered, logged, put in a Celery message or returned by an API.
    secrets = EncryptedSecretsField(blank=True, default="")
    is_paused = models.BooleanField(
        default=False, help_text="A paused agent accepts no new runs until it is resumed."
    )

    # Retry policy (see executions.retry.RetryPolicy) and limits.
    max_retries = models.PositiveSmallIntegerField(
        default=default_max_retries,
        validators=[MaxValueValidator(100)],
        help_text="How many times a failed attempt is tried again (0: never).",
    )
    retry_backoff = models.PositiveIntegerField(
        default=default_retry_backoff,
        help_text="Seconds before the first retry; each later retry waits twice as long.",
    )
    retry_backoff_max = models.PositiveIntegerField(
        default=default_retry_backoff_max, help_text="The longest wait between attempts, seconds."
    )
    retry_jitter = models.BooleanField(
        default=default_retry_jitter,
        help_text="Pick each wait at random up to the computed one, so retries do not stampede.",
    )
    retry_on = models.JSONField(
        default=default_retry_on,
        blank=True,
        help_text="Error categories that are retried (temporary ones by default).",
    )
    timeout = models.PositiveIntegerField(
        default=default_timeout,
        validators=[MinValueValidator(1)],
        help_text="Seconds one attempt may run before it is stopped as timed out.",
    )
    queue = models.CharField(max_length=100, default=default_queue, validators=[queue_validator])
    priority = models.PositiveSmallIntegerField(
        default=5,
        validators=[MaxValueValidator(9)],
        help_text="0 to 9; higher runs first when the queue is busy.",
    )

    # Capacity and protection (executions.capacity): every limit is checked when a worker
    # claims a run, under a lock on the limit's row, so it holds across workers and machines.
    max_concurrency = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="At most this many runs at once; the others wait for a slot (empty: no limit).",
    )
    log_level = models.CharField(
        max_length=8,
        choices=LogLevel.choices,
        default=LogLevel.DEBUG,
        help_text="The lowest level of the runs' log lines that is kept.",
    )
    # Retention (executions.retention): days a finished run is kept; empty: the site's default.
    retain_succeeded_days = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(3650)],
        help_text="Days a succeeded run is kept (empty: the site's default).",
    )
    retain_failed_days = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(3650)],
        help_text="Days a failed or cancelled run is kept (empty: the site's default).",
    )

    # What a scheduled slot does when the agent's previous run is still active.
    overlap_policy = models.CharField(max_length=10, choices=Overlap.choices, default=Overlap.SKIP)
    # Notifications (notifications app): when its owner is told, and where.
    notify_on = models.CharField(
        max_length=10,
        choices=NotifyOn.choices,
        default=NotifyOn.FAILURE,
        help_text="Which final states are sent to the chosen channels.",
    )
    notify_retries = models.BooleanField(
        default=False, help_text="Also tell each time an attempt fails and a retry is planned."
    )
    notify_recovery = models.BooleanField(
        default=False,
        help_text="Also tell when it succeeds again after a failure (its first success after "
        "failures), even if successes are not otherwise sent.",
    )
    notify_steps = models.BooleanField(
        default=False,
        help_text="A flow: also tell about each step's end, by the step agent's own settings "
        "(otherwise only the flow's end is told).",
    )
    # Against its usual (ops.baseline): how much worse than its own last 14 days its last day
    # may be before its owner is told. Empty: that figure is not watched.
    regression_p95_percent = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        default=50,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Tell me when the slowest 5% of its successful runs over the last day are "
        "this many percent slower than over the 14 days before (empty: do not watch).",
    )
    regression_success_points = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Tell me when its share of successful runs over the last day is this many "
        "points lower than over the 14 days before (empty: do not watch).",
    )
    regression_min_runs = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(10000)],
        help_text="Compare only when both the last day and the 14 days before have at least "
        "this many runs, so that one slow or failed run does not alarm.",
    )
    notify_channels = models.ManyToManyField(
        "notifications.Channel", blank=True, related_name="agents"
    )
    # Inbound webhook trigger: POST /hooks/<uuid>/ signed with one of these secrets
    # ({"current": "whsec_...", "next": "whsec_..."} while a rotation is under way).
    webhook_enabled = models.BooleanField(default=False)
    webhook_secrets = EncryptedSecretsField(blank=True, default="")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # One more at every write of the row (save() and the services' updates): a worker keeps an
    # agent it read for as long as its claims find the same version (executions.fastpath).
    version = models.PositiveIntegerField(default=1, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            # "Sync" and "sync" are one name. agents.services.agent_validate checks it first
            # (with the other agent's name in the message); this is the backstop for a race.
            # SQLite's lower() folds ASCII letters only, the service check folds all of them.
            models.UniqueConstraint(
                "owner",
                Lower("name"),
                name="agent_name_unique_per_owner_ci",
                violation_error_message="You already have an agent with this name.",
            ),
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        """Every write of an existing agent raises its ``version`` by one, in the database
        (two saves at once make two versions), and reads the new value back.

        In the same transaction, the settings that shape a run are recorded as an
        :class:`AgentVersion` when they differ from the last one recorded. Here rather than in
        the services: the version is raised here, so every write that can change the settings
        (the services, the admin through them, the seed command, a shell) records them, and a
        run's ``agent_version`` always finds the settings it was created with. The services'
        pause and resume raise the version with an UPDATE and change no recorded setting."""
        with transaction.atomic(using=kwargs.get("using")):
            if self._state.adding:
                super().save(*args, **kwargs)
            else:
                seen, self.version = self.version, models.F("version") + 1
                update_fields = kwargs.get("update_fields")
                if update_fields is not None:
                    kwargs["update_fields"] = {*update_fields, "version"}
                try:
                    super().save(*args, **kwargs)
                except BaseException:
                    self.version = seen
                    raise
                self.refresh_from_db(fields=["version"])
            self._record_version()

    def settings_snapshot(self) -> dict:
        """The settings that shape a run, as JSON: the kind, its config, the retry policy, the
        timeout, queue, priority and limits, and the *names* of its secrets (never a value)."""
        snapshot = {name: getattr(self, name) for name in VERSIONED_FIELDS}
        secrets = self.secrets if isinstance(self.secrets, Mapping) else {}
        snapshot["secrets"] = sorted(secrets)
        # Through JSON, as the database gives it back: a tuple is a list, keys are strings.
        return json.loads(json.dumps(snapshot, default=str))

    def _record_version(self) -> None:
        snapshot = self.settings_snapshot()
        last = (
            AgentVersion.objects.filter(agent=self)
            .order_by("-version")
            .values_list("snapshot", flat=True)
            .first()
        )
        if last != snapshot:
            AgentVersion.objects.create(
                agent=self, version=self.version, snapshot=snapshot, created_at=timezone.now()
            )

    def version_at(self, version: int | None) -> "AgentVersion | None":
        """The settings in force at ``version`` of this agent: the last recorded at or before
        it (a pause, say, raises the version without changing them); None if none was."""
        if version is None:
            return None
        return (
            AgentVersion.objects.filter(agent=self, version__lte=version)
            .order_by("-version")
            .first()
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            backoff=self.retry_backoff,
            backoff_max=self.retry_backoff_max,
            jitter=self.retry_jitter,
            retry_on=frozenset(self.retry_on or ()),
        )

    @property
    def retry_on_labels(self) -> list[str]:
        from executions.errors import Category

        return [Category(c).label.lower() for c in self.retry_on if c in Category.values]

    @property
    def kind_impl(self):
        from .kinds import get_kind

        return get_kind(self.kind)


class AgentVersion(models.Model):
    """The settings that shape an agent's runs (``Agent.settings_snapshot``) from one version of
    the agent on, recorded when a write of the agent changes them. Each execution records the
    agent's version it was created with (``Execution.agent_version``); the settings it ran
    with are the last recorded at or before it (``Agent.version_at``). Secrets by name only."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    snapshot = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["agent", "version"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "version"], name="agent_version_unique"),
        ]

    def __str__(self):
        return f"{self.agent_id} v{self.version}"


class Schedule(models.Model):
    """When an agent runs by itself: a cron expression in a time zone, an interval, or once.

    ``next_run_at`` is the next slot (UTC); the dispatcher claims due schedules by it. Each slot
    starts at most one execution (``Execution.schedule`` + ``Execution.scheduled_for`` are
    unique together) or is recorded as a SkippedSlot.
    """

    class Kind(models.TextChoices):
        CRON = "cron", "Cron expression"
        INTERVAL = "interval", "Every N seconds"
        ONCE = "once", "Once, at a date and time"

    class CatchUp(models.TextChoices):
        LATEST = "latest", "Run once for the latest missed slot"
        NONE = "none", "Skip missed slots"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="schedules")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    cron = models.CharField(max_length=100, blank=True, help_text="Five fields: m h dom mon dow")
    timezone = models.CharField(max_length=64, default="UTC", help_text="An IANA time zone")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    run_at = models.DateTimeField(null=True, blank=True)
    input = models.JSONField(null=True, blank=True)
    is_paused = models.BooleanField(default=False)
    catch_up = models.CharField(max_length=10, choices=CatchUp.choices, default=CatchUp.LATEST)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_slot_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            # The dispatcher's tick: due, active schedules.
            models.Index(
                fields=["next_run_at"],
                condition=models.Q(is_paused=False, next_run_at__isnull=False),
                name="schedule_due",
            ),
        ]

    def __str__(self):
        return f"{self.agent} {self.kind}"


class SkippedSlot(models.Model):
    """A scheduled slot that did not start a run, and why (overlap policy, missed, paused)."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="skipped")
    slot_at = models.DateTimeField()
    reason = models.TextField()
    at = models.DateTimeField()

    class Meta:
        ordering = ["-slot_at"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "slot_at"], name="skipped_slot_unique"),
        ]

    def __str__(self):
        return f"{self.schedule_id} {self.slot_at:%Y-%m-%d %H:%M}"
