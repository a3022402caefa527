"""The notifications admin: channels (secrets never shown), deliveries with their tries and
"Send again", completion hooks with their errors and "Run again"; and the notification parts of
the execution page (what was sent, the hook's state) and of the agent form (rules, channels)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from agents.models import Agent
from notifications.models import CompletionHook, Delivery
from notifications.services import channel_create, channel_disable, delivery_send, hook_run

pytestmark = pytest.mark.django_db

CHANNELS = "/admin/notifications/channel/"
DELIVERIES = "/admin/notifications/delivery/"
HOOKS = "/admin/notifications/completionhook/"
SLACK = "https://hooks.slack.com/services/T0001/B0001/sl4ck-t0k3n"


def run_action(client, changelist, action, rows):
    data = {"action": action, ACTION_CHECKBOX_NAME: [r.pk for r in rows], "index": 0}
    response = client.post(changelist, data, follow=True)
    assert response.status_code == 200
    return [m.message for m in response.context["messages"]]


def listed(client, changelist, query="") -> list[int]:
    response = client.get(changelist + query)
    assert response.status_code == 200
    return sorted(row.pk for row in response.context["cl"].result_list)


def address(httpserver, path="/in") -> str:
    return f"http://127.0.0.1:{httpserver.port}{path}"


def channel(owner, kind="email", target=None, name=None):
    made, _ = channel_create(
        owner=owner, kind=kind, name=name or f"{owner}'s {kind}", target=target or owner.email
    )
    return made


@pytest.fixture
def told(alice, make_agent, httpserver):
    """Alice's agent telling her webhook channel (on the test's server) of every end."""
    hook = channel(alice, "webhook", address(httpserver), name="ops hook")
    return make_agent(alice, notify_on="always", notify_channels=[hook]), hook


def delivery_of(execution) -> Delivery:
    return Delivery.objects.get(execution=execution)


# --- Channels ---------------------------------------------------------------------------------


def test_the_channel_list_shows_every_owner_s_channels_and_filters_them(staff_client, alice, bob):
    mail = channel(alice, "email")
    hook = channel(bob, "webhook", "https://example.com/in")
    slack = channel(alice, "slack", SLACK)
    off = channel(bob, "email")
    channel_disable(channel=off, reason="Turned off in a test.")

    assert listed(staff_client, CHANNELS) == sorted(c.pk for c in (mail, hook, slack, off))
    assert listed(staff_client, CHANNELS, "?kind__exact=webhook") == [hook.pk]
    assert listed(staff_client, CHANNELS, "?is_enabled__exact=0") == [off.pk]
    assert listed(staff_client, CHANNELS, "?q=bob") == sorted([hook.pk, off.pk])
    page = staff_client.get(CHANNELS).content.decode()
    assert "off: Turned off in a test." in page


def test_no_page_shows_a_signing_secret_or_a_slack_token(staff_client, alice):
    hook, secret = channel_create(
        owner=alice, kind="webhook", name="ops", target="https://example.com/in?token=t0p"
    )
    slack = channel(alice, "slack", SLACK)

    pages = [
        staff_client.get(CHANNELS).content.decode(),
        staff_client.get(reverse("admin:notifications_channel_change", args=[hook.pk])),
        staff_client.get(reverse("admin:notifications_channel_change", args=[slack.pk])),
    ]
    text = pages[0] + "".join(p.content.decode() for p in pages[1:])

    assert pages[1].status_code == pages[2].status_code == 200
    assert secret not in text and secret.removeprefix("whsec_") not in text
    assert "sl4ck-t0k3n" not in text and "t0p" not in text
    assert "https://hooks.slack.com/…" in text
    assert "https://example.com/in?…" in text
    assert "set: current" in pages[1].content.decode()


def test_channels_are_not_added_or_changed_here(staff_client, alice):
    made = channel(alice)
    assert staff_client.get(CHANNELS + "add/").status_code == 403
    url = reverse("admin:notifications_channel_change", args=[made.pk])
    staff_client.post(url, {"name": "renamed", "target": "x@example.com"})
    made.refresh_from_db()
    assert (made.name, made.target) == ("alice's email", "alice@example.com")


# --- Deliveries -------------------------------------------------------------------------------


def test_the_delivery_list_filters_by_status_event_and_channel_kind(
    staff_client, alice, told, make_execution, make_agent, httpserver
):
    agent, _ = told
    httpserver.expect_request("/in").respond_with_data("ok")
    sent = make_execution(agent, "succeeded")
    delivery_send(delivery_id=delivery_of(sent).pk)
    waiting = make_execution(agent, "failed")
    mailed = make_agent(alice, notify_channels=[channel(alice)])
    by_mail = make_execution(mailed, "failed")

    delivered = delivery_of(sent).pk
    assert listed(staff_client, DELIVERIES, "?status__exact=delivered") == [delivered]
    assert listed(staff_client, DELIVERIES, "?event__exact=execution.failed") == sorted(
        [delivery_of(waiting).pk, delivery_of(by_mail).pk]
    )
    assert listed(staff_client, DELIVERIES, "?channel__kind__exact=email") == [
        delivery_of(by_mail).pk
    ]


def test_a_delivery_is_found_by_its_message_id_or_its_execution(staff_client, told, make_execution):
    agent, _ = told
    one = delivery_of(make_execution(agent, "failed"))
    other = delivery_of(make_execution(agent, "failed"))

    assert listed(staff_client, DELIVERIES, f"?q={one.message_id}") == [one.pk]
    assert listed(staff_client, DELIVERIES, f"?q={other.execution.uuid}") == [other.pk]
    assert listed(staff_client, DELIVERIES, "?q=ops+hook") == sorted([one.pk, other.pk])


def test_a_delivery_s_page_lists_its_tries(staff_client, told, make_execution, httpserver):
    agent, _ = told
    delivery = delivery_of(make_execution(agent, "failed"))
    httpserver.expect_ordered_request("/in").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/in").respond_with_data("ok")
    delivery_send(delivery_id=delivery.pk)
    delivery_send(delivery_id=delivery.pk)

    response = staff_client.get(reverse("admin:notifications_delivery_change", args=[delivery.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "The endpoint answered 503." in page
    assert delivery.message_id in page
    tries = response.context["inline_admin_formsets"][0].formset.queryset
    assert [(t.number, t.status_code) for t in tries] == [(1, 503), (2, 200)]


def test_send_again_resends_delivered_and_given_up_ones_and_says_why_it_skipped_others(
    staff_client,
    alice,
    told,
    make_agent,
    make_execution,
    httpserver,
    settings,
    django_capture_on_commit_callbacks,
):
    agent, _ = told
    httpserver.expect_request("/in").respond_with_data("ok")
    httpserver.expect_request("/gone").respond_with_data("gone", status=410)
    httpserver.expect_request("/down").respond_with_data("down", status=500)
    delivered = delivery_of(make_execution(agent, "succeeded"))
    delivery_send(delivery_id=delivered.pk)
    down = channel(alice, "webhook", address(httpserver, "/down"))
    gave_up = delivery_of(make_execution(make_agent(alice, notify_channels=[down]), "failed"))
    for _ in range(len(settings.CONVEYOR_NOTIFY_RETRY_DELAYS) + 1):
        delivery_send(delivery_id=gave_up.pk)
    gone = channel(alice, "webhook", address(httpserver, "/gone"))
    turned_off = delivery_of(make_execution(make_agent(alice, notify_channels=[gone]), "failed"))
    delivery_send(delivery_id=turned_off.pk)  # 410: the channel is turned off
    pending = delivery_of(make_execution(agent, "failed"))
    assert [
        Delivery.objects.get(pk=d.pk).status for d in (delivered, gave_up, turned_off, pending)
    ] == ["delivered", "failed", "failed", "pending"]

    with django_capture_on_commit_callbacks() as published:
        messages = run_action(
            staff_client, DELIVERIES, "send_again", [delivered, gave_up, turned_off, pending]
        )

    assert messages == ["2 sent again. 2 skipped: channel turned off (1); still being sent (1)."]
    assert len(published) == 2
    for resent in (delivered, gave_up):
        again = Delivery.objects.get(pk=resent.pk)
        assert again.status == "pending" and again.message_id == resent.message_id
    assert Delivery.objects.get(pk=turned_off.pk).status == "failed"


def test_deliveries_are_not_added_changed_or_deleted_here(staff_client, told, make_execution):
    agent, _ = told
    delivery = delivery_of(make_execution(agent, "failed"))
    assert staff_client.get(DELIVERIES + "add/").status_code == 403
    delete = reverse("admin:notifications_delivery_delete", args=[delivery.pk])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    assert Delivery.objects.filter(pk=delivery.pk).exists()


# --- Completion hooks -------------------------------------------------------------------------


@pytest.fixture
def hooked(alice, make_agent):
    """Alice's agent whose function (test.counted) has a completion hook."""
    return make_agent(alice, config={"function": "test.counted"})


