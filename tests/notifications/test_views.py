"""The notification settings page and the execution page's Notifications panel, through
Django's test client (the browser test lives in test_views_browser.py).

Test messages go to a real local server (``receiver``, on 127.0.0.1, which this directory's
conftest allows as the suite's worker does) or to Django's in-memory outbox."""

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client, override_settings
from django.urls import reverse

from agents.secrets import Secrets
from notifications.models import Channel, Delivery, Preferences
from notifications.services import channel_create, channel_disable, delivery_send
from tests.notifications.conftest import url

pytestmark = pytest.mark.django_db

PAGE = "/settings/notifications/"


def local(receiver, path="/hook"):
    return url(receiver, path)


def page(client) -> str:
    response = client.get(PAGE)
    assert response.status_code == 200
    return response.content.decode()


def email_channel(owner, name="ops", target="ops@example.com"):
    return channel_create(owner=owner, kind="email", name=name, target=target)[0]


def webhook_channel(owner, name="pager", target="https://hooks.example.com/conveyor"):
    return channel_create(owner=owner, kind="webhook", name=name, target=target)


def add(client, **fields):
    data = {f"new-{key}": value for key, value in fields.items()}
    return client.post(PAGE, data)


# --- The page -------------------------------------------------------------------------------


def test_the_page_is_linked_from_the_navigation(alice_client):
    html = alice_client.get(reverse("home")).content.decode()
    assert f'href="{PAGE}"' in html and ">Notifications</a>" in html


def test_an_empty_page_explains_itself_and_names_where_the_digest_goes(alice_client):
    html = page(alice_client)
    assert "No channels yet" in html
    assert "alice@example.com" in html and "No digest" in html


def test_the_page_lists_only_the_owners_channels(alice_client, alice, bob):
    email_channel(alice, name="alices-ops")
    email_channel(bob, name="bobs-ops", target="bob@example.com")
    html = page(alice_client)
    assert "alices-ops" in html and "ops@example.com" in html
    assert "bobs-ops" not in html and "bob@example.com" not in html


def test_a_url_is_shown_without_its_query_string_or_password(alice_client, alice):
    channel_create(
        owner=alice,
        kind="slack",
        name="team",
        target="https://user:hunter2@chat.example.com/hooks/abc?token=s3cret#frag",
    )
    html = page(alice_client)
    assert "https://chat.example.com/hooks/abc?…" in html
    assert "s3cret" not in html and "hunter2" not in html and "frag" not in html


def test_a_signed_out_visitor_is_sent_to_sign_in(client):
    response = client.get(PAGE)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


# --- Adding a channel -------------------------------------------------------------------------


def test_adding_an_email_channel(alice_client, alice):
    response = add(alice_client, kind="email", name="ops", target=" ops@example.com ")
    channel = Channel.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{PAGE}#channel-{channel.uuid}"
    assert (channel.owner, channel.kind, channel.target) == (alice, "email", "ops@example.com")
    html = page(alice_client)
    assert "Channel “ops” added" in html and "Signing secret" not in html


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"kind": "email", "name": "ops", "target": "not an address"}, "target",
         "Enter an email address."),
        ({"kind": "webhook", "name": "pager", "target": "ftp://example.com/x"}, "target",
         "Enter the http:// or https:// address to send to."),
        ({"kind": "webhook", "name": "pager", "target": "http://169.254.169.254/x"}, "target",
         "169.254.169.254"),
        ({"kind": "email", "name": "  ", "target": "ops@example.com"}, "name", "required"),
        ({"kind": "sms", "name": "ops", "target": "ops@example.com"}, "kind",
         "Select a valid choice"),
    ],
)  # fmt: skip
def test_a_channel_that_cannot_be_added_says_why_next_to_the_field(
    alice_client, fields, field, words
):
    response = add(alice_client, **fields)
    assert response.status_code == 422
    html = response.content.decode()
    assert f'class="field field-{field} has-error"' in html
    assert words in html
    assert "The channel was not added" in html
    assert not Channel.objects.exists()


def test_a_new_webhook_channel_shows_its_secret_on_the_next_render_only(alice_client):
    add(alice_client, kind="webhook", name="pager", target="https://hooks.example.com/c")
    channel = Channel.objects.get()
    secret = channel.secrets["current"]
    assert secret.startswith("whsec_")
    # The session holds which secret to show, never the secret itself.
    assert secret not in json.dumps(dict(alice_client.session.items()))
    first = page(alice_client)
    assert secret in first and "copy it now" in first and "data-copy=" in first
    assert secret not in page(alice_client)


