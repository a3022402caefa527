"""Notifications end to end: the session's real worker (it listens on the notifications queue
too) runs the agents and sends what they record to real local HTTP receivers and, by email,
into the files of Django's file-based backend; celery beat's ticks run the recovery passes.

* Webhooks: one signed delivery per final state, verified by the Standard Webhooks reference
  library (also during a secret rotation); a 500 is tried again with the same webhook-id; a 410
  turns the channel off; a receiver that hangs holds up no other run or delivery.
* Email and Slack: what arrives, in which shape.
* Processes that die: a worker killed right after an execution's final state commits (before
  it sends the messages) leaves the hook and the delivery to the recovery pass, which sends
  each once; a run the reaper took back and retried, and a run retried by hand, each tell once
  of their own final state.
* Rules through the worker: a retry is told per failed attempt; a hook that raises is tried
  again and never changes the execution.
"""

import os
import signal
import time
import uuid

import pytest
from django.conf import settings
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from agents.services import agent_update
from executions.services import execution_request, execution_retry
from notifications.models import CompletionHook, Delivery
from notifications.services import RECOVERY_GRACE, channel_rotate_start
from tests.conftest import wait_for
from tests.hooks.agent_functions import hook_calls
from tests.hooks.apps import end_kill_marker
from tests.notifications.conftest import (
    eventually,
    mail_sent_to,
    payloads_to,
    requests_to,
    url,
)


def sent(execution, *, count: int = 1, timeout: float = 20) -> list[Delivery]:
    """The deliveries of ``execution``, once ``count`` of them are no longer waiting to be
    sent (delivered or given up), in the order recorded."""

    def check():
        done = list(
            Delivery.objects.filter(execution=execution)
            .exclude(status="pending")
            .order_by("id")
            .select_related("channel")
        )
        return done if len(done) >= count else None

    return eventually(check, timeout=timeout, what=f"{count} deliveries of {execution}")


def about(server, path: str, execution) -> list[dict]:
    """The bodies that reached ``path`` about ``execution``, in the order they arrived."""
    return [
        payload
        for payload in payloads_to(server, path)
        if payload["data"]["execution"]["id"] == str(execution.uuid)
    ]


def verify(secret: str, request) -> dict:
    return Webhook(secret).verify(request.get_data(as_text=True), dict(request.headers))


@pytest.fixture
def webhook(make_channel, receiver):
    """A webhook channel on the receiver's /hook, answering 200: ``(channel, secret)``."""
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    return make_channel("webhook", url(receiver, "/hook"))


@pytest.fixture
def broken(make_agent):
    """``broken(*channels, **fields)``: an agent that fails for good on its first attempt."""

    def make(*channels, **fields):
        fields.setdefault("max_retries", 0)
        return make_agent(
            config={"function": "demo.broken"}, notify_channels=list(channels), **fields
        )

    return make


# --- Webhooks ---------------------------------------------------------------------------------


def test_each_failure_is_delivered_once_signed_and_during_a_rotation_with_both_secrets(
    worker, broken, webhook, receiver
):
    channel, current = webhook
    agent = broken(channel)

    first = wait_for(execution_request(agent=agent, trigger="manual"), "failed")
    sent(first)
    following = channel_rotate_start(channel=channel)
    second = wait_for(execution_request(agent=agent, trigger="manual"), "failed")
    sent(second)
    time.sleep(1)  # nothing more comes

    one, two = requests_to(receiver, "/hook")
    assert verify(current, one)["data"]["execution"]["id"] == str(first.uuid)
    with pytest.raises(WebhookVerificationError):
        verify(following, one)
    for secret in (current, following):
        payload = verify(secret, two)
        assert payload["type"] == "execution.failed"
        assert payload["data"]["execution"]["id"] == str(second.uuid)
        assert payload["data"]["execution"]["error"]["title"] == second.error_title
    for execution, request in ((first, one), (second, two)):
        [delivery] = Delivery.objects.filter(execution=execution)
        assert (delivery.event, delivery.status, delivery.attempts) == (
            "execution.failed",
            "delivered",
            1,
        )
        assert request.headers["webhook-id"] == delivery.message_id


