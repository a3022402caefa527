"""Reading JSON request bodies safely: whatever a client sends, the answer is never a 500.

Python's json module accepts things that cannot be stored or that crash later: ``NaN`` and
``Infinity`` (and ``1e400``, which becomes infinity), lone surrogates (``"\\ud800"``), NUL
characters (Postgres refuses them in text and jsonb) and nesting deep enough to exhaust the
stack (a RecursionError). All of these are refused here as malformed (``Malformed``, 400).

The API, the webhook endpoint and the page forms that take JSON (Run now, retry with edited
input, a schedule's input) all read JSON through this module, with the same size and nesting
limits: ``parse_json_bytes`` for a request body, ``parse_json_text`` for what a person typed.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings

from .errors import Malformed

# Deeper bodies are refused before anything walks them recursively.
MAX_JSON_DEPTH = 64


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_bytes(raw: bytes) -> Any:
    """Parse a request body; raises Malformed (400) with a message that says why."""
    return _parse(raw, subject="The body")


def parse_json_text(text: str, *, max_bytes: int | None = None) -> Any:
    """Parse JSON typed into a form (blank is None); raises Malformed with a message for the
    person, under the API's limits: ``max_bytes`` (default ``CONVEYOR_API_MAX_BODY_BYTES``) of
    UTF-8 and ``MAX_JSON_DEPTH`` levels."""
    if not text.strip():
        return None
    limit = settings.CONVEYOR_API_MAX_BODY_BYTES if max_bytes is None else max_bytes
    # surrogatepass: a lone surrogate is counted here and refused below with its own message.
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise Malformed(f"This JSON is too large (more than {limit:,} bytes).", code="too_large")
    return _parse(text, subject="This")


def _parse(raw: bytes | str, *, subject: str) -> Any:
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise Malformed("The JSON is nested too deeply.", code="too_deep") from None
    except json.JSONDecodeError as exc:
        raise Malformed(
            f"{subject} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
            code="malformed_json",
        ) from None
    except ValueError as exc:  # bad encoding, a huge integer, NaN/Infinity
        reason = str(exc)
        if "digits" in reason:  # Python's limit on converting long integers
            reason = "it has a number too large to represent"
        raise Malformed(f"{subject} is not valid JSON: {reason}.", code="malformed_json") from None
    problem = json_problem(value)
    if problem:
        raise Malformed(problem, code="too_deep" if "deep" in problem else "malformed_json")
    return value


def json_problem(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why ``value`` cannot be accepted, or None. Walks iteratively (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                return f"The JSON is nested too deeply (more than {max_depth} levels)."
            if isinstance(item, dict):
                for key, child in item.items():
                    problem = _text_problem(key)
                    if problem:
                        return problem
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return problem
        elif isinstance(item, float) and not math.isfinite(item):
            return "The JSON has a number too large to represent."
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "The JSON has a NUL character (\\u0000) in a string, which cannot be stored."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "The JSON has an unpaired surrogate (\\ud800-\\udfff) in a string."
    return None
