from datetime import timedelta

from django import forms
from django.utils import timezone

from agents.forms import JSONInputField
from agents.models import Agent

from .errors import CATEGORIES
from .models import Execution
from .selectors import WAIT_REASONS, executions_search

RANGES = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "30d": ("Last 30 days", timedelta(days=30)),
}


class ExecutionFilterForm(forms.Form):
    q = forms.CharField(
        required=False,
        max_length=200,
        label="Search",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Id, agent or error"}),
    )
    status = forms.ChoiceField(
        choices=[("", "Any status"), *Execution.Status.choices], required=False
    )
    wait_reason = forms.ChoiceField(
        # Every reason a run may wait for (a test checks that each one is offered).
        choices=[("", "Any wait"), *WAIT_REASONS],
        required=False,
        label="Waiting for",
    )
    agent = forms.ModelChoiceField(
        queryset=Agent.objects.none(), required=False, to_field_name="uuid", empty_label="Any agent"
    )
    trigger = forms.ChoiceField(
        choices=[("", "Any trigger"), *Execution.Trigger.choices], required=False
    )
    range = forms.ChoiceField(
        choices=[("", "Any time"), *((k, v[0]) for k, v in RANGES.items())],
        required=False,
        label="Time",
    )
    error_category = forms.ChoiceField(
        choices=[("", "Any error"), *((key, info.title) for key, info in CATEGORIES.items())],
        required=False,
        label="Error",
    )
    slower_than = forms.FloatField(
        required=False, min_value=0, max_value=10**7, label="Took at least (s)"
    )
    faster_than = forms.FloatField(
        required=False, min_value=0, max_value=10**7, label="Took less than (s)"
    )
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="Until", widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, owner, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent"].queryset = Agent.objects.filter(owner=owner).order_by("name")

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "The end of the range is before its start.")
        slower, faster = data.get("slower_than"), data.get("faster_than")
        if slower is not None and faster is not None and slower >= faster:
            self.add_error("faster_than", "No run can be that quick and that slow at once.")
        return data

    def filter(self, queryset):
        """Apply the valid filters to ``queryset`` (invalid ones are ignored and shown)."""
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        if data.get("q"):
            queryset = executions_search(queryset, text=data["q"])
        if data.get("status"):
            queryset = queryset.filter(status=data["status"])
        if data.get("wait_reason"):
            # Only active runs wait (a finished run's reason is blank anyway).
            queryset = queryset.filter(
                wait_reason=data["wait_reason"], status__in=Execution.ACTIVE_STATUSES
            )
        if data.get("agent"):
            queryset = queryset.filter(agent=data["agent"])
        if data.get("trigger"):
            queryset = queryset.filter(trigger=data["trigger"])
        if data.get("error_category"):
            queryset = queryset.filter(error_category=data["error_category"])
        # Runs still going have no duration yet: a duration filter leaves them out.
        if data.get("slower_than") is not None:
            queryset = queryset.filter(duration__gte=timedelta(seconds=data["slower_than"]))
        if data.get("faster_than") is not None:
            queryset = queryset.filter(duration__lt=timedelta(seconds=data["faster_than"]))
        if data.get("range"):
            queryset = queryset.filter(created_at__gte=timezone.now() - RANGES[data["range"]][1])
        tz = timezone.get_current_timezone()
        if data.get("since"):
            start = timezone.datetime.combine(data["since"], timezone.datetime.min.time(), tz)
            queryset = queryset.filter(created_at__gte=start)
        if data.get("until"):
            end = timezone.datetime.combine(data["until"], timezone.datetime.min.time(), tz)
            queryset = queryset.filter(created_at__lt=end + timedelta(days=1))
        return queryset

    @property
    def active(self) -> bool:
        return self.is_bound and any(self.data.get(name) for name in self.fields)


class RetryForm(forms.Form):
    input = JSONInputField(label="Input (JSON)")
    edit = forms.BooleanField(required=False, widget=forms.HiddenInput)
