"""Query filters of the executions list. Values that do not parse are a 400 naming them."""

from __future__ import annotations

import uuid
from datetime import UTC

from django import forms
from django_filters import fields
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema_field

from executions.models import Execution
from executions.selectors import WAIT_REASONS

from .errors import InvalidQuery


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


class ExecutionFilter(filters.FilterSet):
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
    agent = filters.UUIDFilter(field_name="agent__uuid", help_text="An agent's id.")
    created_after = BoundedIsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="Created at or after (ISO 8601)."
    )
    created_before = BoundedIsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="Created before (ISO 8601)."
    )
    parent = ParentFilter(help_text=PARENT_HELP)

    class Meta:
        model = Execution
        fields = (
            "status",
            "trigger",
            "wait_reason",
            "agent",
            "created_after",
            "created_before",
            "parent",
        )

    def filter_wait_reason(self, queryset, name, value):
        if not value:
            return queryset
        return queryset.filter(wait_reason__in=value, status__in=Execution.ACTIVE_STATUSES)


class FilterBackend(filters.DjangoFilterBackend):
    """django-filter's backend, with invalid values answered as 400 in the API's format."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            details = {name: list(errors) for name, errors in filterset.errors.items()}
            first = next(iter(details.items()))
            raise InvalidQuery(f"{first[0]}: {' '.join(first[1])}", details=details)
        return filterset.qs
