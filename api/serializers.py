"""What the API reads and writes. Serializers check shapes and types; the services check the
rules (the kind's config schema, the installation's limits) and their errors come back as 422
with the same field names ("config.url")."""

from __future__ import annotations

import re
import uuid as uuid_lib
from collections.abc import Mapping

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.urls import reverse
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.kinds import get_kind, kind_choices
from agents.models import Agent, queue_about
from agents.secrets import Secrets
from agents.webhook_services import webhook_rotation_in_progress
from executions.errors import CATEGORIES
from executions.models import Execution, ExecutionLog, FlowStep
from executions.selectors import explain_wait
from notifications.models import Channel, Delivery, DeliveryAttempt

SMALLINT_MAX = 32767
INT_MAX = 2_147_483_647
SECRET_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
SECRET_NAME_RULE = "1 to 100 ASCII letters, digits, - and _"  # noqa: S105 (words, not a secret)
SECRET_VALUE_MAX = 10000
# The longest wait a delayed run may ask for.
MAX_DELAY_SECONDS = 366 * 24 * 3600


def _absolute(request, url: str) -> str:
    return request.build_absolute_uri(url) if request is not None else url


# --- Agents -----------------------------------------------------------------------------------


class WebhookStateSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    url = serializers.URLField(help_text="Where other systems POST signed requests.")
    rotation_in_progress = serializers.BooleanField(
        help_text="True while two secrets are valid (a rotation started and not finished)."
    )


class WebhookSecretSerializer(WebhookStateSerializer):
    secret = serializers.CharField(
        required=False,
        help_text="A signing secret just made (whsec_…), shown this once: store it now. "
        "Absent when no secret was made.",
    )


def webhook_state(agent: Agent, request) -> dict:
    return {
        "enabled": agent.webhook_enabled,
        "url": _absolute(request, reverse("webhook", args=[agent.uuid])),
        "rotation_in_progress": webhook_rotation_in_progress(agent),
    }


