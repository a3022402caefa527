"""The ``flow`` kind: an ordered list of steps, each run by Conveyor as its own execution.

A flow's config::

    {
      "steps": [
        {"key": "fetch", "agent": "Fetch page", "input": {"url": "{{ input.url }}"}},
        {"key": "cool-off", "wait": {"seconds": 60}},
        {"key": "notify", "parallel": [
          {"key": "mail", "agent": "Send mail", "input": {"body": "{{ steps.fetch.result.body }}"}},
          {"key": "chat", "agent": "Post to chat", "retry": {"max_retries": 0}}
        ]}
      ],
      "timeout": 3600,
      "result": "last",
      "retry": {"max_retries": 2, "backoff": 5}
    }

Steps:

* **run** (``agent``): runs another agent of the same owner (function, http or flow; a flow may
  not run itself, directly or through others, and flows nest at most
  ``CONVEYOR_FLOW_MAX_DEPTH`` deep) as a child execution. ``agent`` is the agent's name or
  UUID; it is stored as the UUID, so renaming the agent keeps the flow working. ``input`` is a
  JSON template (see *References*); without it the step runs with no input.
* **wait** (``wait``): ``{"seconds": N}`` or ``{"until": "<time>"}`` (ISO 8601, usually a
  reference to an earlier step's result). No worker is held while a flow waits.
* **parallel** (``parallel``): run steps started together; the group ends when all of them
  have ended, and fails if one of them failed.

Every step has a ``key`` (letters, digits, ``-`` and ``_``; unique in the flow; a wait's may be
left out). A run step's ``retry`` overrides how its execution is retried: ``enabled``,
``max_retries`` (0 to 10), ``backoff`` and ``backoff_max`` (seconds), ``jitter``. It wins over
the flow's own ``retry``, which wins over the step agent's own settings.

References: a string of a step's ``input`` (or a wait's ``until``) may contain ``{{ input.x }}``
(the flow's input) and ``{{ steps.<key>.result.y }}`` (an earlier step's result; a parallel
group's result is an object of its members' results, by key). Paths go into objects by key and
into lists by position (``{{ steps.fetch.result.items.0 }}``). A string that is exactly one
reference becomes the value itself (a number, an object...); references inside longer text are
written into it (objects and lists as JSON). References to unknown or later steps are refused
when the flow is saved; a path missing from a result fails the step that needed it.

``timeout``: seconds the whole flow may take (blank: no limit of its own). ``result``:
``last`` (the last step's result) or ``all`` (every step's result, by key).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django import forms
from django.conf import settings
from django.utils.dateparse import parse_datetime

from .base import ConfigInvalid, InvalidInputError, Kind, RunContext

KEY_RE = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
REF_RE = re.compile(r"\{\{(.*?)\}\}")
SEGMENT_RE = re.compile(r"\A[A-Za-z0-9_-]+\Z")
RETRY_KEYS = ("enabled", "max_retries", "backoff", "backoff_max", "jitter")
MAX_STEP_RETRIES = 10
MAX_STEPS = 50
MAX_GROUP = 20
RESULT_CHOICES = (("last", "The last step's result"), ("all", "Every step's result, by key"))


class FlowReferenceError(Exception):
    """A reference could not be resolved when the step was about to start."""


# --- References ---------------------------------------------------------------------------------


def parse_reference(text: str) -> list[str]:
    """The path of one reference's inside (``" steps.fetch.result.body "``), checked for shape:
    ``input[.path]`` or ``steps.<key>.result[.path]``. Raises ValueError in words."""
    inner = text.strip()
    parts = inner.split(".") if inner else []
    if not parts or any(not SEGMENT_RE.match(p) for p in parts):
        raise ValueError(
            f"“{{{{{text}}}}}” is not a reference: write {{{{ input.name }}}} or "
            "{{ steps.<key>.result.name }}."
        )
    if parts[0] == "input":
        return parts
    if parts[0] == "steps" and len(parts) >= 3 and parts[2] == "result":
        return parts
    if parts[0] == "steps":
        raise ValueError(
            f"“{{{{ {inner} }}}}”: a step's value is its result, so write "
            f"{{{{ steps.{parts[1] if len(parts) > 1 else '<key>'}.result }}}} (or a path "
            "inside it)."
        )
    raise ValueError(
        f"“{{{{ {inner} }}}}” refers to “{parts[0]}”: a reference starts with input or steps."
    )


def references(template: Any) -> list[list[str]]:
    """Every reference in a JSON template (strings inside lists and object values), parsed."""
    found: list[list[str]] = []
    for text in _strings(template):
        for match in REF_RE.finditer(text):
            found.append(parse_reference(match.group(1)))
    return found


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def render(template: Any, scope: Mapping[str, Any]) -> Any:
    """``template`` with its references replaced from ``scope`` (``{"input": ..., "steps":
    {key: {"result": ...}}}``). Raises FlowReferenceError naming what is missing."""
    if isinstance(template, list):
        return [render(item, scope) for item in template]
    if isinstance(template, dict):
        return {key: render(value, scope) for key, value in template.items()}
    if not isinstance(template, str) or "{{" not in template:
        return template
    whole = REF_RE.fullmatch(template.strip())
    if whole and template.strip() == template:
        return resolve(parse_reference(whole.group(1)), scope)

    def text_of(match: re.Match) -> str:
        value = resolve(parse_reference(match.group(1)), scope)
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return REF_RE.sub(text_of, template)


def resolve(path: list[str], scope: Mapping[str, Any]) -> Any:
    shown = "{{ " + ".".join(path) + " }}"
    if path[0] == "input":
        value, whose, rest = scope.get("input"), "the flow's input", path[1:]
    else:
        step = scope.get("steps", {}).get(path[1])
        if step is None:
            raise FlowReferenceError(f"{shown}: step “{path[1]}” has no result yet.")
        value, whose, rest = step.get("result"), f"the result of step “{path[1]}”", path[3:]
    for depth, name in enumerate(rest, 1):
        if isinstance(value, dict) and name in value:
            value = value[name]
        elif isinstance(value, list) and name.isdigit() and int(name) < len(value):
            value = value[int(name)]
        else:
            raise FlowReferenceError(f"{shown}: {whose} has no “{'.'.join(rest[:depth])}”.")
    return value


def input_keys(config: Mapping[str, Any]) -> list[str]:
    """The top-level keys of the flow's input that its steps read, in order of first use."""
    keys: list[str] = []
    for step in _all_steps(config.get("steps") or []):
        for path in _step_references(step):
            if path[0] == "input" and len(path) > 1 and path[1] not in keys:
                keys.append(path[1])
    return keys


