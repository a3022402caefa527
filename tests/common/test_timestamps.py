"""common.timestamps: the ISO loader reads every timestamptz as Django's own loader does (value
for value, time zone object included) and, under any session time zone, as the instant psycopg
reads; what it cannot parse goes to Django's loader, errors included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.backends.postgresql.psycopg_any import BaseTzLoader
from psycopg.pq import Format
from psycopg.types.datetime import TimestamptzLoader

from common.timestamps import install_on, iso_loader

pytestmark = pytest.mark.django_db

on_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the loader is Postgres's (psycopg) only"
)

VALUES = [
    "2026-12-01 15:56:50.326185+00",
    "2026-12-01 15:56:50+00",
    "2026-12-01 15:56:50.3+00",
    "2026-12-01 15:56:50.000001+00",
    "2026-03-29 01:30:00+00",  # Europe's change to summer time
    "2026-10-25 00:30:00+00",  # and back
    "1900-01-01 00:00:00+00",  # local mean time: offsets in seconds (+00:19:32 in Amsterdam)
    "1970-01-01 00:00:00+00",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",  # past year 9999 east of UTC
    "0044-03-15 12:00:00+00 BC",
    "infinity",
    "-infinity",
]
ZONES = ["UTC", "Asia/Kolkata", "America/St_Johns", "Europe/Amsterdam", "Pacific/Chatham"]
TIMESTAMPTZ = "timestamptz"


class DjangoLoader(BaseTzLoader):
    """Django's loader as Django registers it for its time zone (psycopg_any.register_tzloader)."""

    timezone = UTC


def read(values: list[str], loader: type) -> list:
    """Each value as ``loader`` reads it, or the class of the error it raises."""
    found = []
    raw = connection.connection
    for value in values:
        cursor = raw.cursor()
        cursor.adapters.register_loader(TIMESTAMPTZ, loader)
        try:
            cursor.execute("SELECT %s::timestamptz", [value])
            (read_value,) = cursor.fetchone()
        except Exception as exc:  # the error is what is compared
            found.append(type(exc))
        else:
            found.append(read_value)
        finally:
            cursor.close()
    return found


def in_zone(zone: str):
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('TimeZone', %s, false)", [zone])


@on_postgres
def test_in_djangos_session_zone_every_value_is_djangos_own_time_zone_object_included():
    in_zone("UTC")
    assert connection.timezone is UTC
    django_read = read(VALUES, DjangoLoader)
    iso_read = read(VALUES, iso_loader(UTC))
    assert iso_read == django_read
    for a, b in zip(iso_read, django_read, strict=True):
        if isinstance(a, datetime):
            assert a.tzinfo is b.tzinfo is UTC
    # The values it parsed itself and those it handed on are both there.
    assert sum(isinstance(v, datetime) for v in iso_read) >= 9
    assert sum(isinstance(v, type) for v in iso_read) >= 3


@on_postgres
@pytest.mark.parametrize("zone", ZONES)
def test_under_any_session_zone_every_value_is_the_instant_psycopg_reads(zone):
    try:
        in_zone(zone)
        psycopg_read = read(VALUES, TimestamptzLoader)
        iso_read = read(VALUES, iso_loader(UTC))
    finally:
        in_zone("UTC")
    for mine, theirs in zip(iso_read, psycopg_read, strict=True):
        if isinstance(theirs, datetime):
            # Same instant, in Django's zone (psycopg's own is the session's; compared in UTC:
            # Python never finds an hour of a clock change equal to a time in another zone).
            assert mine == theirs.astimezone(UTC) and mine.tzinfo is UTC
        else:
            assert mine == theirs


@on_postgres
def test_djangos_connections_read_through_it_and_keep_it_for_every_cursor():
    connection.ensure_connection()
    expected = iso_loader(connection.timezone)
    assert (
        connection.connection.adapters.get_loader(
            connection.connection.adapters.types[TIMESTAMPTZ].oid, Format.TEXT
        )
        is expected
    )
    with connection.cursor() as cursor:
        # Django's create_cursor registers its own loader when the connection's "disagrees".
        assert (
            cursor.cursor.adapters.get_loader(
                cursor.cursor.adapters.types[TIMESTAMPTZ].oid, Format.TEXT
            )
            is expected
        )
    joined = datetime(2026, 12, 1, 15, 56, 50, 326185, tzinfo=UTC)
    user = get_user_model().objects.create(username="timestamps", date_joined=joined)
    read_back = get_user_model().objects.values_list("date_joined", flat=True).get(pk=user.pk)
    assert read_back == joined and read_back.tzinfo is UTC


def test_other_databases_are_left_alone():
    installed = install_on(connection)
    assert installed is (connection.vendor == "postgresql")
