"""The queues agents may put their runs on, as operators declare them in ``CONVEYOR_QUEUES``.

One variable, in a form that ``.env`` files (honcho, docker compose) read as it is: entries
separated by ``;``, each ``name``, ``name=description``, ``name:limit`` or
``name:limit=description``, where *limit* is the most runs of the queue's agents at once::

    CONVEYOR_QUEUES="reports:2=Long reports, two at a time;fast=Quick calls"

(quoted in a ``.env`` file: honcho drops the spaces of an unquoted value). The result is the
setting's shape, name -> ``{"description": str, "concurrency": int | None}``, and always holds
the executions queue (``CONVEYOR_EXECUTIONS_QUEUE``, first; "The default queue." unless it is
declared with a description of its own).

Refused at start-up, naming the variable: the maintenance and notifications queues (their
workers must stay free for the dispatcher and the deliveries), a name twice, a limit that is not
a whole number of at least 1, and a name that is not 1 to 100 letters, digits, ``.``, ``-`` and
``_`` starting with a letter or digit, or that names a Redis key the broker keeps for itself
(kombu's ``unacked`` hash and its index, Conveyor's ``<queue>.malformed`` lists).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

from .broker import MALFORMED_SUFFIX

QUEUE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
NAME_RULE = (
    "1 to 100 letters, digits, dots, dashes and underscores, starting with a letter or digit"
)
# Keys kombu's Redis transport keeps next to the queues' lists (a hash, a sorted set, a lock).
BROKER_KEYS = ("unacked", "unacked_index", "unacked_mutex")
DEFAULT_DESCRIPTION = "The default queue."
DESCRIPTION_MAX = 200


def parse_queues(
    raw: str | None,
    *,
    executions: str,
    reserved: Mapping[str, str],
    setting: str = "CONVEYOR_QUEUES",
) -> dict[str, dict]:
    """``raw`` (the variable's value, or None when unset) as the setting's dict.

    ``executions`` is the default queue, always declared; ``reserved`` maps the names agents may
    never use to what they are ("the maintenance queue (CONVEYOR_MAINTENANCE_QUEUE)")."""
    declared: dict[str, dict] = {}
    for entry in (raw or "").split(";"):
        if not entry.strip():
            continue  # "a;b;" and blank entries
        head, _, description = entry.partition("=")
        name, has_limit, limit = (part.strip() for part in head.partition(":"))
        description = " ".join(description.split())
        shown = entry.strip()
        if not QUEUE_NAME.fullmatch(name):
            raise ImproperlyConfigured(
                f"{setting}: {shown!r} does not start with a queue name: a name has {NAME_RULE} "
                "(entries look like reports:2=Long reports, separated by ;)."
            )
        if name in reserved:
            raise ImproperlyConfigured(
                f"{setting}: {name!r} is {reserved[name]}, which agent runs cannot use."
            )
        if name in BROKER_KEYS or name.endswith(MALFORMED_SUFFIX):
            raise ImproperlyConfigured(
                f"{setting}: {name!r} is a key the broker keeps for itself; choose another name."
            )
        if name in declared:
            raise ImproperlyConfigured(f"{setting} declares {name!r} twice.")
        concurrency = None
        if has_limit:
            if not limit.isdecimal() or not limit.isascii() or int(limit) < 1:
                raise ImproperlyConfigured(
                    f"{setting}: the limit of {name!r} must be a whole number of runs at once, "
                    f"at least 1 (leave “:{limit}” out for no limit), not {limit!r}."
                )
            concurrency = int(limit)
        if len(description) > DESCRIPTION_MAX:
            raise ImproperlyConfigured(
                f"{setting}: the description of {name!r} is longer than {DESCRIPTION_MAX} "
                "characters."
            )
        declared[name] = {"description": description, "concurrency": concurrency}
    default = declared.pop(executions, None) or {"description": "", "concurrency": None}
    if not default["description"]:
        default = {**default, "description": DEFAULT_DESCRIPTION}
    return {executions: default, **declared}


def env_queues(name: str, *, executions: str, reserved: Mapping[str, str]) -> dict[str, dict]:
    """:func:`parse_queues` of the variable ``name``."""
    return parse_queues(
        os.environ.get(name), executions=executions, reserved=reserved, setting=name
    )
