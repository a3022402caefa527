"""End to end through the real worker: a function agent's files, downloaded by their owner only,
and gone with retention's delete; the agent's log level applied by the worker."""

from django.conf import settings
from django.urls import reverse

from artifacts.services import artifacts_delete
from executions.services import execution_request
from tests.conftest import wait_for

REPORT = b"day,orders,revenue\n1,17,212.50\n2,11,137.50\n3,18,225.00\n"


def test_a_saved_file_is_downloaded_by_its_owner_only_and_goes_with_its_run(
    worker, make_agent, client, alice, bob
):
    agent = make_agent(config={"function": "demo.report"}, log_level="info")
    execution = execution_request(agent=agent, trigger="manual", input={"days": 3})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded", execution.error_message
    report = execution.artifacts.get(name="report.csv")
    url = reverse("artifacts:download", args=[execution.uuid, report.uuid])
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == REPORT
    client.force_login(bob)
    assert client.get(url).status_code == 404
    # The worker kept the info lines, not the agent's per-day debug lines.
    levels = list(execution.logs.values_list("level", flat=True))
    assert "debug" not in levels
    assert execution.logs.filter(message="Wrote the report of 3 days: 46 orders.").exists()

    stored = settings.CONVEYOR_ARTIFACTS_DIR / report.file.name
    assert stored.read_bytes() == REPORT
    assert artifacts_delete(execution_ids=[execution.pk]) == 2
    assert not stored.exists()
    client.force_login(alice)
    assert client.get(url).status_code == 404
