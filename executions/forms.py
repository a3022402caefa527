from datetime import timedelta

from django import forms
from django.utils import timezone

from agents.forms import JSONInputField
from agents.models import Agent

from .errors import CATEGORIES
from .filters import InvalidFilter, filter_executions
from .models import Execution
from .selectors import WAIT_REASONS

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

    def query(self, *, at=None) -> dict | None:
        """The valid filters as ``executions.filters.ExecutionFilter`` reads them (the API's
        names), the time range as absolute times from ``at`` (default now); None when a filter
        is not valid. A bulk action stores this, so it selects what the page listed."""
        if not (self.is_bound and self.is_valid()):
            return None if self.is_bound else {}
        data = self.cleaned_data
        query: dict = {}
        if data.get("q"):
            query["q"] = data["q"]
        for name in ("status", "wait_reason", "trigger", "error_category"):
            if data.get(name):
                query[name] = [data[name]]
        if data.get("agent"):
            query["agent"] = str(data["agent"].uuid)
        for name in ("slower_than", "faster_than"):
            if data.get(name) is not None:
                query[name] = data[name]
        tz = timezone.get_current_timezone()
        midnight = timezone.datetime.min.time()
        starts = []
        if data.get("range"):
            starts.append((at or timezone.now()) - RANGES[data["range"]][1])
        if data.get("since"):
            starts.append(timezone.datetime.combine(data["since"], midnight, tz))
        if starts:
            query["created_after"] = max(starts).isoformat()
        if data.get("until"):
            end = timezone.datetime.combine(data["until"], midnight, tz)
            query["created_before"] = (end + timedelta(days=1)).isoformat()
        return query

    def filter(self, queryset):
        """Apply the valid filters to ``queryset`` (invalid ones are ignored and shown)."""
        try:
            return filter_executions(queryset, data=self.query() or {})
        except InvalidFilter as exc:  # a date the database cannot compare, say
            self.add_error(None, exc.message)
            return queryset.none()

    @property
    def active(self) -> bool:
        return self.is_bound and any(self.data.get(name) for name in self.fields)


class RetryForm(forms.Form):
    input = JSONInputField(label="Input (JSON)")
    edit = forms.BooleanField(required=False, widget=forms.HiddenInput)