@extend_schema_field(
    {
        "type": "object",
        "writeOnly": True,
        "additionalProperties": {
            "type": "string",
            "nullable": True,
            "minLength": 1,
            "maxLength": SECRET_VALUE_MAX,
        },
        "description": (
            "Write-only: sent, never returned (see secret_names). Merged into the agent's "
            "secrets: a name with a value sets it, a name with null removes it, names not given "
            f"keep their value. Names: {SECRET_NAME_RULE} (matching `{SECRET_NAME.pattern}`). "
            f"Values: non-empty strings of at most {SECRET_VALUE_MAX} characters, or null."
        ),
        "example": {"api_token": "s3cr3t", "old_token": None},
    }
)
class SecretsField(serializers.Field):
    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                'Send an object of names and values, e.g. {"api_token": "…"}.'
            )
        for name, value in data.items():
            if not SECRET_NAME.fullmatch(name):  # match() would let a final newline in
                raise serializers.ValidationError(
                    f"“{name[:100]}”: a secret name uses {SECRET_NAME_RULE}."
                )
            if value is not None and (not isinstance(value, str) or not value):
                raise serializers.ValidationError(
                    f"“{name}”: a value is a non-empty string (or null to remove the secret)."
                )
            if value is not None and len(value) > SECRET_VALUE_MAX:
                raise serializers.ValidationError(
                    f"“{name}”: at most {SECRET_VALUE_MAX} characters."
                )
        return data

    def to_representation(self, value):  # pragma: no cover - write-only
        raise AssertionError("secrets are write-only")


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "string", "format": "uuid"},
        "maxItems": 100,
        "description": "The ids of your notification channels told about this agent's runs "
        "(see /api/v1/channels), as the rules in notify_on, notify_retries and notify_recovery "
        "say. Given, it replaces the list; left out, the list is kept; [] tells no channel.",
    }
)
class ChannelIdsField(serializers.Field):
    """A list of channel ids. Which ones are the caller's is the services' rule
    (``agent_create``/``agent_update``: 422 naming any that is not)."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError(
                'Send a list of channel ids, e.g. ["3f2c…"], or [] for none.'
            )
        if len(data) > 100:
            raise serializers.ValidationError("At most 100 channels.")
        ids, bad = [], []
        for item in data:
            try:
                ids.append(uuid_lib.UUID(str(item)) if isinstance(item, str) else None)
            except ValueError:
                ids.append(None)
            if ids[-1] is None:
                bad.append(f"“{str(item)[:100]}”")
        if bad:
            raise serializers.ValidationError(
                f"Not a channel id (a UUID): {', '.join(bad)}. Channel ids are listed by "
                "GET /api/v1/channels."
            )
        return list(dict.fromkeys(ids))

    def to_representation(self, channels):
        return [str(channel.uuid) for channel in channels.all()]


def model_help(name: str) -> str:
    return str(Agent._meta.get_field(name).help_text)


def model_number(name: str) -> serializers.IntegerField:
    """An agent's whole-number field with the model's range (its validators, tightest bounds)
    and help; null where the model allows it (no limit, the site's default)."""
    field = Agent._meta.get_field(name)
    low = max(
        (v.limit_value for v in field.validators if isinstance(v, MinValueValidator)),
        default=None,
    )
    high = min(
        (v.limit_value for v in field.validators if isinstance(v, MaxValueValidator)),
        default=None,
    )
    return serializers.IntegerField(
        min_value=low,
        max_value=high,
        allow_null=field.null,
        required=False,
        help_text=model_help(name),
    )


def queues_help() -> str:
    """The queues an agent may use, as the operators declared them (CONVEYOR_QUEUES)."""
    names = "; ".join(
        f"`{name}` ({about})" if (about := queue_about(name)) else f"`{name}`"
        for name in settings.CONVEYOR_QUEUES
    )
    return (
        "Where its runs wait for a worker: one of this installation's queues, "
        f"{names}. Default: `{settings.CONVEYOR_EXECUTIONS_QUEUE}`. Another name is refused "
        "with 422 listing them."
    )


class AgentSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    url = serializers.SerializerMethodField()
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=5000, allow_blank=True, required=False)
    kind = serializers.ChoiceField(choices=())
    config = serializers.JSONField(
        help_text="The kind's settings, checked against the kind's schema.", required=False
    )
    secrets = SecretsField(write_only=True, required=False)
    secret_names = serializers.SerializerMethodField(
        help_text="The names of the agent's secrets, sorted; their values are never returned."
    )
    is_paused = serializers.BooleanField(required=False)
    max_retries = serializers.IntegerField(min_value=0, max_value=SMALLINT_MAX, required=False)
    retry_backoff = serializers.IntegerField(min_value=0, max_value=INT_MAX, required=False)
    retry_backoff_max = serializers.IntegerField(min_value=0, max_value=INT_MAX, required=False)
    retry_jitter = serializers.BooleanField(required=False)
    retry_on = serializers.ListField(
        child=serializers.ChoiceField(choices=list(CATEGORIES)), required=False, max_length=50
    )
    timeout = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False)
    queue = serializers.CharField(max_length=100, required=False)
    priority = serializers.IntegerField(min_value=0, max_value=9, required=False)
    overlap_policy = serializers.ChoiceField(
        choices=Agent.Overlap.choices,
        required=False,
        help_text="What a scheduled slot does while the previous run is still active.",
    )
    # Capacity and protection, logs and retention: ranges and help are the model's
    # (agents.models.Agent), whose validators agents.services.agent_validate runs too.
    max_concurrency = model_number("max_concurrency")
    rate_limit = serializers.CharField(
        max_length=20,
        allow_blank=True,
        required=False,
        help_text=f"{model_help('rate_limit')} Periods: sec, min, hour, day.",
    )
    breaker_threshold = model_number("breaker_threshold")
    breaker_window = model_number("breaker_window")
    breaker_cooldown = model_number("breaker_cooldown")
    log_level = serializers.ChoiceField(
        choices=Agent.LogLevel.choices,
        required=False,
        help_text=model_help("log_level"),
        # The words of the page's and the admin's select.
        error_messages={
            "invalid_choice": "Select a valid choice. {input} is not one of the available choices."
        },
    )
    retain_succeeded_days = model_number("retain_succeeded_days")
    retain_failed_days = model_number("retain_failed_days")
    notify_on = serializers.ChoiceField(
        choices=Agent.NotifyOn.choices,
        required=False,
        help_text="Which ends of a run are sent to notify_channels: failure (a run failed for "
        "good; the default), success, always, never.",
    )
    notify_retries = serializers.BooleanField(
        required=False,
        help_text="Also tell each time an attempt fails and a retry is planned.",
    )
    notify_recovery = serializers.BooleanField(
        required=False,
        help_text="Also tell when it succeeds again after a failure, even if successes are "
        "not otherwise sent.",
    )
    notify_steps = serializers.BooleanField(
        required=False,
        help_text="A flow: also tell about each step's end, by the step agent's own settings "
        "(otherwise only the flow's end is told).",
    )
    notify_channels = ChannelIdsField(required=False)
    # Against its usual (ops.baseline): the model's ranges and help.
    regression_p95_percent = model_number("regression_p95_percent")
    regression_success_points = model_number("regression_success_points")
    regression_min_runs = model_number("regression_min_runs")
    webhook = serializers.SerializerMethodField()
    input_example = serializers.SerializerMethodField(
        help_text="An input this agent accepts, as its kind declares it (null: none declared). "
        'Send it as {"input": ...} to the runs endpoint.'
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read when used: kinds register when apps are ready, and the schema lists the queues
        # of the settings in force.
        self.fields["kind"].choices = kind_choices()
        self.fields["queue"].help_text = queues_help()

    def validate_config(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("Send an object of the kind's settings.")
        return value

    def get_url(self, agent) -> str:
        return _absolute(
            self.context.get("request"), reverse("api:agent-detail", args=[agent.uuid])
        )

    def get_secret_names(self, agent) -> list[str]:
        return sorted(agent.secrets)

    @extend_schema_field(OpenApiTypes.ANY)
    def get_input_example(self, agent):
        kind = get_kind(agent.kind)
        return kind.input_example(agent.config) if kind is not None else None

    @extend_schema_field(WebhookStateSerializer)
    def get_webhook(self, agent) -> dict:
        return webhook_state(agent, self.context.get("request"))


class AgentPutSerializer(AgentSerializer):
    """PUT: like PATCH, but the name, kind and config are required."""

    config = serializers.JSONField(help_text="The kind's settings, checked against its schema.")


# --- Notification channels ---------------------------------------------------------------------


# A pattern, not an enum: drf-spectacular would name this enum after the field, "kind", the name
# the agents' kinds have taken, and warn.
@extend_schema_field(
    {
        "type": "string",
        "pattern": f"^({'|'.join(Channel.Kind.values)})$",
        "example": Channel.Kind.WEBHOOK.value,
    }
)
class ChannelKindField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=Channel.Kind.choices, **kwargs)


class ChannelSerializer(serializers.Serializer):
    """Where an owner is told about runs: an email address, a signed webhook, or a
    Slack-compatible incoming webhook (Slack, Discord's ``/slack`` URLs, Mattermost, ...)."""

    id = serializers.UUIDField(source="uuid", read_only=True)
    url = serializers.SerializerMethodField()
    kind = ChannelKindField(
        help_text="email, webhook (signed, Standard Webhooks) or slack (Slack-compatible "
        "incoming webhook). Fixed once the channel is made.",
    )
    name = serializers.CharField(max_length=100)
    target = serializers.CharField(
        max_length=2000,
        help_text="An email address (email), or the http(s) URL messages are POSTed to.",
    )
    is_enabled = serializers.BooleanField(
        required=False,
        help_text="Off: nothing is sent to it. Turning it on clears disabled_reason.",
    )
    disabled_reason = serializers.CharField(
        read_only=True,
        help_text="Why Conveyor turned it off (the endpoint answered 410 Gone); empty otherwise.",
    )
    rotation_in_progress = serializers.SerializerMethodField(
        help_text="A webhook channel: true while messages are signed with two secrets (a "
        "rotation started and not finished)."
    )
    created_at = serializers.DateTimeField(read_only=True)

    def get_url(self, channel) -> str:
        return _absolute(
            self.context.get("request"), reverse("api:channel-detail", args=[channel.uuid])
        )

    def get_rotation_in_progress(self, channel) -> bool:
        return bool(isinstance(channel.secrets, Secrets) and channel.secrets.get("next"))


class ChannelUpdateSerializer(ChannelSerializer):
    """PATCH and PUT: name, target and is_enabled (PUT: name and target required). The kind
    cannot change."""

    kind = ChannelKindField(
        required=False,
        help_text="May be sent, unchanged (a channel's kind cannot change: make a new one).",
    )

    def validate_kind(self, value):
        if self.instance is not None and value != self.instance.kind:
            raise serializers.ValidationError(
                f"A channel's kind cannot change (this one is {self.instance.kind}): create a "
                "new channel instead."
            )
        return value


class ChannelSecretSerializer(ChannelSerializer):
    # Not read_only: the schema would then call it required. A response-only serializer.
    secret = serializers.CharField(
        required=False,
        help_text="A webhook channel's signing secret just made (whsec_…), shown this once: "
        "store it now. Absent for email and slack channels.",
    )


class ChannelTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="The channel took the test message.")
    status_code = serializers.IntegerField(
        allow_null=True, help_text="The endpoint's HTTP status; null for email or no answer."
    )
    error = serializers.CharField(
        allow_blank=True, help_text="What went wrong, in words; empty when it went through."
    )


