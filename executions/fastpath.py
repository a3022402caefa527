"""Postgres: creating a run, and the claim and the successful finish of an attempt, each in
one statement.

These are the steps every execution takes, and the engine's cost is mostly round trips to
the database (bench/README.md). On Postgres each becomes a single statement of data-modifying
CTEs, one round trip:

* create: insert the execution and its creation event (``services.execution_request``);
* claim: lock the row if it waits for exactly this attempt (the compare-and-set on status and
  attempt), move it to running, write the ExecutionEvent, open the ExecutionAttempt;
* finish: compare-and-set running -> succeeded for this attempt, write the event and close the
  attempt only if it won; write the buffered logs either way.

They are a twin of the ORM path in ``executions.services`` (``save()``, ``_claim``,
``attempt_succeed``),
not a second set of rules: the values written come from the same functions
(``claim_fields``, ``success_fields``, ``attempt_closed``, ``new_attempt``, ``new_event``,
``CLAIM_REASON``), and the statements are built from the models' metadata: table and column
names, and *every* column of each inserted row, taken from a model instance built in Python,
so a new field is written with its default like ``save()`` would. Only what depends on the
locked row is computed in SQL: ``started_at`` kept from the first attempt, ``from_status`` and
the claim's reason (which names ``max_attempts``). tests/executions/test_fastpath_twin.py
drives the same scenarios through both paths on Postgres and compares every row they write.
"""

# Every statement here is put together from identifiers that come from the models' metadata
# (quoted by the backend); every value is a parameter.
# ruff: noqa: S608
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any, NamedTuple

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from psycopg import _queries as psycopg_queries

from common import instances

from .models import Execution, ExecutionAttempt, ExecutionLog
from .services import (
    CLAIM_REASON,
    attempt_closed,
    claim_fields,
    new_attempt,
    new_event,
    success_fields,
    success_reason,
)

Status = Execution.Status


def enabled() -> bool:
    return connection.vendor == "postgresql" and settings.CONVEYOR_FASTPATH


# --- Prepared statements ------------------------------------------------------------------------
#
# Each statement here is a few CTEs over ~50 columns: parsing and planning it costs Postgres more
# than running it. Sent with the parameters apart (server-side binding) and prepared on the
# connection, each shape of statement is planned once per connection and then only executed,
# which halves Postgres's CPU per run (bench/README.md). Django's own queries keep its default
# (client-side binding, nothing prepared): only the cursors of this module prepare. A shape is
# a statement's text, which changes only with which values are empty (``_Params.add``) and how
# many log lines a finish writes; psycopg keeps the last ``prepared_max`` (100) of a connection.
# ``CONVEYOR_DB_PREPARE`` off (e.g. behind a pooler in transaction mode, where the next
# transaction may be on another connection) sends them as Django sends its own.


# psycopg turns a statement's ``%(name)s`` placeholders into ``$n`` at every execution, and keeps
# the result only for statements under 4 KiB and 50 parameters (``MAX_CACHED_STATEMENT_LENGTH``,
# ``MAX_CACHED_STATEMENT_PARAMS``); these are longer, and few: their parsing is kept here, with
# psycopg's own function. tests/executions/test_fastpath_prepared.py fails when psycopg's
# ``PostgresQuery.convert``, which ``_ParsedOnce.convert`` repeats, changes (then check it and
# update PSYCOPG_CONVERT_SHA256).
PSYCOPG_CONVERT_SHA256 = "6238407fdceabf0b56c74e7b158e570a4264d7ae98de769b4fbdb3d88fd8a158"
_parse = lru_cache(maxsize=256)(psycopg_queries._query2pg_nocache)


class _ParsedOnce(psycopg_queries.PostgresQuery):
    def convert(self, query, vars):
        if vars is None:
            return super().convert(query, vars)
        query = self._ensure_bytes(query)
        self.query, self._want_formats, self._order, self._parts = _parse(query, self._tx.encoding)
        self.dump(vars)


