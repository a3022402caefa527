"""The fault suite's fixtures, and what keeps it out of the normal suite.

The fault suite runs only when it is named on the command line (``pytest tests/faults``, which
``make faults`` runs, or one of its files): a plain ``pytest`` (``make test``) collects nothing
here. Its scenarios start their own Postgres, Redis, workers and beat, and take minutes.

* ``receiver`` (session): the HTTP service the agents call (``harness.Receiver``).
* ``template`` (session): a Postgres cluster, migrated, with the fault suite's user and its
  ``http`` agent calling the receiver; stopped, so that each scenario starts a copy of it.
* ``fault_stack(**env)``: one scenario's stack (``harness.FaultStack``), started; ``env`` goes
  to every process of the scenario. Its logs are in ``var/faults/<scenario>/``, removed when
  the scenario passed.
* ``fault_report``: one line per scenario in ``var/faults-report.txt`` and at the end of the
  terminal report.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.faults.harness import (
    FaultStack,
    PostgresCluster,
    Receiver,
    conveyor_env,
    migrate,
    run_driver,
)
from tests.stack import VAR

HERE = Path(__file__).resolve().parent
LOGS = VAR / "faults"
REPORT = VAR / "faults-report.txt"
COLUMNS = (
    ("scenario", 38),
    ("executions", 10),
    ("lost", 4),
    ("stuck", 5),
    ("repeated", 8),
    ("cut", 4),
    ("recover_s", 9),
    ("limit_s", 7),
    ("result", 6),
)


def pytest_ignore_collect(collection_path, config):
    """Leave the fault suite out unless tests/faults (or something in it) was asked for."""
    for arg in config.args:
        asked = (Path(config.invocation_params.dir) / arg.split("::")[0]).resolve()
        if asked == HERE or HERE in asked.parents:
            return None
    return True


# --- Services shared by the scenarios ---------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def broker():
    """Replaces the normal suite's Redis (tests/stack.py): each scenario runs its own."""
    return None


@pytest.fixture(scope="session")
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def runtime_root():
    """Data directories and sockets: short paths under /tmp (a unix socket's path is short)."""
    root = Path(tempfile.mkdtemp(prefix="conveyor-faults-"))
    root.chmod(0o755)  # the postgres user reaches its own directories inside
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def template(runtime_root, receiver):
    """A migrated cluster with the fault suite's agent. Yields ``(cluster, agent id)``."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / "template.log"
    log.unlink(missing_ok=True)
    cluster = PostgresCluster(runtime_root / "template")
    cluster.initdb()
    cluster.start()
    try:
        cluster.create_database()
        # No broker is used while migrating and creating the agent: any Redis address will do.
        env = conveyor_env(
            database_url=cluster.url, redis_url="redis://127.0.0.1:1/0", var_dir=runtime_root
        )
        migrate(env, log=log)
        agent = run_driver("setup", {"url": receiver.url}, env=env, log=log)["agent"]
    finally:
        cluster.stop()
    yield cluster, agent
    log.unlink(missing_ok=True)  # kept only when setting the template up failed


# --- One scenario -----------------------------------------------------------------------------


@pytest.fixture
def fault_stack(request, template, runtime_root):
    """``fault_stack(executions_worker=True, **env)``: this scenario's stack, started."""
    name = request.node.name.removeprefix("test_")
    logs = LOGS / name
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    stacks: list[FaultStack] = []
    failed_before = request.session.testsfailed

    def start(*, executions_worker: bool = True, **env) -> FaultStack:
        cluster, agent = template
        stack = FaultStack(
            name,
            root=runtime_root / name,
            logs=logs,
            template=cluster,
            agent_id=agent,
            **env,
        )
        stacks.append(stack)
        return stack.start(executions_worker=executions_worker)

    yield start
    for stack in stacks:
        stack.close()
    if request.session.testsfailed == failed_before:
        shutil.rmtree(logs, ignore_errors=True)


# --- The report -------------------------------------------------------------------------------


class FaultReport:
    def __init__(self):
        self.lines: list[str] = []
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(self.format([name for name, _ in COLUMNS]) + "\n")

    @staticmethod
    def format(values) -> str:
        return "  ".join(
            f"{value!s:<{width}}" if i == 0 else f"{value!s:>{width}}"
            for i, (value, (_, width)) in enumerate(zip(values, COLUMNS, strict=False))
        ) + ("  " + values[len(COLUMNS)] if len(values) > len(COLUMNS) else "")

    def record(self, *values) -> None:
        line = self.format(values)
        self.lines.append(line)
        with REPORT.open("a") as out:
            out.write(line + "\n")


_report: FaultReport | None = None


@pytest.fixture(scope="session")
def fault_report() -> FaultReport:
    global _report
    _report = FaultReport()
    return _report


def pytest_terminal_summary(terminalreporter):
    if _report is None or not _report.lines:
        return
    terminalreporter.section("fault scenarios")
    terminalreporter.write_line(FaultReport.format([name for name, _ in COLUMNS]))
    for line in _report.lines:
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(also in {REPORT})")