# --- Executions -------------------------------------------------------------------------------


class FriendlyErrorSerializer(serializers.Serializer):
    category = serializers.CharField(help_text="timeout, network, rate_limited, auth, …")
    title = serializers.CharField()
    message = serializers.CharField()
    what_to_do = serializers.CharField(allow_blank=True)


class WaitSerializer(serializers.Serializer):
    """Why an active execution waits and until when, in words (the explanation its page shows)."""

    # Words, not an enum: the schema has the same choices as "wait_reason" already, and a
    # second enum of them would need a settings override to be named.
    reason = serializers.CharField(
        read_only=True,
        help_text="The execution's wait_reason: one of "
        f"{', '.join(v for v in Execution.WaitReason.values if v)}.",
    )
    label = serializers.CharField(
        read_only=True,
        help_text="The reason in words; “No worker online for its queue” when it waits for a "
        "worker and none has read its queue lately.",
    )
    message = serializers.CharField(
        read_only=True,
        help_text="The whole explanation: what it waits for, what happens next and when, e.g. "
        "“Waiting for a slot: 2 of 2 busy. The agent runs at most 2 runs at once; it starts "
        "when one of them ends.”",
    )
    until = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="Until when it waits, when that is known: its start time, its retry, its "
        "rate limit's next start, its circuit breaker's next probe, a flow's wait step.",
    )
    waits_on = serializers.CharField(
        read_only=True,
        help_text="Waiting for a limit: which one, `agent:<agent id>`, `queue:<queue name>` or "
        "`host:<host>`; empty otherwise.",
    )
    holding = serializers.ListField(
        child=serializers.UUIDField(),
        read_only=True,
        help_text="The ids of your executions it waits for: those holding the slots, the "
        "earlier run in the way, a flow's current steps, a circuit breaker's probe run. Other "
        "users' runs are counted in the message, never listed.",
    )


