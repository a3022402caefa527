"""Notifications: where an owner is told (channels), what was sent (deliveries and their
attempts), and the completion hooks of function agents.

Exactly once per event: one :class:`Delivery` per (execution, event, attempt, channel), written
in the transaction that writes the execution's state (``services.on_execution_ended``), so a
redelivered task, a retried finish or a reaper pass finds it there and writes no second one.
Sending is at least once: a delivery keeps its ``message_id`` (the ``webhook-id`` header) across
its attempts, so a receiver can tell a repeat.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from agents.secrets import EncryptedSecretsField


class Channel(models.Model):
    """One place an owner is told: an email address, a signed webhook endpoint, or a
    Slack-compatible incoming webhook."""

    class Kind(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook (signed)"
        SLACK = "slack", "Slack-compatible webhook"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="channels"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=100)
    # An email address, or the URL deliveries are POSTed to.
    target = models.CharField(max_length=2000)
    # Webhook channels: {"current": "whsec_...", "next": "whsec_..."} while rotating.
    secrets = EncryptedSecretsField(blank=True, default="")
    is_enabled = models.BooleanField(default=True)
    # Why Conveyor stopped sending to it (410 Gone from the endpoint), for its owner.
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name


class Delivery(models.Model):
    """One notification of one event of one execution to one channel."""

    class Event(models.TextChoices):
        SUCCEEDED = "execution.succeeded", "Succeeded"
        FAILED = "execution.failed", "Failed"
        CANCELLED = "execution.cancelled", "Cancelled"
        RETRYING = "execution.retrying", "Retrying"
        # About the agent, sent with the run whose failure opened the breaker.
        CIRCUIT_OPENED = "agent.circuit_opened", "Circuit breaker opened"
        # About the agent (ops.baseline), sent with its latest finished run of the last day.
        AGENT_REGRESSED = "agent.regressed", "Worse than usual"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to send"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Gave up"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    execution = models.ForeignKey(
        "executions.Execution", on_delete=models.CASCADE, related_name="deliveries"
    )
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=24, choices=Event.choices)
    # The execution's attempt a "retrying" event is about (0 for final states).
    attempt = models.PositiveSmallIntegerField(default=0)
    # The first success after failures ("it recovered").
    recovered = models.BooleanField(default=False)
    # The webhook-id: the same on every attempt of this delivery.
    message_id = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When its message was last handed to the broker (the recovery pass measures from it).
    published_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "event", "attempt", "channel"],
                name="delivery_once_per_event_and_channel",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="delivery_pending",
            ),
        ]

    def __str__(self):
        return f"{self.event} → {self.channel_id}"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="tries")
    number = models.PositiveSmallIntegerField()
    at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["number"]

    def __str__(self):
        return f"attempt {self.number}"


class CompletionHook(models.Model):
    """A function agent's ``on_complete`` for one execution: recorded with its final state,
    called once it is committed (by the hook task, or the recovery pass if that was lost)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to run"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Gave up"

    execution = models.OneToOneField(
        "executions.Execution", on_delete=models.CASCADE, related_name="completion_hook"
    )
    function = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["pending", "running"]),
                name="completion_hook_open",
            ),
        ]

    def __str__(self):
        return f"{self.function} for {self.execution_id}"


class Preferences(models.Model):
    """A user's notification preferences beyond channels: the digest."""

    class Digest(models.TextChoices):
        NONE = "", "No digest"
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    digest = models.CharField(max_length=10, choices=Digest.choices, blank=True, default="")
    last_digest_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.user_id}: {self.digest or 'no digest'}"
