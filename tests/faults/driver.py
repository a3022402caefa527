"""The fault suite's hands inside Conveyor: Django on a scenario's private database.

Run as ``python -m tests.faults.driver <command>`` with the environment of the scenario's
processes (``DATABASE_URL``, ``REDIS_URL``, the private queues; see ``harness.FaultStack.env``).
It reads a JSON object on stdin and prints one JSON object on stdout. Everything goes through
Conveyor's own services, as a page or the API would:

* ``setup``: the fault suite's user and its ``http`` agent calling the receiver
  (``{"url": ...}`` in; ``{"agent": id}`` out).
* ``create``: one execution per input through ``execution_request``, each in its own
  transaction, so each is published when it commits (``{"agent": id, "inputs": [...]}`` in;
  ``{"created": [[id, token], ...], "refused": [[token, "error"], ...], "seconds": s}`` out).
  A creation that raises is reported in ``refused`` with its error, not hidden.
* ``schedule``: a one-off schedule of the agent (``{"agent": id, "run_at": iso, "input": ...}``
  in; ``{"schedule": id, "next_run_at": iso}`` out).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime


def setup(payload: dict) -> dict:
    from django.contrib.auth import get_user_model

    from agents.services import agent_create

    owner = get_user_model().objects.create_user("faults", "faults@example.com", "faults")
    agent = agent_create(
        owner=owner,
        name="receiver",
        kind="http",
        config={"method": "POST", "url": payload["url"], "timeout": 30},
        # The defaults' time limit (300 s): a cut attempt must come back through the
        # heartbeat, not through the time limit. Short waits between attempts keep a scenario
        # within its time budget.
        timeout=300,
        max_retries=3,
        retry_backoff=1,
        retry_backoff_max=4,
        retry_jitter=False,
        overlap_policy="allow",
    )
    return {"agent": agent.pk}


def create(payload: dict) -> dict:
    from agents.models import Agent
    from executions.services import execution_request

    agent = Agent.objects.get(pk=payload["agent"])
    created, refused = [], []
    began = time.monotonic()
    for run_input in payload["inputs"]:
        try:
            execution = execution_request(agent=agent, trigger="api", input=run_input)
        except Exception as exc:  # reported to the test, which judges it
            refused.append([run_input["token"], f"{type(exc).__name__}: {exc}"])
        else:
            created.append([execution.pk, run_input["token"]])
    return {"created": created, "refused": refused, "seconds": time.monotonic() - began}


def schedule(payload: dict) -> dict:
    from agents.models import Agent
    from agents.schedule_services import schedule_create

    one = schedule_create(
        agent=Agent.objects.get(pk=payload["agent"]),
        kind="once",
        run_at=datetime.fromisoformat(payload["run_at"]),
        input=payload["input"],
    )
    return {"schedule": one.pk, "next_run_at": one.next_run_at.isoformat()}


COMMANDS = {"setup": setup, "create": create, "schedule": schedule}


def main() -> None:
    command = COMMANDS[sys.argv[1]]
    payload = json.loads(sys.stdin.read() or "{}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.faults.settings")
    import django

    django.setup()
    answer = command(payload)
    # The last line of stdout is the answer (Django may have logged above it).
    sys.stdout.write("\n" + json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
