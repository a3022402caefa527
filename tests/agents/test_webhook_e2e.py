"""End to end over real HTTP, with a real worker: a signed webhook and an API run request
each start an execution that succeeds, and the API reports it."""

import json
import time
import uuid
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from agents.webhook_services import webhook_enable
from api.services import token_create
from executions.models import Execution
from tests.conftest import wait_for


def test_a_signed_webhook_and_an_api_run_both_start_runs_that_succeed(
    worker, live_server, make_agent, alice, request
):
    agent = make_agent(alice, name="echo")
    secret = webhook_enable(agent=agent)
    _, token = token_create(owner=alice, name="e2e")
    api = httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"})
    # Closed at the end: a kept-alive connection would hold the server's database connection.
    request.addfinalizer(api.close)

    # Another system calls the webhook, signing with the Standard Webhooks reference library.
    body = json.dumps({"from": "webhook"})
    msg_id, now = f"msg_{uuid.uuid4().hex}", int(time.time())
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(now, tz=UTC), body)
    hooked = httpx.post(
        f"{live_server.url}/hooks/{agent.uuid}/",
        content=body,
        headers={
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(now),
            "webhook-signature": signature,
        },
    )
    assert hooked.status_code == 202, hooked.text

    # A program starts a run through the API.
    started = api.post(f"/api/v1/agents/{agent.uuid}/runs", json={"input": {"from": "api"}})
    assert started.status_code == 202, started.text
    assert started.headers["Location"] == started.json()["url"]

    by_hook = wait_for(Execution.objects.get(uuid=hooked.json()["id"]), "succeeded", "failed")
    by_api = wait_for(Execution.objects.get(uuid=started.json()["id"]), "succeeded", "failed")
    assert (by_hook.status, by_hook.trigger, by_hook.result) == (
        "succeeded", "webhook", {"from": "webhook"},
    )  # fmt: skip
    assert (by_api.status, by_api.trigger, by_api.result) == (
        "succeeded", "api", {"from": "api"},
    )  # fmt: skip

    # The API shows the finished run, its logs, and it in the agent's stats.
    detail = api.get(started.headers["Location"]).json()
    assert detail["status"] == "succeeded" and detail["result"] == {"from": "api"}
    assert detail["attempt"] == 1 and detail["error"] is None
    assert detail["duration_seconds"] is not None
    logs = api.get(detail["logs_url"]).json()["results"]
    assert any("Echoing" in line["message"] for line in logs)
    stats = api.get(f"/api/v1/agents/{agent.uuid}/stats").json()
    assert stats["runs"] == 2 and stats["success_rate"] == 1.0

    # The webhook replayed: no second run.
    again = httpx.post(f"{live_server.url}/hooks/{agent.uuid}/", content=body,
                       headers=hooked.request.headers)  # fmt: skip
    assert again.status_code == 200 and again.json()["id"] == hooked.json()["id"]
    assert Execution.objects.filter(agent=agent).count() == 2