class _PreparingCursor(psycopg.Cursor):
    """A psycopg cursor that binds its parameters on the server and prepares each statement."""

    _query_cls = _ParsedOnce

    def execute(self, query, params=None, *, prepare=None, binary=None):
        manager = self.connection._prepared
        # Django turns psycopg's automatic preparation off (prepare_threshold None), and psycopg
        # then prepares nothing, even when asked: it is on for this statement only, so that the
        # ORM's queries are neither prepared nor counted.
        threshold, manager.prepare_threshold = manager.prepare_threshold, 1
        try:
            return super().execute(query, params, prepare=True, binary=binary)
        finally:
            manager.prepare_threshold = threshold


class _DebugCursor(CursorDebugWrapper):
    """Django's query log for these cursors: psycopg keeps no text of a prepared statement's
    execution for Django to log, so the statement is logged as sent, with its placeholders."""

    def execute(self, sql, params=None):
        with self.debug_sql(sql, params):
            return CursorWrapper.execute(self, sql, params)


def _cursor():
    """A cursor on Django's connection, wrapped like Django's own (query logging, execute
    wrappers), whose statements are prepared (above) when ``CONVEYOR_DB_PREPARE`` is on."""
    db = connections[DEFAULT_DB_ALIAS]
    if not settings.CONVEYOR_DB_PREPARE:
        return db.cursor()
    # What connection.cursor() does before it wraps its cursor.
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()
    with db.wrap_database_errors:
        cursor = _PreparingCursor(db.connection)
    if db.queries_logged:
        return _DebugCursor(cursor, db)
    return db.make_cursor(cursor)


@cache
def _loading(model: type[models.Model]) -> tuple[tuple[int, Any, list], ...]:
    """What building an instance of ``model`` from a row takes: the converters the ORM applies
    to its columns (e.g. JSON text to Python), with each column's place in the row; the other
    columns' values are taken as they come."""
    table = model._meta.db_table
    return tuple(
        (i, f.get_col(table), converters)
        for i, f in enumerate(model._meta.concrete_fields)
        if (converters := f.get_db_converters(connection))
    )


@cache
def _returning(model: type[models.Model], alias: str) -> str:
    """Every column of ``model``, in the order ``_instance`` reads them."""
    return ", ".join(f"{alias}.{_qn(f.column)}" for f in model._meta.concrete_fields)


def _instance(model: type[models.Model], row: tuple) -> models.Model:
    """``model`` as the ORM would load it from ``row``, its columns as ``_returning`` lists
    them."""
    db = connections[DEFAULT_DB_ALIAS]
    values = list(row)
    for i, col, converters in _loading(model):
        for converter in converters:
            values[i] = converter(values[i], col, db)
    return instances.loaded(model, db.alias, values)


# --- Building statements from the models ------------------------------------------------------


# The statements' text depends only on the models, so the metadata they are built from is looked
# up once per process; only the values are computed per call.


@cache
def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


@cache
def _table(model: type[models.Model]) -> str:
    return _qn(model._meta.db_table)


@cache
def _field(model: type[models.Model], name: str) -> models.Field:
    return model._meta.get_field(name)


@cache
def _col(model: type[models.Model], name: str) -> str:
    return _qn(_field(model, name).column)


@cache
def _cast(field: models.Field) -> str:
    return field.cast_db_type(connection)


@cache
def _inserted(model: type[models.Model]) -> tuple[models.Field, ...]:
    """Every concrete field but the key: what an INSERT of ``model`` writes."""
    return tuple(f for f in model._meta.concrete_fields if not f.primary_key)


@cache
def _insert_columns(model: type[models.Model]) -> tuple[str, tuple[_Column, ...]]:
    """The column list of an INSERT of ``model`` and how to write each of its values."""
    fields = _inserted(model)
    return ", ".join(_qn(f.column) for f in fields), tuple(_column(f) for f in fields)


