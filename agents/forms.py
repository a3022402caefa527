"""Forms of the agent pages. Validation of the agent itself lives in agents.services."""

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.core.validators import MaxValueValidator, MinValueValidator
from django.utils import timezone

from common import jsonbody
from common.errors import Malformed
from executions.errors import CATEGORIES
from notifications.models import Channel

from .models import Agent, queue_label
from .services import KEEP_FIELDS, LIMIT_FIELDS, NOTIFY_FIELDS, RUN_POLICY_FIELDS, WATCH_FIELDS


def parse_json_text(text: str) -> Any:
    """Parse JSON typed by a person with the API's parser and limits; errors say why, in words."""
    try:
        return jsonbody.parse_json_text(text)
    except Malformed as exc:
        raise forms.ValidationError(exc.message, code=exc.error_code) from None


class JSONInputField(forms.CharField):
    """JSON typed into a page form (blank is None). NUL characters, lone surrogates, NaN,
    Infinity, numbers too large to represent, deep nesting and oversized text are refused
    inline, as the API refuses them (``common.jsonbody``)."""

    widget = forms.Textarea(
        attrs={"rows": 6, "spellcheck": "false", "placeholder": '{"key": "value"}'}
    )

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(strip=False, **kwargs)

    def clean(self, value):
        return parse_json_text(super().clean(value) or "")


def model_range(model, name: str) -> dict[str, int]:
    """The ``min`` and ``max`` of a model field's Min/MaxValueValidators, as widget attributes
    (a form field built from a PositiveIntegerField says min 0 whatever the validators say)."""
    try:
        validators = model._meta.get_field(name).validators
    except FieldDoesNotExist:
        return {}
    attrs = {}
    for v in validators:
        if isinstance(v, MinValueValidator):
            attrs["min"] = max(attrs.get("min", v.limit_value), v.limit_value)
        elif isinstance(v, MaxValueValidator):
            attrs["max"] = min(attrs.get("max", v.limit_value), v.limit_value)
    return attrs


class RunForm(forms.Form):
    input = JSONInputField(label="Input (JSON)", help_text="Leave empty to run without input.")
    # A delayed run ("Run later"): a start time in the person's time zone, or a delay. The run
    # waits queued in the database and the dispatcher hands it to a worker when it is due.
    start_at = forms.DateTimeField(
        required=False,
        label="Start at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="In your time zone.",
    )
    delay = forms.IntegerField(
        required=False,
        min_value=1,
        label="Or start in",
        widget=forms.NumberInput(attrs={"placeholder": "10", "inputmode": "numeric"}),
    )
    # The unit sits next to the number, minutes first: "Start in [ 10 ] [minutes]".
    UNIT_SECONDS = {"minutes": 60, "hours": 3600, "seconds": 1}
    delay_unit = forms.ChoiceField(
        choices=[(unit, unit) for unit in UNIT_SECONDS],
        required=False,
        initial="minutes",
        label="Unit",
        widget=forms.Select(attrs={"aria-label": "Unit"}),
    )
    MAX_DELAY = timedelta(days=366)

    def clean(self):
        data = super().clean()
        data["not_before"] = None
        if self.data.get("when") != "later":
            return data
        start_at, delay = data.get("start_at"), data.get("delay")
        if self.errors:
            return data
        now = timezone.now()
        if start_at and delay:
            raise forms.ValidationError("Give a start time or a delay, not both.")
        if delay:
            unit = self.UNIT_SECONDS.get(data.get("delay_unit") or "minutes", 60)
            not_before = now + timedelta(seconds=delay * unit)
        elif start_at:
            if start_at <= now:
                self.add_error("start_at", "That time has passed. Use Run now to run it now.")
                return data
            not_before = start_at
        else:
            raise forms.ValidationError("Give a start time or a delay to run it later.")
        if not_before - now > self.MAX_DELAY:
            raise forms.ValidationError("Runs can be delayed by a year at most.")
        data["not_before"] = not_before
        return data


