"""Conveyor repeats the steps of a few functions of kombu and psycopg (to guard or speed them);
each such place keeps the SHA-256 of the source it repeats, and a test compares it with the
installed library's, so that an upgrade that changes one is checked against the repetition."""

from __future__ import annotations

import hashlib
import inspect


def source_sha256(function) -> str:
    """SHA-256 of ``function``'s source as installed (a ``contextmanager``'s own function)."""
    function = getattr(function, "__wrapped__", function)
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