def _all_steps(steps: list) -> list[dict]:
    out: list[dict] = []
    for step in steps:
        if isinstance(step, dict):
            out.append(step)
            members = step.get("parallel")
            if isinstance(members, list):
                out.extend(m for m in members if isinstance(m, dict))
    return out


def _step_references(step: dict) -> list[list[str]]:
    try:
        found = references(step.get("input"))
        wait = step.get("wait")
        if isinstance(wait, dict) and isinstance(wait.get("until"), str):
            found += references(wait["until"])
        return found
    except ValueError:
        return []


def step_type(step: Mapping[str, Any]) -> str:
    if "parallel" in step:
        return "group"
    if "wait" in step:
        return "wait"
    return "run"


def wait_key(position: int) -> str:
    return f"wait-{position + 1}"


# --- The config form --------------------------------------------------------------------------


class JSONValueField(forms.Field):
    """A JSON value given as JSON text (a page) or as the value itself (the API's config)."""

    widget = forms.Textarea(attrs={"rows": 12, "spellcheck": "false"})
    # An empty list or object is a value (the form says what is wrong with it), not "missing".
    empty_values = (None, "")

    def to_python(self, value):
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                return json.loads(value)
            except ValueError as exc:
                raise forms.ValidationError(f"This is not valid JSON: {exc}.") from None
        return value

    def prepare_value(self, value):
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class FlowConfigForm(forms.Form):
    steps = JSONValueField(
        label="Steps (JSON)",
        error_messages={"required": "Give at least one step: a JSON list of steps."},
        help_text="The ordered list of steps; the step editor above writes it for you.",
    )
    timeout = forms.IntegerField(
        required=False,
        min_value=1,
        label="Time limit for the whole flow (s)",
        help_text="When it passes, running steps are cancelled and the rest skipped. Blank: no "
        "limit beyond each step's own.",
    )
    result = forms.ChoiceField(
        choices=RESULT_CHOICES,
        required=False,
        initial="last",
        label="The flow's result",
    )
    retry = JSONValueField(
        required=False,
        label="Retry settings for every step (JSON)",
        help_text='For example {"max_retries": 2, "backoff": 5}. A step\'s own retry settings '
        "win over these; blank: each step agent's own settings.",
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
    )

    def clean_steps(self):
        steps = self.cleaned_data["steps"]
        if not isinstance(steps, list) or not steps:
            raise forms.ValidationError("Give at least one step: a JSON list of steps.")
        if len(steps) > MAX_STEPS:
            raise forms.ValidationError(f"A flow has at most {MAX_STEPS} steps.")
        return steps

    def clean_timeout(self):
        value = self.cleaned_data["timeout"]
        if value is not None and value > settings.CONVEYOR_FLOW_MAX_TIMEOUT:
            raise forms.ValidationError(
                f"At most {settings.CONVEYOR_FLOW_MAX_TIMEOUT} seconds on this installation."
            )
        return value

    def clean_result(self):
        return self.cleaned_data["result"] or "last"

    def clean_retry(self):
        value = self.cleaned_data["retry"]
        if value in (None, {}):
            return None
        problems = retry_problems(value)
        if problems:
            raise forms.ValidationError(problems)
        return value


