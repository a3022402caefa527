"""Every way of starting a run refuses an input the agent's kind refuses, the same way.

The page's Run now, the API (one run or a batch), a signed webhook, a schedule's slot, the
``run_agent`` command and a retry with an edited input (page and API) all go through
``execution_request`` (a batch through ``execution_request_batch``, which checks each input the
same way): each answers with the kind's own message, and none of them creates an execution.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents.schedule_dispatch import dispatch_schedules
from agents.schedule_services import schedule_create
from agents.services import agent_update
from agents.webhook_services import webhook_enable
from agents.webhook_signing import sign
from api.services import token_create
from executions.models import Execution
from executions.services import execution_cancel, execution_request

pytestmark = pytest.mark.django_db

INVALID = {"fail_times": "lots"}
# demo.flaky's own words for that input (agents/agent_functions.py).
MESSAGE = "“fail_times” must be a number, not 'lots'."


@pytest.fixture
def flaky(make_agent):
    return make_agent(name="flaky", config={"function": "demo.flaky"})


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_client(user) -> Client:
    _, token = token_create(owner=user, name="entry points")
    return Client(headers={"Authorization": f"Bearer {token}"})


def finished_run(agent) -> Execution:
    """A cancelled run of ``agent`` with a valid input: something to retry."""
    execution = execution_request(agent=agent, trigger="manual", input={"fail_times": 0})
    execution_cancel(execution=execution)
    return execution


# --- The entry points: each tries INVALID and returns what the caller was told -----------------


def page_run_now(agent, alice) -> str:
    response = signed_in(alice).post(
        reverse("agents:run", args=[agent.uuid]), {"input": json.dumps(INVALID)}
    )
    assert response.status_code == 422
    return response.content.decode()


def api_run(agent, alice) -> str:
    response = api_client(alice).post(
        f"/api/v1/agents/{agent.uuid}/runs", {"input": INVALID}, content_type="application/json"
    )
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["code"] == "invalid_input" and body["details"] == {"input": [MESSAGE]}
    return body["message"]


def api_batch(agent, alice) -> str:
    response = api_client(alice).post(
        f"/api/v1/agents/{agent.uuid}/runs/batch",
        {"runs": [{"input": {"fail_times": 0}}, {"input": INVALID}]},
        content_type="application/json",
    )
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["code"] == "invalid_input" and body["details"] == {"runs[1].input": [MESSAGE]}
    return body["message"]


def webhook(agent, alice) -> str:
    secret = webhook_enable(agent=agent)
    body = json.dumps(INVALID).encode()
    msg_id, timestamp = "msg_entry_points", int(time.time())
    response = Client().post(
        reverse("webhook", args=[agent.uuid]),
        data=body,
        content_type="application/json",
        headers={
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body),
        },
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    return response.json()["error"]["message"]


def schedule_slot(agent, alice) -> str:
    # Valid when the schedule was saved (demo.echo takes anything); the agent then changed to a
    # function that refuses it, so the slot's run is refused and the slot recorded as skipped.
    agent_update(agent=agent, config={"function": "demo.echo"})
    now = timezone.now()
    schedule = schedule_create(
        agent=agent, kind="interval", interval_seconds=60, input=INVALID, at=now
    )
    agent_update(agent=agent, config={"function": "demo.flaky"})
    dispatch_schedules(at=schedule.next_run_at + timedelta(seconds=1))
    return schedule.skipped.get().reason


def command(agent, alice) -> str:
    with pytest.raises(CommandError) as refused:
        call_command("run_agent", f"alice/{agent.name}", "--input", json.dumps(INVALID))
    return str(refused.value)


def page_retry_with_edited_input(agent, alice) -> str:
    execution = finished_run(agent)
    response = signed_in(alice).post(
        reverse("executions:retry", args=[execution.uuid]),
        {"input": json.dumps(INVALID), "edit": "on"},
    )
    assert response.status_code == 422
    return response.content.decode()


def api_retry_with_edited_input(agent, alice) -> str:
    execution = finished_run(agent)
    response = api_client(alice).post(
        f"/api/v1/executions/{execution.uuid}/retry",
        {"input": INVALID},
        content_type="application/json",
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    return response.json()["error"]["message"]


ENTRY_POINTS = [
    page_run_now,
    api_run,
    api_batch,
    webhook,
    schedule_slot,
    command,
    page_retry_with_edited_input,
    api_retry_with_edited_input,
]


@pytest.mark.parametrize("entry_point", ENTRY_POINTS, ids=lambda f: f.__name__)
def test_every_entry_point_refuses_invalid_input_with_the_kinds_message(entry_point, flaky, alice):
    before = set(Execution.objects.values_list("pk", flat=True))

    told = entry_point(flaky, alice)

    assert MESSAGE in told.replace("&#x27;", "'").replace("&quot;", '"')
    started = Execution.objects.exclude(pk__in=before)
    assert not started.filter(input=INVALID).exists()
