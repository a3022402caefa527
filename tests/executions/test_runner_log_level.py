"""The agent's log level (Agent.log_level): ExecutionContext.log keeps only the lines at or above
it; the lines Conveyor writes about the run are kept whatever it is."""

import pytest
from django.utils import timezone

from executions import runner
from executions.services import attempt_close_cancelled, execution_cancel

pytestmark = pytest.mark.django_db

LEVELS = ["debug", "info", "warning", "error"]


def context(make_agent, make_execution, **fields):
    execution = make_execution(make_agent(**fields), "running")
    return execution, runner.ExecutionContext(
        execution=execution, agent=execution.agent, deadline=timezone.now()
    )


def log_every_level(ctx):
    for level in LEVELS:
        ctx.log(level, f"a {level} line", n=LEVELS.index(level))


@pytest.mark.parametrize(
    ("log_level", "kept"),
    [
        ("debug", LEVELS),
        ("info", ["info", "warning", "error"]),
        ("warning", ["warning", "error"]),
        ("error", ["error"]),
    ],
)
def test_only_lines_at_or_above_the_agents_level_are_kept(
    make_agent, make_execution, log_level, kept
):
    _, ctx = context(make_agent, make_execution, log_level=log_level)

    log_every_level(ctx)

    assert [(log.level, log.message) for log in ctx.take_logs()] == [
        (level, f"a {level} line") for level in kept
    ]


def test_an_unknown_level_counts_as_info(make_agent, make_execution):
    _, ctx = context(make_agent, make_execution, log_level="warning")

    ctx.log("verbose", "dropped with the info lines")
    ctx.log("WARNING", "kept")

    assert [(log.level, log.message) for log in ctx.take_logs()] == [("warning", "kept")]


def test_the_filter_applies_to_the_lines_written_while_running_too(make_agent, make_execution):
    execution, ctx = context(make_agent, make_execution, log_level="warning")

    log_every_level(ctx)
    ctx.flush()

    assert list(execution.logs.values_list("level", flat=True)) == ["warning", "error"]


def test_conveyors_own_lines_are_kept_whatever_the_level(make_agent, make_execution, storage_dir):
    execution, ctx = context(make_agent, make_execution, log_level="error")

    ctx.log("info", "dropped")
    ctx.save_artifact("out.txt", "done\n")
    assert execution_cancel(execution=execution, at=timezone.now())
    attempt_close_cancelled(execution=execution, number=1, at=timezone.now(), logs=ctx.take_logs())

    assert list(execution.logs.values_list("level", "message")) == [
        ("info", "Saved the file “out.txt” (5 bytes)."),
        ("warning", "Stopped: the execution was cancelled."),
    ]


@pytest.fixture
def storage_dir(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    return tmp_path
