"""config/log_filters.py: the worker's lines about the dispatcher's tick are debug lines."""

import logging

import pytest

from config.log_filters import RoutineTaskFilter

RECEIVED = "Task %(name)s[%(id)s] received"
SUCCEEDED = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"


def record(fmt, name, level=logging.INFO):
    context = {"name": name, "id": "abc", "runtime": 0.01, "return_value": None}
    return logging.LogRecord("celery.app.trace", level, __file__, 1, fmt, (context,), None)


@pytest.fixture
def root_level():
    root = logging.getLogger()
    before = root.level

    def set_level(level):
        root.setLevel(level)

    yield set_level
    root.setLevel(before)


@pytest.mark.parametrize("fmt", [RECEIVED, SUCCEEDED])
def test_the_ticks_lines_are_left_out_at_info(root_level, fmt):
    root_level(logging.INFO)
    assert not RoutineTaskFilter().filter(record(fmt, "executions.dispatch"))


@pytest.mark.parametrize("fmt", [RECEIVED, SUCCEEDED])
def test_the_ticks_lines_show_as_debug_lines_at_debug(root_level, fmt):
    root_level(logging.DEBUG)
    line = record(fmt, "executions.dispatch")
    assert RoutineTaskFilter().filter(line)
    assert line.levelname == "DEBUG" and "executions.dispatch[abc]" in line.getMessage()


@pytest.mark.parametrize("fmt", [RECEIVED, SUCCEEDED])
def test_every_other_tasks_lines_stay_at_info(root_level, fmt):
    root_level(logging.INFO)
    line = record(fmt, "executions.run_execution")
    assert RoutineTaskFilter().filter(line) and line.levelname == "INFO"


def test_a_failing_tick_is_still_an_error(root_level):
    root_level(logging.INFO)
    line = record("Task %(name)s[%(id)s] raised", "executions.dispatch", logging.ERROR)
    assert RoutineTaskFilter().filter(line) and line.levelname == "ERROR"


def test_the_filter_sits_on_celerys_task_loggers():
    for name in ("celery.worker.strategy", "celery.app.trace"):
        assert any(isinstance(f, RoutineTaskFilter) for f in logging.getLogger(name).filters)
