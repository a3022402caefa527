"""config/queues.py: CONVEYOR_QUEUES, the queues operators declare, read from one variable that
.env files hold as it is; a bad declaration stops Conveyor at start-up, naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from honcho.environ import parse as parse_dotenv

from config.queues import parse_queues

ROOT = Path(__file__).resolve().parent.parent.parent
RESERVED = {
    "maintenance": "the maintenance queue (CONVEYOR_MAINTENANCE_QUEUE)",
    "notifications": "the notifications queue (CONVEYOR_NOTIFICATIONS_QUEUE)",
}


def queues(raw):
    return parse_queues(raw, executions="executions", reserved=RESERVED)


def refusal(raw) -> str:
    with pytest.raises(ImproperlyConfigured) as caught:
        queues(raw)
    message = str(caught.value)
    assert message.startswith("CONVEYOR_QUEUES")
    return message


@pytest.mark.parametrize("raw", [None, "", " ", ";"])
def test_unset_or_empty_declares_the_executions_queue_alone(raw):
    assert queues(raw) == {"executions": {"description": "The default queue.", "concurrency": None}}


def test_entries_give_a_name_an_optional_limit_and_an_optional_description():
    declared = queues("reports:2=Long reports, two at a time; fast=Quick calls;bare;lim:5")

    assert declared == {
        "executions": {"description": "The default queue.", "concurrency": None},
        "reports": {"description": "Long reports, two at a time", "concurrency": 2},
        "fast": {"description": "Quick calls", "concurrency": None},
        "bare": {"description": "", "concurrency": None},
        "lim": {"description": "", "concurrency": 5},
    }


def test_the_executions_queue_comes_first_and_may_be_described_and_limited():
    declared = queues("reports=Long reports;executions:10=Everything else")

    assert list(declared) == ["executions", "reports"]
    assert declared["executions"] == {"description": "Everything else", "concurrency": 10}


def test_a_description_keeps_equals_signs_and_colons_and_loses_extra_spaces():
    declared = queues("ops = Runs: a=b ,  c  ")
    assert declared["ops"] == {"description": "Runs: a=b , c", "concurrency": None}


def test_the_form_of_env_example_reads_back_through_honcho():
    line = 'CONVEYOR_QUEUES="executions=Everything else;reports:2=Long reports, two at a time"'
    declared = queues(parse_dotenv(line)["CONVEYOR_QUEUES"])
    assert declared["reports"] == {"description": "Long reports, two at a time", "concurrency": 2}


@pytest.mark.parametrize("name", ["maintenance", "notifications"])
def test_conveyor_s_own_queues_are_refused(name):
    message = refusal(f"reports;{name}=Mine")
    assert f"'{name}' is {RESERVED[name]}, which agent runs cannot use" in message


@pytest.mark.parametrize(
    "raw",
    ["-dash-first", "_kombu.binding.x", "two words", "a/b", "x" * 101, "=Nameless",
     "caf\u00e9", "reports;;=oops"],
)  # fmt: skip
def test_a_bad_name_is_refused_with_the_rule(raw):
    assert "a name has 1 to 100 letters, digits, dots, dashes and underscores" in refusal(raw)


@pytest.mark.parametrize("name", ["unacked", "unacked_index", "unacked_mutex", "x.malformed"])
def test_names_the_broker_keeps_for_itself_are_refused(name):
    assert "a key the broker keeps for itself" in refusal(name)


@pytest.mark.parametrize("limit", ["0", "-1", "two", "1.5", "", "\u0662"])
def test_a_limit_that_is_not_a_whole_number_of_at_least_one_is_refused(limit):
    message = refusal(f"reports:{limit}=Long reports")
    assert "the limit of 'reports' must be a whole number of runs at once, at least 1" in message


def test_a_name_given_twice_is_refused():
    assert "declares 'reports' twice" in refusal("reports;fast;reports:2")


def test_a_description_too_long_to_show_is_refused():
    assert "longer than 200 characters" in refusal("reports=" + "x" * 201)


def test_the_settings_refuse_to_start_on_a_bad_declaration_naming_the_variable(tmp_path):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CONVEYOR_VAR_DIR": str(tmp_path),
        "DEBUG": "true",
        "CONVEYOR_MAINTENANCE_QUEUE": "upkeep",
        "CONVEYOR_QUEUES": "reports:2=Long reports;upkeep",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert (
        "CONVEYOR_QUEUES: 'upkeep' is the maintenance queue (CONVEYOR_MAINTENANCE_QUEUE)"
        in result.stderr
    )


def test_manage_py_says_a_bad_declaration_in_one_line_without_a_traceback(tmp_path):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CONVEYOR_VAR_DIR": str(tmp_path),
        "DEBUG": "true",
        "CONVEYOR_QUEUES": "reports:x=Long reports",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("Conveyor cannot start: CONVEYOR_QUEUES:")
    assert len(done.stderr.strip().splitlines()) == 1
