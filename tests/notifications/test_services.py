"""Notifications without a worker: which events an agent's rules record (in the transaction that
writes the execution's state), what the messages say, how one attempt of a delivery goes against
a real local HTTP server (delivered, retried, 410, 429, redirects, timeouts), completion hooks,
the recovery pass, channels, and the digest (Django's in-memory outbox of this process).

Nothing here runs the ``on_commit`` sends: the test's transaction never commits, so each test
calls the service a task would call (``delivery_send``, ``hook_run``) itself.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug import Response

from agents.services import agent_create
from executions.services import execution_request
from notifications import digest, messages
from notifications.models import Channel, CompletionHook, Delivery, Preferences
from notifications.services import (
    HOOK_CLAIM_TIMEOUT,
    RECOVERY_GRACE,
    ResendRefused,
    channel_disable,
    channel_rotate_finish,
    channel_rotate_start,
    channel_test,
    channel_update,
    delivery_resend,
    delivery_send,
    hook_run,
    resend_stalled,
)
from tests.conftest import failure, flow_started, step_ended
from tests.hooks.agent_functions import hook_calls
from tests.notifications.conftest import requests_to, url
from tests.stack import free_port


@pytest.fixture
def hook(make_channel, receiver):
    """A webhook channel on the receiver's /hook, answering 200: ``(channel, secret)``."""
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    return make_channel("webhook", url(receiver, "/hook"))


def told(execution) -> list[tuple[str, int, str, bool]]:
    """(event, attempt, channel name, recovered) of each delivery recorded for ``execution``,
    in the order recorded."""
    deliveries = Delivery.objects.filter(execution=execution).select_related("channel")
    return [(d.event, d.attempt, d.channel.name, d.recovered) for d in deliveries.order_by("id")]


# --- Rules: which events are recorded ---------------------------------------------------------


def test_by_default_a_failure_is_told_and_a_success_is_not(make_agent, make_execution, hook):
    channel, _ = hook
    agent = make_agent(notify_channels=[channel])

    failed = make_execution(agent, "failed")
    succeeded = make_execution(agent, "succeeded")

    assert agent.notify_on == "failure"
    assert told(failed) == [("execution.failed", 0, channel.name, False)]
    assert told(succeeded) == []


@pytest.mark.parametrize(
    ("notify_on", "told_of"),
    [
        ("failure", {"failed"}),
        ("success", {"succeeded"}),
        ("always", {"failed", "succeeded", "cancelled"}),
        ("never", set()),
    ],
)
def test_an_agent_is_told_of_the_final_states_its_rule_names(
    make_agent, make_execution, hook, notify_on, told_of
):
    channel, _ = hook
    agent = make_agent(notify_on=notify_on, notify_channels=[channel])

    ended = {status: make_execution(agent, status) for status in ("failed", "succeeded")}
    ended["cancelled"] = make_execution(agent, "cancelled", attempt=1)

    for status, execution in ended.items():
        expected = [(f"execution.{status}", 0, channel.name, False)] if status in told_of else []
        assert told(execution) == expected, status


def test_each_enabled_channel_gets_its_own_delivery_with_its_own_message_id(
    make_agent, make_execution, make_channel, receiver
):
    one, _ = make_channel("webhook", url(receiver, "/one"), name="one")
    two, _ = make_channel("slack", url(receiver, "/two"), name="two")
    off, _ = make_channel("email", "alice@example.com", name="off")
    channel_update(channel=off, is_enabled=False)
    agent = make_agent(notify_channels=[one, two, off])

    execution = make_execution(agent, "failed")

    deliveries = list(Delivery.objects.filter(execution=execution).select_related("channel"))
    assert sorted(d.channel.name for d in deliveries) == ["one", "two"]
    assert all(d.status == "pending" and d.attempts == 0 for d in deliveries)
    assert all(d.next_attempt_at == execution.finished_at for d in deliveries)
    assert len({d.message_id for d in deliveries}) == 2
    assert all(d.message_id.startswith("msg_") for d in deliveries)


def test_an_agent_without_channels_records_nothing(make_agent, make_execution):
    execution = make_execution(make_agent(notify_on="always"), "failed")

    assert told(execution) == []


def test_retries_are_told_once_per_failed_attempt_when_asked(make_agent, make_execution, hook):
    channel, _ = hook
    asked = make_agent(max_retries=2, notify_retries=True, notify_channels=[channel])
    not_asked = make_agent(max_retries=2, notify_channels=[channel])

    execution = make_execution(asked, "failed", attempt=3)
    quiet = make_execution(not_asked, "failed", attempt=3)

    assert told(execution) == [
        ("execution.retrying", 1, channel.name, False),
        ("execution.retrying", 2, channel.name, False),
        ("execution.failed", 0, channel.name, False),
    ]
    assert told(quiet) == [("execution.failed", 0, channel.name, False)]