def test_a_500_is_tried_again_with_the_same_webhook_id(worker, broken, make_channel, receiver):
    receiver.expect_oneshot_request("/hook").respond_with_data("down", status=500)
    receiver.expect_request("/hook").respond_with_data("ok")
    channel, secret = make_channel("webhook", url(receiver, "/hook"))

    execution = wait_for(execution_request(agent=broken(channel), trigger="manual"), "failed")

    [delivery] = sent(execution)
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    first, second = delivery.tries.all()
    assert (first.status_code, first.error) == (500, "The endpoint answered 500.")
    assert (second.status_code, second.error) == (200, "")
    # CONVEYOR_NOTIFY_RETRY_DELAYS in the suite: 1, 2, 4 s.
    assert (second.at - first.at).total_seconds() >= 1
    requests = requests_to(receiver, "/hook")
    assert [r.headers["webhook-id"] for r in requests] == [delivery.message_id] * 2
    assert [verify(secret, r)["type"] for r in requests] == ["execution.failed"] * 2


def test_a_410_turns_the_channel_off_and_later_events_are_not_sent_to_it(
    worker, broken, make_channel, receiver
):
    receiver.expect_request("/gone").respond_with_data("gone", status=410)
    receiver.expect_request("/kept").respond_with_data("ok")
    gone, _ = make_channel("webhook", url(receiver, "/gone"), name="gone")
    kept, _ = make_channel("webhook", url(receiver, "/kept"), name="kept")
    agent = broken(gone, kept)

    first = wait_for(execution_request(agent=agent, trigger="manual"), "failed")
    assert {(d.channel.name, d.status) for d in sent(first, count=2)} == {
        ("gone", "failed"),
        ("kept", "delivered"),
    }
    gone.refresh_from_db()
    assert gone.is_enabled is False
    assert "410 Gone" in gone.disabled_reason

    later = wait_for(execution_request(agent=agent, trigger="manual"), "failed")

    assert [d.channel.name for d in sent(later)] == ["kept"]
    time.sleep(1)  # nothing more comes
    assert len(requests_to(receiver, "/gone")) == 1
    assert len(requests_to(receiver, "/kept")) == 2


@pytest.mark.slow
def test_a_receiver_that_hangs_holds_up_no_other_run_nor_delivery(
    worker, broken, make_agent, make_channel, receiver, hang
):
    receiver.expect_request("/hang").respond_with_handler(hang)
    receiver.expect_request("/quick").respond_with_data("ok")
    hanging, _ = make_channel("webhook", url(receiver, "/hang"))
    quick, _ = make_channel("webhook", url(receiver, "/quick"))
    first = wait_for(execution_request(agent=broken(hanging), trigger="manual"), "failed")
    assert hang.arrived.wait(20), "the hanging receiver was called"

    echo = make_agent()
    runs = [execution_request(agent=echo, trigger="manual", input={"n": n}) for n in range(3)]
    other = execution_request(agent=broken(quick), trigger="manual")

    for run in runs:
        assert wait_for(run, "succeeded", "failed").status == "succeeded"
    wait_for(other, "failed")
    [delivered] = sent(other)
    assert delivered.status == "delivered"
    assert hang.held == 1, "all that while, the first delivery was still being held"
    assert len(requests_to(receiver, "/quick")) == 1

    # The held attempt is cut off after CONVEYOR_NOTIFY_TIMEOUT and tried again.
    held = Delivery.objects.get(execution=first)
    cut_off = eventually(
        lambda: held.tries.first(),
        timeout=settings.CONVEYOR_NOTIFY_TIMEOUT + 15,
        what="the held attempt cut off",
    )
    assert cut_off.status_code is None
    assert cut_off.error == f"No answer within {settings.CONVEYOR_NOTIFY_TIMEOUT:g} s."
    hang.release()
    [held] = sent(first)
    assert (held.status, held.attempts) == ("delivered", 2)


# --- Email and Slack --------------------------------------------------------------------------