def retry_problems(value: Any) -> list[str]:
    """What is wrong with a retry override, in words (empty: nothing)."""
    if not isinstance(value, dict):
        return ['Retry settings are a JSON object, for example {"max_retries": 2}.']
    problems = []
    unknown = sorted(set(value) - set(RETRY_KEYS))
    if unknown:
        problems.append(
            f"Unknown retry setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
            f"(use {', '.join(RETRY_KEYS)})."
        )
    for name in ("enabled", "jitter"):
        if name in value and not isinstance(value[name], bool):
            problems.append(f"“{name}” is true or false.")
    limits = {
        "max_retries": MAX_STEP_RETRIES,
        "backoff": settings.CONVEYOR_MAX_BACKOFF,
        "backoff_max": settings.CONVEYOR_MAX_BACKOFF,
    }
    for name, most in limits.items():
        if name not in value:
            continue
        number = value[name]
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= most:
            problems.append(f"“{name}” is a whole number from 0 to {most}.")
    return problems


# --- The kind ---------------------------------------------------------------------------------


class FlowKind(Kind):
    name = "flow"
    label = "Flow of steps"
    description = (
        "Runs your other agents one after another (or several at once), passing results along, "
        "with waits, per-step retries and a time limit for the whole. A retried flow resumes "
        "at the step that failed."
    )
    config_form = FlowConfigForm
    #: Conveyor runs a flow's steps itself (``executions.flows``); no worker runs the flow.
    is_flow = True

    def clean_config(self, config, *, agent=None):
        # The steps are checked even when a flow-wide field is wrong: every problem at once.
        form = self.config_form(data=dict(config or {}))
        form.is_valid()
        errors = {field: list(messages) for field, messages in form.errors.items()}
        cleaned = form.cleaned_data
        if "steps" in cleaned:
            checker = _DefinitionCheck(agent=agent)
            cleaned["steps"] = checker.steps(cleaned["steps"])
            errors.update(checker.errors)
        if errors:
            raise ConfigInvalid(errors)
        return cleaned

    def summary(self, config, secrets=None):
        names = agent_names(config)
        lines = []
        for position, step in enumerate(config.get("steps") or [], 1):
            lines.append((f"Step {position}", describe_step(step, names)))
        timeout = config.get("timeout")
        lines.append(
            ("Time limit", f"{timeout} s for the whole flow" if timeout else "None of its own")
        )
        lines.append(("Result", dict(RESULT_CHOICES).get(config.get("result") or "last", "")))
        return lines

    def validate_input(self, config, input):
        keys = input_keys(config)
        if not keys:
            return
        wanted = ", ".join(f"“{k}”" for k in keys)
        if not isinstance(input, dict):
            raise InvalidInputError(
                f"This flow's steps read {wanted} from its input: give a JSON object with them."
            )
        missing = [k for k in keys if k not in input]
        if missing:
            raise InvalidInputError(
                f"The input lacks {', '.join(f'“{k}”' for k in missing)}, which this flow's "
                "steps read."
            )

    def input_example(self, config):
        keys = input_keys(config)
        return {key: "…" for key in keys} if keys else None

    def run(self, ctx: RunContext, input: Any) -> Any:  # pragma: no cover - never called
        raise NotImplementedError("Flows are advanced by executions.flows, not run by a worker.")


def step_agents(config: Mapping[str, Any]) -> set[str]:
    """The UUIDs (text) of the agents a flow's steps run."""
    steps = _all_steps(config.get("steps") or [])
    return {s["agent"] for s in steps if isinstance(s.get("agent"), str) and s["agent"]}


def agent_names(config: Mapping[str, Any]) -> dict[str, str]:
    """UUID (text) -> name of the agents a flow's steps run."""
    from ..models import Agent

    wanted = []
    for value in step_agents(config):
        try:  # an unsaved config may still name an agent instead of giving its UUID
            wanted.append(uuid.UUID(value))
        except ValueError:
            continue
    return {str(u): n for u, n in Agent.objects.filter(uuid__in=wanted).values_list("uuid", "name")}