def test_the_first_success_after_a_failure_is_told_as_a_recovery_when_asked(
    make_agent, make_execution, hook
):
    channel, _ = hook
    agent = make_agent(notify_recovery=True, notify_channels=[channel])

    make_execution(agent, "failed", ago=timedelta(minutes=30))
    recovered = make_execution(agent, "succeeded", ago=timedelta(minutes=20))
    again = make_execution(agent, "succeeded", ago=timedelta(minutes=10))

    assert told(recovered) == [("execution.succeeded", 0, channel.name, True)]
    assert told(again) == [], "a second success in a row is no recovery"


def test_a_cancelled_run_between_a_failure_and_a_success_still_makes_a_recovery(
    make_agent, make_execution, hook
):
    channel, _ = hook
    agent = make_agent(notify_recovery=True, notify_channels=[channel])

    make_execution(agent, "failed", ago=timedelta(minutes=30))
    make_execution(agent, "cancelled", ago=timedelta(minutes=25), attempt=1)
    recovered = make_execution(agent, "succeeded", ago=timedelta(minutes=20))

    assert told(recovered) == [("execution.succeeded", 0, channel.name, True)]


def test_a_success_after_a_failure_is_not_told_without_notify_recovery(
    make_agent, make_execution, hook
):
    channel, _ = hook
    agent = make_agent(notify_channels=[channel])

    make_execution(agent, "failed", ago=timedelta(minutes=30))
    succeeded = make_execution(agent, "succeeded", ago=timedelta(minutes=20))

    assert told(succeeded) == []


@pytest.mark.parametrize("notify_steps", [False, True])
def test_a_flow_tells_of_its_own_end_and_of_its_steps_only_when_asked(
    make_agent, make_channel, receiver, notify_steps
):
    flow_channel, _ = make_channel("webhook", url(receiver, "/flow"), name="flow's")
    step_channel, _ = make_channel("webhook", url(receiver, "/steps"), name="steps'")
    make_agent(name="echo", notify_on="always", notify_channels=[step_channel])
    flow_agent = make_agent(
        name="flow",
        kind="flow",
        config={"steps": [{"key": "a", "agent": "echo"}, {"key": "b", "agent": "echo"}]},
        notify_on="always",
        notify_steps=notify_steps,
        notify_channels=[flow_channel],
    )

    flow = flow_started(flow_agent, {"n": 1})
    a = step_ended(flow, "a", result={"a": 1})
    b = step_ended(flow, "b", result={"b": 2})

    assert flow.status == "succeeded"
    assert told(flow) == [("execution.succeeded", 0, "flow's", False)]
    step_told = [("execution.succeeded", 0, "steps'", False)] if notify_steps else []
    assert told(a) == step_told
    assert told(b) == step_told


def test_a_flows_failed_step_is_told_by_the_step_agents_rules_when_asked(
    make_agent, make_channel, receiver
):
    step_channel, _ = make_channel("webhook", url(receiver, "/steps"), name="steps'")
    make_agent(name="echo", notify_channels=[step_channel])
    flow_agent = make_agent(
        name="flow",
        kind="flow",
        config={"steps": [{"key": "a", "agent": "echo"}]},
        max_retries=0,  # a flow's retry settings are its steps'
        notify_steps=True,
    )

    flow = flow_started(flow_agent)
    a = step_ended(flow, "a", error=failure("internal", retryable=False))

    assert (a.status, flow.status) == ("failed", "failed")
    assert told(a) == [("execution.failed", 0, "steps'", False)]
    assert told(flow) == [], "the flow itself has no channel"


def test_the_deliveries_are_sent_once_the_final_state_commits(
    make_agent, hook, django_capture_on_commit_callbacks
):
    channel, _ = hook
    agent = make_agent(config={"function": "test.counted"}, notify_channels=[channel])
    execution = execution_request(agent=agent, trigger="manual", hold=True)

    from executions.services import attempt_fail, execution_claim

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        execution, attempt = execution_claim(
            execution_id=execution.pk,
            expected_attempt=0,
            worker="test-worker@conveyor",
            at=timezone.now(),
        )
        attempt_fail(
            execution=execution,
            number=attempt.number,
            error=failure("internal", retryable=False),
            at=timezone.now(),
        )

    assert [c.__name__ for c in callbacks] == ["send_deliveries", "run_hook"]


def test_a_second_record_of_the_same_event_is_dropped(make_agent, make_execution, hook):
    from notifications.services import on_execution_ended

    channel, _ = hook
    execution = make_execution(make_agent(notify_channels=[channel]), "failed")

    on_execution_ended(sender=None, execution=execution)

    assert told(execution) == [("execution.failed", 0, channel.name, False)]


# --- What a message says ----------------------------------------------------------------------


