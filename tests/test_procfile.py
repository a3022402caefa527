"""The Procfile `make run` starts: agent runs and Conveyor's upkeep in separate workers."""

import re
from pathlib import Path

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"


def processes() -> dict[str, str]:
    lines = PROCFILE.read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def queues(command: str) -> set[str]:
    spec = re.search(r"-Q (\S+)", command).group(1)
    # ${CONVEYOR_EXECUTIONS_QUEUE:-executions} -> executions
    return {re.sub(r"\$\{\w+:-(\w+)\}", r"\1", part) for part in spec.split(",")}


def test_the_dispatcher_has_a_worker_that_agent_runs_cannot_fill():
    procs = processes()
    assert queues(procs["worker"]) == {"executions"}
    assert queues(procs["maintenance"]) == {"maintenance"}
    assert queues(procs["notifier"]) == {"notifications"}
    assert {"web", "redis", "worker", "maintenance", "notifier", "beat", "flower"} == set(procs)
