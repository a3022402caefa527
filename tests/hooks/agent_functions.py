"""Agent functions of the suite's own. This app is installed by config/settings_test.py only, so
every process the suite starts (the test process, its workers, beat) registers them.

* ``test.counted``: returns its input, or fails for good when the input says ``{"fail": true}``.
  Its completion hook writes down each call, as one JSON line in a file under VAR_DIR, so that
  a test counts the calls made in any process (``hook_calls(execution_uuid)``). A result with
  ``"hook_fails": n`` makes the hook raise on its first ``n`` calls for that execution.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings

from agents.functions import agent_function
from agents.kinds.base import PermanentError


def hook_calls_file() -> Path:
    return Path(settings.VAR_DIR) / "test-hook-calls.jsonl"


def hook_calls(execution_id: Any) -> list[dict]:
    """The calls of test.counted's hook for the execution with this uuid, in order."""
    try:
        text = hook_calls_file().read_text()
    except FileNotFoundError:
        return []
    calls = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [call for call in calls if call["execution"] == str(execution_id)]


def _write_down(call: dict) -> None:
    # One write of one short line to a file opened for appending: whole lines, whichever
    # process writes them.
    line = (json.dumps(call) + "\n").encode()
    fd = os.open(hook_calls_file(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def counted_on_complete(execution_id: str, outcome: str, result_or_error: Any) -> None:
    earlier = len(hook_calls(execution_id))
    _write_down(
        {
            "execution": execution_id,
            "outcome": outcome,
            "payload": result_or_error,
            "pid": os.getpid(),
        }
    )
    fails = result_or_error.get("hook_fails", 0) if isinstance(result_or_error, dict) else 0
    if earlier < fails:
        raise RuntimeError(f"The hook's own service is down (call {earlier + 1}).")


@agent_function(
    "test.counted",
    description="Returns its input (fails when told to); its completion hook counts its calls.",
    on_complete=counted_on_complete,
)
def counted(ctx, input):
    if isinstance(input, dict) and input.get("fail"):
        raise PermanentError("Told to fail by its input.")
    return input