def test_a_failures_summary_gives_the_friendly_error_what_to_do_and_an_absolute_link(
    make_agent, make_execution, settings
):
    settings.CONVEYOR_BASE_URL = "https://conveyor.example.com"
    agent = make_agent(name="nightly report", max_retries=1)
    execution = make_execution(
        agent,
        "failed",
        attempt=2,
        seconds=4,
        error_category="auth",
        reason="The API key was refused.",
    )

    summary = messages.summary(
        execution=execution, event="execution.failed", recovered=False, at=timezone.now()
    )

    link = "https://conveyor.example.com" + reverse("executions:detail", args=[execution.uuid])
    advice = (
        "Check the agent's secrets (API keys, tokens) and their permissions, update them on "
        "the agent's settings, then retry."
    )
    lines = summary.lines()
    assert summary.url == link
    assert lines[0] == "“nightly report” failed."
    assert lines[1].startswith("The service refused the credentials: The API key was refused.")
    assert lines[-2:] == ["2 attempts of 2 allowed, took 4 s.", f"Open it: {link}"]
    # The engine's error message ends with the advice already: it is said once.
    assert "\n".join(lines).count(advice) == 1
    assert messages.email_subject(summary) == "[Conveyor] “nightly report” failed"
    error = summary.data["execution"]["error"]
    assert error["category"] == "auth"
    assert error["title"] == "The service refused the credentials"
    assert summary.data["execution"]["result"] is None


def test_a_recovery_says_so_and_a_success_carries_its_result(make_agent, make_execution):
    agent = make_agent(name="sync")
    execution = make_execution(agent, "succeeded", result={"synced": 12})

    summary = messages.summary(
        execution=execution, event="execution.succeeded", recovered=True, at=timezone.now()
    )

    assert summary.lines()[0] == "“sync” recovered: it succeeded again after failing."
    assert not any(line.startswith("What to do") for line in summary.lines())
    assert summary.data["execution"]["result"] == {"synced": 12}
    assert summary.data["execution"]["error"] is None
    assert summary.data["recovered"] is True


def test_the_webhook_body_is_a_standard_webhooks_event(make_agent, make_execution):
    execution = make_execution(make_agent(name="sync"), "failed")
    at = timezone.now()
    summary = messages.summary(
        execution=execution, event="execution.failed", recovered=False, at=at
    )

    body = json.loads(messages.webhook_body(summary, at=at))

    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "execution.failed"
    assert body["timestamp"].endswith("Z")
    assert body["data"]["agent"] == {"id": str(execution.agent.uuid), "name": "sync"}
    assert body["data"]["execution"]["id"] == str(execution.uuid)
    assert body["data"]["execution"]["status"] == "failed"


def test_the_slack_message_has_text_and_blocks_with_a_button_to_the_execution(
    make_agent, make_execution
):
    execution = make_execution(make_agent(name="sync"), "failed")
    summary = messages.summary(
        execution=execution, event="execution.failed", recovered=False, at=timezone.now()
    )

    body = messages.slack_body(summary)

    assert body["text"].splitlines()[0] == "“sync” failed."
    assert summary.url in body["text"]
    kinds = [block["type"] for block in body["blocks"]]
    assert kinds == ["section", "section", "actions"]
    assert body["blocks"][0]["text"] == {"type": "mrkdwn", "text": "*“sync” failed*"}
    assert body["blocks"][2]["elements"][0]["url"] == summary.url


# --- Sending one attempt ----------------------------------------------------------------------


def one_delivery(make_agent, make_execution, channel, **agent_fields) -> Delivery:
    agent = make_agent(notify_channels=[channel], **agent_fields)
    execution = make_execution(agent, "failed")
    return Delivery.objects.get(execution=execution, channel=channel)


def test_a_2xx_delivers_a_webhook_signed_so_the_reference_library_verifies_it(
    make_agent, make_execution, hook, receiver
):
    channel, secret = hook
    delivery = one_delivery(make_agent, make_execution, channel)

    assert delivery_send(delivery_id=delivery.pk) is None

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    assert [(t.number, t.status_code, t.error) for t in delivery.tries.all()] == [(1, 200, "")]
    [request] = requests_to(receiver, "/hook")
    assert request.headers["webhook-id"] == delivery.message_id
    assert request.headers["content-type"] == "application/json"
    payload = Webhook(secret).verify(request.get_data(as_text=True), dict(request.headers))
    assert payload["type"] == "execution.failed"
    assert payload["data"]["execution"]["id"] == str(delivery.execution.uuid)
    with pytest.raises(WebhookVerificationError):
        Webhook(channel_rotate_start(channel=channel)).verify(
            request.get_data(as_text=True), dict(request.headers)
        )


