"""Keyset ("cursor") pagination: as fast on the last page as on the first, stable while rows
are added. ``?limit=`` (1 to 200) and ``?cursor=`` (opaque, from the previous page's
``next``); a cursor that cannot be read is a 400, never a silent first page."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from .errors import InvalidQuery

BIGINT_MAX = 2**63 - 1
CURSOR_MAX = 500


def _encode(values: list) -> str:
    raw = json.dumps(values, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> list:
    if len(cursor) > CURSOR_MAX:
        raise ValueError("too long")
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    values = json.loads(raw)
    if not isinstance(values, list):
        raise ValueError("not a list")
    return values


def _to_datetime(value) -> datetime:
    if not isinstance(value, str):
        raise ValueError("not a date")
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValueError("not a date")
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)  # OverflowError near year 1 or 9999: a bad cursor


def _to_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BIGINT_MAX:
        raise ValueError("not an id")
    return value


def _to_str(value) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError("not a string")
    return value


CONVERTERS = {"datetime": _to_datetime, "int": _to_int, "str": _to_str}


class KeysetPagination(BasePagination):
    """Subclasses say the order: ``keys = (("-created_at", "datetime"), ("-id", "int"))``."""

    keys: tuple[tuple[str, str], ...] = (("id", "int"),)
    default_limit = 50
    max_limit = 200

    def _limit(self, request) -> int:
        raw = request.query_params.get("limit")
        if raw is None or raw == "":
            return self.default_limit
        if not (
            raw.isascii() and raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= self.max_limit
        ):
            raise InvalidQuery(
                f"limit must be a whole number from 1 to {self.max_limit}.",
                details={"limit": [f"A whole number from 1 to {self.max_limit}."]},
            )
        return int(raw)

    def _position(self, cursor: str) -> list:
        try:
            values = _decode(cursor)
            if len(values) != len(self.keys):
                raise ValueError("wrong length")
            return [CONVERTERS[kind](v) for (_, kind), v in zip(self.keys, values, strict=True)]
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, OverflowError):
            raise InvalidQuery(
                "This cursor cannot be read: use the `next` link of the previous page.",
                details={"cursor": ["Not a cursor from this list."]},
            ) from None

    def _after(self, position: list) -> Q:
        """Rows strictly after ``position`` in the order of ``keys`` (lexicographic)."""
        condition = Q()
        equal = Q()
        for (field, _), value in zip(self.keys, position, strict=True):
            name = field.lstrip("-")
            op = "lt" if field.startswith("-") else "gt"
            condition |= equal & Q(**{f"{name}__{op}": value})
            equal &= Q(**{name: value})
        return condition

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self._limit(request)
        cursor = request.query_params.get("cursor")
        queryset = queryset.order_by(*(field for field, _ in self.keys))
        if cursor:
            queryset = queryset.filter(self._after(self._position(cursor)))
        rows = list(queryset[: self.limit + 1])
        self.next_cursor = None
        if len(rows) > self.limit:
            last = rows[self.limit - 1]
            self.next_cursor = _encode([self._value(last, field) for field, _ in self.keys])
        return rows[: self.limit]

    @staticmethod
    def _value(row, field: str):
        value = getattr(row, field.lstrip("-"))
        return value.isoformat() if isinstance(value, datetime) else value

    def get_next_link(self) -> str | None:
        if self.next_cursor is None:
            return None
        return replace_query_param(self.request.build_absolute_uri(), "cursor", self.next_cursor)

    def get_paginated_response(self, data):
        return Response({"results": data, "next": self.get_next_link()})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "next"],
            "properties": {
                "results": schema,
                "next": {
                    "type": "string",
                    "format": "uri",
                    "nullable": True,
                    "description": "The next page (this address with `cursor` set); null on "
                    "the last one. Pages go forward only: there is no `previous` link.",
                },
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": "cursor",
                "required": False,
                "in": "query",
                "description": "Where the page starts: opaque, copied from the previous "
                "page's `next` link (without it, the first page). A cursor that cannot be read "
                "is a 400, never a silent first page.",
                "schema": {"type": "string", "maxLength": CURSOR_MAX},
            },
            {
                "name": "limit",
                "required": False,
                "in": "query",
                "description": f"Rows per page, 1 to {self.max_limit} (default "
                f"{self.default_limit}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_limit},
            },
        ]


class AgentPagination(KeysetPagination):
    keys = (("name", "str"), ("id", "int"))


class ExecutionPagination(KeysetPagination):
    keys = (("-created_at", "datetime"), ("-id", "int"))


class LogPagination(KeysetPagination):
    keys = (("id", "int"),)
    default_limit = 200
    max_limit = 1000
