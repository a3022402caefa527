"""Hooks that the worker processes the suite starts load (config/settings_test.py lists this app),
for end-to-end tests that need a worker to misbehave at one exact moment.

* **Kill after a step ends**: a test writes ``kill_marker()`` with ``"<agent pk>:<step key>"``;
  when a worker's task ends that step's execution (any final state), the ``execution_ended``
  receiver removes the file (so it fires once) and registers ``os.kill(own pid, SIGKILL)`` with
  ``transaction.on_commit``. Receivers run before Conveyor registers its own follow-up (the
  message that advances the flow), so the process dies right after the step's final state is
  committed and before the flow is told: only the dispatcher's recovery pass can advance it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from django.apps import AppConfig
from django.conf import settings
from django.db import transaction


def kill_marker() -> Path:
    return Path(settings.VAR_DIR) / "test-kill-after-step"


def kill_after_step(sender, execution, **kwargs) -> None:
    from celery import current_task

    if not execution.step_key:
        return
    # Only a worker running a task: never the test process itself.
    if not current_task or current_task.request.called_directly:
        return
    marker = kill_marker()
    try:
        wanted = marker.read_text().strip()
    except FileNotFoundError:
        return
    if wanted != f"{execution.agent_id}:{execution.step_key}":
        return
    try:
        marker.unlink()
    except FileNotFoundError:
        return  # another process took it first
    pid = os.getpid()
    transaction.on_commit(lambda: os.kill(pid, signal.SIGKILL))


class HooksConfig(AppConfig):
    name = "tests.hooks"
    label = "test_hooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from executions.signals import execution_ended

        execution_ended.connect(kill_after_step, dispatch_uid="tests.hooks.kill_after_step")
