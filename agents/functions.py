"""The registry of Python callables that ``function`` agents run.

Any installed app can plug in its own agents: put an ``agent_functions.py`` next to its
``models.py`` and decorate callables there::

    from agents.functions import agent_function

    @agent_function(
        "billing.sync_invoices",
        description="Pull new invoices from the ledger.",
        input_example={"since": "2026-01-01"},
    )
    def sync_invoices(ctx, input):
        ctx.progress(10, "Fetching")
        ...
        return {"synced": 12}

The callable receives the run context (``ctx.log``, ``ctx.progress``, ``ctx.secrets``,
``ctx.attempt``, ``ctx.deadline``, ``ctx.is_cancelled``, ``ctx.checkpoint``,
``ctx.save_artifact`` to keep a file with the run: see ``agents.kinds.base.RunContext``) and the
execution's input, and returns a JSON-safe result. It raises
``agents.kinds.base.RetryableError`` for a temporary problem and ``PermanentError`` for one that
retrying will not fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.module_loading import autodiscover_modules


@dataclass(frozen=True)
class AgentFunction:
    name: str
    func: Callable[..., Any]
    description: str
    #: Optional check of an input before it is queued; raises InvalidInputError.
    validate_input: Callable[[Any], None] | None = None
    #: What the function expects, as an example input (JSON); pre-fills Run now.
    input_example: Any = None
    #: ``on_complete(execution_id, outcome, result_or_error)``, called once per execution after
    #: its final state is committed (notifications.services.hook_run).
    on_complete: Callable[[str, str, Any], None] | None = None


_registry: dict[str, AgentFunction] = {}


def agent_function(
    name: str,
    *,
    description: str = "",
    validate_input: Callable[[Any], None] | None = None,
    input_example: Any = None,
    on_complete: Callable[[str, str, Any], None] | None = None,
) -> Callable:
    """Register ``func`` under ``name`` (dotted, e.g. ``"demo.echo"``).

    ``validate_input(input)``, if given, runs when a run is requested (page, API, webhook,
    schedule, command, retry) and raises ``InvalidInputError`` so the person sees the problem
    before anything is queued. ``input_example`` is the function's input contract in one JSON
    value: the agent page pre-fills Run now with it and the API returns it with the agent (it is
    checked with ``validate_input`` when registered, so the example always runs).

    ``on_complete(execution_id, outcome, result_or_error)``, if given, is called once per
    execution, after its final state (``succeeded``, ``failed`` or ``cancelled``) is committed,
    with the result, or ``{"category", "title", "message"}`` of the error. It runs on the
    notifications worker, even if the worker that ran the agent died right after the end; if it
    raises it is tried again with backoff (its failures are in the admin); it never changes the
    execution. A hook cut off while it runs (its process killed) is called again: make it
    idempotent, e.g. by the execution id.
    """

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        existing = _registry.get(name)
        if existing is not None and existing.func.__qualname__ != func.__qualname__:
            raise ValueError(f"An agent function named {name!r} is already registered.")
        doc = description or (func.__doc__ or "").strip().splitlines()[0:1]
        text = doc if isinstance(doc, str) else (doc[0] if doc else "")
        if input_example is not None:
            json.dumps(input_example)  # a TypeError here: the example must be JSON
            if validate_input is not None:
                validate_input(input_example)
        _registry[name] = AgentFunction(
            name=name,
            func=func,
            description=text,
            validate_input=validate_input,
            input_example=input_example,
            on_complete=on_complete,
        )
        return func

    return register


def get_function(name: str) -> AgentFunction | None:
    return _registry.get(name)


def all_functions() -> list[AgentFunction]:
    return sorted(_registry.values(), key=lambda f: f.name)


def autodiscover() -> None:
    autodiscover_modules("agent_functions")