def test_during_a_rotation_deliveries_are_signed_with_both_secrets_and_after_it_the_next_only(
    make_agent, make_execution, hook, receiver
):
    channel, current = hook
    following = channel_rotate_start(channel=channel)
    agent = make_agent(notify_channels=[channel])
    rotating = Delivery.objects.get(execution=make_execution(agent, "failed"))

    delivery_send(delivery_id=rotating.pk)
    channel_rotate_finish(channel=channel)
    after = Delivery.objects.get(execution=make_execution(agent, "failed"))
    delivery_send(delivery_id=after.pk)

    during, finished = requests_to(receiver, "/hook")
    for secret in (current, following):
        Webhook(secret).verify(during.get_data(as_text=True), dict(during.headers))
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    Webhook(following).verify(finished.get_data(as_text=True), dict(finished.headers))
    with pytest.raises(WebhookVerificationError):
        Webhook(current).verify(finished.get_data(as_text=True), dict(finished.headers))


def test_a_5xx_is_tried_again_after_each_wait_with_the_same_message_id_then_given_up(
    make_agent, make_execution, make_channel, receiver
):
    receiver.expect_request("/down").respond_with_data("down", status=500)
    channel, _ = make_channel("webhook", url(receiver, "/down"))
    delivery = one_delivery(make_agent, make_execution, channel)
    at = timezone.now()

    waits = []
    for n in range(4):
        waits.append(delivery_send(delivery_id=delivery.pk, at=at + timedelta(seconds=10 * n)))
        delivery.refresh_from_db()
        if n < 3:
            assert delivery.status == "pending"
            assert delivery.next_attempt_at == at + timedelta(seconds=10 * n + waits[-1])

    assert waits == [1.0, 2.0, 4.0, None]  # CONVEYOR_NOTIFY_RETRY_DELAYS in the suite: 1,2,4
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 4, None)
    assert (delivery.last_status_code, delivery.last_error) == (500, "The endpoint answered 500.")
    assert [t.status_code for t in delivery.tries.all()] == [500, 500, 500, 500]
    ids = {request.headers["webhook-id"] for request in requests_to(receiver, "/down")}
    assert ids == {delivery.message_id}
    assert delivery_send(delivery_id=delivery.pk) is None, "a delivery given up is not sent"
    assert len(requests_to(receiver, "/down")) == 4


def test_a_5xx_then_a_2xx_is_delivered_on_the_second_attempt(
    make_agent, make_execution, make_channel, receiver
):
    receiver.expect_oneshot_request("/flaky").respond_with_data("down", status=503)
    receiver.expect_request("/flaky").respond_with_data("ok")
    channel, _ = make_channel("webhook", url(receiver, "/flaky"))
    delivery = one_delivery(make_agent, make_execution, channel)

    assert delivery_send(delivery_id=delivery.pk) == 1.0
    assert delivery_send(delivery_id=delivery.pk) is None

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert [t.status_code for t in delivery.tries.all()] == [503, 200]
    assert delivery.last_error == ""


def test_a_410_turns_the_channel_off_with_a_reason_and_nothing_more_is_sent_to_it(
    make_agent, make_execution, make_channel, receiver
):
    receiver.expect_request("/gone").respond_with_data("gone", status=410)
    channel, _ = make_channel("webhook", url(receiver, "/gone"))
    agent = make_agent(notify_channels=[channel])
    first = Delivery.objects.get(execution=make_execution(agent, "failed"))
    queued = Delivery.objects.get(execution=make_execution(agent, "failed"))

    assert delivery_send(delivery_id=first.pk) is None

    first.refresh_from_db()
    channel.refresh_from_db()
    assert (first.status, first.last_status_code) == ("failed", 410)
    assert channel.is_enabled is False
    assert "410 Gone" in channel.disabled_reason
    assert "turn the channel on again" in channel.disabled_reason
    # One recorded before the 410 is closed without a request; a later event records none.
    assert delivery_send(delivery_id=queued.pk) is None
    queued.refresh_from_db()
    assert (queued.status, queued.last_error) == ("failed", "The channel is turned off.")
    later = make_execution(agent, "failed")
    assert told(later) == []
    assert len(requests_to(receiver, "/gone")) == 1

    channel_update(channel=channel, is_enabled=True)
    channel.refresh_from_db()
    assert (channel.is_enabled, channel.disabled_reason) == (True, "")


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [("7", 7.0), ("0", 1.0), (None, 1.0), ("soon", 1.0)],
)
def test_a_429_waits_at_least_its_retry_after(
    make_agent, make_execution, make_channel, receiver, retry_after, wait
):
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    receiver.expect_request("/busy").respond_with_data("busy", status=429, headers=headers)
    channel, _ = make_channel("webhook", url(receiver, "/busy"))
    delivery = one_delivery(make_agent, make_execution, channel)
    at = timezone.now()

    assert delivery_send(delivery_id=delivery.pk, at=at) == wait

    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert delivery.next_attempt_at == at + timedelta(seconds=wait)
    assert (delivery.last_status_code, delivery.last_error) == (429, "The endpoint answered 429.")