class ExecutionSerializer(serializers.Serializer):
    """A run of an agent. For staff it also has ``error_detail`` (the traceback)."""

    id = serializers.UUIDField(source="uuid", read_only=True)
    url = serializers.SerializerMethodField()
    agent = serializers.UUIDField(source="agent.uuid", read_only=True)
    agent_name = serializers.CharField(source="agent.name", read_only=True)
    trigger = serializers.ChoiceField(choices=Execution.Trigger.choices, read_only=True)
    status = serializers.ChoiceField(choices=Execution.Status.choices, read_only=True)
    status_label = serializers.CharField(read_only=True, help_text="e.g. “Retrying (2/3)”.")
    is_final = serializers.BooleanField(source="is_terminal", read_only=True)
    progress = serializers.IntegerField(read_only=True, help_text="0 to 100.")
    progress_message = serializers.CharField(read_only=True)
    attempt = serializers.IntegerField(read_only=True, help_text="0 until the first attempt.")
    max_attempts = serializers.IntegerField(read_only=True)
    next_attempt_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="While retrying: when the next attempt is due."
    )
    wait_reason = serializers.ChoiceField(
        choices=Execution.WaitReason.choices,
        read_only=True,
        help_text="Why an active execution is not running now: delayed, held, broker, backoff, "
        "slot (a concurrency limit), rate (a rate limit), circuit (a circuit breaker is open), "
        "paused (its agent is paused) or, for a flow, steps (its current step runs) and pause "
        "(a wait step); empty when it is not waiting. An execution's own page explains it "
        "(`wait`).",
    )
    wait_label = serializers.CharField(
        source="get_wait_reason_display", read_only=True, help_text="The wait reason in words."
    )
    wait_until = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="Until when it waits, when that is known."
    )
    not_before = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="A delayed run starts no earlier than this."
    )
    heartbeat_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="While running: when its worker last gave a sign of life (every few seconds). "
        "An attempt silent for longer than the heartbeat timeout (20 s by default) is taken for "
        "lost and retried.",
    )
    input = serializers.JSONField(read_only=True, allow_null=True)
    result = serializers.JSONField(read_only=True, allow_null=True)
    error = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)
    duration_seconds = serializers.SerializerMethodField()
    retry_of = serializers.UUIDField(source="retry_of.uuid", read_only=True, allow_null=True)
    parent = serializers.UUIDField(
        source="parent.uuid",
        read_only=True,
        allow_null=True,
        help_text="A flow's step: the id of the flow execution that started it; null otherwise.",
    )
    step_key = serializers.CharField(
        read_only=True, help_text="A flow's step: its key in the flow; empty otherwise."
    )
    step_index = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="A flow's step: the position of its step in the flow, from 0; null otherwise.",
    )
    checkpoint_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When the agent last saved a checkpoint (a later attempt resumes from it).",
    )
    deadline_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="A running flow with a time limit: when it is stopped if not finished.",
    )
    logs_url = serializers.SerializerMethodField()

    def to_representation(self, execution):
        data = super().to_representation(execution)
        request = self.context.get("request")
        # The traceback is for operators: staff get an extra "error_detail"; nobody else ever.
        if request is not None and request.user.is_staff:
            data["error_detail"] = execution.error_detail
        return data

    def get_url(self, execution) -> str:
        return _absolute(
            self.context.get("request"), reverse("api:execution-detail", args=[execution.uuid])
        )

    def get_logs_url(self, execution) -> str:
        return _absolute(
            self.context.get("request"), reverse("api:execution-logs", args=[execution.uuid])
        )

    @extend_schema_field(FriendlyErrorSerializer(allow_null=True))
    def get_error(self, execution) -> dict | None:
        if not execution.error_category and not execution.error_title:
            return None
        info = CATEGORIES.get(execution.error_category)
        return {
            "category": execution.error_category,
            "title": execution.error_title,
            "message": execution.error_message,
            "what_to_do": info.what_to_do if info else "",
        }

    @extend_schema_field(
        serializers.FloatField(allow_null=True, help_text="How long it ran; null until it ends.")
    )
    def get_duration_seconds(self, execution) -> float | None:
        return execution.duration.total_seconds() if execution.duration is not None else None


