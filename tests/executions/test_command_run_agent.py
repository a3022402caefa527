"""manage.py run_agent: start a run from the command line and watch it to the end."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from executions.errors import CATEGORIES
from executions.flows import flow_start
from executions.management.commands.run_agent import Command, Watch
from executions.models import Execution, FlowStep
from executions.services import execution_cancel, execution_request, execution_retry
from executions.templatetags.conveyor import when
from tests.conftest import failure, flow_started, step_ended


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


# --- Flows ----------------------------------------------------------------------------------


def _watch(execution: Execution) -> str:
    out = StringIO()
    Watch(Command(stdout=out), execution, timeout=0.5, verbosity=1).run()
    return out.getvalue()


@pytest.fixture
def nightly(make_agent, alice):
    """export -> in parallel (mail, chat) -> archive."""
    make_agent(alice, name="export")
    make_agent(alice, name="notify")
    return make_agent(
        alice,
        name="nightly",
        kind="flow",
        config={
            "steps": [
                {"key": "export", "agent": "export"},
                {
                    "key": "tell",
                    "parallel": [
                        {"key": "mail", "agent": "notify"},
                        {"key": "chat", "agent": "notify"},
                    ],
                },
                {"key": "archive", "agent": "export", "retry": {"max_retries": 0}},
            ]
        },
    )


@pytest.mark.django_db
def test_a_finished_flow_prints_each_step_then_its_end(nightly):
    flow = flow_started(nightly)
    for key in ("export", "mail", "chat", "archive"):
        step_ended(flow, key, result={"done": key})

    output = _watch(flow)

    lines = output.splitlines()
    assert lines[0].startswith("Step 1 “export”: succeeded in ")
    assert lines[0].endswith(" (1 attempt).")
    assert lines[1].startswith("Step 2 “mail” (in “tell”): succeeded in ")
    assert lines[2].startswith("Step 2 “chat” (in “tell”): succeeded in ")
    assert lines[3].startswith("Step 2 “tell”: succeeded in ")
    assert lines[4].startswith("Step 3 “archive”: succeeded in ")
    assert lines[5].startswith("Succeeded in ")
    assert json.loads(output.split("Result:\n", 1)[1]) == {"done": "archive"}
    # The flow's own single attempt is not reported as one: its steps are.
    assert "Attempt 1 of 1" not in output


@pytest.mark.django_db
def test_a_failed_flow_s_lines_say_which_step_failed_and_what_was_skipped(nightly):
    flow = flow_started(nightly)
    step_ended(
        flow, "export", error=failure("auth", retryable=False, reason="The token was refused.")
    )
    out = StringIO()

    with pytest.raises(CommandError):
        Watch(Command(stdout=out), flow, timeout=0.5, verbosity=1).run()

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Step 1 “export”: failed in ")
    assert lines[0].endswith("(1 attempt).")
    skipped = [line for line in lines if "skipped" in line]
    assert skipped == [
        "Step 2 “tell”: skipped: an earlier step did not succeed.",
        "Step 2 “mail” (in “tell”): skipped: an earlier step did not succeed.",
        "Step 2 “chat” (in “tell”): skipped: an earlier step did not succeed.",
        "Step 3 “archive”: skipped: an earlier step did not succeed.",
    ]
    assert f"Failed: {CATEGORIES['auth'].title}" in out.getvalue()
    assert "  Step “export” failed after 1 attempt" in out.getvalue()


@pytest.mark.django_db
def test_a_retried_flow_says_which_steps_it_reused(nightly):
    flow = flow_started(nightly)
    step_ended(flow, "export", result={"rows": 3})
    export = FlowStep.objects.get(flow=flow, key="export").execution
    execution_cancel(execution=flow)
    again = execution_retry(execution=flow)
    assert flow_start(execution_id=again.pk, expected_attempt=0, worker="test-worker")
    again.refresh_from_db()
    out = StringIO()

    with pytest.raises(CommandError):  # the retry's steps run on no worker here
        Watch(Command(stdout=out), again, timeout=0.5, verbosity=1).run()

    output = out.getvalue()
    (line,) = [line for line in output.splitlines() if line.startswith("Step 1")]
    assert line.startswith("Step 1 “export”: reused, not run again: it succeeded in ")
    assert line.endswith(f"(1 attempt) as execution {export.uuid}.")
    assert "Status: Running · Step 2 of 3: tell" in output


@pytest.mark.django_db
def test_a_cancelled_flow_says_how_its_steps_were_stopped(nightly):
    flow = flow_started(nightly)
    execution_cancel(execution=flow)
    out = StringIO()

    with pytest.raises(CommandError):
        Watch(Command(stdout=out), flow, timeout=0.5, verbosity=1).run()

    lines = out.getvalue().splitlines()
    # Cancelled while queued: no attempt to count.
    assert lines[0].startswith("Step 1 “export”: cancelled in ")
    assert lines[0].endswith(" ms. Stopped: the flow was cancelled.")
    assert "Step 3 “archive”: skipped: the flow was cancelled." in lines


def test_a_flow_run_with_wait_prints_each_step_as_it_ends(worker, make_agent, alice):
    make_agent(alice, name="fetch")
    make_agent(alice, name="flaky", config={"function": "demo.flaky"}, max_retries=0)
    make_agent(
        alice,
        name="pipeline",
        kind="flow",
        config={
            "steps": [
                {"key": "fetch", "agent": "fetch", "input": {"n": "{{ input.n }}"}},
                {
                    "key": "transform",
                    "agent": "flaky",
                    "input": {"fail_times": 1},
                    "retry": {"max_retries": 2, "backoff": 1, "jitter": False},
                },
                {"key": "deliver", "agent": "fetch", "input": "{{ steps.fetch.result.n }}"},
            ]
        },
    )
    out = StringIO()

    call_command("run_agent", "alice/pipeline", "--input", '{"n": 7}', "--wait", stdout=out)

    output = out.getvalue()
    lines = output.splitlines()
    step_lines = [line for line in lines if line.startswith("Step ")]
    assert len(step_lines) == 3, output
    assert step_lines[0].startswith("Step 1 “fetch”: succeeded in ")
    assert step_lines[0].endswith("(1 attempt).")
    assert step_lines[1].startswith("Step 2 “transform”: succeeded in ")
    assert step_lines[1].endswith("(2 attempts).")
    assert step_lines[2].startswith("Step 3 “deliver”: succeeded in ")
    assert lines.index(step_lines[2]) < lines.index(
        next(line for line in lines if line.startswith("Succeeded in "))
    )
    assert "(1 attempt)." in next(line for line in lines if line.startswith("Succeeded in "))
    assert json.loads(output.split("Result:\n", 1)[1]) == 7
