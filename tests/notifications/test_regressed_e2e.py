"""An agent worse than its usual, told end to end: beat's task (``ops.tasks.check_baselines``)
runs on the session's real worker, which opens the regression and sends its delivery to real
local HTTP receivers (a signed webhook and a Slack-compatible one), once."""

from __future__ import annotations

import time

from django.utils import timezone

from notifications.models import Delivery
from ops import tasks
from ops.models import Regression
from ops.rollups import roll_up
from tests.notifications.conftest import eventually, payloads_to, url
from tests.notifications.test_e2e import verify
from tests.ops.test_baseline import runs, usual_runs


def test_an_agent_three_times_slower_is_told_once_with_its_figures(
    worker, make_agent, make_execution, make_channel, receiver
):
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    receiver.expect_request("/slack", method="POST").respond_with_data("ok")
    hook, secret = make_channel("webhook", url(receiver, "/hook"))
    slack, _ = make_channel("slack", url(receiver, "/slack"))
    agent = make_agent(name="invoice-sync", notify_channels=[hook, slack])
    now = timezone.now()
    usual_runs(make_execution, agent, end=now)
    runs(make_execution, agent, end=now, n=50, seconds=3.0)
    roll_up(until=now)

    tasks.check_baselines.delay()  # what beat sends every five minutes
    done = eventually(
        lambda: Delivery.objects.filter(event="agent.regressed", status="delivered").count() == 2,
        what="both deliveries of the regression",
    )
    assert done
    tasks.check_baselines.delay()  # a second check tells no one again
    time.sleep(2)  # nothing more comes
    assert Delivery.objects.filter(event="agent.regressed").count() == 2

    regression = Regression.objects.get(agent=agent)
    assert regression.ended_at is None
    [request] = [r for r, _ in receiver.log if r.path == "/hook"]
    payload = verify(secret, request)
    assert payload["type"] == "agent.regressed"
    data = payload["data"]
    assert data["agent"]["name"] == "invoice-sync"
    assert data["regression"]["what"] == "p95"
    assert data["regression"]["last_day_runs"] == 50
    assert data["regression"]["usual_runs"] == 60
    assert 2.8 < data["regression"]["last_day"] < 3.3
    assert 0.9 < data["regression"]["usual"] < 1.2
    assert data["execution"]["id"] == str(regression.execution.uuid)

    [text] = [p["text"] for p in payloads_to(receiver, "/slack")]
    lines = text.splitlines()
    last, usual = (f"{data['regression'][k]:.1f} s" for k in ("last_day", "usual"))
    assert lines[0] == (
        f"“invoice-sync” is slower than usual: 95% of its successful runs took up to {last} "
        f"over the last day, against {usual} over the 14 days before (50 runs)."
    )
    assert lines[1].startswith("What to do: Open a recent run and compare it with an earlier")
    assert lines[2].startswith("Open it: http")
    assert len(payloads_to(receiver, "/slack")) == 1