class FlowStepSerializer(serializers.Serializer):
    """One step of a flow execution (a member of a parallel group has ``group`` set)."""

    key = serializers.CharField(read_only=True)
    index = serializers.IntegerField(
        read_only=True,
        help_text="The position of the step in the flow, from 0 (a group's members share it).",
    )
    group = serializers.CharField(
        read_only=True, help_text="The key of the parallel group it belongs to; empty if none."
    )
    type = serializers.ChoiceField(choices=FlowStep.Type.choices, read_only=True)
    # Words, not an enum: the schema has a "status" enum already (the execution's), and a second
    # one of that name would need a settings override to be named.
    status = serializers.CharField(
        read_only=True,
        help_text=f"One of: {', '.join(FlowStep.Status.values)}.",
    )
    execution = serializers.UUIDField(
        source="execution.uuid",
        read_only=True,
        allow_null=True,
        help_text="The id of the execution that runs this step; null for waits, groups, steps "
        "not started and reused ones.",
    )
    reused_from = serializers.UUIDField(
        source="reused_from.uuid",
        read_only=True,
        allow_null=True,
        help_text="A retried flow reuses a step that succeeded before instead of running it "
        "again: the id of that earlier run; null otherwise.",
    )
    result = serializers.JSONField(read_only=True, allow_null=True)
    note = serializers.CharField(
        read_only=True,
        help_text="Why it ended so, in words: skipped, stopped, could not start, or reused.",
    )
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)
    wait_until = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="A wait step: until when it waits."
    )


class ChannelRefSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    name = serializers.CharField(read_only=True)
    kind = ChannelKindField(read_only=True)


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ("number", "at", "status_code", "error", "seconds")
        read_only_fields = fields


class DeliverySerializer(serializers.Serializer):
    """One notification of one event of the execution to one channel, and how sending it
    went. Its message_id (the webhook-id header) is the same on every try."""

    id = serializers.UUIDField(source="uuid", read_only=True)
    event = serializers.ChoiceField(choices=Delivery.Event.choices, read_only=True)
    execution_attempt = serializers.IntegerField(
        source="attempt",
        read_only=True,
        help_text="execution.retrying: the attempt that failed; 0 for the final states.",
    )
    recovered = serializers.BooleanField(
        read_only=True, help_text="A success after failures (told as “it recovered”)."
    )
    channel = ChannelRefSerializer(read_only=True)
    # Words, not an enum: the schema's "status" enum is the execution's.
    status = serializers.CharField(
        read_only=True,
        help_text=f"One of: {', '.join(Delivery.Status.values)} (failed: given up).",
    )
    attempts = serializers.IntegerField(read_only=True, help_text="Tries made so far.")
    last_status_code = serializers.IntegerField(read_only=True, allow_null=True)
    last_error = serializers.CharField(read_only=True)
    next_attempt_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="While pending: when the next try is due."
    )
    message_id = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    delivered_at = serializers.DateTimeField(read_only=True, allow_null=True)
    tries = DeliveryAttemptSerializer(
        many=True, read_only=True, help_text="Each try, oldest first."
    )


class ArtifactSerializer(serializers.Serializer):
    """A file the execution's agent saved (ctx.save_artifact, or an http agent's kept
    response)."""

    id = serializers.UUIDField(source="uuid", read_only=True)
    name = serializers.CharField(read_only=True, help_text="The name the agent gave it.")
    size = serializers.IntegerField(read_only=True, help_text="In bytes.")
    content_type = serializers.CharField(read_only=True)
    attempt = serializers.IntegerField(
        read_only=True,
        help_text="The attempt that saved it: files saved by an attempt that was then retried "
        "stay (a file saved again under its name replaces it).",
    )
    created_at = serializers.DateTimeField(read_only=True)
    download_url = serializers.SerializerMethodField(
        help_text="GET it (same authentication) for the file, as an attachment."
    )

    def get_download_url(self, artifact) -> str:
        return _absolute(
            self.context.get("request"),
            reverse("api:execution-artifact", args=[artifact.execution.uuid, artifact.uuid]),
        )


