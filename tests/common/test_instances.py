"""common.instances: every model of the project built by ``new`` and ``loaded`` is the instance
``Model.__init__`` and ``Model.from_db`` build, attribute by attribute, with nothing given,
every field given and half of them given; the signals are sent as there; ``copied`` keeps what
the original holds."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import connection
from django.db.models.signals import post_init, pre_init
from django.test.utils import CaptureQueriesContext

from common import instances
from executions.models import Execution, ExecutionAttempt, ExecutionEvent, ExecutionLog

MODELS = sorted((m for m in apps.get_models() if not m._meta.abstract), key=lambda m: m._meta.label)
# The models the engine builds at every run: these must take the short way, or nothing is saved.
ENGINE_MODELS = [Execution, ExecutionEvent, ExecutionAttempt, ExecutionLog]


def attnames(model) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields]


def assert_same(built, expected, *, given: dict) -> None:
    model = type(expected)
    assert type(built) is model
    assert built.__dict__.keys() == expected.__dict__.keys()
    for name, value in expected.__dict__.items():
        if name == "_state":
            continue
        mine = built.__dict__[name]
        if mine == value and type(mine) is type(value):
            continue
        # Only a default that is called (a new uuid, the time now) differs, in value only.
        field = next(f for f in model._meta.concrete_fields if f.attname == name)
        assert name not in given, f"{model.__name__}.{name}: {mine!r} != {value!r}"
        assert field.has_default() and callable(field.default), f"{model.__name__}.{name}"
        assert type(mine) is type(value), f"{model.__name__}.{name}"
    for attribute in ("adding", "db", "fields_cache"):
        assert getattr(built._state, attribute) == getattr(expected._state, attribute)


def both(build, expected):
    """Each way's instance, or the same error from both."""
    try:
        wanted = expected()
    except Exception as exc:
        with pytest.raises(type(exc)):
            build()
        return None, None
    return build(), wanted


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label)
def test_new_is_what_init_builds(model):
    assert_same(instances.new(model), model(), given={})
    # Any object is stored as given (Model.__init__ checks no type), except by the fields with
    # descriptors of their own (a time zone field parses it): those models take Model.__init__.
    every = {name: f"value of {name}" for name in attnames(model)}
    half = {name: value for i, (name, value) in enumerate(every.items()) if i % 2}
    for given in (every, half):
        built, expected = both(
            lambda given=given: instances.new(model, **given), lambda given=given: model(**given)
        )
        if expected is not None:
            assert_same(built, expected, given=given)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label)
def test_loaded_is_what_from_db_builds(model):
    names = attnames(model)
    values = [f"column {i}" for i in range(len(names))]
    built, expected = both(
        lambda: instances.loaded(model, "default", values),
        lambda: model.from_db("default", names, values),
    )
    if expected is None:
        assert not instances._blank(model).plain
        return
    assert built.__dict__.keys() == expected.__dict__.keys()
    assert {k: v for k, v in built.__dict__.items() if k != "_state"} == {
        k: v for k, v in expected.__dict__.items() if k != "_state"
    }
    assert (built._state.adding, built._state.db) == (False, "default")
    with pytest.raises(IndexError):
        instances.loaded(model, "default", values[:-1])


@pytest.mark.parametrize("model", ENGINE_MODELS, ids=lambda m: m._meta.label)
def test_the_engines_models_take_the_short_way(model):
    assert instances._blank(model).plain


def test_a_name_that_is_no_field_is_refused_as_init_refuses_it():
    with pytest.raises(TypeError, match="unexpected keyword arguments: 'nope'"):
        Execution(nope=1)
    with pytest.raises(TypeError, match="unexpected keyword arguments: 'nope'"):
        instances.new(Execution, nope=1)
    # A related object by its field's name is Model.__init__'s; here ids only.
    with pytest.raises(TypeError, match="'agent'"):
        instances.new(Execution, agent=None)


def test_callable_defaults_are_called_for_each_instance():
    first, second = instances.new(Execution), instances.new(Execution)
    assert first.uuid != second.uuid
    # default=dict: a dict of its own for each event, as Model.__init__ gives.
    events = instances.new(ExecutionEvent), instances.new(ExecutionEvent)
    assert events[0].data == {} and events[0].data is not events[1].data


def test_the_init_signals_are_sent_as_init_sends_them():
    seen = []

    def before(sender, args, kwargs, **_):
        seen.append(("pre", sender, dict(kwargs), tuple(args)))

    def after(sender, instance, **_):
        seen.append(("post", sender, instance.number))

    pre_init.connect(before, sender=ExecutionAttempt)
    post_init.connect(after, sender=ExecutionAttempt)
    try:
        ExecutionAttempt(number=3)
        expected, seen[:] = list(seen), []
        instances.new(ExecutionAttempt, number=3)
        assert (
            seen
            == expected
            == [
                ("pre", ExecutionAttempt, {"number": 3}, ()),
                ("post", ExecutionAttempt, 3),
            ]
        )
        seen.clear()
        instances.loaded(ExecutionAttempt, "default", [None] * len(attnames(ExecutionAttempt)))
        assert [s[0] for s in seen] == ["pre", "post"]
    finally:
        pre_init.disconnect(before, sender=ExecutionAttempt)
        post_init.disconnect(after, sender=ExecutionAttempt)


def test_a_copy_holds_what_the_original_holds_with_the_values_given_changed(make_agent):
    agent = make_agent()
    original = instances.new(Execution, agent_id=agent.pk, input={"n": 1}, status="queued")
    original.agent = agent
    copy = instances.copied(original, input={"n": 2})
    assert {k: v for k, v in copy.__dict__.items() if k != "_state"} == {
        **{k: v for k, v in original.__dict__.items() if k != "_state"},
        "input": {"n": 2},
    }
    assert copy._state is not original._state and copy._state.adding
    # Its agent kept as the original keeps it: read without a query.
    with CaptureQueriesContext(connection) as queries:
        assert copy.agent is agent
    assert len(queries) == 0
    # A key changed: the row kept for the old key is not the copy's.
    other = make_agent()
    moved = instances.copied(original, agent_id=other.pk)
    assert moved.agent == other and original.agent is agent
    with pytest.raises(TypeError, match="'agent'"):
        instances.copied(original, agent=other)
