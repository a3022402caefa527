"""Logging filters used by LOGGING in config/settings.py."""

from __future__ import annotations

import logging
from collections.abc import Mapping

# Tasks that run every few seconds whatever happens: their receipt and success are not news.
ROUTINE_TASKS = frozenset({"executions.dispatch"})


class RoutineTaskFilter(logging.Filter):
    """Celery's worker logs "Task <name>[<id>] received" and "... succeeded in 0.01s" at info
    for every task. For the dispatcher's tick (every 2 s) that buries the lines that matter, so
    those two become debug lines: shown only when the process logs at debug. A tick that does
    something logs it itself ("dispatcher tick", executions/dispatch.py); its failures still
    come through at their own level."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = record.args
        if record.levelno != logging.INFO or not isinstance(context, Mapping):
            return True
        if context.get("name") not in ROUTINE_TASKS:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        # The record has passed the info check already: let it through only if debug is on.
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
