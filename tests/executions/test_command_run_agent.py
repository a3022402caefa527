"""manage.py run_agent: start a run from the command line and watch it to the end."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from executions.errors import CATEGORIES
from executions.management.commands.run_agent import Command, Watch
from executions.models import Execution
from executions.services import execution_request
from executions.templatetags.conveyor import when


class FakeTerminal(StringIO):
    def isatty(self):
        return True


def run_agent(*args, stdout=None):
    out = stdout if stdout is not None else StringIO()
    call_command("run_agent", *args, stdout=out)
    return out.getvalue()


# --- Without a worker ---------------------------------------------------------------------


@pytest.mark.django_db
def test_an_unknown_agent_name_lists_the_agents_of_that_owner(make_agent):
    make_agent(name="fetch-prices")
    make_agent(name="send-report")

    with pytest.raises(CommandError) as caught:
        run_agent("alice/fetch-price")

    message = str(caught.value)
    assert "alice has no agent named “fetch-price”" in message
    assert "fetch-prices, send-report" in message


@pytest.mark.django_db
def test_an_unknown_owner_says_so(make_agent):
    with pytest.raises(CommandError, match="There is no user named “carol”"):
        run_agent("carol/anything")


@pytest.mark.django_db
def test_an_unknown_agent_uuid_says_so():
    with pytest.raises(CommandError, match="No agent has the UUID"):
        run_agent("6f1c1d7e-2d1a-4c59-9a57-2f0a3f9b2b11")


@pytest.mark.django_db
def test_a_reference_that_is_neither_a_name_nor_a_uuid_explains_the_format():
    with pytest.raises(CommandError, match="<owner>/<agent name>"):
        run_agent("flaky")


@pytest.mark.django_db
def test_bad_json_input_says_what_is_wrong_and_where(make_agent):
    agent = make_agent()

    with pytest.raises(CommandError) as caught:
        run_agent(f"alice/{agent.name}", "--input", "{fail_times: 1}")

    message = str(caught.value)
    assert "--input is not valid JSON" in message
    assert "Expecting property name enclosed in double quotes (line 1, column 2)" in message
    assert "  {fail_times: 1}\n   ^" in message
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_a_paused_agent_refuses_the_run(make_agent):
    agent = make_agent(is_paused=True)

    with pytest.raises(CommandError, match="is paused"):
        run_agent(f"alice/{agent.name}")

    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_without_wait_it_prints_the_execution_and_its_status(make_agent):
    agent = make_agent()

    output = run_agent(str(agent.uuid), "--input", '{"hello": "world"}')

    execution = Execution.objects.get()
    assert output == f"Execution {execution.uuid} of alice/{agent.name}: Queued.\n"
    assert (execution.trigger, execution.input) == ("manual", {"hello": "world"})


@pytest.mark.django_db
def test_without_input_the_input_is_null(make_agent):
    agent = make_agent()

    run_agent(f"alice/{agent.name}")

    assert Execution.objects.get().input is None


@pytest.mark.django_db
def test_waiting_gives_up_at_the_timeout_without_cancelling(make_agent):
    # Inside the test's transaction nothing is handed to a worker: the run stays queued.
    agent = make_agent()

    with pytest.raises(CommandError) as caught:
        run_agent(f"alice/{agent.name}", "--wait", "--timeout", "0.5")

    assert caught.value.returncode == 3
    assert "Stopped waiting after 0.5 s" in str(caught.value)
    assert "is still queued" in str(caught.value)
    assert Execution.objects.get().status == "queued"


@pytest.mark.django_db
def test_on_a_terminal_the_status_is_a_live_line(make_agent):
    agent = make_agent()
    terminal = FakeTerminal()

    with pytest.raises(CommandError):
        run_agent(f"alice/{agent.name}", "--wait", "--timeout", "0.5", stdout=terminal)

    output = terminal.getvalue()
    assert "\r[" in output
    assert "  0%  Queued · waiting for a worker" in output
    assert "Status: Queued" not in output
    assert output.endswith("\r\x1b[K")  # the live line is wiped before the final message


# --- With the real worker -----------------------------------------------------------------


def test_a_flaky_run_shows_the_failed_attempt_the_wait_and_the_result(worker, make_agent):
    agent = make_agent(config={"function": "demo.flaky"}, max_retries=3)
    out = StringIO()

    call_command(
        "run_agent", f"alice/{agent.name}", "--input", '{"fail_times": 1}', "--wait", stdout=out
    )

    output = out.getvalue()
    assert "WARNING  Simulating a temporary outage (attempt 1)." in output
    assert (
        "Attempt 1 of 4 failed (Upstream error) after" in output
        and "The demo service is temporarily unavailable (simulated failure 1 of 1). "
        "Retrying in 1 s."
        in output
    )
    assert "Status: Retrying (attempt 2 of 4)" in output
    assert "Attempt 2 of 4 succeeded in" in output
    assert "Succeeded in" in output and "(2 attempts)" in output
    result = output.split("Result:\n", 1)[1]
    assert json.loads(result) == {"succeeded_on_attempt": 2}
    # In order: the failure, the wait, the success, the result.
    assert (
        output.index("Attempt 1 of 4 failed")
        < output.index("Attempt 2 of 4 succeeded")
        < (output.index("Result:"))
    )


def test_a_broken_run_exits_non_zero_with_the_friendly_error(worker, make_agent):
    agent = make_agent(config={"function": "demo.broken"})
    out = StringIO()

    with pytest.raises(CommandError) as caught:
        call_command("run_agent", f"alice/{agent.name}", "--wait", stdout=out)

    output = out.getvalue()
    execution = Execution.objects.get()
    assert caught.value.returncode == 1
    assert str(caught.value) == f"Execution {execution.uuid} failed."
    # The friendly title of the error's category (which one is demo.broken's business).
    assert execution.error_title in {info.title for info in CATEGORIES.values()}
    assert f"Failed: {execution.error_title}\n" in output
    assert "The demo record does not exist" in output
    assert "Conveyor does not retry this kind of error." in output
    assert "Traceback" not in output  # error_detail is for staff, not this output


@pytest.mark.django_db
def test_a_delayed_run_says_until_when_as_the_pages_write_it(make_agent):
    start = timezone.now().replace(microsecond=0) + timedelta(minutes=19)
    execution = execution_request(agent=make_agent(), trigger="manual", not_before=start)
    watch = Watch(Command(stdout=StringIO()), execution, timeout=1, verbosity=1)
    assert watch.status_line() == f"Status: Queued (delayed until its start time: {when(start)})"
