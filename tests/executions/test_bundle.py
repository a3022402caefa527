"""The support bundle (executions.bundle) built from runs the services made, without a worker:
what it holds, what it leaves out (secrets, and the traceback for non-staff), for a failed, a
succeeded and a flow run. Downloads from the page and the API: test_bundle_views.py; a real
http run through the worker: test_bundle_e2e.py."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.services import agent_update
from artifacts.services import artifact_save
from common.version import conveyor_version
from executions.bundle import (
    SECRET_REMOVED,
    support_bundle,
    support_bundle_filename,
    support_bundle_text,
)
from executions.models import ExecutionLog
from tests.conftest import flow_started, step_ended

pytestmark = pytest.mark.django_db

TOKEN = "tok-9f8e7d6c5b4a39281706"
PASSWORD = "hunter2-but-longer"


def bundle_text(execution, *, staff=False) -> str:
    return support_bundle_text(support_bundle(execution, staff=staff, by="alice"))


def log(execution, attempt, message, **data):
    """A log line as the runner writes it for ``attempt``."""
    return ExecutionLog.objects.create(
        execution=execution, attempt=attempt, at=timezone.now(), message=message, data=data
    )


@pytest.fixture
def flaky(make_agent):
    return make_agent(name="flaky", max_retries=2)


def test_a_failed_run_s_bundle_holds_every_attempt_event_and_log_line(flaky, make_execution):
    execution = make_execution(
        flaky,
        "failed",
        attempt=3,
        seconds=6,
        error_category="upstream_error",
        reason="The endpoint answered 500.",
    )
    for n in (1, 2, 3):
        log(execution, n, f"line 1 of attempt {n}")
        log(execution, n, f"line 2 of attempt {n}", step=2)

    bundle = json.loads(bundle_text(execution))

    assert bundle["about"]["conveyor_version"] == conveyor_version() != "unknown"
    assert bundle["about"]["generated_by"] == "alice"
    assert bundle["run"]["id"] == str(execution.uuid)
    assert bundle["run"]["agent"] == {"id": str(flaky.uuid), "name": "flaky", "owner": "alice"}
    assert bundle["run"]["status"] == "failed"
    assert [a["number"] for a in bundle["attempts"]] == [1, 2, 3]
    assert [a["outcome"] for a in bundle["attempts"]] == ["failed"] * 3
    assert bundle["attempts"][0]["retry_delay_seconds"] == 1.0
    assert bundle["attempts"][1]["retry_delay_seconds"] == 2.0
    assert bundle["attempts"][0]["duration_seconds"] == 2.0
    assert bundle["worker_hosts"] == ["test-worker@conveyor"]
    # Every line: the agent's own and those Conveyor wrote about the failed attempts.
    recorded = list(execution.logs.values_list("attempt", "message"))
    assert len(recorded) == 9
    assert [(line["attempt"], line["message"]) for line in bundle["logs"]] == recorded
    assert bundle["logs"][-1]["data"] == {"step": 2}
    assert [e["to"] for e in bundle["events"]] == list(
        execution.events.values_list("to_status", flat=True)
    )
    assert bundle["error"]["category"] == "upstream_error"
    assert bundle["error"]["message"].startswith("The endpoint answered 500.")
    timings = bundle["run"]["timings"]
    assert timings["duration_seconds"] == execution.duration.total_seconds()
    assert timings["queued_seconds"] == 0.0
    assert timings["total_seconds"] == 6.0


def test_the_traceback_is_for_staff_only(flaky, make_execution):
    execution = make_execution(flaky, "failed", detail="Traceback: ValueError at line 12")

    owner = json.loads(bundle_text(execution, staff=False))
    operator = json.loads(bundle_text(execution, staff=True))

    assert "ValueError at line 12" not in json.dumps(owner)
    assert owner["error"]["traceback"].startswith("Not included")
    assert owner["about"]["includes_traceback"] is False
    assert operator["error"]["traceback"] == "Traceback: ValueError at line 12"
    assert operator["about"]["includes_traceback"] is True


def test_a_succeeded_run_s_bundle_has_its_result_and_no_error(flaky, make_execution):
    execution = make_execution(flaky, "succeeded", input={"n": 1}, result={"echo": {"n": 1}})

    bundle = json.loads(bundle_text(execution))

    assert bundle["input"] == {"n": 1}
    assert bundle["result"] == {"echo": {"n": 1}}
    assert bundle["error"] is None
    assert bundle["attempts"][0]["outcome"] == "succeeded"
    assert support_bundle_filename(execution) == f"conveyor-run-{execution.uuid}.json"


def test_the_configuration_is_the_agent_s_current_one_with_its_version(flaky, make_execution):
    execution = make_execution(flaky, "succeeded")
    agent_update(agent=flaky, timeout=45)
    flaky.refresh_from_db()

    agent = json.loads(bundle_text(execution))["agent"]

    assert agent["version"] == flaky.version > 1
    assert f"version {flaky.version}" in agent["note"]
    assert agent["timeout_seconds"] == 45
    assert agent["config"] == {"function": "demo.echo"}
    # The run was made before the change: the bundle also holds the settings it was made with.
    assert agent["run_created_with_version"] == execution.agent_version < flaky.version
    assert f"created with version {execution.agent_version}" in agent["note"]
    before = agent["configuration_at_creation"]
    assert before["version"] == execution.agent_version
    assert before["timeout"] != 45


def test_a_run_of_the_current_version_says_so_and_repeats_nothing(flaky, make_execution):
    agent = json.loads(bundle_text(make_execution(flaky, "succeeded")))["agent"]
    assert agent["run_created_with_version"] == agent["version"]
    assert "created with the same version" in agent["note"]
    assert agent["configuration_at_creation"] is None


def test_no_secret_value_nor_secret_looking_value_is_left(make_agent, make_execution):
    agent = make_agent(
        kind="http",
        config={
            "url": f"https://api.example.com/v1/hook?access_token={PASSWORD}",
            "headers": {"X-Api-Key": "plain-key-4711", "Accept": "application/json"},
            "secret_headers": {"Authorization": "token"},
        },
        secrets={"token": TOKEN},
    )
    execution = make_execution(
        agent,
        "failed",
        input={"note": f"my token is {TOKEN}", "password": PASSWORD, "count": 3},
        reason=f"The endpoint said: Authorization: Bearer {TOKEN}",
        detail=f'Traceback ... body {{"client_secret": "{PASSWORD}"}}',
    )
    log(execution, 1, f"Calling with {TOKEN}", header=f"Bearer {TOKEN}", api_key="k-0b1c2d3e")

    for staff in (False, True):
        text = bundle_text(execution, staff=staff)
        for secret in (TOKEN, PASSWORD, "plain-key-4711", "k-0b1c2d3e"):
            assert secret not in text, f"{secret!r} is in the bundle (staff={staff})"
    bundle = json.loads(text)
    assert bundle["input"] == {
        "note": f"my token is {SECRET_REMOVED}",
        "password": SECRET_REMOVED,
        "count": 3,
    }
    assert bundle["agent"]["config"]["headers"] == {
        "X-Api-Key": SECRET_REMOVED,
        "Accept": "application/json",
    }
    assert bundle["agent"]["secret_names"] == ["token"]
    assert bundle["agent"]["config"]["url"].endswith(f"?access_token={SECRET_REMOVED}")


def test_a_webhook_secret_is_removed_too(flaky, make_execution):
    from agents.webhook_services import webhook_enable

    secret = webhook_enable(agent=flaky)
    execution = make_execution(flaky, "succeeded", input={"echoed": secret})

    assert secret not in bundle_text(execution)


def test_a_flow_s_bundle_lists_its_steps(make_agent):
    make_agent(name="echo")
    flow_agent = make_agent(
        kind="flow",
        config={"steps": [{"key": "fetch", "agent": "echo"}, {"key": "store", "agent": "echo"}]},
    )
    flow = flow_started(flow_agent, {"x": 1})
    fetch = step_ended(flow, "fetch", result={"y": 2})

    steps = json.loads(bundle_text(flow))["flow_steps"]

    assert [(s["key"], s["status"]) for s in steps] == [
        ("fetch", "succeeded"),
        ("store", "running"),
    ]
    assert steps[0]["execution"] == str(fetch.uuid)
    step_bundle = json.loads(bundle_text(fetch))
    assert step_bundle["run"]["flow"] == str(flow.uuid)
    assert step_bundle["run"]["step_key"] == "fetch"


def test_files_are_listed_by_name_and_size_without_their_contents(
    flaky, make_execution, settings, tmp_path
):
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    execution = make_execution(flaky, "succeeded", ago=timedelta(minutes=1))
    artifact_save(execution=execution, attempt=1, name="report.csv", data="a,b\nsecret-ish,2\n")

    text = bundle_text(execution)

    files = json.loads(text)["files"]
    assert [(f["name"], f["bytes"], f["content_type"]) for f in files] == [
        ("report.csv", 17, "text/csv; charset=utf-8")
    ]
    assert "secret-ish" not in text