# Django's own fields that send a value of these exact types to the database unchanged (their
# get_db_prep_save is the identity for it, on Postgres); None is sent as NULL by every one of them.
_AS_IS: dict[type[models.Field], tuple[type, ...]] = {
    **dict.fromkeys((models.CharField, models.TextField), (type(None), str)),
    **dict.fromkeys(
        (
            models.IntegerField,
            models.BigIntegerField,
            models.SmallIntegerField,
            models.PositiveIntegerField,
            models.PositiveBigIntegerField,
            models.PositiveSmallIntegerField,
            models.AutoField,
            models.BigAutoField,
        ),
        (type(None), int),
    ),
    models.BooleanField: (type(None), bool),
    models.FloatField: (type(None), float),
    # Postgres has native uuid and interval types: Django sends the Python value.
    models.UUIDField: (type(None), uuid.UUID),
    models.DurationField: (type(None), timedelta),
    **dict.fromkeys((models.DateTimeField, models.DateField, models.JSONField), (type(None),)),
}


def _is_text(value: Any) -> bool:
    # A text field's choices (TextChoices, a subclass of str) are sent as the text they are.
    return isinstance(value, str)


def _is_aware_datetime(value: Any) -> bool:
    # Django sends an aware datetime as it is; a naive one it warns about and converts.
    return type(value) is datetime and value.utcoffset() is not None


def _never(value: Any) -> bool:
    return False


# Values of other types that a field also sends unchanged, told by their value.
_ALSO_AS_IS: dict[type[models.Field], Any] = {
    models.CharField: _is_text,
    models.TextField: _is_text,
    models.DateTimeField: _is_aware_datetime,
}


class _Column(NamedTuple):
    """What writing a value to a field's column takes, worked out once per field."""

    field: models.Field
    attname: str
    quoted: str
    cast: str
    # The types of value the field sends unchanged, which need no preparing: most of what a
    # step writes (an empty text, NULL, a number), and the values ``also_as_is`` accepts (a
    # status, an aware datetime). Every other value, and every value of a field of another
    # class, goes through ``get_db_prep_save`` (``sends_as_is``). tests/executions/
    # test_fastpath_values.py checks it against Django's get_db_prep_save, field by field.
    as_is: tuple[type, ...]
    also_as_is: Any
    null: str
    empty: str

    def sends_as_is(self, value: Any) -> bool:
        """Whether Django sends ``value`` to this column unchanged (no preparing needed)."""
        return type(value) in self.as_is or self.also_as_is(value)


@cache
def _column(field: models.Field) -> _Column:
    target = field.target_field if isinstance(field, models.ForeignKey) else field
    cast = _cast(field)
    return _Column(
        field,
        field.attname,
        _qn(field.column),
        cast,
        _AS_IS.get(type(target), ()),
        _ALSO_AS_IS.get(type(target), _never),
        f"NULL::{cast}",
        f"''::{cast}",
    )


@cache
def _named_column(model: type[models.Model], name: str) -> _Column:
    return _column(_field(model, name))


# How a value is written (``_Params.mark``): NULL, an empty text, or the next parameter.
_NULL, _EMPTY, _PARAMETER = 0, 1, 2


class _Params:
    """Named parameters, each cast to its column's type (a NULL in a SELECT list has none)."""

    def __init__(self):
        self.values: dict[str, Any] = {}
        # The connection itself, not Django's proxy to it (a lookup at every attribute).
        self.db = connections[DEFAULT_DB_ALIAS]

    def add(self, field: models.Field, value: Any) -> str:
        return self.column_value(_column(field), value)

    def column_value(self, column: _Column, value: Any) -> str:
        mark = self.mark(column, value)
        if mark == _PARAMETER:
            return f"%(p{len(self.values) - 1})s::{column.cast}"
        return column.null if mark == _NULL else column.empty

    def mark(self, column: _Column, value: Any) -> int:
        """Add ``value`` as the next parameter, unless it is empty: most columns a step writes
        are, and they are written as literals, which cost no parameter. Returns which."""
        if not column.sends_as_is(value):
            value = column.field.get_db_prep_save(value, self.db)
        if value is None:
            return _NULL
        if value == "":
            return _EMPTY
        self.values[f"p{len(self.values)}"] = value
        return _PARAMETER

    def raw(self, value: Any) -> str:
        key = f"p{len(self.values)}"
        self.values[key] = value
        return f"%({key})s"