class ExecutionDetailSerializer(ExecutionSerializer):
    """One execution, with a flow's steps, its notifications and its files."""

    wait = serializers.SerializerMethodField(
        help_text="While it waits: why and until when, in words; null when it does not wait "
        "(running or finished)."
    )
    steps = serializers.SerializerMethodField(
        help_text="A flow's steps in order (empty until the flow starts); null for an execution "
        "that is not a flow."
    )
    deliveries = serializers.SerializerMethodField(
        help_text="The notifications of this execution's events to your channels, oldest "
        "first, each with its tries."
    )
    artifacts = serializers.SerializerMethodField(
        help_text="The files its agent saved, oldest first, each with its download address."
    )

    @extend_schema_field(WaitSerializer(allow_null=True))
    def get_wait(self, execution) -> dict | None:
        wait = explain_wait(execution)
        return None if wait is None else WaitSerializer(wait, context=self.context).data

    @extend_schema_field(FlowStepSerializer(many=True, allow_null=True))
    def get_steps(self, execution) -> list | None:
        rows = list(
            FlowStep.objects.filter(flow=execution)
            .select_related("execution", "reused_from")
            .order_by("index", "id")
        )
        if not rows and not getattr(execution.agent.kind_impl, "is_flow", False):
            return None
        return FlowStepSerializer(rows, many=True, context=self.context).data

    @extend_schema_field(DeliverySerializer(many=True))
    def get_deliveries(self, execution) -> list:
        rows = (
            Delivery.objects.filter(execution=execution)
            .select_related("channel")
            .prefetch_related("tries")
            .order_by("created_at", "id")
        )
        return DeliverySerializer(rows, many=True, context=self.context).data

    @extend_schema_field(ArtifactSerializer(many=True))
    def get_artifacts(self, execution) -> list:
        rows = execution.artifacts.order_by("created_at", "id")
        return ArtifactSerializer(rows, many=True, context=self.context).data


class ExecutionSchema(OpenApiSerializerExtension):
    """The schema of ExecutionSerializer (and ExecutionDetailSerializer), with the field only
    staff get (added in ``to_representation``, so the generator cannot see it) as an optional
    one."""

    target_class = ExecutionSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["properties"]["error_detail"] = {
            "type": "string",
            "readOnly": True,
            "description": "Staff only, absent for everyone else: the error's traceback.",
        }
        return schema


class ExecutionLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = ExecutionLog
        fields = ("id", "at", "attempt", "level", "message", "data")
        read_only_fields = fields