def describe_step(step: Mapping[str, Any], names: Mapping[str, str]) -> str:
    kind = step_type(step)
    if kind == "wait":
        wait = step.get("wait") or {}
        if "seconds" in wait:
            from executions.humanize import seconds_in_words

            return f"{step.get('key', 'wait')}: wait {seconds_in_words(wait['seconds'])}"
        return f"{step.get('key', 'wait')}: wait until {wait.get('until')}"
    if kind == "group":
        members = ", ".join(
            f"{m.get('key')} ({names.get(m.get('agent'), 'deleted agent')})"
            for m in step.get("parallel") or []
        )
        return f"{step.get('key')}: in parallel: {members}"
    return f"{step.get('key')}: run “{names.get(step.get('agent'), 'a deleted agent')}”"


class _DefinitionCheck:
    """Checks a flow's steps and normalises them (agents by UUID). Errors are keyed
    ``steps.<i>.<field>`` (members: ``steps.<i>.parallel.<j>.<field>``), or ``steps``."""

    def __init__(self, *, agent):
        self.flow = agent
        self.errors: dict[str, list[str]] = {}
        self.earlier: list[str] = []  # keys a later step may read
        self.keys: set[str] = set()
        self.all_keys: set[str] = set()  # every key in the definition
        self.siblings: set[str] = set()  # while checking a parallel group: its members' keys

    def error(self, where: str, message: str) -> None:
        self.errors.setdefault(where, []).append(message)

    def steps(self, steps: list) -> list:
        self.all_keys = {s["key"] for s in _all_steps(steps) if isinstance(s.get("key"), str)}
        self.all_keys |= {
            wait_key(i)
            for i, s in enumerate(steps)
            if isinstance(s, dict) and step_type(s) == "wait" and "key" not in s
        }
        cleaned = []
        for i, step in enumerate(steps):
            where = f"steps.{i}"
            if not isinstance(step, dict):
                self.error(where, f"Step {i + 1} is not a JSON object.")
                cleaned.append(step)
                continue
            kind = step_type(step)
            if kind == "group":
                cleaned.append(self.group(step, where, i))
            elif kind == "wait":
                cleaned.append(self.wait(step, where, i))
            else:
                cleaned.append(self.run(step, where, i, visible=self.earlier))
                self.earlier.append(step.get("key"))
        return cleaned

    def key(self, step: dict, where: str, *, default: str | None = None) -> str | None:
        key = step.get("key", default)
        if not isinstance(key, str) or not KEY_RE.match(key):
            self.error(
                f"{where}.key",
                "Give the step a key: 1 to 64 letters, digits, - or _ (later steps use it to "
                "read its result).",
            )
            return None
        if key in self.keys:
            self.error(f"{where}.key", f"Another step already has the key “{key}”.")
        self.keys.add(key)
        return key

    def unknown(self, step: dict, where: str, allowed: set[str]) -> None:
        extra = sorted(set(step) - allowed)
        if extra:
            self.error(where, f"Unknown field{'s' if len(extra) > 1 else ''}: {', '.join(extra)}.")

    def run(self, step: dict, where: str, i: int, *, visible: list[str]) -> dict:
        self.unknown(step, where, {"key", "agent", "input", "retry"})
        self.key(step, where)
        step = dict(step)
        target = self.agent(step.get("agent"), f"{where}.agent")
        if target is not None:
            step["agent"] = str(target.uuid)
        self.refs(step.get("input"), f"{where}.input", visible)
        if "retry" in step:
            if step["retry"] in (None, {}):
                step.pop("retry")
            else:
                for problem in retry_problems(step["retry"]):
                    self.error(f"{where}.retry", problem)
        return step

    def wait(self, step: dict, where: str, i: int) -> dict:
        self.unknown(step, where, {"key", "wait"})
        step = dict(step)
        step["key"] = self.key(step, where, default=wait_key(i)) or step.get("key")
        wait = step.get("wait")
        if not isinstance(wait, dict) or len(wait) != 1 or not ({"seconds", "until"} & set(wait)):
            self.error(
                f"{where}.wait",
                'A wait is {"seconds": 60} or {"until": "{{ steps.<key>.result.<time> }}"}.',
            )
        elif "seconds" in wait:
            seconds = wait["seconds"]
            most = settings.CONVEYOR_FLOW_MAX_WAIT
            whole = isinstance(seconds, int) and not isinstance(seconds, bool)
            if not whole or not 1 <= seconds <= most:
                self.error(f"{where}.wait", f"“seconds” is a whole number from 1 to {most}.")
        else:
            until = wait["until"]
            if not isinstance(until, str) or not until.strip():
                self.error(f"{where}.wait", "“until” is a time (ISO 8601) or a reference to one.")
            elif "{{" in until:
                self.refs(until, f"{where}.wait", self.earlier)
            elif parse_when(until) is None:
                self.error(
                    f"{where}.wait",
                    f"“{until}” is not a time: write it as 2026-12-01T09:00:00Z, or refer to an "
                    "earlier step's result.",
                )
        self.earlier.append(step["key"])
        return step

    def group(self, step: dict, where: str, i: int) -> dict:
        self.unknown(step, where, {"key", "parallel"})
        key = self.key(step, where)
        step = dict(step)
        members = step.get("parallel")
        if not isinstance(members, list) or not 1 <= len(members) <= MAX_GROUP:
            self.error(
                f"{where}.parallel",
                f"A parallel group is a list of 1 to {MAX_GROUP} run steps.",
            )
            return step
        visible = list(self.earlier)  # members read earlier steps, not each other
        self.siblings = {
            m["key"] for m in members if isinstance(m, dict) and isinstance(m.get("key"), str)
        }
        cleaned = []
        for j, member in enumerate(members):
            at = f"{where}.parallel.{j}"
            if not isinstance(member, dict) or step_type(member) != "run":
                self.error(at, "A member of a parallel group runs an agent (no waits or groups).")
                cleaned.append(member)
                continue
            cleaned.append(self.run(member, at, i, visible=visible))
        step["parallel"] = cleaned
        self.siblings = set()
        self.earlier.extend(m.get("key") for m in cleaned if isinstance(m, dict))
        if key:
            self.earlier.append(key)
        return step

    def refs(self, template: Any, where: str, visible: list[str]) -> None:
        try:
            found = references(template)
        except ValueError as exc:
            self.error(where, str(exc))
            return
        for path in found:
            if path[0] == "steps" and path[1] not in visible:
                if path[1] in self.siblings:
                    why = f"step “{path[1]}” runs at the same time (same parallel group)"
                elif path[1] in self.all_keys:
                    why = f"step “{path[1]}” does not come before this one"
                else:
                    why = f"there is no step “{path[1]}”"
                known = ", ".join(k for k in visible if k) or "none"
                self.error(
                    where,
                    f"{{{{ {'.'.join(path)} }}}}: {why} (steps whose results it can read: "
                    f"{known}).",
                )

    def agent(self, ref: Any, where: str):
        from ..models import Agent

        if not isinstance(ref, str) or not ref.strip():
            self.error(where, "Choose the agent this step runs (its name or UUID).")
            return None
        if self.flow is None or self.flow.owner_id is None:
            return None  # shape only: no owner to find agents for
        mine = Agent.objects.filter(owner_id=self.flow.owner_id)
        try:
            target = mine.filter(uuid=uuid.UUID(ref)).first()
        except ValueError:
            target = next((a for a in mine if a.name.lower() == ref.strip().lower()), None)
        if target is None:
            self.error(where, f"You have no agent “{ref}”.")
            return None
        if self.flow.pk is not None and target.pk == self.flow.pk:
            self.error(where, "A flow cannot run itself.")
            return None
        if target.kind == "flow":
            problem = _nesting_problem(target, flow=self.flow)
            if problem:
                self.error(where, problem)
                return None
        return target


def _nesting_problem(target, *, flow) -> str | None:
    """Whether running flow ``target`` from ``flow`` would loop, or nest too deep."""
    from ..models import Agent

    most = settings.CONVEYOR_FLOW_MAX_DEPTH

    def walk(agent, path: list[str], depth: int) -> str | None:
        if depth > most:
            return (
                f"Flows nest at most {most} deep; through {' → '.join(path)} this one would "
                f"nest deeper."
            )
        uuids = step_agents(agent.config or {})
        for inner in Agent.objects.filter(uuid__in=uuids, kind="flow"):
            if flow.pk is not None and inner.pk == flow.pk:
                return (
                    f"“{target.name}” runs this flow (through {' → '.join([*path, inner.name])}),"
                    " so it would run itself forever."
                )
            found = walk(inner, [*path, inner.name], depth + 1)
            if found:
                return found
        return None

    # The flow being saved is level 1; ``target`` is level 2.
    return walk(target, [target.name], 2)


def parse_when(value: Any) -> datetime | None:
    """A time from a wait's ``until`` (ISO 8601 with a zone; a bare time is UTC)."""
    if not isinstance(value, str):
        return None
    try:
        when = parse_datetime(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when is not None and when.tzinfo is None:
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return when


kind = FlowKind()