def _assignments(
    model: type[models.Model], fields: dict[str, Any], params: _Params, computed=None
) -> str:
    """``col = value, ...`` for an UPDATE, from field names (``computed``: SQL by field name)."""
    computed = computed or {}
    parts = [f"{_col(model, name)} = {sql}" for name, sql in computed.items()]
    for name, value in fields.items():
        column = _named_column(model, name)
        parts.append(f"{column.quoted} = {params.column_value(column, value)}")
    return ", ".join(parts)


def _insert(obj: models.Model, params: _Params, *, source: str, computed=None) -> str:
    """``INSERT INTO t (every column) SELECT ... FROM source``: every concrete field of ``obj``
    but the key, from its value on the instance unless ``computed`` gives SQL for it."""
    computed = computed or {}
    model = type(obj)
    start = len(params.values)
    mark, values = params.mark, obj.__dict__
    marks = tuple(
        None if c.attname in computed else mark(c, values[c.attname])
        for c in _insert_columns(model)[1]
    )
    return _insert_sql(model, source, tuple(computed.items()), start, marks)


@lru_cache(maxsize=512)
def _insert_sql(
    model: type[models.Model],
    source: str,
    computed: tuple[tuple[str, str], ...],
    start: int,
    marks: tuple[int | None, ...],
) -> str:
    """The text of :func:`_insert`'s statement, the same for every row whose values are empty in
    the same columns (``marks``), its parameters numbered from ``start``."""
    columns, plan = _insert_columns(model)
    sql, computed_sql, number = [], dict(computed), start
    for column, mark in zip(plan, marks, strict=True):
        if mark is None:
            sql.append(computed_sql[column.attname])
        elif mark == _PARAMETER:
            sql.append(f"%(p{number})s::{column.cast}")
            number += 1
        else:
            sql.append(column.null if mark == _NULL else column.empty)
    return f"INSERT INTO {_table(model)} ({columns}) SELECT {', '.join(sql)} FROM {source}"


def _insert_rows(objs: list[models.Model], model: type[models.Model], params: _Params) -> str:
    """Many rows in one INSERT, one array parameter per column (``unnest`` zips them)."""
    fields = _inserted(model)
    columns = ", ".join(_qn(f.column) for f in fields)
    arrays = ", ".join(
        f"{params.raw([f.get_db_prep_save(getattr(o, f.attname), params.db) for o in objs])}"
        f"::{_cast(f)}[]"
        for f in fields
    )
    return f"INSERT INTO {_table(model)} ({columns}) SELECT * FROM unnest({arrays})"


def _all_same(values: list, *, json_field: bool, prepare) -> bool:
    """Whether every value is written as the first one is. Python's == is not enough: 1, 1.0
    and True are equal, also inside lists and dicts, and are different JSON."""
    first = values[0]
    if all(v is first for v in values):
        return True
    if not all(type(v) is type(first) and v == first for v in values):
        return False
    if json_field:
        text = prepare(first)
        return all(prepare(v) == text for v in values)
    return True


