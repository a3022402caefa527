"""Which executions a filter selects: one definition for the executions page, the API's list and
bulk actions, so that the three select the same rows.

:class:`ExecutionFilter` (a django-filter FilterSet) reads a query: the API's query string, the
page's filter form translated by ``ExecutionFilterForm.query()``, or the filter a bulk action
stored (:func:`filter_executions`). Values that do not parse are refused with the field named;
the API answers them as 400 (``api.filters.FilterBackend``), a bulk action as 422.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, timedelta
from typing import Any

from django import forms
from django.http import QueryDict
from django_filters import fields
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema_field

from .errors import Category
from .models import Execution
from .selectors import WAIT_REASONS, executions_search


class BoundedIsoDateTimeField(fields.IsoDateTimeField):
    """An ISO 8601 date and time, compared in UTC (year 1 to 9999 once converted).

    Converted here, not by the database: Python takes any offset under 24 hours, PostgreSQL
    refuses one past 15:59 ("time zone displacement out of range", a 500)."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is not None:
            try:
                value = value.astimezone(UTC)
            except OverflowError:
                raise forms.ValidationError("This date is out of range.") from None
        return value


class BoundedIsoDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = BoundedIsoDateTimeField


#: ``parent=none``: only executions no flow started.
TOP_LEVEL = "none"


class ParentField(forms.Field):
    """A flow execution's id, or ``none``."""

    def to_python(self, value):
        value = (value or "").strip()
        if not value:
            return None
        if value.lower() == TOP_LEVEL:
            return TOP_LEVEL
        try:
            return uuid.UUID(value)
        except ValueError:
            raise forms.ValidationError(
                f"“{value[:100]}” is neither a flow execution's id nor “{TOP_LEVEL}” (executions "
                "no flow started)."
            ) from None


PARENT_HELP = (
    "A flow execution's id: the executions of its steps. `none`: only executions no flow started."
)


# The schema's description comes from here: with a schema of its own, the filter's help_text
# is not read.
@extend_schema_field({"type": "string", "example": TOP_LEVEL, "description": PARENT_HELP})
class ParentFilter(filters.Filter):
    field_class = ParentField

    def filter(self, queryset, value):
        if value is None:
            return queryset
        if value == TOP_LEVEL:
            return queryset.filter(parent__isnull=True)
        return queryset.filter(parent__uuid=value)


class ChoicesField(fields.MultipleChoiceField):
    """Choices given by repeating the parameter; an empty one (``?status=``, as the executions
    page's filter form sends an unset field) is no filter, not an invalid choice."""

    def to_python(self, value):
        return [v for v in super().to_python(value) if v != ""]


class ChoicesFilter(filters.MultipleChoiceFilter):
    field_class = ChoicesField


#: The longest duration a filter takes, in seconds (about 115 days).
DURATION_MAX = 10**7


class ExecutionFilter(filters.FilterSet):
    q = filters.CharFilter(
        method="filter_q",
        max_length=200,
        help_text="Text: an execution's id (whole or its first characters), or words in its "
        "agent's name, its error or its progress message.",
    )
    status = ChoicesFilter(
        choices=Execution.Status.choices, help_text="One or more statuses (repeat the parameter)."
    )
    trigger = ChoicesFilter(
        choices=Execution.Trigger.choices, help_text="One or more triggers (repeat the parameter)."
    )
    wait_reason = ChoicesFilter(
        choices=WAIT_REASONS,
        method="filter_wait_reason",
        help_text="Active executions waiting for one of these reasons (repeat the parameter): "
        + ", ".join(f"{value} ({label.lower()})" for value, label in WAIT_REASONS)
        + ".",
    )
    error_category = ChoicesFilter(
        choices=Category.choices,
        help_text="Executions that ended with an error of one of these categories (repeat the "
        "parameter): " + ", ".join(Category.values) + ".",
    )
    agent = filters.UUIDFilter(field_name="agent__uuid", help_text="An agent's id.")
    created_after = BoundedIsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="Created at or after (ISO 8601)."
    )
    created_before = BoundedIsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="Created before (ISO 8601)."
    )
    slower_than = filters.NumberFilter(
        method="filter_slower_than",
        min_value=0,
        max_value=DURATION_MAX,
        help_text="Took at least this many seconds (runs still going have no duration yet).",
    )
    faster_than = filters.NumberFilter(
        method="filter_faster_than",
        min_value=0,
        max_value=DURATION_MAX,
        help_text="Took less than this many seconds (runs still going have no duration yet).",
    )
    parent = ParentFilter(help_text=PARENT_HELP)

    class Meta:
        model = Execution
        fields = (
            "q",
            "status",
            "trigger",
            "wait_reason",
            "error_category",
            "agent",
            "created_after",
            "created_before",
            "slower_than",
            "faster_than",
            "parent",
        )

    def filter_q(self, queryset, name, value):
        return executions_search(queryset, text=value or "")

    def filter_wait_reason(self, queryset, name, value):
        if not value:
            return queryset
        # Only active runs wait (a finished run's reason is blank anyway).
        return queryset.filter(wait_reason__in=value, status__in=Execution.ACTIVE_STATUSES)

    def filter_slower_than(self, queryset, name, value):
        if value is None:
            return queryset
        return queryset.filter(duration__gte=timedelta(seconds=float(value)))

    def filter_faster_than(self, queryset, name, value):
        if value is None:
            return queryset
        return queryset.filter(duration__lt=timedelta(seconds=float(value)))