# --- Editing, on and off, deleting ------------------------------------------------------------


def edit(client, channel, **fields):
    prefix = f"edit-{channel.uuid.hex[:12]}"
    data = {f"{prefix}-{key}": value for key, value in fields.items()}
    return client.post(reverse("notifications:channel_edit", args=[channel.uuid]), data)


def test_editing_the_name_keeps_the_address_when_it_is_left_empty(alice_client, alice):
    channel = email_channel(alice)
    response = edit(alice_client, channel, name="on-call", target="")
    assert response.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.target) == ("on-call", "ops@example.com")


def test_editing_the_address(alice_client, alice):
    channel = email_channel(alice)
    edit(alice_client, channel, name="ops", target="oncall@example.com")
    channel.refresh_from_db()
    assert channel.target == "oncall@example.com"


def test_an_edit_that_is_refused_says_why_in_the_open_form_and_saves_nothing(alice_client, alice):
    channel = email_channel(alice)
    response = edit(alice_client, channel, name="renamed", target="nope")
    assert response.status_code == 422
    html = response.content.decode()
    assert "Enter an email address." in html
    assert '<details class="channel-edit" open>' in html
    channel.refresh_from_db()
    assert (channel.name, channel.target) == ("ops", "ops@example.com")


def test_turning_a_channel_off_and_on(alice_client, alice):
    channel = email_channel(alice)
    alice_client.post(reverse("notifications:channel_disable", args=[channel.uuid]))
    channel.refresh_from_db()
    assert channel.is_enabled is False and channel.disabled_reason == ""
    html = page(alice_client)
    assert "is off: nothing is sent to it" in html and ">Turn on</button>" in html
    alice_client.post(reverse("notifications:channel_enable", args=[channel.uuid]))
    channel.refresh_from_db()
    assert channel.is_enabled is True


def test_a_channel_conveyor_turned_off_says_why_and_turns_on_again(alice_client, alice):
    channel = email_channel(alice)
    channel_disable(channel=channel, reason="The endpoint answered 410 Gone on 30 Nov 2026.")
    html = page(alice_client)
    assert "Conveyor turned it off." in html and "answered 410 Gone on 30 Nov 2026" in html
    assert ">Turn on again</button>" in html
    response = alice_client.post(reverse("notifications:channel_enable", args=[channel.uuid]))
    assert response.status_code == 302
    channel.refresh_from_db()
    assert channel.is_enabled and channel.disabled_reason == ""
    assert "Turn on again" not in page(alice_client)


def test_a_channel_whose_address_is_now_refused_stays_off_and_says_why(
    alice_client, alice, receiver
):
    channel, _ = webhook_channel(alice, target=local(receiver))
    channel_disable(channel=channel, reason="The endpoint answered 410 Gone.")
    with override_settings(CONVEYOR_OUTBOUND_ALLOW=[]):
        response = alice_client.post(
            reverse("notifications:channel_enable", args=[channel.uuid]), follow=True
        )
    channel.refresh_from_db()
    assert channel.is_enabled is False
    assert "stays off" in response.content.decode()


def test_deleting_a_channel_takes_it_off_its_agents(alice_client, alice, make_agent):
    channel = email_channel(alice)
    agent = make_agent(alice, notify_channels=[channel])
    response = alice_client.post(
        reverse("notifications:channel_delete", args=[channel.uuid]), follow=True
    )
    assert "Channel “ops” deleted" in response.content.decode()
    assert not Channel.objects.exists() and not agent.notify_channels.exists()


def test_the_page_names_the_agents_that_tell_a_channel(alice_client, alice, make_agent):
    channel = email_channel(alice)
    make_agent(alice, name="nightly-report", notify_channels=[channel])
    assert "Told by nightly-report." in page(alice_client)


# --- Rotating a webhook's secret --------------------------------------------------------------


def test_a_rotation_from_the_page(alice_client, alice):
    channel, old = webhook_channel(alice)
    alice_client.post(reverse("notifications:channel_rotate", args=[channel.uuid]))
    channel.refresh_from_db()
    new = channel.secrets["next"]
    html = page(alice_client)
    assert new in html and old not in html
    assert "Rotation under way" in html and "Finish rotation" in html
    html = page(alice_client)
    assert new not in html and "Finish rotation" in html
    alice_client.post(reverse("notifications:channel_rotate_finish", args=[channel.uuid]))
    channel.refresh_from_db()
    assert channel.secrets.reveal() == {"current": new}
    assert "Finish rotation" not in page(alice_client)