def test_a_429_with_an_http_date_waits_until_then(
    make_agent, make_execution, make_channel, receiver
):
    from email.utils import format_datetime

    later = timezone.now() + timedelta(seconds=30)
    receiver.expect_request("/busy").respond_with_data(
        "busy", status=429, headers={"Retry-After": format_datetime(later, usegmt=True)}
    )
    channel, _ = make_channel("webhook", url(receiver, "/busy"))
    delivery = one_delivery(make_agent, make_execution, channel)

    wait = delivery_send(delivery_id=delivery.pk)

    assert 20 <= wait <= 31


def test_a_redirect_is_not_followed_and_the_owner_is_told_to_give_the_final_address(
    make_agent, make_execution, make_channel, receiver
):
    receiver.expect_request("/old").respond_with_response(
        Response("moved", status=301, headers={"Location": url(receiver, "/new")})
    )
    receiver.expect_request("/new").respond_with_data("ok")
    channel, _ = make_channel("webhook", url(receiver, "/old"))
    delivery = one_delivery(make_agent, make_execution, channel)

    assert delivery_send(delivery_id=delivery.pk) == 1.0

    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert delivery.last_status_code == 301
    assert "redirects are not followed: give the final address" in delivery.last_error
    assert requests_to(receiver, "/new") == []


def test_an_endpoint_that_does_not_answer_in_time_is_tried_again(
    make_agent, make_execution, make_channel, receiver, hang, settings
):
    settings.CONVEYOR_NOTIFY_TIMEOUT = 0.5
    receiver.expect_request("/slow").respond_with_handler(hang)
    channel, _ = make_channel("webhook", url(receiver, "/slow"))
    delivery = one_delivery(make_agent, make_execution, channel)

    began = time.monotonic()
    assert delivery_send(delivery_id=delivery.pk) == 1.0

    assert time.monotonic() - began < 5
    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_status_code) == ("pending", None)
    assert delivery.last_error == "No answer within 0.5 s."


def test_an_endpoint_nobody_listens_on_is_tried_again(make_agent, make_execution, make_channel):
    channel, _ = make_channel("webhook", f"http://127.0.0.1:{free_port()}/nobody")
    delivery = one_delivery(make_agent, make_execution, channel)

    assert delivery_send(delivery_id=delivery.pk) == 1.0

    delivery.refresh_from_db()
    assert delivery.last_error.startswith("Could not reach the endpoint")


def test_an_address_the_outbound_guard_refuses_is_not_called(
    make_agent, make_execution, hook, receiver, settings
):
    channel, _ = hook
    delivery = one_delivery(make_agent, make_execution, channel)
    settings.CONVEYOR_OUTBOUND_ALLOW = []  # the operator no longer allows it

    assert delivery_send(delivery_id=delivery.pk) == 1.0

    delivery.refresh_from_db()
    assert "CONVEYOR_OUTBOUND_ALLOW" in delivery.last_error
    assert requests_to(receiver, "/hook") == []


def test_an_email_has_a_plain_text_part_the_error_title_and_the_absolute_link(
    make_agent, make_execution, make_channel, mailoutbox, settings
):
    settings.CONVEYOR_BASE_URL = "https://conveyor.example.com"
    channel, secret = make_channel("email", "ops@example.com")
    delivery = one_delivery(make_agent, make_execution, channel, name="sync")

    assert delivery_send(delivery_id=delivery.pk) is None

    assert secret is None
    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    [mail] = mailoutbox
    assert mail.to == ["ops@example.com"]
    assert mail.subject == "[Conveyor] “sync” failed"
    link = "https://conveyor.example.com" + reverse(
        "executions:detail", args=[delivery.execution.uuid]
    )
    assert "The agent hit an unexpected error: " in mail.body
    assert f"Open it: {link}" in mail.body
    [(html, mimetype)] = mail.alternatives
    assert mimetype == "text/html"
    assert f'href="{link}"' in html


def test_a_slack_channel_is_sent_the_slack_json(make_agent, make_execution, make_channel, receiver):
    receiver.expect_request("/slack", method="POST").respond_with_data("ok")
    channel, secret = make_channel("slack", url(receiver, "/slack"))
    delivery = one_delivery(make_agent, make_execution, channel, name="sync")

    assert delivery_send(delivery_id=delivery.pk) is None

    assert secret is None
    [request] = requests_to(receiver, "/slack")
    assert "webhook-signature" not in request.headers
    body = json.loads(request.get_data())
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("“sync” failed.")


