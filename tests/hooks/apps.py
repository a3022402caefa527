"""Hooks that the worker processes the suite starts load (config/settings_test.py lists this app),
for end-to-end tests that need a worker to misbehave at one exact moment.

* **Kill after a step ends**: a test writes ``kill_marker()`` with ``"<agent pk>:<step key>"``;
  when a worker's task ends that step's execution (any final state), the ``execution_ended``
  receiver removes the file (so it fires once) and registers ``os.kill(own pid, SIGKILL)`` with
  ``transaction.on_commit``. Receivers run before Conveyor registers its own follow-up (the
  message that advances the flow), so the process dies right after the step's final state is
  committed and before the flow is told: only the dispatcher's recovery pass can advance it.
* **Kill after an execution ends, before its follow-ups**: a test writes ``end_kill_marker()``
  with ``"<agent pk>"``; when a worker's task ends an execution of that agent (any final state),
  the process is killed the same way, right after the commit and before the messages that send
  its notifications and call its completion hook (notifications/services.py registers those
  with ``on_commit`` from its own ``execution_ended`` receiver; ``on_commit`` callbacks run in
  the order registered, so ``HooksConfig.ready`` connects this receiver ahead of that one).
  Only the dispatcher's recovery pass (``resend_stalled``) can send them.
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


def end_kill_marker() -> Path:
    return Path(settings.VAR_DIR) / "test-kill-after-end"


def kill_after_end(sender, execution, **kwargs) -> None:
    from celery import current_task

    # Only a worker running a task: never the test process itself.
    if not current_task or current_task.request.called_directly:
        return
    marker = end_kill_marker()
    try:
        wanted = marker.read_text().strip()
    except FileNotFoundError:
        return
    if wanted != str(execution.agent_id):
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
        # Receivers run in the order connected, and notifications/apps.py (an earlier app) has
        # connected its own already: take it off and connect it again after this one, so that
        # the kill is registered with on_commit before the sends of notifications and hooks.
        from notifications import services as notifications

        moved = execution_ended.disconnect(dispatch_uid="notifications.ended")
        execution_ended.connect(kill_after_end, dispatch_uid="tests.hooks.kill_after_end")
        if moved:
            execution_ended.connect(
                notifications.on_execution_ended, dispatch_uid="notifications.ended"
            )