def hook_of(execution) -> CompletionHook:
    return CompletionHook.objects.get(execution=execution)


def given_up(make_execution, agent, settings) -> CompletionHook:
    """A hook that raised on every try until the tries ran out."""
    execution = make_execution(agent, "succeeded", result={"hook_fails": 100})
    for _ in range(len(settings.CONVEYOR_NOTIFY_RETRY_DELAYS) + 1):
        hook_run(execution_id=execution.pk)
    hook = hook_of(execution)
    assert hook.status == "failed"
    return hook


def test_the_hook_list_shows_failing_hooks_with_their_error(
    staff_client, hooked, make_execution, settings
):
    failed = given_up(make_execution, hooked, settings)
    waiting = hook_of(make_execution(hooked, "succeeded", result={"ok": True}))

    assert listed(staff_client, HOOKS) == sorted([failed.pk, waiting.pk])
    assert listed(staff_client, HOOKS, "?status__exact=failed") == [failed.pk]
    assert listed(staff_client, HOOKS, f"?q={failed.execution.uuid}") == [failed.pk]
    page = staff_client.get(HOOKS).content.decode()
    assert "RuntimeError: The hook&#x27;s own service is down" in page
    detail = staff_client.get(
        reverse("admin:notifications_completionhook_change", args=[failed.pk])
    )
    assert detail.status_code == 200
    assert "Gave up" in detail.content.decode()