def test_resending_keeps_the_message_id_and_sends_once_committed(
    make_agent, make_execution, hook, django_capture_on_commit_callbacks
):
    channel, _ = hook
    delivery = one_delivery(make_agent, make_execution, channel)
    delivery_send(delivery_id=delivery.pk)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        again = delivery_resend(delivery=delivery)

    assert (again.status, again.message_id) == ("pending", delivery.message_id)
    assert len(callbacks) == 1


def test_a_delivery_still_being_sent_or_to_a_channel_turned_off_is_not_sent_again(
    make_agent, make_execution, hook
):
    channel, _ = hook
    delivery = one_delivery(make_agent, make_execution, channel)

    with pytest.raises(ResendRefused, match="still being sent"):
        delivery_resend(delivery=delivery)  # pending: its own task is sending it
    delivery_send(delivery_id=delivery.pk)
    channel_disable(channel=channel)
    with pytest.raises(ResendRefused, match="channel turned off"):
        delivery_resend(delivery=delivery)


# --- Completion hooks -------------------------------------------------------------------------


def test_a_function_with_on_complete_gets_its_hook_recorded_with_the_final_state(
    make_agent, make_execution
):
    counted = make_execution(make_agent(config={"function": "test.counted"}), "succeeded")
    echo = make_execution(make_agent(), "succeeded")

    hook = CompletionHook.objects.get(execution=counted)
    assert (hook.function, hook.status, hook.attempts) == ("test.counted", "pending", 0)
    assert hook.next_attempt_at == counted.finished_at
    assert not CompletionHook.objects.filter(execution=echo).exists()


def test_a_hook_is_called_once_with_the_result(make_agent, make_execution):
    agent = make_agent(config={"function": "test.counted"})
    execution = make_execution(agent, "succeeded", result={"rows": 3})

    assert hook_run(execution_id=execution.pk) is None
    assert hook_run(execution_id=execution.pk) is None

    calls = hook_calls(execution.uuid)
    assert [(c["outcome"], c["payload"]) for c in calls] == [("succeeded", {"rows": 3})]
    hook = CompletionHook.objects.get(execution=execution)
    assert (hook.status, hook.attempts, hook.last_error) == ("done", 1, "")
    assert hook.done_at is not None


def test_a_hook_of_a_failed_run_is_given_the_error(make_agent, make_execution):
    agent = make_agent(config={"function": "test.counted"})
    execution = make_execution(agent, "failed", error_category="auth", reason="Key refused.")

    hook_run(execution_id=execution.pk)

    [call] = hook_calls(execution.uuid)
    assert call["outcome"] == "failed"
    payload = call["payload"]
    assert set(payload) == {"category", "title", "message"}
    assert payload["category"] == "auth"
    assert payload["title"] == "The service refused the credentials"
    assert payload["message"] == execution.error_message
    assert payload["message"].startswith("Key refused.")


def test_a_hook_that_raises_is_tried_again_then_given_up_and_never_changes_the_execution(
    make_agent, make_execution
):
    agent = make_agent(config={"function": "test.counted"})
    execution = make_execution(agent, "succeeded", result={"hook_fails": 99})
    events = list(execution.events.values_list("to_status", flat=True))
    at = timezone.now()

    waits = [hook_run(execution_id=execution.pk, at=at + timedelta(minutes=n)) for n in range(4)]

    assert waits == [1.0, 2.0, 4.0, None]
    hook = CompletionHook.objects.get(execution=execution)
    assert (hook.status, hook.attempts, hook.next_attempt_at) == ("failed", 4, None)
    assert hook.last_error == "RuntimeError: The hook's own service is down (call 4)."
    assert len(hook_calls(execution.uuid)) == 4
    assert hook_run(execution_id=execution.pk) is None, "a hook given up is not called again"
    assert len(hook_calls(execution.uuid)) == 4
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert list(execution.events.values_list("to_status", flat=True)) == events


def test_a_hook_that_raised_once_is_done_on_its_next_try_keeping_the_error(
    make_agent, make_execution
):
    agent = make_agent(config={"function": "test.counted"})
    execution = make_execution(agent, "succeeded", result={"hook_fails": 1})
    at = timezone.now()

    assert hook_run(execution_id=execution.pk, at=at) == 1.0
    hook = CompletionHook.objects.get(execution=execution)
    assert (hook.status, hook.next_attempt_at) == ("pending", at + timedelta(seconds=1))
    assert hook_run(execution_id=execution.pk, at=at + timedelta(seconds=1)) is None

    hook.refresh_from_db()
    assert (hook.status, hook.attempts) == ("done", 2)
    assert hook.last_error == "RuntimeError: The hook's own service is down (call 1)."


# --- The recovery pass ------------------------------------------------------------------------


