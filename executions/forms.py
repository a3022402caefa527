from datetime import timedelta

from django import forms
from django.forms.utils import pretty_name
from django.utils import timezone

from agents.forms import JSONInputField
from agents.models import Agent

from .errors import CATEGORIES
from .filters import InvalidFilter, check_params, choice_error, filter_executions
from .models import BulkAction, Execution
from .selectors import WAIT_REASONS

RANGES = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "30d": ("Last 30 days", timedelta(days=30)),
}


class OneOrMoreSelect(forms.SelectMultiple):
    """A drop-down of one choice that reads every value of its parameter (``?status=failed&
    status=cancelled``: either); it shows as a list with each of them selected when there are
    several, so that filtering again keeps them."""

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        if len([v for v in value or [] if v]) <= 1:
            context["widget"]["attrs"].pop("multiple", None)
        return context


class OneOrMoreField(forms.MultipleChoiceField):
    """Any of the given choices (the executions filter's names that take several values);
    the empty choice is no filter."""

    widget = OneOrMoreSelect

    def __init__(self, *, choices, **kwargs):
        super().__init__(choices=choices, required=False, **kwargs)
        self.error_messages["invalid_choice"] = choice_error(choices)

    def clean(self, value):
        return [v for v in super().clean(value) if v != ""]


class ExecutionFilterForm(forms.Form):
    """The executions page's filters. Their names are not the API's for the time (``range``,
    ``since``, ``until``): :meth:`query` translates them; the rule on names and repeated values
    is the shared one (``executions.filters.check_params``).

    ``ignore``: the page's own parameters besides the filters (the list's cursor, the bulk
    page's action); any other name is refused, named in the form's errors."""

    q = forms.CharField(
        required=False,
        max_length=200,
        label="Search",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Id, agent or error"}),
    )
    status = OneOrMoreField(choices=[("", "Any status"), *Execution.Status.choices])
    wait_reason = OneOrMoreField(
        # Every reason a run may wait for (a test checks that each one is offered).
        choices=[("", "Any wait"), *WAIT_REASONS],
        label="Waiting for",
    )
    agent = forms.ModelChoiceField(
        queryset=Agent.objects.none(),
        required=False,
        to_field_name="uuid",
        empty_label="Any agent",
        error_messages={"invalid_choice": "No agent of yours has this id."},
    )
    trigger = OneOrMoreField(choices=[("", "Any trigger"), *Execution.Trigger.choices])
    range = forms.ChoiceField(
        choices=[("", "Any time"), *((k, v[0]) for k, v in RANGES.items())],
        required=False,
        label="Time",
    )
    error_category = OneOrMoreField(
        choices=[("", "Any error"), *((key, info.title) for key, info in CATEGORIES.items())],
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
    # A bulk action's retries or cancelled executions: set by the link on its page.
    bulk = forms.ModelChoiceField(
        queryset=BulkAction.objects.none(),
        required=False,
        to_field_name="uuid",
        label="Bulk action",
        widget=forms.HiddenInput,
        error_messages={"invalid_choice": "No bulk action of yours has this id."},
    )

    def __init__(self, *args, owner, ignore=("after",), **kwargs):
        super().__init__(*args, **kwargs)
        self.ignore = tuple(ignore)
        self.fields["agent"].queryset = Agent.objects.filter(owner=owner).order_by("name")
        self.fields["bulk"].queryset = BulkAction.objects.filter(owner=owner)

    def clean(self):
        try:
            check_params(self.data, known=self.fields, ignore=self.ignore)
        except InvalidFilter as exc:
            for name, messages in exc.details.items():
                for message in messages:
                    if name in self.fields:
                        self.add_error(name, message)
                    else:
                        self.add_error(None, f"“{name}”: {message}")
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
                query[name] = list(data[name])
        if data.get("agent"):
            query["agent"] = str(data["agent"].uuid)
        if data.get("bulk"):
            query["bulk"] = str(data["bulk"].uuid)
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

    def problems(self) -> list[str]:
        """Each filter that is not valid, named, with why: "Agent: No agent of yours has this
        id." (an unknown name: "“stauts”: Unknown filter. Known ones: ...")."""
        lines = list(self.non_field_errors())
        for name, errors in self.errors.items():
            if name != "__all__":
                label = self.fields[name].label or pretty_name(name)
                lines += [f"{label}: {e}" for e in errors]
        return lines


class RetryForm(forms.Form):
    input = JSONInputField(label="Input (JSON)")
    edit = forms.BooleanField(required=False, widget=forms.HiddenInput)