def test_run_again_sets_done_and_given_up_hooks_to_run_and_skips_the_others(
    staff_client, hooked, make_execution, settings, django_capture_on_commit_callbacks
):
    failed = given_up(make_execution, hooked, settings)
    done_run = make_execution(hooked, "succeeded", result={"ok": True})
    hook_run(execution_id=done_run.pk)
    done = hook_of(done_run)
    assert done.status == "done"
    waiting = hook_of(make_execution(hooked, "failed"))

    with django_capture_on_commit_callbacks() as published:
        messages = run_action(staff_client, HOOKS, "run_again", [failed, done, waiting])

    assert messages == ["2 set to run again. 1 skipped: already waiting to run or running (1)."]
    assert len(published) == 2
    assert {hook_of(h.execution).status for h in (failed, done)} == {"pending"}


# --- The execution page -----------------------------------------------------------------------


def test_an_execution_s_page_shows_what_was_sent_and_how_each_try_went(
    staff_client, told, make_execution, httpserver
):
    agent, _ = told
    execution = make_execution(agent, "failed")
    httpserver.expect_ordered_request("/in").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/in").respond_with_data("ok")
    delivery_send(delivery_id=delivery_of(execution).pk)
    delivery_send(delivery_id=delivery_of(execution).pk)

    response = staff_client.get(reverse("admin:executions_execution_change", args=[execution.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Notifications sent" in page
    assert "ops hook (Webhook (signed))" in page
    assert "1: 503, 2: 200" in page
    assert reverse("admin:notifications_delivery_change", args=[delivery_of(execution).pk]) in page


def test_an_execution_nobody_was_told_about_has_no_notifications_section(
    staff_client, make_agent, make_execution
):
    execution = make_execution(make_agent(), "failed")

    page = staff_client.get(reverse("admin:executions_execution_change", args=[execution.pk]))

    assert page.status_code == 200
    assert "Notifications sent" not in page.content.decode()
    sections = [fieldset.name for fieldset in page.context["adminform"]]
    assert "Completion hook" not in sections


def test_an_execution_s_page_shows_its_completion_hook_failing(
    staff_client, hooked, make_execution, settings
):
    hook = given_up(make_execution, hooked, settings)

    response = staff_client.get(
        reverse("admin:executions_execution_change", args=[hook.execution_id])
    )

    page = response.content.decode()
    assert "Completion hook" in [fieldset.name for fieldset in response.context["adminform"]]
    assert "Gave up" in page and "test.counted" in page
    assert f"{len(settings.CONVEYOR_NOTIFY_RETRY_DELAYS) + 1} tries" in page
    assert "last error: RuntimeError" in page
    assert reverse("admin:notifications_completionhook_change", args=[hook.pk]) in page


# --- The agent form ---------------------------------------------------------------------------


def agent_form(client, agent, **changes):
    url = reverse("admin:agents_agent_change", args=[agent.pk])
    form = client.get(url).context["adminform"].form
    data = {n: v for n, v in form.initial.items() if n in form.fields and v not in (None, False)}
    data.update(
        {
            "owner": agent.owner_id,
            "config": '{"function": "demo.echo"}',
            "retry_on": '["timeout"]',
            "schedules-TOTAL_FORMS": 0,
            "schedules-INITIAL_FORMS": 0,
            **changes,
        }
    )
    return url, data


def test_the_agent_form_sets_the_rules_and_the_owner_s_channels(
    staff_client, alice, bob, make_agent
):
    mine = channel(alice, name="mine")
    channel(bob, name="bob's")
    agent = make_agent(alice)
    url, data = agent_form(
        staff_client,
        agent,
        notify_on="always",
        notify_retries="on",
        notify_channels=[mine.pk],
    )

    page = staff_client.get(url).content.decode()
    response = staff_client.post(url, data)

    assert "mine" in page and "bob&#x27;s" not in page  # only the owner's channels are offered
    assert response.status_code == 302, response.context["adminform"].form.errors
    agent.refresh_from_db()
    assert (agent.notify_on, agent.notify_retries) == ("always", True)
    assert list(agent.notify_channels.all()) == [mine]


def test_another_owner_s_channel_is_refused_on_the_agent_form(staff_client, alice, bob, make_agent):
    bobs = channel(bob, name="bob's")
    agent = make_agent(alice)
    url, data = agent_form(staff_client, agent, notify_channels=[bobs.pk])

    response = staff_client.post(url, data)

    assert response.status_code == 200
    assert "notify_channels" in response.context["adminform"].form.errors
    assert list(agent.notify_channels.all()) == []


def test_a_new_agent_with_another_owner_s_channel_is_refused_by_the_services(
    staff_client, alice, bob
):
    bobs = channel(bob, name="bob's")
    response = staff_client.post(
        reverse("admin:agents_agent_add"),
        {
            "owner": alice.pk,
            "name": "new-one",
            "kind": "function",
            "config": '{"function": "demo.echo"}',
            "retry_on": '["timeout"]',
            "max_retries": 3,
            "retry_backoff": 5,
            "retry_backoff_max": 600,
            "timeout": 300,
            "queue": settings.CONVEYOR_EXECUTIONS_QUEUE,
            "priority": 5,
            "overlap_policy": "skip",
            "breaker_window": 300,
            "breaker_cooldown": 60,
            "log_level": "debug",
            "notify_on": "failure",
            "notify_channels": [bobs.pk],
            "regression_min_runs": 20,
            "schedules-TOTAL_FORMS": 0,
            "schedules-INITIAL_FORMS": 0,
        },
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["notify_channels"] == [
        f"You have no notification channel {bobs.uuid}."
    ]
    assert not Agent.objects.filter(name="new-one").exists()