def _insert_many(
    objs: list[models.Model],
    params: _Params,
    *,
    computed: dict[str, str] | None = None,
    extra: dict[str, tuple[list, str]] | None = None,
    join: str = "",
) -> str:
    """``INSERT INTO t (every column) SELECT ...`` of many rows of one model: a column whose value
    is the same in every row is one parameter, the others one array parameter each, zipped by
    ``unnest`` (``u.c0``, ``u.c1`` ...). ``extra``: more arrays by name (``u.<name>``), e.g. to
    ``join`` on; ``computed``: SQL by field name."""
    computed = computed or {}
    model = type(objs[0])
    fields = _inserted(model)
    arrays: list[str] = []
    names: list[str] = []
    selected = []
    for f in fields:
        if f.attname in computed:
            selected.append(computed[f.attname])
            continue
        values = [getattr(o, f.attname) for o in objs]
        json_field = isinstance(f, models.JSONField)
        if json_field:
            # As texts: an array of jsonb parameters costs far more to send.
            cast, column = "text", "{}::jsonb"
            prepare = lambda v, f=f: None if v is None else json.dumps(v, cls=f.encoder)  # noqa: E731
        else:
            cast, column = _cast(f), "{}"
            prepare = lambda v, f=f: f.get_db_prep_save(v, params.db)  # noqa: E731
        if _all_same(values, json_field=json_field, prepare=prepare):
            selected.append(column.format(f"{params.raw(prepare(values[0]))}::{cast}"))
            continue
        name = f"c{len(names)}"
        arrays.append(f"{params.raw([prepare(v) for v in values])}::{cast}[]")
        selected.append(column.format(f"u.{name}"))
        names.append(name)
    for name, (values, cast) in (extra or {}).items():
        arrays.append(f"{params.raw(values)}::{cast}[]")
        names.append(name)
    source = "(SELECT 1) AS u"
    if arrays:
        source = f"unnest({', '.join(arrays)}) AS u({', '.join(names)})"
    columns = ", ".join(_qn(f.column) for f in fields)
    return (
        f"INSERT INTO {_table(model)} ({columns}) SELECT {', '.join(selected)} FROM {source} {join}"
    )


# --- Claim -------------------------------------------------------------------------------------


# --- Creation ----------------------------------------------------------------------------------


def create(execution: Execution, event) -> None:
    """Insert a new execution and its creation event (``event``, whose execution is filled in
    from the inserted row) in one statement; sets the execution's key."""
    E = Execution
    p = _Params()
    pk = _col(E, "id")
    created = _insert(execution, p, source="(SELECT 1) AS one") + f" RETURNING {pk}"
    event_sql = _insert(event, p, source="created", computed={"execution_id": f"created.{pk}"})
    sql = f"WITH created AS ({created}), event AS ({event_sql}) SELECT {pk} FROM created"
    with _cursor() as cursor:
        cursor.execute(sql, p.values)
        (execution.pk,) = cursor.fetchone()
    execution._state.adding = False
    execution._state.db = connection.alias


def create_many(
    executions: list[Execution], events: list, *, skip_conflicts: bool = False
) -> list[Execution]:
    """Insert new executions and their creation events (``events[i]`` is ``executions[i]``'s,
    its execution filled in from the inserted row) in one statement; sets each execution's key.
    ``skip_conflicts``: a row that a unique constraint refuses is left out (and its event),
    instead of failing the statement. Returns the executions inserted.
    """
    E = Execution
    p = _Params()
    pk, uuid = _col(E, "id"), _col(E, "uuid")
    conflicts = " ON CONFLICT DO NOTHING" if skip_conflicts else ""
    created = _insert_many(executions, p) + f"{conflicts} RETURNING {pk}, {uuid}"
    event_sql = _insert_many(
        events,
        p,
        computed={"execution_id": f"created.{pk}"},
        extra={"execution_uuid": ([e.uuid for e in executions], "uuid")},
        join=f"JOIN created ON created.{uuid} = u.execution_uuid",
    )
    sql = f"WITH created AS ({created}), event AS ({event_sql}) SELECT {pk}, {uuid} FROM created"
    with connection.cursor() as cursor:
        cursor.execute(sql, p.values)
        keys = {row_uuid: row_pk for row_pk, row_uuid in cursor.fetchall()}
    inserted = []
    for execution in executions:
        if execution.uuid in keys:
            execution.pk = keys[execution.uuid]
            execution._state.adding = False
            execution._state.db = connection.alias
            inserted.append(execution)
    return inserted