def test_the_recovery_pass_sends_again_what_was_due_for_longer_than_the_grace_once(
    make_agent, make_execution, hook
):
    channel, _ = hook
    agent = make_agent(config={"function": "test.counted"}, notify_channels=[channel])
    execution = make_execution(agent, "failed")
    ended = execution.finished_at

    assert resend_stalled(at=ended + RECOVERY_GRACE - timedelta(seconds=1)) == 0
    late = ended + RECOVERY_GRACE + timedelta(seconds=1)
    assert resend_stalled(at=late) == 2  # the delivery and the hook
    assert resend_stalled(at=late) == 0, "sent again once, not at every pass"

    delivery = Delivery.objects.get(execution=execution)
    assert delivery.published_at == late
    assert CompletionHook.objects.get(execution=execution).next_attempt_at == late


def test_the_recovery_pass_frees_a_hook_whose_process_died_while_calling_it(
    make_agent, make_execution
):
    execution = make_execution(make_agent(config={"function": "test.counted"}), "succeeded")
    claimed = timezone.now() - HOOK_CLAIM_TIMEOUT - timedelta(minutes=1)
    # A row no service leaves behind: the process calling the hook died mid-call.
    CompletionHook.objects.filter(execution=execution).update(
        status="running", claimed_at=claimed, attempts=1
    )
    at = timezone.now()

    resend_stalled(at=at)

    hook = CompletionHook.objects.get(execution=execution)
    assert (hook.status, hook.next_attempt_at) == ("pending", at)
    hook_run(execution_id=execution.pk)
    assert len(hook_calls(execution.uuid)) == 1


# --- Channels ---------------------------------------------------------------------------------


def test_a_webhook_channel_gets_a_secret_shown_once_and_others_none(make_channel, receiver):
    webhook, secret = make_channel("webhook", url(receiver, "/hook"))
    _, none = make_channel("email", "ops@example.com")

    assert secret.startswith("whsec_")
    assert webhook.secrets.reveal() == {"current": secret}
    assert none is None


@pytest.mark.parametrize(
    ("kind", "target", "field", "words"),
    [
        ("email", "not an address", "target", "Enter an email address."),
        ("webhook", "ftp://example.com/x", "target", "Enter the http:// or https:// address"),
        ("slack", "example.com/hook", "target", "Enter the http:// or https:// address"),
        ("webhook", "http://10.0.0.5/hook", "target", "private or internal network address"),
        ("pager", "x", "kind", "Choose one of: email, webhook, slack."),
    ],
)
def test_a_channel_is_refused_with_words_that_say_what_to_fix(
    make_channel, kind, target, field, words
):
    with pytest.raises(ValidationError) as refused:
        make_channel(kind, target)

    assert any(words in message for message in refused.value.message_dict[field])
    assert not Channel.objects.exists()


def test_a_channel_needs_a_name(alice):
    from notifications.services import channel_create

    with pytest.raises(ValidationError) as refused:
        channel_create(owner=alice, kind="email", name="  ", target="ops@example.com")

    assert refused.value.message_dict["name"] == ["Give the channel a name."]


def test_rotating_applies_to_webhook_channels_only_and_finishing_needs_a_rotation(
    make_channel, receiver
):
    mail, _ = make_channel("email", "ops@example.com")
    webhook, current = make_channel("webhook", url(receiver, "/hook"))

    with pytest.raises(ValidationError):
        channel_rotate_start(channel=mail)
    with pytest.raises(ValidationError):
        channel_rotate_finish(channel=webhook)
    following = channel_rotate_start(channel=webhook)
    webhook.refresh_from_db()
    assert webhook.secrets.reveal() == {"current": current, "next": following}


def test_a_test_message_reaches_the_channel_and_records_nothing(hook, receiver):
    channel, secret = hook

    sent = channel_test(channel=channel)

    assert (sent.ok, sent.status_code, sent.error) == (True, 200, "")
    [request] = requests_to(receiver, "/hook")
    payload = Webhook(secret).verify(request.get_data(as_text=True), dict(request.headers))
    assert payload["data"]["test"] is True
    assert payload["data"]["channel"]["id"] == str(channel.uuid)
    assert not Delivery.objects.exists()


def test_a_test_message_says_what_went_wrong(make_channel, receiver):
    receiver.expect_request("/gone").respond_with_data("gone", status=410)
    channel, _ = make_channel("webhook", url(receiver, "/gone"))

    sent = channel_test(channel=channel)

    assert (sent.ok, sent.status_code, sent.gone) == (False, 410, True)
    channel.refresh_from_db()
    assert channel.is_enabled, "a test alone turns nothing off"


def test_an_agent_may_only_use_its_owners_channels(alice, bob, make_channel):
    bobs, _ = make_channel("email", "bob@example.com", owner=bob)

    with pytest.raises(ValidationError) as refused:
        agent_create(
            owner=alice,
            name="sync",
            kind="function",
            config={"function": "demo.echo"},
            notify_channels=[bobs],
        )

    assert "notify_channels" in refused.value.message_dict


