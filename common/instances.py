"""Model instances built as ``Model.__init__`` builds them, without its work per field.

Every run builds a few instances to be written (the execution and its creation event in the
producer; the claim's event and attempt, the agent's log lines in the worker) and one loaded
from the claim's row. ``Model.__init__`` works field by field (a keyword looked up, a default
asked for, an attribute set through the class): for the execution's ~50 fields ~70 us on a
slow machine, of the 1 - 2 ms of CPU creating a run costs the producer. Here, what a model's
fields hold when nothing is given is worked out once per model, and an instance is its
``__dict__`` filled in one step.

Only for models whose fields Django stores plainly in the instance's ``__dict__`` (the
descriptors of ordinary fields and foreign keys' ids) and that have no generated field; any other
model is built by ``Model.__init__`` itself. The signals ``pre_init`` and ``post_init`` are
sent as ``Model.__init__`` sends them. tests/common/test_instances.py builds every model of the
project both ways and compares the instances, attribute by attribute.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from django.core.exceptions import FieldDoesNotExist
from django.db.models import Model
from django.db.models.base import ModelState
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init

M = TypeVar("M", bound=Model)


class _Blank:
    """What an instance of a model holds when nothing is given, worked out once."""

    def __init__(self, model: type[Model]):
        fields = model._meta.concrete_fields
        self.names = frozenset(f.attname for f in fields)
        self.order = tuple(f.attname for f in fields)
        # Django's own descriptor classes (DeferredAttribute and its foreign key subclass) only
        # read the __dict__: setting the attribute through them stores the value, no more.
        self.plain = (
            all(
                type(model.__dict__.get(f.attname)) in _PLAIN_DESCRIPTORS and not f.generated
                for f in fields
            )
            and not model._meta.abstract
        )
        # A default that is a value (or none: NULL, or "" for a text column) is the same for
        # every instance, as Django's get_default() returns it; a callable is called each time.
        self.constant: dict[str, Any] = {}
        self.called: list[tuple[str, Any]] = []
        for f in fields:
            if f.has_default() and callable(f.default):
                self.called.append((f.attname, f.default))
            else:
                self.constant[f.attname] = f.get_default()


def _plain_descriptors() -> frozenset[type]:
    from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute

    return frozenset((DeferredAttribute, ForeignKeyDeferredAttribute))


_PLAIN_DESCRIPTORS = _plain_descriptors()


@cache
def _blank(model: type[Model]) -> _Blank:
    return _Blank(model)


def new(model: type[M], /, **values: Any) -> M:
    """``model(**values)``, unsaved; ``values`` by attribute name (``agent_id``, not
    ``agent``). A name that is not one of the model's fields is a TypeError, as there."""
    blank = _blank(model)
    if not blank.plain:
        return model(**values)
    if not blank.names.issuperset(values):
        unexpected = ", ".join(repr(name) for name in values if name not in blank.names)
        raise TypeError(f"{model.__name__}() got unexpected keyword arguments: {unexpected}")
    pre_init.send(sender=model, args=(), kwargs=values)
    obj = model.__new__(model)
    state = obj.__dict__
    state["_state"] = ModelState()
    state.update(blank.constant)
    for name, default in blank.called:
        if name not in values:
            state[name] = default()
    state.update(values)
    post_init.send(sender=model, instance=obj)
    return obj


def loaded(model: type[M], db: str, values: tuple | list) -> M:
    """``model.from_db(db, names, values)`` for a row of every concrete field, in the model's
    order (what the ORM loads with nothing deferred)."""
    blank = _blank(model)
    if len(values) != len(blank.order):
        raise IndexError(f"{model.__name__} has {len(blank.order)} fields, not {len(values)}")
    if not blank.plain:
        return model.from_db(db, blank.order, values)
    pre_init.send(sender=model, args=tuple(values), kwargs={})
    obj = model.__new__(model)
    state = ModelState()
    state.adding = False
    state.db = db
    obj.__dict__["_state"] = state
    obj.__dict__.update(zip(blank.order, values, strict=True))
    post_init.send(sender=model, instance=obj)
    return obj


def copied(obj: M, /, **values: Any) -> M:
    """A new unsaved instance holding what ``obj`` holds, ``values`` (by attribute name)
    changed (the attributes are copied as they are, not set through the fields' descriptors).
    The related rows ``obj`` keeps (e.g. its agent) are kept by the copy too, but for a key
    that ``values`` changes."""
    model = type(obj)
    blank = _blank(model)
    if not blank.names.issuperset(values):
        unexpected = ", ".join(repr(name) for name in values if name not in blank.names)
        raise TypeError(f"{model.__name__}() got unexpected keyword arguments: {unexpected}")
    state = ModelState()
    state.fields_cache = {
        name: related
        for name, related in obj._state.fields_cache.items()
        if _attname(model, name) not in values
    }
    row = model.__new__(model)
    row.__dict__ = {**obj.__dict__, **values, "_state": state}
    return row


def _attname(model: type[Model], cache_name: str) -> str | None:
    """The attribute holding the key of the related row kept under ``cache_name`` (None for a
    reverse relation, whose key is the other row's)."""
    try:
        return getattr(model._meta.get_field(cache_name), "attname", None)
    except FieldDoesNotExist:
        return None