def test_finishing_a_rotation_that_did_not_start_says_so(alice_client, alice):
    channel, _ = webhook_channel(alice)
    response = alice_client.post(
        reverse("notifications:channel_rotate_finish", args=[channel.uuid]), follow=True
    )
    assert "No rotation is under way." in response.content.decode()


def test_an_email_channel_has_no_secret_to_rotate(alice_client, alice):
    channel = email_channel(alice)
    response = alice_client.post(
        reverse("notifications:channel_rotate", args=[channel.uuid]), follow=True
    )
    assert "Only webhook channels have a signing secret." in response.content.decode()
    channel.refresh_from_db()
    assert not channel.secrets


# --- Send a test ------------------------------------------------------------------------------


def send_test(client, channel, *, htmx=True):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post(reverse("notifications:channel_test", args=[channel.uuid]), headers=headers)


def test_a_test_to_a_webhook_says_it_was_delivered_with_the_status(alice_client, alice, receiver):
    receiver.expect_request("/hook", method="POST").respond_with_data("ok", status=202)
    channel, _ = webhook_channel(alice, target=local(receiver))
    response = send_test(alice_client, channel)
    assert response.status_code == 200
    assert "Delivered (202)" in response.content.decode()
    request, _ = receiver.log[0]
    assert request.headers["webhook-signature"].startswith("v1,")
    assert json.loads(request.get_data())["data"]["test"] is True


def test_a_test_that_fails_says_what_the_endpoint_answered(alice_client, alice, receiver):
    receiver.expect_request("/hook", method="POST").respond_with_data("no", status=500)
    channel, _ = channel_create(owner=alice, kind="slack", name="team", target=local(receiver))
    html = send_test(alice_client, channel).content.decode()
    assert "Not delivered: The endpoint answered 500." in html and 'data-ok="false"' in html


def test_a_test_to_an_address_no_longer_allowed_says_so(alice_client, alice, receiver):
    channel, _ = webhook_channel(alice, target=local(receiver))
    with override_settings(CONVEYOR_OUTBOUND_ALLOW=[]):
        html = send_test(alice_client, channel).content.decode()
    assert "Not delivered:" in html and "127.0.0.1" in html
    assert not receiver.log


def test_a_test_email_is_sent(alice_client, alice):
    channel = email_channel(alice)
    html = send_test(alice_client, channel).content.decode()
    assert ">Sent</span>" in html
    assert [m.to for m in mail.outbox] == [["ops@example.com"]]


def test_a_test_without_script_comes_back_as_a_message(alice_client, alice):
    channel = email_channel(alice)
    response = send_test(alice_client, channel, htmx=False)
    assert response.status_code == 302
    assert "Test sent to “ops”: Sent." in page(alice_client)


# --- The digest -------------------------------------------------------------------------------


def test_choosing_a_daily_digest(alice_client, alice):
    response = alice_client.post(PAGE, {"form": "digest", "digest-digest": "daily"})
    assert response.status_code == 302
    assert Preferences.objects.get(user=alice).digest == "daily"
    html = page(alice_client)
    assert "A daily digest will be sent to alice@example.com." in html
    assert '<option value="daily" selected>' in html


def test_choosing_no_digest(alice_client, alice):
    Preferences.objects.create(user=alice, digest="weekly")
    alice_client.post(PAGE, {"form": "digest", "digest-digest": ""})
    assert Preferences.objects.get(user=alice).digest == ""


def test_an_unknown_digest_is_refused_inline(alice_client, alice):
    response = alice_client.post(PAGE, {"form": "digest", "digest-digest": "hourly"})
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    assert not Preferences.objects.filter(user=alice).exists()


def test_without_an_email_address_the_page_says_no_digest_can_be_sent(alice_client, alice):
    alice.email = ""
    alice.save()
    assert "Your account has no email address" in page(alice_client)
    response = alice_client.post(PAGE, {"form": "digest", "digest-digest": "weekly"}, follow=True)
    assert "no weekly digest can be sent until it has one" in response.content.decode()


# --- Only the owner ---------------------------------------------------------------------------

ACTIONS = ["channel_edit", "channel_enable", "channel_disable", "channel_test", "channel_rotate",
           "channel_rotate_finish", "channel_delete"]  # fmt: skip


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("method", ["post", "get"])
def test_another_owners_channel_is_not_found(client, alice, bob, action, method, receiver):
    receiver.expect_request("/hook").respond_with_data("ok")
    channel, secret = webhook_channel(alice, target=local(receiver))
    client.force_login(bob)
    url = reverse(f"notifications:{action}", args=[channel.uuid])
    assert getattr(client, method)(url, {"edit-x-name": "mine"}).status_code == 404
    channel.refresh_from_db()
    assert (channel.name, channel.is_enabled) == ("pager", True)
    assert channel.secrets == Secrets({"current": secret})
    assert not mail.outbox and not receiver.log