def update_many(objs: list[models.Model], fields: list[str]) -> None:
    """``bulk_update(objs, fields)`` in one statement: the new values as arrays zipped by
    ``unnest`` and joined on the key (Django's CASE WHEN per row costs ~0.5 ms a row here)."""
    if not objs:
        return
    model = type(objs[0])
    p = _Params()
    pk = model._meta.pk
    names, arrays, sets = ["pk"], [], []
    arrays.append(f"{p.raw([o.pk for o in objs])}::{_cast(pk)}[]")
    for i, name in enumerate(fields):
        f = _field(model, name)
        values = [f.get_db_prep_save(getattr(o, f.attname), p.db) for o in objs]
        arrays.append(f"{p.raw(values)}::{_cast(f)}[]")
        names.append(f"c{i}")
        sets.append(f"{_qn(f.column)} = u.c{i}")
    sql = (
        f"UPDATE {_table(model)} SET {', '.join(sets)} "
        f"FROM unnest({', '.join(arrays)}) AS u({', '.join(names)}) "
        f"WHERE {_table(model)}.{_qn(pk.column)} = u.pk"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, p.values)


# --- The agents a worker keeps -------------------------------------------------------------
#
# A worker process keeps the agents (without limits) whose runs it claimed, by id, so that a
# claim does not read the agent again. A kept agent is only used by a claim that checks, in the
# same statement, that the agent's row still has the version kept (agents.Agent.version rises at
# every write): a kept agent can never run a run with settings older than the row's.

KEPT_MAX = 1000
_kept: dict[int, Any] = {}


def kept_agent(agent_id: int | None):
    return _kept.get(agent_id) if agent_id is not None else None


def keep_agent(agent) -> None:
    if len(_kept) >= KEPT_MAX and agent.pk not in _kept:
        _kept.clear()
    _kept[agent.pk] = agent


def forget_agents() -> None:
    _kept.clear()


def claim(
    *,
    execution_id: int,
    expected_attempt: int,
    worker: str,
    at: datetime,
    agent=None,
    agent_version: int | None = None,
):
    """Claim (see the module's docstring). ``agent_version``: claim only if the run's agent
    row has this version (``agent`` is then used as it is, without reading it)."""
    E = Execution
    number = expected_attempt + 1
    p = _Params()
    pk, status, attempt = _col(E, "id"), _col(E, "status"), _col(E, "attempt")
    started_at, max_attempts = _col(E, "started_at"), _col(E, "max_attempts")
    waiting = ", ".join(p.add(_field(E, "status"), s) for s in (Status.QUEUED, Status.RETRYING))
    same_agent = ""
    if agent_version is not None:
        from agents.models import Agent

        same_agent = (
            f" AND EXISTS (SELECT 1 FROM {_table(Agent)} a WHERE a.{_col(Agent, 'id')} = "
            f"{_table(E)}.{_col(E, 'agent')} AND a.{_col(Agent, 'id')} = {p.raw(agent.pk)} "
            f"AND a.{_col(Agent, 'version')} = {p.raw(agent_version)})"
        )
    locked = (
        f"SELECT {pk}, {status} FROM {_table(E)} WHERE {pk} = {p.raw(execution_id)} "
        f"AND {status} IN ({waiting}) AND {attempt} = {p.raw(expected_attempt)}{same_agent} "
        "FOR UPDATE"
    )
    first_start = p.add(_field(E, "started_at"), at)
    update = (
        f"UPDATE {_table(E)} e SET "
        + _assignments(
            E,
            {"status": Status.RUNNING, **claim_fields(number=number, at=at)},
            p,
            computed={"started_at": f"COALESCE(e.{started_at}, {first_start})"},
        )
        + f" FROM old WHERE e.{pk} = old.{pk} "
        f"RETURNING {_returning(E, 'e')}, old.{status} AS from_status"
    )
    event = new_event(
        execution_id=execution_id, from_status="", to=Status.RUNNING, at=at, attempt=number
    )
    event_sql = _insert(
        event,
        p,
        source="claimed",
        computed={
            "from_status": "claimed.from_status",
            "reason": f"format({p.raw(CLAIM_REASON)}, claimed.{attempt}, claimed.{max_attempts})",
        },
    )
    opened = new_attempt(execution_id=execution_id, number=number, at=at, worker=worker)
    attempt_sql = (
        _insert(opened, p, source="claimed") + f" RETURNING {_col(ExecutionAttempt, 'id')}"
    )
    sql = (
        f"WITH old AS ({locked}), claimed AS ({update}), event AS ({event_sql}), "
        f"opened AS ({attempt_sql}) SELECT claimed.*, "
        f"opened.{_col(ExecutionAttempt, 'id')} AS attempt_pk FROM claimed, opened"
    )
    with _cursor() as cursor:
        cursor.execute(sql, p.values)
        row = cursor.fetchone()
    if row is None:
        return None
    # The execution's columns, then from_status, then the attempt's key.
    execution = _instance(Execution, row[:-2])
    if agent is None or agent.pk != execution.agent_id:
        # Not given by the caller: read after the claim, like the ORM path's select_related.
        from agents.models import Agent

        agent = Agent.objects.get(pk=execution.agent_id)
    execution.agent = agent
    opened.pk = row[-1]
    return execution, opened


