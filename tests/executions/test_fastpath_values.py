"""The fast path sends some values without Django's ``get_db_prep_save`` (``fastpath._Column``:
``as_is`` by type, ``also_as_is`` by value): only where Django would send the very same value.

Every field of the models the fast path writes, against values of every kind a run's fields
take (and some they should not), on Postgres's connection, compared with what Django does.
"""

from __future__ import annotations

import uuid
import warnings
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from executions import fastpath
from executions.models import Execution, ExecutionAttempt, ExecutionEvent, ExecutionLog

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the fast path exists on Postgres only"
    ),
]

MODELS = (Execution, ExecutionEvent, ExecutionAttempt, ExecutionLog)

VALUES = [
    None,
    "",
    "text",
    Execution.Status.RUNNING,
    Execution.WaitReason.BROKER,
    ExecutionAttempt.Outcome.SUCCEEDED,
    0,
    7,
    True,
    False,
    1.5,
    Decimal("2.5"),
    datetime(2026, 12, 1, 18, 0, tzinfo=UTC),
    datetime(2026, 12, 1, 18, 0, tzinfo=ZoneInfo("Asia/Kolkata")),
    datetime(2026, 12, 1, 18, 0),  # naive: Django warns and makes it aware
    date(2026, 12, 1),
    uuid.uuid4(),
    str(uuid.uuid4()),
    timedelta(seconds=90),
    {"a": 1},
    [1, "b"],
]


def fields():
    return [
        pytest.param(f, id=f"{model.__name__}.{f.name}")
        for model in MODELS
        for f in model._meta.concrete_fields
        if not f.primary_key
    ]


@pytest.mark.parametrize("field", fields())
def test_a_value_sent_as_is_is_what_django_sends(field):
    column = fastpath._column(field)
    as_is = 0
    for value in VALUES:
        if not column.sends_as_is(value):
            continue
        as_is += 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a value Django would warn about is never as is
            prepared = field.get_db_prep_save(value, connection)
        # Django sends an integer as psycopg's Int2/Int4/Int8 of its column; the fast path casts
        # every parameter to its column's type in the statement, which writes the same number.
        same_number = type(value) is int and isinstance(prepared, int) and prepared == value
        assert prepared is value or same_number, (field, value, prepared)
    # Every field sends None as it is; most also a value of their own kind.
    assert as_is >= 1


def test_the_values_told_by_value_are_the_ones_runs_write():
    status = fastpath._column(Execution._meta.get_field("status"))
    started = fastpath._column(Execution._meta.get_field("started_at"))
    assert status.sends_as_is(Execution.Status.RUNNING)
    assert started.sends_as_is(datetime(2026, 12, 1, tzinfo=UTC))
    assert not started.sends_as_is(datetime(2026, 12, 1))
    assert not started.sends_as_is("2026-12-01T00:00:00Z")