@pytest.mark.parametrize("action", ACTIONS)
def test_an_action_is_a_post(alice_client, alice, action):
    channel = email_channel(alice)
    url = reverse(f"notifications:{action}", args=[channel.uuid])
    assert alice_client.get(url).status_code == 405
    assert Channel.objects.filter(pk=channel.pk, is_enabled=True).exists()


def test_a_post_without_the_csrf_token_is_refused(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(PAGE, {"new-kind": "email", "new-name": "x", "new-target": "x@x.io"})
    assert response.status_code == 403
    assert not Channel.objects.exists()


# --- The execution page's Notifications panel -------------------------------------------------


def live(client, execution) -> str:
    response = client.get(reverse("executions:live", args=[execution.uuid]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_run_without_notifications_has_no_panel(alice_client, make_agent, make_execution):
    execution = make_execution(make_agent(), "failed")
    assert 'id="deliveries"' not in live(alice_client, execution)


def test_the_panel_shows_each_delivery_with_its_attempts(
    alice_client, alice, make_agent, make_execution, receiver
):
    receiver.expect_ordered_request("/hook").respond_with_data("busy", status=503)
    receiver.expect_ordered_request("/hook").respond_with_data("ok", status=200)
    hook, _ = webhook_channel(alice, name="pager", target=local(receiver))
    ops = email_channel(alice)
    agent = make_agent(alice, max_retries=0, notify_channels=[hook, ops])
    # Recorded with the final state; not sent (the test's transaction never commits), so the
    # test sends each attempt itself, as the deliver task does.
    execution = make_execution(agent, "failed", reason="The ledger is down.")
    webhook_delivery = Delivery.objects.get(channel=hook)
    email_delivery = Delivery.objects.get(channel=ops)

    html = live(alice_client, execution)
    assert 'id="deliveries"' in html and "pager" in html and "Webhook (signed)" in html
    assert "Sending" in html and 'hx-trigger="every 1s"' in html  # live while one is pending

    assert delivery_send(delivery_id=webhook_delivery.pk) == 1
    html = live(alice_client, execution)
    assert "Waiting to retry" in html and "Answered 503" in html and "1 try" in html

    assert delivery_send(delivery_id=webhook_delivery.pk) is None
    assert delivery_send(delivery_id=email_delivery.pk) is None
    html = live(alice_client, execution)
    assert html.count('data-delivery-status="delivered"') == 2
    assert "Delivered (200)" in html and "2 tries" in html and "Sent" in html
    assert "try 1" in html and "try 2" in html
    assert "The run failed · 2 tries" in html  # the event
    assert "hx-trigger" not in html  # nothing left to send: the page stops refreshing


def test_a_delivery_that_gave_up_says_so(alice_client, alice, make_agent, make_execution, receiver):
    receiver.expect_request("/gone").respond_with_data("", status=410)
    hook, _ = webhook_channel(alice, name="pager", target=local(receiver, "/gone"))
    agent = make_agent(alice, max_retries=0, notify_channels=[hook])
    execution = make_execution(agent, "failed")
    delivery_send(delivery_id=Delivery.objects.get().pk)
    html = live(alice_client, execution)
    assert "Gave up" in html and "Answered 410" in html
    assert f'href="{PAGE}#channel-{hook.uuid}"' in html  # where it says why the channel is off
    # ... and the settings page says why the channel is off.
    settings_page = page(alice_client)
    assert "Conveyor turned it off." in settings_page and "410 Gone" in settings_page


def test_the_panel_says_what_each_notification_was_about(
    alice_client, alice, make_agent, make_execution
):
    ops = email_channel(alice)
    agent = make_agent(
        alice, max_retries=2, notify_retries=True, notify_recovery=True, notify_on="failure",
        notify_channels=[ops],
    )  # fmt: skip
    retrying = make_execution(agent, "retrying", attempt=1)
    assert "Attempt 1 failed, a retry was planned · 0 tries" in live(alice_client, retrying)
    make_execution(agent, "failed", attempt=3)
    recovered = make_execution(agent, "succeeded", ago=timedelta(minutes=1))
    assert "It recovered · 0 tries" in live(alice_client, recovered)