def test_an_email_per_event_with_the_error_title_the_absolute_link_and_a_plain_text_part(
    worker, broken, make_channel
):
    address = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    channel, _ = make_channel("email", address)
    agent = broken(channel, name="nightly report")

    runs = [wait_for(execution_request(agent=agent, trigger="manual"), "failed") for _ in "ab"]
    for run in runs:
        [delivery] = sent(run)
        assert delivery.status == "delivered", delivery.last_error

    mails = mail_sent_to(address)
    assert len(mails) == 2, [m["Subject"] for m in mails]
    for run in runs:
        link = f"{settings.CONVEYOR_BASE_URL}/executions/{run.uuid}/"
        [mail] = [m for m in mails if link in m.get_body(preferencelist=("plain",)).get_content()]
        assert mail["Subject"] == "[Conveyor] “nightly report” failed"
        assert mail["To"] == address
        text = mail.get_body(preferencelist=("plain",)).get_content()
        assert run.error_title == "The input was not accepted"
        assert f"{run.error_title}: " in text
        assert f"Open it: {link}" in text
        html = mail.get_body(preferencelist=("html",)).get_content()
        assert f'href="{link}"' in html


def test_a_slack_channel_gets_text_and_blocks(worker, broken, make_channel, receiver):
    receiver.expect_request("/slack", method="POST").respond_with_data("ok")
    channel, _ = make_channel("slack", url(receiver, "/slack"))

    execution = wait_for(
        execution_request(agent=broken(channel, name="sync"), trigger="manual"), "failed"
    )

    [delivery] = sent(execution)
    assert delivery.status == "delivered"
    [body] = payloads_to(receiver, "/slack")
    link = f"{settings.CONVEYOR_BASE_URL}/executions/{execution.uuid}/"
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("“sync” failed.")
    assert f"Open it: {link}" in body["text"]
    header, details, actions = body["blocks"]
    assert header == {"type": "section", "text": {"type": "mrkdwn", "text": "*“sync” failed*"}}
    assert details["type"] == "section"
    assert execution.error_title in details["text"]["text"]
    assert actions["type"] == "actions"
    assert actions["elements"][0]["url"] == link


# --- Processes that die -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_killed_right_after_the_end_commits_leaves_hook_and_delivery_to_the_tick(
    private_worker, make_agent, webhook, receiver, beat
):
    channel, _ = webhook
    queue = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-killed-after-end"
    private_worker(queue)
    beat()
    agent = make_agent(config={"function": "test.counted"}, queue=queue, notify_channels=[channel])
    marker = end_kill_marker()
    # The worker process that ends the run dies once that end is committed, before it sends
    # the messages that deliver the notification and call the hook (tests/hooks/apps.py).
    marker.write_text(str(agent.pk))
    try:
        execution = execution_request(agent=agent, trigger="manual", input={"fail": True})
        execution = wait_for(execution, "succeeded", "failed")
        eventually(lambda: not marker.exists(), timeout=5, what="the kill")
    finally:
        marker.unlink(missing_ok=True)

    assert execution.status == "failed"
    time.sleep(2)
    assert hook_calls(execution.uuid) == [], "the process died before the hook was sent"
    assert requests_to(receiver, "/hook") == []

    # The recovery pass takes what is due for longer than its grace.
    calls = eventually(
        lambda: hook_calls(execution.uuid),
        timeout=RECOVERY_GRACE.total_seconds() + 20,
        what="the hook called by the recovery pass",
    )
    [delivery] = sent(execution)
    time.sleep(3)  # a few more ticks: nothing is sent twice

    assert [(c["outcome"], c["payload"]["title"]) for c in hook_calls(execution.uuid)] == [
        ("failed", execution.error_title)
    ]
    assert calls[0]["pid"] != os.getpid()
    hook = CompletionHook.objects.get(execution=execution)
    assert (hook.status, hook.attempts) == ("done", 1)
    assert hook.done_at >= execution.finished_at + RECOVERY_GRACE
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert len(requests_to(receiver, "/hook")) == 1
    execution.refresh_from_db()
    assert execution.status == "failed"
    assert execution.attempts.count() == 1, "the run's redelivered message ran nothing again"


