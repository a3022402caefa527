import time

from django.test import override_settings
from standardwebhooks import Webhook

from executions.services import execution_request
from notifications.models import Delivery
from notifications.services import channel_create
from tests.conftest import wait_for


def test_smoke(worker, make_agent, alice, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    with override_settings(CONVEYOR_OUTBOUND_ALLOW=["127.0.0.1"]):
        channel, secret = channel_create(owner=alice, kind="webhook", name="mine", target=f"http://127.0.0.1:{httpserver.port}/hook")
    agent = make_agent(config={"function": "demo.broken"}, max_retries=0)
    agent.notify_channels.add(channel)
    ex = execution_request(agent=agent, trigger="manual")
    wait_for(ex, "failed")
    deadline = time.monotonic() + 20
    while not Delivery.objects.filter(execution=ex, status="delivered").exists():
        assert time.monotonic() < deadline, list(Delivery.objects.values())
        time.sleep(0.2)
    req, _ = httpserver.log[0]
    payload = Webhook(secret).verify(req.get_data(as_text=True), dict(req.headers))
    print(payload)
    assert payload["type"] == "execution.failed"
