"""Reading ``timestamptz`` values from Postgres at a fifth of the cost, with the same values.

Django reads every ``timestamptz`` through its own loader (a Python subclass of psycopg's, which
puts Django's time zone on the result), so psycopg's compiled loader is never used and each
value costs ~6 microseconds of Python parsing. A page that reads the current hour's runs one by
one (the dashboard's start latencies, /metrics) reads thousands of them: 12 ms for 1,300 rows'
creation times alone, at a million executions.

:func:`install` (connected to ``connection_created``) gives each Postgres connection of Django's
a subclass of Django's loader that parses Postgres's ISO output with ``datetime.fromisoformat``
(compiled) and converts the result to Django's time zone; anything else (``infinity``, years
BC or past 9999, a ``DateStyle`` other than ISO) goes to Django's loader as before.
tests/common/test_timestamps.py holds the two to the same values, value for value, under
several session time zones.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from django.db.backends.signals import connection_created

_fromisoformat = datetime.fromisoformat


@cache
def iso_loader(tz):
    """The loader for Django's time zone ``tz`` (its class attribute ``timezone`` is what
    Django's ``create_cursor`` compares before registering a loader of its own)."""
    from django.db.backends.postgresql.psycopg_any import BaseTzLoader

    class IsoTzLoader(BaseTzLoader):
        timezone = tz

        def load(self, data):
            try:
                value = _fromisoformat(bytes(data).decode())
            except ValueError:  # infinity, BC, 5-digit years, another DateStyle
                return super().load(data)
            if value.tzinfo is None:  # Postgres always writes the offset; never guess it
                return super().load(data)
            return value.astimezone(tz)

    return IsoTzLoader


def install_on(wrapper) -> bool:
    """Register the ISO loader on one of Django's open Postgres connections; False (nothing
    done) for another database, or without a time zone (``USE_TZ`` off: Django then drops the
    zone of each value, which this loader does not do)."""
    if wrapper.vendor != "postgresql" or wrapper.timezone is None:
        return False
    wrapper.connection.adapters.register_loader("timestamptz", iso_loader(wrapper.timezone))
    return True


def _on_connection_created(sender, connection, **kwargs) -> None:
    install_on(connection)


def install() -> None:
    connection_created.connect(_on_connection_created, dispatch_uid="conveyor-iso-timestamps")