# --- The digest -------------------------------------------------------------------------------


def test_the_digest_counts_the_owners_runs_of_its_period(
    alice, bob, make_agent, make_execution, settings
):
    settings.CONVEYOR_BASE_URL = "https://conveyor.example.com"
    flaky = make_agent(name="flaky")
    slow = make_agent(name="slow")
    for _ in range(2):
        make_execution(flaky, "failed", ago=timedelta(hours=2))
    make_execution(flaky, "succeeded", ago=timedelta(hours=3), seconds=1)
    make_execution(slow, "succeeded", ago=timedelta(hours=4), seconds=30)
    make_execution(flaky, "failed", ago=timedelta(days=2))  # before the period
    make_execution(make_agent(owner=bob, name="bobs"), "failed", ago=timedelta(hours=1))

    made = digest.build(user=alice, period="daily", at=timezone.now())

    assert (made.runs, made.succeeded, made.failed) == (4, 2, 2)
    assert made.success_rate == 50
    flaky_url = "https://conveyor.example.com" + reverse("agents:detail", args=[flaky.uuid])
    assert made.failing == [("flaky", 2, flaky_url)]
    assert [name for name, _, _ in made.slowest] == ["slow", "flaky"]
    lines = made.lines()
    assert lines[1] == "Runs: 4; succeeded: 2; failed: 2; success rate 50 %."
    assert f"  flaky: 2 failed runs ({flaky_url})" in lines


def test_the_digest_leaves_out_the_steps_of_flows(make_agent):
    make_agent(name="echo")
    flow_agent = make_agent(
        name="flow", kind="flow", config={"steps": [{"key": "a", "agent": "echo"}]}
    )
    flow = flow_started(flow_agent)
    step_ended(flow, "a", result={})

    made = digest.build(user=flow_agent.owner, period="weekly", at=timezone.now())

    assert (made.runs, made.succeeded) == (1, 1)


def test_due_digests_are_sent_once_per_period(alice, bob, make_agent, make_execution, mailoutbox):
    make_execution(make_agent(), "failed", ago=timedelta(hours=1))
    Preferences.objects.create(user=alice, digest="daily")
    Preferences.objects.create(user=bob, digest="")
    at = timezone.now()

    assert digest.send_due(at=at) == 1
    assert digest.send_due(at=at + timedelta(hours=1)) == 0
    assert digest.send_due(at=at + timedelta(days=1)) == 1

    assert [m.to for m in mailoutbox] == [["alice@example.com"], ["alice@example.com"]]
    first = mailoutbox[0]
    assert first.subject == "[Conveyor] Your daily digest"
    assert "Runs: 1; succeeded: 0; failed: 1; success rate 0 %." in first.body
    assert first.alternatives[0][1] == "text/html"
    assert Preferences.objects.get(user=alice).last_digest_at == at + timedelta(days=1)


def test_a_weekly_digest_waits_a_week_and_a_user_without_an_address_gets_none(
    alice, bob, mailoutbox
):
    Preferences.objects.create(user=alice, digest="weekly")
    bob.email = ""
    bob.save()
    Preferences.objects.create(user=bob, digest="daily")
    at = timezone.now()

    assert digest.send_due(at=at) == 1
    assert digest.send_due(at=at + timedelta(days=6)) == 0
    assert digest.send_due(at=at + timedelta(days=7)) == 1
    assert {tuple(m.to) for m in mailoutbox} == {("alice@example.com",)}


def test_an_opened_circuit_breaker_tells_the_owner_once_on_the_agent_s_channels(
    make_agent, hook, django_capture_on_commit_callbacks
):
    from executions.services import attempt_fail, execution_claim

    channel, _ = hook
    # notify_on "never": an opened breaker is told anyway (no run starts until it closes).
    agent = make_agent(
        breaker_threshold=1, max_retries=0, notify_on="never", notify_channels=[channel]
    )
    execution = execution_request(agent=agent, trigger="api", input={})
    claimed, _ = execution_claim(
        execution_id=execution.pk, expected_attempt=0, worker="w", at=timezone.now()
    )
    with django_capture_on_commit_callbacks(execute=True):
        attempt_fail(
            execution=claimed,
            number=1,
            error=failure("network", retryable=True, reason="Connection refused."),
            at=timezone.now(),
        )
    assert told(claimed) == [("agent.circuit_opened", 1, channel.name, False)]
    delivery = Delivery.objects.get(execution=claimed)
    summary = messages.summary(
        execution=claimed, event=delivery.event, recovered=False, at=timezone.now()
    )
    text = "\n".join(summary.lines())
    assert summary.headline == f"“{agent.name}” stopped starting runs: its circuit breaker opened"
    assert "New runs wait; they do not fail." in text
    assert "Connection refused." in text