@pytest.mark.slow
def test_a_run_the_reaper_took_back_and_retried_tells_once_of_its_final_state(
    private_worker, make_agent, webhook, receiver, beat
):
    beat()  # the reaper, run by the session's worker
    channel, _ = webhook
    doomed = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-doomed-notify"
    proc = private_worker(doomed)
    agent = make_agent(
        config={"function": "demo.slow"},
        queue=doomed,
        timeout=300,
        max_retries=2,
        notify_on="always",
        notify_retries=True,
        notify_channels=[channel],
    )
    execution = execution_request(agent=agent, trigger="manual", input={"seconds": 3, "steps": 6})

    def under_way():
        execution.refresh_from_db()
        return execution.status == "running" and execution.progress > 0

    eventually(under_way, timeout=20, what="the first attempt under way")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    agent_update(agent=agent, queue=settings.CONVEYOR_EXECUTIONS_QUEUE)  # the next attempt

    reaped_within = settings.CONVEYOR_HEARTBEAT_TIMEOUT + settings.CONVEYOR_HEARTBEAT_INTERVAL + 10
    execution = wait_for(execution, "succeeded", "failed", timeout=reaped_within + 30)

    assert execution.status == "succeeded"
    assert [a.outcome for a in execution.attempts.order_by("number")] == ["lost", "succeeded"]
    deliveries = sent(execution, count=2)
    time.sleep(2)  # a few more ticks: nothing is sent twice
    assert [(d.event, d.attempt, d.status) for d in deliveries] == [
        ("execution.retrying", 1, "delivered"),
        ("execution.succeeded", 0, "delivered"),
    ]
    assert Delivery.objects.filter(execution=execution).count() == 2
    arrived = about(receiver, "/hook", execution)
    assert [p["type"] for p in arrived] == ["execution.retrying", "execution.succeeded"]
    assert arrived[0]["data"]["execution"]["error"]["category"] == "worker_lost"


def test_a_run_retried_by_hand_tells_of_its_own_end_and_the_first_is_not_told_again(
    worker, broken, webhook, receiver
):
    channel, _ = webhook
    first = wait_for(execution_request(agent=broken(channel), trigger="manual"), "failed")
    sent(first)

    retried = wait_for(execution_retry(execution=first), "failed")

    sent(retried)
    time.sleep(1)  # nothing more comes
    assert [d.event for d in Delivery.objects.filter(execution=first)] == ["execution.failed"]
    assert [d.event for d in Delivery.objects.filter(execution=retried)] == ["execution.failed"]
    assert [p["data"]["execution"]["id"] for p in payloads_to(receiver, "/hook")] == [
        str(first.uuid),
        str(retried.uuid),
    ]
    assert about(receiver, "/hook", retried)[0]["data"]["execution"]["trigger"] == "retry"


# --- Rules, through the worker ----------------------------------------------------------------


def test_each_failed_attempt_is_told_when_retries_are_asked_for(
    worker, make_agent, webhook, receiver
):
    channel, _ = webhook
    agent = make_agent(
        config={"function": "demo.flaky"},
        max_retries=3,
        notify_on="success",
        notify_retries=True,
        notify_channels=[channel],
    )

    execution = execution_request(agent=agent, trigger="manual", input={"fail_times": 2})
    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded"
    sent(execution, count=3)
    arrived = about(receiver, "/hook", execution)
    assert [(p["type"], p["data"]["execution"]["attempt"]) for p in arrived] == [
        ("execution.retrying", 1),
        ("execution.retrying", 2),
        ("execution.succeeded", 3),
    ]
    assert arrived[0]["data"]["execution"]["error"]["category"] == "upstream_error"


def test_a_hook_that_raises_is_tried_again_and_never_changes_the_execution(worker, make_agent):
    agent = make_agent(config={"function": "test.counted"})

    execution = execution_request(agent=agent, trigger="manual", input={"hook_fails": 1})
    execution = wait_for(execution, "succeeded", "failed")
    events = list(execution.events.values_list("to_status", flat=True))

    assert execution.status == "succeeded"

    def done():
        hook = CompletionHook.objects.filter(execution=execution, status="done").first()
        return hook

    hook = eventually(done, timeout=20, what="the hook done")
    assert hook.attempts == 2
    assert hook.last_error == "RuntimeError: The hook's own service is down (call 1)."
    calls = hook_calls(execution.uuid)
    assert [(c["outcome"], c["payload"]) for c in calls] == [
        ("succeeded", {"hook_fails": 1}),
        ("succeeded", {"hook_fails": 1}),
    ]
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert list(execution.events.values_list("to_status", flat=True)) == events
