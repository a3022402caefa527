"""Which executions a filter selects: one definition for the executions page, the API's list and
bulk actions, so that the three select the same rows.

:class:`ExecutionFilter` (a django-filter FilterSet) reads a query: the API's query string, the
page's filter form translated by ``ExecutionFilterForm.query()``, or the filter a bulk action
stored (:func:`filter_executions`). Values that do not parse are refused with the field named;
the API answers them as 400 (``api.filters.FilterBackend``), a bulk action as 422.

The rule every surface shares (:func:`check_params`): a name the filter does not know is refused,
not ignored (a misspelt ``stauts=running`` would otherwise select every execution); ``status``,
``trigger``, ``wait_reason`` and ``error_category`` take several values (repeat the parameter:
any of them), every other name takes one, and a second value is refused rather than one of the
two silently dropped. Every message reads "<name>: <what is wrong>.", the same words as its
``details``.
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


def choice_error(choices) -> str:
    """The message for a value that is not one of ``choices``: it lists the valid ones."""
    values = ", ".join(str(value) for value, _ in choices if value != "")
    return f"“%(value)s” is not one of the choices: {values}."


class ChoicesField(fields.MultipleChoiceField):
    """Choices given by repeating the parameter; an empty one (``?status=``, as the executions
    page's filter form sends an unset field) is no filter, not an invalid choice."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.error_messages["invalid_choice"] = choice_error(self.choices)

    def to_python(self, value):
        return [v for v in super().to_python(value) if v != ""]


class ChoicesFilter(filters.MultipleChoiceFilter):
    """One or more values of a column of the execution itself. No DISTINCT (django-filter's
    default for several values, for filters across to-many relations): the rows cannot repeat,
    and a DISTINCT over every column sorts every matching row before the page's LIMIT (a user's
    failed runs at a million rows: ~180 ms instead of ~1 ms, bench/read_side.py)."""

    field_class = ChoicesField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("distinct", False)
        super().__init__(*args, **kwargs)


class BulkActionFilter(filters.UUIDFilter):
    """The executions a bulk action made or changed: the retries it created, the executions it
    cancelled (``BulkAction.execution_ids``, written by its batches)."""

    def filter(self, queryset, value):
        if value is None:
            return queryset
        from .models import BulkAction

        ids = BulkAction.objects.filter(uuid=value).values_list("execution_ids", flat=True).first()
        return queryset.filter(pk__in=ids or [])


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
    bulk = BulkActionFilter(
        help_text="A bulk action's id: the retries it created, or the executions it cancelled."
    )

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
            "bulk",
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
#: Those that take several values (any of them); every other name takes one.
MULTIPLE = ("status", "trigger", "wait_reason", "error_category")


class InvalidFilter(Exception):
    """A filter that does not parse: ``details`` name the fields ({name: [messages]}); the
    message is the first of them, "<name>: <message>"."""

    def __init__(self, message: str = "", *, details: dict[str, list[str]]):
        message = message or first_message(details)
        super().__init__(message)
        self.message = message
        self.details = details


def first_message(details: Mapping[str, list[str]]) -> str:
    """ "agent: Give one value, not several." from ``{"filter.agent": ["Give one value, ..."]}``:
    the first field's name (without its prefix) and its messages."""
    name, messages = next(iter(details.items()))
    return f"{name.removeprefix('filter.')}: {' '.join(messages)}"


ONE_VALUE = "Give one value, not several."


def check_params(params, *, known, ignore=(), prefix: str = "") -> None:
    """The rule every surface applies to the names of a filter before reading its values:
    raises :class:`InvalidFilter` for a name not in ``known`` (nor in ``ignore``, the surface's
    own parameters such as a page's cursor) and for a second value of a name that takes one.
    ``params``: a QueryDict, or a mapping of names to lists of values. ``prefix`` goes before
    the names in ``details`` (``filter.`` for a bulk action's JSON filter)."""
    known = tuple(known)
    unknown = [str(name) for name in params if name not in known and name not in ignore]
    details: dict[str, list[str]] = {}
    if unknown:
        listed = ", ".join(known)
        for name in sorted(unknown):
            details[f"{prefix}{name[:50]}"] = [f"Unknown filter. Known ones: {listed}."]
    for name in params:
        if name in known and name not in MULTIPLE and len(_values(params, name)) > 1:
            details[f"{prefix}{name}"] = [ONE_VALUE]
    if details:
        raise InvalidFilter(details=details)


def _values(params, name) -> list:
    if isinstance(params, QueryDict):
        return params.getlist(name)
    value = params[name]
    return value if isinstance(value, list) else [value]


def filter_query(data: Mapping[str, Any]) -> QueryDict:
    """A filter given as JSON (``{"status": ["failed"], "agent": "<id>"}``) as the query string
    the FilterSet reads, after :func:`check_params`."""
    if not isinstance(data, Mapping):
        raise InvalidFilter(details={"filter": [FILTER_OBJECT]})
    check_params(data, known=FILTER_NAMES, prefix="filter.")
    query = QueryDict(mutable=True)
    for name in data:
        for item in _values(data, name):
            if item is None:
                continue
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise InvalidFilter(details={f"filter.{name}": ["Give a string or a number."]})
            query.appendlist(name, str(item))
    return query


FILTER_OBJECT = 'The filter must be an object, e.g. {"status": ["failed"]}.'


def filter_executions(queryset, *, data: Mapping[str, Any]):
    """``queryset`` narrowed by the filter ``data`` (JSON, as :func:`filter_query` reads it).
    Raises :class:`InvalidFilter` naming the values that do not parse."""
    filterset = ExecutionFilter(data=filter_query(data), queryset=queryset)
    if not filterset.is_valid():
        details = {f"filter.{name}": list(errors) for name, errors in filterset.errors.items()}
        raise InvalidFilter(details=details)
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
