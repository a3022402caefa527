"""Query filters of the executions list: ``executions.filters.ExecutionFilter``, the one
definition the executions page and bulk actions read too. Values that do not parse, unknown
names and a second value of a name that takes one are a 400 naming them."""

from __future__ import annotations

from django_filters import rest_framework as filters

from executions.filters import FILTER_NAMES, ExecutionFilter, InvalidFilter, check_params

from .errors import InvalidQuery

__all__ = ["ExecutionFilter", "FilterBackend"]

#: The list's own parameters, besides the filter's: the page (api.pagination) and DRF's format.
LIST_PARAMS = ("cursor", "limit", "format")


class FilterBackend(filters.DjangoFilterBackend):
    """django-filter's backend, with invalid values answered as 400 in the API's format."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        try:
            check_params(request.query_params, known=FILTER_NAMES, ignore=LIST_PARAMS)
        except InvalidFilter as exc:
            raise InvalidQuery(exc.message, details=exc.details) from None
        if not filterset.is_valid():
            details = {name: list(errors) for name, errors in filterset.errors.items()}
            first = next(iter(details.items()))
            raise InvalidQuery(f"{first[0]}: {' '.join(first[1])}", details=details)
        return filterset.qs