# An agent's retention field, and the setting its empty value stands for.
RETENTION_DEFAULTS = {
    "retain_succeeded_days": "CONVEYOR_RETAIN_SUCCEEDED_DAYS",
    "retain_failed_days": "CONVEYOR_RETAIN_FAILED_DAYS",
}


def queue_choices(current: str | None = None) -> list[tuple[str, str]]:
    """The declared queues, each with what it is for, for a select (the page's and the
    admin's). An agent whose queue is no longer declared sees it first, marked, so that saving
    asks for another (``agents.models.queue_validator`` says which)."""
    choices = [(name, queue_label(name)) for name in settings.CONVEYOR_QUEUES]
    if current and current not in settings.CONVEYOR_QUEUES:
        choices.insert(0, (current, f"{current} — no longer offered: choose another"))
    return choices


class ChannelChoiceField(forms.ModelMultipleChoiceField):
    """The owner's notification channels, each as "ops (Email)"."""

    def label_from_instance(self, obj):
        label = f"{obj.name} ({obj.get_kind_display()})"
        return label if obj.is_enabled else f"{label}, turned off"


class AgentForm(forms.ModelForm):
    retry_on = forms.MultipleChoiceField(
        # Only temporary problems: retrying never fixes bad credentials, input or settings.
        choices=[(key, info.title) for key, info in CATEGORIES.items() if info.retryable],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label="Retry on",
        help_text="Which kinds of error are retried automatically.",
    )
    # Not a model field of the form: agents.services sets them (notify_channels=...), refusing
    # another owner's. The queryset is the owner's channels (set in __init__).
    notify_channels = ChannelChoiceField(
        queryset=Channel.objects.none(),
        to_field_name="uuid",
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label="On these channels",
    )

    class Meta:
        model = Agent
        fields = ("name", "description", *RUN_POLICY_FIELDS, *LIMIT_FIELDS, *KEEP_FIELDS,
                  *NOTIFY_FIELDS, *WATCH_FIELDS)  # fmt: skip
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "notify_on": forms.RadioSelect,
            "queue": forms.Select,
            "rate_limit": forms.TextInput(attrs={"placeholder": "5/min", "spellcheck": "false"}),
            "max_concurrency": forms.NumberInput(attrs={"placeholder": "no limit"}),
            "regression_p95_percent": forms.NumberInput(attrs={"placeholder": "not watched"}),
            "regression_success_points": forms.NumberInput(attrs={"placeholder": "not watched"}),
        }
        labels = {
            "max_concurrency": "Runs at once",
            "rate_limit": "Starts per period",
            "breaker_threshold": "Circuit breaker: failures in a row",
            "breaker_window": "Within (s)",
            "breaker_cooldown": "Try again after (s)",
            "log_level": "Keep log lines from",
            "retain_succeeded_days": "Keep succeeded runs (days)",
            "retain_failed_days": "Keep failed runs (days)",
            "overlap_policy": "When a scheduled run comes while a run is still active",
            "retry_backoff": "First retry after (s)",
            "retry_backoff_max": "Longest wait (s)",
            "retry_jitter": "Randomise waits",
            "timeout": "Time limit (whole attempt, s)",
            "notify_on": "Tell me",
            "notify_retries": "Also on each retry",
            "notify_recovery": "Also when it recovers",
            "notify_steps": "Also for each step",
            "regression_p95_percent": "Slower than usual by (%)",
            "regression_success_points": "Fewer successes than usual by (points)",
            "regression_min_runs": "Only with at least (runs)",
        }
        help_texts = {
            # Not the http kind's request timeout, which bounds each HTTP call.
            "timeout": "How long one attempt may run in all, whatever the agent does; then it "
            "stops and fails as a timeout.",
            "queue": "Where its runs wait for a worker: one of the queues your operators set up.",
            "log_level": "The lowest level of the agent's own log lines that is kept. The lines "
            "Conveyor writes about the run (a retry, a cancel, a saved file) are always kept.",
        }

    # A flow is not retried or timed as a whole: its steps are (each step's retry settings,
    # the flow's "retry" and "timeout" in its config), and no worker runs it, so a priority
    # orders nothing (its steps run with their own agents'). Its form leaves these out: a new
    # flow keeps the installation's defaults, an edited one what it had.
    NOT_FOR_FLOWS = (
        "max_retries",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "retry_on",
        "timeout",
        "priority",
        # A breaker protects what a run calls, and the flow calls its steps' agents, which have
        # their own; a flow writes no log lines of its own (its steps do).
        "breaker_threshold",
        "breaker_window",
        "breaker_cooldown",
        "log_level",
    )
    # Fields added after the form was first published: a form sent without one (a page loaded
    # before, a client that posts the old fields) keeps the agent's value, as does a blank one
    # that has no "none" (a number the agent must have, a level). A blank breaker threshold is
    # no breaker (0).
    KEPT_WHEN_NOT_SENT = (*LIMIT_FIELDS, *KEEP_FIELDS, *WATCH_FIELDS)
    KEPT_WHEN_BLANK = ("breaker_window", "breaker_cooldown", "log_level", "regression_min_runs")

    def __init__(self, *args, kind=None, owner=None, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(kind, "is_flow", False):
            # Nor is a flow's end a retry to tell about (each step's agent says whether its
            # own retries are told).
            for name in (*self.NOT_FOR_FLOWS, "notify_retries"):
                del self.fields[name]
        else:
            del self.fields["notify_steps"]  # only a flow has steps to tell about
        self.fields["queue"].widget.choices = queue_choices(self.instance.queue)
        for name in (*self.KEPT_WHEN_BLANK, "breaker_threshold", *WATCH_FIELDS):
            if name in self.fields:
                self.fields[name].required = False
        for name, setting in RETENTION_DEFAULTS.items():
            days = getattr(settings, setting, None)
            if name in self.fields and days:
                self.fields[name].widget.attrs["placeholder"] = f"{days} (the site's default)"
        for name in self.KEPT_WHEN_NOT_SENT:
            # The ranges are the model's (agents.services.agent_validate checks them, with the
            # same messages as the API and the admin); the form only reads a number.
            field = self.fields.get(name)
            if isinstance(field, forms.IntegerField):
                field.validators = []
        # The browser's number fields take the model's ranges, so they agree with the server.
        for name, field in self.fields.items():
            if isinstance(field, forms.IntegerField):
                field.widget.attrs.update(model_range(Agent, name))
        # A declared field gets no initial value from the model: take the instance's (a new
        # agent's instance carries the installation's defaults).
        self.initial.setdefault("retry_on", list(self.instance.retry_on or []))
        channels = self.fields["notify_channels"]
        owner = owner if owner is not None else getattr(self.instance, "owner", None)
        if owner is not None:
            channels.queryset = Channel.objects.filter(owner=owner)
        self.has_channels = channels.queryset.exists()
        if self.instance.pk is not None:
            self.initial.setdefault(
                "notify_channels",
                [str(u) for u in self.instance.notify_channels.values_list("uuid", flat=True)],
            )
        # Without a choice sent (a form of before notifications), the agent keeps its own.
        self.fields["notify_on"].required = False

    def clean_notify_on(self):
        return self.cleaned_data.get("notify_on") or self.instance.notify_on

    def clean(self):
        data = super().clean()
        for name in self.KEPT_WHEN_NOT_SENT:
            if name not in self.fields:
                continue
            value = data.get(name)
            blank = value is None or value == ""
            if self.add_prefix(name) not in self.data or (blank and name in self.KEPT_WHEN_BLANK):
                data[name] = getattr(self.instance, name)
            elif blank and name == "breaker_threshold":
                data[name] = 0
        return data

    def agent_fields(self) -> dict[str, Any]:
        """The cleaned values of the agent's own fields this form shows."""
        return {name: self.cleaned_data[name] for name in self.Meta.fields if name in self.fields}

    def _post_clean(self):
        # Model validation runs in agents.services, with the kind's config, in one place.
        pass


class SecretsForm(forms.Form):
    """Write-only secrets: values are never shown; blank keeps what is set."""

    add = forms.CharField(
        required=False,
        label="Add or replace secrets",
        widget=forms.Textarea(
            attrs={
                "rows": 3,
                "spellcheck": "false",
                "autocomplete": "off",
                "placeholder": "api_token=…",
            }
        ),
        help_text="One NAME=value per line. Values are stored encrypted and never shown again.",
    )

    def __init__(self, *args, existing=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.existing = sorted(existing)
        if self.existing:
            self.fields["remove"] = forms.MultipleChoiceField(
                choices=[(name, name) for name in self.existing],
                required=False,
                widget=forms.CheckboxSelectMultiple,
                label="Remove secrets",
            )

    def clean_add(self):
        values = {}
        for number, line in enumerate(self.cleaned_data["add"].splitlines(), 1):
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            name = name.strip()
            if not sep or not name or not value:
                raise forms.ValidationError(f"Line {number} is not NAME=value.")
            if not name.replace("_", "").replace("-", "").isalnum():
                raise forms.ValidationError(
                    f"Line {number}: a name uses letters, digits, - and _ only."
                )
            values[name] = value
        return values

    def changes(self) -> dict[str, str | None]:
        changes: dict[str, str | None] = dict.fromkeys(self.cleaned_data.get("remove", []))
        changes.update(self.cleaned_data["add"])
        return changes


# Where a flow's save-time problems point (agents.kinds.flow keys them ``steps.<i>.<field>``,
# a parallel group's members ``steps.<i>.parallel.<j>.<field>``), for the flow's form.
STEP_PROBLEM_RE = re.compile(r"\Asteps\.(\d+)(?:\.parallel\.(\d+))?(?:\.([a-z_]+))?\Z")
STEP_FIELD_WORDS = {
    "key": "key",
    "agent": "agent",
    "input": "input",
    "retry": "retries",
    "wait": "wait",
    "parallel": "steps in the group",
}


def flow_step_problems(errors: Mapping[str, list[str]], steps: Any) -> list[dict[str, Any]]:
    """A flow's step problems as its form lists them, in the order found: ``where`` in words
    ("Step 2 “deliver”, input"), the ``messages``, and ``anchor``, the id of the step's row
    (``first``: the step's first problem, whose list item carries that id without script)."""
    problems = []
    seen = set()
    for path, messages in errors.items():
        match = STEP_PROBLEM_RE.match(path)
        if match is None:
            where, anchor = "Steps", "flow-steps"
        else:
            index, member, field = int(match[1]), match[2], match[3]
            step = _item(steps, index)
            where = f"Step {index + 1}{_key_of(step)}"
            if member is not None:
                members = step.get("parallel") if isinstance(step, dict) else None
                where += f", step {int(member) + 1} in the group"
                where += _key_of(_item(members, int(member)))
            if field:
                where += f", {STEP_FIELD_WORDS.get(field, field)}"
            anchor = f"flow-step-{index + 1}"
        problems.append(
            {
                "path": path,
                "where": where,
                "messages": list(messages),
                "anchor": anchor,
                "first": anchor not in seen,
            }
        )
        seen.add(anchor)
    return problems


def _item(items: Any, index: int) -> Any:
    return items[index] if isinstance(items, list) and index < len(items) else None


def _key_of(step: Any) -> str:
    key = step.get("key") if isinstance(step, dict) else None
    return f" “{key}”" if isinstance(key, str) and key.strip() else ""