#: The filter's names, in the order people read them.
FILTER_NAMES = tuple(ExecutionFilter.base_filters)
#: Those that take several values.
MULTIPLE = ("status", "trigger", "wait_reason", "error_category")


class InvalidFilter(Exception):
    """A filter that does not parse: ``details`` name the fields ({name: [messages]})."""

    def __init__(self, message: str, *, details: dict[str, list[str]]):
        super().__init__(message)
        self.message = message
        self.details = details


def filter_query(data: Mapping[str, Any]) -> QueryDict:
    """A filter given as JSON (``{"status": ["failed"], "agent": "<id>"}``) as the query string
    the FilterSet reads. A name it does not know is refused rather than ignored: a misspelt
    filter would otherwise select every execution."""
    if not isinstance(data, Mapping):
        raise InvalidFilter(
            'The filter must be an object, e.g. {"status": ["failed"]}.',
            details={"filter": ["Must be an object."]},
        )
    unknown = sorted(str(name) for name in data if name not in FILTER_NAMES)
    if unknown:
        known = ", ".join(FILTER_NAMES)
        details = {f"filter.{name}": [f"Unknown filter. Known ones: {known}."] for name in unknown}
        message = f"Unknown filter “{unknown[0][:50]}”. Known ones: {known}."
        raise InvalidFilter(message, details=details)
    query = QueryDict(mutable=True)
    for name, value in data.items():
        values = value if isinstance(value, list) else [value]
        if name not in MULTIPLE and len(values) > 1:
            raise InvalidFilter(
                f"{name}: give one value, not a list.",
                details={f"filter.{name}": ["Give one value, not a list."]},
            )
        for item in values:
            if item is None:
                continue
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise InvalidFilter(
                    f"{name}: give a string or a number.",
                    details={f"filter.{name}": ["Give a string or a number."]},
                )
            query.appendlist(name, str(item))
    return query


def filter_executions(queryset, *, data: Mapping[str, Any]):
    """``queryset`` narrowed by the filter ``data`` (JSON, as :func:`filter_query` reads it).
    Raises :class:`InvalidFilter` naming the values that do not parse."""
    filterset = ExecutionFilter(data=filter_query(data), queryset=queryset)
    if not filterset.is_valid():
        details = {f"filter.{name}": list(errors) for name, errors in filterset.errors.items()}
        name, messages = next(iter(details.items()))
        message = f"{name.removeprefix('filter.')}: {' '.join(messages)}"
        raise InvalidFilter(message, details=details)
    return filterset.qs


def normalised_filter(data: Mapping[str, Any]) -> dict[str, Any]:
    """The filter as it is stored with a bulk action: its parsed values in a plain, stable form
    (lists for the names that take several, dates in UTC ISO 8601, numbers as numbers), empty
    ones left out. Raises :class:`InvalidFilter`."""
    filterset = ExecutionFilter(data=filter_query(data), queryset=Execution.objects.none())
    if not filterset.is_valid():
        filter_executions(Execution.objects.none(), data=data)  # raises, with the details
    stored: dict[str, Any] = {}
    for name in FILTER_NAMES:
        value = filterset.form.cleaned_data.get(name)
        if value in (None, "", []):
            continue
        if name in MULTIPLE:
            stored[name] = list(value)
        elif name in ("created_after", "created_before"):
            stored[name] = value.isoformat()
        elif name in ("slower_than", "faster_than"):
            stored[name] = float(value)
        else:
            stored[name] = str(value)
    return stored