# --- Successful finish -------------------------------------------------------------------------


def finish_success(
    *,
    execution: Execution,
    attempt: ExecutionAttempt,
    logs: list[ExecutionLog],
    result: Any,
    at: datetime,
) -> bool:
    """Returns whether the compare-and-set won; if not, only the logs were written."""
    E, A = Execution, ExecutionAttempt
    p = _Params()
    pk = _col(E, "id")
    fields = {
        "status": Status.SUCCEEDED,
        **success_fields(result=result, at=at, started_at=execution.started_at),
    }
    done = (
        f"UPDATE {_table(E)} SET {_assignments(E, fields, p)} "
        f"WHERE {pk} = {p.raw(execution.pk)} "
        f"AND {_col(E, 'status')} = {p.add(_field(E, 'status'), Status.RUNNING)} "
        f"AND {_col(E, 'attempt')} = {p.raw(attempt.number)} RETURNING {pk}"
    )
    event = new_event(
        execution_id=execution.pk,
        from_status=Status.RUNNING,
        to=Status.SUCCEEDED,
        at=at,
        attempt=attempt.number,
        reason=success_reason(attempt.number),
    )
    closed = attempt_closed(outcome=A.Outcome.SUCCEEDED, at=at)
    close = (
        f"UPDATE {_table(A)} SET {_assignments(A, closed, p)} "
        f"WHERE {_col(A, 'execution')} = {p.raw(execution.pk)} "
        f"AND {_col(A, 'number')} = {p.raw(attempt.number)} "
        f"AND {_col(A, 'finished_at')} IS NULL AND EXISTS (SELECT 1 FROM done)"
    )
    parts = [
        f"done AS ({done})",
        f"event AS ({_insert(event, p, source='done')})",
        f"closed AS ({close})",
    ]
    if len(logs) == 1:
        # One row: plain parameters (arrays cost psycopg far more to send).
        parts.append(f"logs AS ({_insert(logs[0], p, source='(SELECT 1) AS one')})")
    elif logs:
        parts.append(f"logs AS ({_insert_rows(logs, ExecutionLog, p)})")
    sql = f"WITH {', '.join(parts)} SELECT count(*) FROM done"
    with _cursor() as cursor:
        cursor.execute(sql, p.values)
        (won,) = cursor.fetchone()
    return bool(won)
