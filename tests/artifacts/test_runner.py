"""ctx.save_artifact as an agent uses it: the runner (executions.runner.run_attempt) called in
the test process with the real ExecutionContext, database and storage."""

import pytest

from agents.functions import agent_function
from agents.kinds.base import RetryableError
from executions import runner
from executions.services import execution_request
from tests.artifacts.conftest import stored_files

pytestmark = pytest.mark.django_db


@agent_function("tests.artifacts.save_secret", description="Saves its secret in a file.")
def save_secret(ctx, input):
    ctx.save_artifact(f"for {ctx.secrets['token']}.txt", f"token: {ctx.secrets['token']}\n")


@agent_function("tests.artifacts.save_then_fail", description="Saves, then fails once.")
def save_then_fail(ctx, input):
    ctx.save_artifact(f"attempt-{ctx.attempt}.txt", f"attempt {ctx.attempt}\n")
    ctx.save_artifact("latest.txt", f"attempt {ctx.attempt}\n")
    if ctx.attempt == 1:
        raise RetryableError("The service is down for a moment.")
    return {"attempt": ctx.attempt}


def run(agent, input=None):
    execution = execution_request(agent=agent, trigger="manual", input=input, hold=True)
    expected = 0
    while True:
        runner.run_attempt(execution_id=execution.pk, expected_attempt=expected)
        execution.refresh_from_db()
        if execution.status != "retrying":
            return execution
        expected = execution.attempt


def test_the_demo_report_saves_a_csv_and_a_json_file(make_agent, storage_dir):
    execution = run(make_agent(config={"function": "demo.report"}), {"days": 3})

    assert execution.status == "succeeded", execution.error_message
    files = {a.name: a for a in execution.artifacts.all()}
    assert list(files) == ["report.csv", "summary.json"]
    csv_file = (storage_dir / files["report.csv"].file.name).read_text()
    assert csv_file == "day,orders,revenue\n1,17,212.50\n2,11,137.50\n3,18,225.00\n"
    assert files["report.csv"].content_type == "text/csv; charset=utf-8"
    assert files["summary.json"].content_type == "application/json"
    assert execution.result == {"days": 3, "orders": 46, "revenue": 575.0}
    assert execution.logs.filter(message="Saved the file “report.csv” (55 bytes).").exists()


def test_a_refused_file_fails_the_run_with_a_message_a_person_understands(
    make_agent, storage_dir, settings
):
    settings.CONVEYOR_ARTIFACTS_MAX_COUNT = 1
    agent = make_agent(config={"function": "demo.report"}, max_retries=3)

    execution = run(agent, {"days": 3})

    assert execution.status == "failed" and execution.attempt == 1  # not retried
    assert execution.error_message.startswith(
        "“summary.json” was not saved: this run already keeps 1 file, the most one run may "
        "keep on this installation."
    )
    # What was saved before the refusal stays.
    assert list(execution.artifacts.values_list("name", flat=True)) == ["report.csv"]


def test_secret_values_are_masked_in_the_file_and_its_name(make_agent, storage_dir):
    agent = make_agent(
        config={"function": "tests.artifacts.save_secret"}, secrets={"token": "tok-123456"}
    )

    execution = run(agent)

    artifact = execution.artifacts.get()
    assert artifact.name == "for ***.txt"
    assert (storage_dir / artifact.file.name).read_bytes() == b"token: ***\n"


def test_files_of_an_attempt_that_was_retried_stay(
    make_agent, storage_dir, django_capture_on_commit_callbacks
):
    agent = make_agent(config={"function": "tests.artifacts.save_then_fail"}, max_retries=2)

    with django_capture_on_commit_callbacks(execute=True):
        execution = run(agent)

    assert execution.status == "succeeded" and execution.attempt == 2
    kept = {a.name: a.attempt for a in execution.artifacts.all()}
    assert kept == {"attempt-1.txt": 1, "attempt-2.txt": 2, "latest.txt": 2}
    assert len(stored_files(storage_dir)) == 3  # the first "latest.txt" replaced