class InputWrapped(serializers.Serializer):
    """A run request's body is an envelope: the agent's input goes under ``input``. Any other
    top-level key is refused (422), so a body sent without the envelope is not run with a
    null input."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                hint = (
                    'Put the agent\'s input under "input", e.g. {"input": {...}}. '
                    f"Accepted fields: {', '.join(self.fields)}."
                )
                raise serializers.ValidationError(
                    {key: [f"Unknown field. {hint}"] for key in unknown}
                )
        return super().to_internal_value(data)


class RunRequestSerializer(InputWrapped):
    input = serializers.JSONField(
        required=False, allow_null=True, help_text="Any JSON; the agent's input."
    )
    run_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="Start no earlier than this (ISO 8601).",
        error_messages={
            "invalid": "Give a date and time in ISO 8601, e.g. 2030-01-31T09:00:00Z.",
        },
    )
    delay_seconds = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=MAX_DELAY_SECONDS,
        help_text="Start no earlier than this many seconds from now.",
        error_messages={"invalid": "Give a whole number of seconds."},
    )

    def validate(self, attrs):
        if attrs.get("run_at") is not None and attrs.get("delay_seconds") is not None:
            raise serializers.ValidationError(
                {"run_at": ["Give run_at or delay_seconds, not both."]}
            )
        return attrs


class StrictCharField(serializers.CharField):
    """A string, and only a string (DRF's CharField turns a number into one)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class BatchRunSerializer(RunRequestSerializer):
    default_error_messages = {
        "null": 'Each run is an object, e.g. {{"input": {{...}}}}, not null.',
    }

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            kind = {bool: "true or false", int: "a number", float: "a number", str: "a string"}
            what = kind.get(type(data), "a list")
            raise serializers.ValidationError(
                {
                    "non_field_errors": [
                        f'Each run is an object, e.g. {{"input": {{...}}}}, not {what}.'
                    ]
                }
            )
        if data.keys() <= {"input"}:
            # The usual run of a batch, {"input": ...}: what the fields below would return for
            # it (parsed JSON is always valid JSON), without their cost a run.
            return {"input": data["input"]} if data else {}
        return super().to_internal_value(data)

    idempotency_key = StrictCharField(
        required=False,
        allow_null=True,
        min_length=1,
        max_length=200,
        trim_whitespace=False,
        help_text=(
            "Optional, 1 to 200 printable ASCII characters: this run's key, like the "
            "Idempotency-Key header of a single run (the two share the keys)."
        ),
        error_messages={"invalid": "Give a string of 1 to 200 printable ASCII characters."},
    )

    def validate_idempotency_key(self, value):
        if value is not None and not (value.isascii() and value.isprintable()):
            raise serializers.ValidationError("Use printable ASCII characters (space to ~).")
        return value


class BatchRequestSerializer(serializers.Serializer):
    """Up to 1,000 runs of the agent, each started as its own execution."""

    runs = BatchRunSerializer(many=True, help_text="1 to 1,000 runs, each started as its own.")


class BatchRunResultSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    url = serializers.SerializerMethodField()
    status = serializers.CharField()
    replay = serializers.BooleanField(
        source="is_replay", help_text="True: its idempotency key had started it before."
    )

    def get_url(self, execution) -> str:
        # One address built for the whole list, then each run's id put in it.
        if not hasattr(self, "_url"):
            sample = uuid_lib.UUID(int=0)
            url = reverse("api:execution-detail", args=[sample])
            self._url = _absolute(self.context["request"], url).replace(str(sample), "{}")
        return self._url.format(execution.uuid)


class BatchResultSerializer(serializers.Serializer):
    created = serializers.IntegerField(help_text="Runs started by this request.")
    replayed = serializers.IntegerField(help_text="Runs an earlier request had started.")
    runs = BatchRunResultSerializer(many=True, help_text="In the order of the request.")


class RetryRequestSerializer(InputWrapped):
    input = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="A new input for the retry; without it, the original input is used.",
    )


class UsualWindowSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField(allow_null=True)
    runs = serializers.IntegerField(help_text="Runs finished (succeeded or failed).")
    succeeded = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True)
    p50 = serializers.FloatField(allow_null=True, help_text="Seconds.")
    p95 = serializers.FloatField(allow_null=True, help_text="Seconds.")


class UsualComparisonSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=["ok", "worse", "not enough runs", "not watched"])
    last_day = serializers.FloatField(allow_null=True)
    usual = serializers.FloatField(allow_null=True)
    last_day_runs = serializers.IntegerField()
    usual_runs = serializers.IntegerField()
    min_runs = serializers.IntegerField()
    threshold = serializers.IntegerField(
        allow_null=True, help_text="Percent (p95) or points (success); null: not watched."
    )


class UsualRegressionSerializer(serializers.Serializer):
    what = serializers.ChoiceField(choices=["p95", "success"])
    since = serializers.DateTimeField()


class BaselineSerializer(serializers.Serializer):
    """The last day against the agent's own 14 days before it (its usual)."""

    state = serializers.ChoiceField(choices=["ok", "worse", "not enough runs", "not watched"])
    last_day = UsualWindowSerializer()
    usual = UsualWindowSerializer()
    p95 = UsualComparisonSerializer()
    success = UsualComparisonSerializer()
    regression = UsualRegressionSerializer(
        allow_null=True, help_text="The open regression (told to the owner once), if any."
    )


class StatsSerializer(serializers.Serializer):
    window = serializers.ChoiceField(choices=["24h", "7d", "30d"])
    since = serializers.DateTimeField()
    runs = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    success_rate = serializers.FloatField(
        allow_null=True, help_text="Succeeded / (succeeded + failed); null without finished runs."
    )
    p50_seconds = serializers.FloatField(allow_null=True, help_text="Median successful run.")
    p95_seconds = serializers.FloatField(allow_null=True)
    baseline = BaselineSerializer(
        help_text="The last day against the 14 days before, whatever the window asked."
    )
