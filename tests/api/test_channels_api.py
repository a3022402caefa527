"""Notification channels through the API: make, list, read, change, delete, rotate a webhook
channel's secret and send a test; a webhook channel's secret is shown once; every refusal is in
the one error format; nobody sees or touches another owner's channels."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.core import mail
from werkzeug import Response

from agents.webhook_signing import verify
from notifications.models import Channel
from notifications.services import channel_create, channel_disable
from tests.conftest import error_of

pytestmark = pytest.mark.django_db

CHANNELS = "/api/v1/channels"


def url(channel, suffix=""):
    return f"{CHANNELS}/{channel.uuid}{suffix}"


@pytest.fixture
def local(settings):
    """Channels may point at the test's own HTTP server (127.0.0.1)."""
    settings.CONVEYOR_OUTBOUND_ALLOW = ["127.0.0.1"]


def address(httpserver, path="/in") -> str:
    """The test server's URL by its address (its name, localhost, is not on the allow-list)."""
    return f"http://127.0.0.1:{httpserver.port}{path}"


def make_channel(owner, kind="email", name="mine", target="alice@example.com"):
    channel, _ = channel_create(owner=owner, kind=kind, name=name, target=target)
    return Channel.objects.get(pk=channel.pk)


# --- Making one -------------------------------------------------------------------------------


def test_an_email_channel_is_made_with_201_and_its_location(api, alice):
    response = api.post(CHANNELS, {"kind": "email", "name": "me", "target": "alice@example.com"})

    assert response.status_code == 201, response.content
    body = response.json()
    channel = Channel.objects.get(owner=alice)
    assert response["Location"] == body["url"] == f"http://testserver{url(channel)}"
    assert body["id"] == str(channel.uuid)
    assert (body["kind"], body["name"], body["target"]) == ("email", "me", "alice@example.com")
    assert body["is_enabled"] is True and body["disabled_reason"] == ""
    assert body["rotation_in_progress"] is False
    assert "secret" not in body


def test_a_webhook_channel_s_secret_is_returned_once(api, alice):
    response = api.post(
        CHANNELS, {"kind": "webhook", "name": "ops", "target": "https://example.com/hooks"}
    )

    assert response.status_code == 201, response.content
    secret = response.json()["secret"]
    assert secret.startswith("whsec_")
    channel = Channel.objects.get(owner=alice)
    assert channel.secrets.reveal() == {"current": secret}
    # Never again: not on the channel, not in the list.
    assert "secret" not in api.get(url(channel)).json()
    assert secret not in api.get(url(channel)).content.decode()
    assert secret not in api.get(CHANNELS).content.decode()


def test_a_slack_channel_has_no_secret(api):
    response = api.post(
        CHANNELS,
        {"kind": "slack", "name": "team", "target": "https://hooks.slack.com/services/T/B/X"},
    )
    assert response.status_code == 201, response.content
    assert "secret" not in response.json()


def test_a_channel_can_be_made_turned_off(api):
    response = api.post(
        CHANNELS,
        {"kind": "email", "name": "later", "target": "a@example.com", "is_enabled": False},
    )
    assert response.status_code == 201
    assert response.json()["is_enabled"] is False
    assert Channel.objects.get().is_enabled is False


def test_a_channel_without_kind_name_or_target_is_a_422_naming_each(api):
    response = api.post(CHANNELS, {})

    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid"
    assert set(error["details"]) == {"kind", "name", "target"}
    assert not Channel.objects.exists()


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"kind": "email", "target": "not an address"}, "target", "Enter an email address."),
        ({"kind": "webhook", "target": "ftp://example.com/x"}, "target", "http:// or https://"),
        ({"kind": "slack", "target": "example.com/hook"}, "target", "http:// or https://"),
        ({"kind": "sms", "target": "+100000"}, "kind", "not a valid choice"),
        ({"kind": "email", "target": "a@example.com", "name": "  "}, "name", ""),
    ],
)
def test_what_the_services_refuse_is_a_422_on_the_field(api, body, field, words):
    response = api.post(CHANNELS, {"name": "x", **body})

    assert response.status_code == 422, response.content
    error = error_of(response)
    assert field in error["details"]
    assert words in " ".join(error["details"][field])
    assert not Channel.objects.exists()


def test_an_internal_address_is_refused_unless_the_operator_allowed_it(api, settings):
    settings.CONVEYOR_OUTBOUND_ALLOW = []
    body = {"kind": "webhook", "name": "inside", "target": "http://169.254.169.254/hook"}

    response = api.post(CHANNELS, body)

    assert response.status_code == 422
    (message,) = error_of(response)["details"]["target"]
    assert "private or internal network address" in message
    assert "CONVEYOR_OUTBOUND_ALLOW" in message
    assert not Channel.objects.exists()


def test_a_body_that_is_not_json_is_a_400(api):
    response = api.post(CHANNELS, raw=b"{not json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"


def test_without_a_token_it_is_a_401(anonymous_api):
    response = anonymous_api.get(CHANNELS)
    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"


# --- Reading ----------------------------------------------------------------------------------


def test_the_list_has_only_your_channels_by_name_a_page_at_a_time(api, alice, bob):
    for name in ("ops", "me", "team"):
        make_channel(alice, name=name)
    make_channel(bob, name="bob's", target="bob@example.com")

    first = api.get(CHANNELS, {"limit": 2}).json()
    second = api.get(first["next"]).json()

    assert [c["name"] for c in first["results"]] == ["me", "ops"]
    assert [c["name"] for c in second["results"]] == ["team"]
    assert second["next"] is None


def test_a_channel_is_read_by_its_id(api, alice):
    channel = make_channel(alice, kind="webhook", target="https://example.com/in")
    body = api.get(url(channel)).json()
    assert body["id"] == str(channel.uuid)
    assert body["kind"] == "webhook" and body["target"] == "https://example.com/in"


def test_an_unknown_id_or_one_that_is_not_a_uuid_is_a_404(api):
    for path in (f"{CHANNELS}/7d1c0a52-0000-4000-8000-000000000000", f"{CHANNELS}/nope"):
        response = api.get(path)
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"


def test_a_channel_turned_off_by_its_endpoint_says_why(api, alice):
    channel = make_channel(alice, kind="webhook", target="https://example.com/in")
    channel_disable(channel=channel, reason="The endpoint answered 410 Gone.")

    body = api.get(url(channel)).json()

    assert body["is_enabled"] is False
    assert body["disabled_reason"] == "The endpoint answered 410 Gone."


# --- Changing ---------------------------------------------------------------------------------


def test_patch_changes_the_name_and_target(api, alice):
    channel = make_channel(alice)

    response = api.patch(url(channel), {"name": "work", "target": "alice@work.example"})

    assert response.status_code == 200, response.content
    assert (response.json()["name"], response.json()["target"]) == ("work", "alice@work.example")
    channel.refresh_from_db()
    assert (channel.name, channel.target) == ("work", "alice@work.example")


def test_turning_a_channel_back_on_clears_why_it_was_off(api, alice):
    channel = make_channel(alice, kind="webhook", target="https://example.com/in")
    channel_disable(channel=channel, reason="The endpoint answered 410 Gone.")

    body = api.patch(url(channel), {"is_enabled": True}).json()

    assert (body["is_enabled"], body["disabled_reason"]) == (True, "")
    channel.refresh_from_db()
    assert channel.is_enabled and channel.disabled_reason == ""


def test_a_bad_target_is_a_422_and_changes_nothing(api, alice):
    channel = make_channel(alice)

    response = api.patch(url(channel), {"target": "nobody"})

    assert response.status_code == 422
    assert error_of(response)["details"]["target"] == ["Enter an email address."]
    channel.refresh_from_db()
    assert channel.target == "alice@example.com"


def test_the_kind_cannot_change_but_may_be_sent_unchanged(api, alice):
    channel = make_channel(alice)

    refused = api.patch(url(channel), {"kind": "webhook", "target": "https://example.com/x"})
    same = api.patch(url(channel), {"kind": "email", "name": "renamed"})

    assert refused.status_code == 422
    assert "cannot change" in error_of(refused)["details"]["kind"][0]
    assert same.status_code == 200
    channel.refresh_from_db()
    assert (channel.kind, channel.name, channel.target) == ("email", "renamed", "alice@example.com")


def test_put_needs_the_name_and_the_target(api, alice):
    channel = make_channel(alice)

    refused = api.put(url(channel), {"name": "only a name"})
    replaced = api.put(url(channel), {"name": "work", "target": "a@work.example"})

    assert refused.status_code == 422
    assert set(error_of(refused)["details"]) == {"target"}
    assert replaced.status_code == 200
    assert replaced.json()["target"] == "a@work.example"


def test_deleting_a_channel_takes_it_off_its_agents(api, alice, make_agent):
    channel = make_channel(alice)
    agent = make_agent(alice, notify_channels=[channel])

    response = api.delete(url(channel))

    assert response.status_code == 204
    assert not Channel.objects.filter(pk=channel.pk).exists()
    assert list(agent.notify_channels.all()) == []


# --- Rotating a webhook channel's secret ------------------------------------------------------


def test_a_rotation_returns_the_next_secret_once_and_finishing_keeps_only_it(api, alice):
    channel, first = channel_create(
        owner=alice, kind="webhook", name="ops", target="https://example.com/in"
    )

    started = api.post(url(channel, "/rotate"))

    assert started.status_code == 200, started.content
    next_secret = started.json()["secret"]
    assert next_secret.startswith("whsec_") and next_secret != first
    assert started.json()["rotation_in_progress"] is True
    channel.refresh_from_db()
    assert channel.secrets.reveal() == {"current": first, "next": next_secret}
    assert next_secret not in api.get(url(channel)).content.decode()

    finished = api.post(url(channel, "/rotate/finish"))

    assert finished.status_code == 200
    assert finished.json()["rotation_in_progress"] is False
    assert "secret" not in finished.json()
    channel.refresh_from_db()
    assert channel.secrets.reveal() == {"current": next_secret}


def test_finishing_when_no_rotation_is_under_way_is_a_409(api, alice):
    channel, secret = channel_create(
        owner=alice, kind="webhook", name="ops", target="https://example.com/in"
    )

    response = api.post(url(channel, "/rotate/finish"))

    assert response.status_code == 409
    error = error_of(response)
    assert (error["code"], error["message"]) == ("no_rotation", "No rotation is under way.")
    channel.refresh_from_db()
    assert channel.secrets.reveal() == {"current": secret}


def test_an_email_or_slack_channel_has_no_secret_to_rotate(api, alice):
    email = make_channel(alice)
    slack = make_channel(alice, kind="slack", target="https://hooks.slack.com/services/T/B/X")

    for channel in (email, slack):
        response = api.post(url(channel, "/rotate"))
        assert response.status_code == 409
        error = error_of(response)
        assert error["code"] == "not_a_webhook"
        assert error["message"] == "Only webhook channels have a signing secret."
        assert api.post(url(channel, "/rotate/finish")).status_code == 409


# --- Sending a test ---------------------------------------------------------------------------


def test_a_test_to_a_webhook_channel_is_signed_with_its_secret(api, alice, httpserver, local):
    httpserver.expect_request("/in", method="POST").respond_with_data("thanks")
    channel, secret = channel_create(
        owner=alice, kind="webhook", name="ops", target=address(httpserver)
    )

    response = api.post(url(channel, "/test"))

    assert response.status_code == 200, response.content
    assert response.json() == {"ok": True, "status_code": 200, "error": ""}
    (request, _), *_ = httpserver.log
    headers = {name.lower(): value for name, value in request.headers.items()}
    signed = verify(
        secrets={"current": secret}, headers=headers, body=request.get_data(), now=time.time()
    )
    assert signed.matched == "current"
    assert json.loads(request.get_data())["data"]["test"] is True


def test_a_test_reports_the_endpoint_s_refusal_in_words(api, alice, httpserver, local):
    httpserver.expect_request("/in").respond_with_data("no", status=500)
    channel = make_channel(alice, kind="slack", target=address(httpserver))

    response = api.post(url(channel, "/test"))

    assert response.status_code == 200
    assert response.json() == {
        "ok": False,
        "status_code": 500,
        "error": "The endpoint answered 500.",
    }


def test_a_test_to_a_slow_endpoint_gives_up_after_the_timeout(
    api, alice, httpserver, local, settings
):
    settings.CONVEYOR_NOTIFY_TIMEOUT = 0.5
    released = threading.Event()

    def slow(request):
        released.wait(10)
        return Response("late")

    httpserver.expect_request("/in").respond_with_handler(slow)
    channel = make_channel(alice, kind="webhook", target=address(httpserver))

    body = api.post(url(channel, "/test")).json()

    assert body == {"ok": False, "status_code": None, "error": "No answer within 0.5 s."}
    # Let the server answer now, so that this request is not counted in the next test's log.
    released.set()
    deadline = time.monotonic() + 10
    while not httpserver.log and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_test_to_an_address_no_longer_allowed_is_refused_in_words(
    api, alice, httpserver, settings
):
    settings.CONVEYOR_OUTBOUND_ALLOW = ["127.0.0.1"]
    channel = make_channel(alice, kind="webhook", target=address(httpserver))
    settings.CONVEYOR_OUTBOUND_ALLOW = []

    body = api.post(url(channel, "/test")).json()

    assert body["ok"] is False and body["status_code"] is None
    assert "CONVEYOR_OUTBOUND_ALLOW" in body["error"]
    assert httpserver.log == []


def test_a_test_to_an_email_channel_sends_a_mail(api, alice):
    channel = make_channel(alice, target="alice@example.com")

    response = api.post(url(channel, "/test"))

    assert response.json() == {"ok": True, "status_code": None, "error": ""}
    (message,) = mail.outbox
    assert message.to == ["alice@example.com"]
    assert "Test from Conveyor" in message.subject


# --- Someone else's channels ------------------------------------------------------------------


def test_bob_gets_404_for_alices_channel_everywhere_and_changes_nothing(
    bob_api, alice, httpserver, local
):
    channel, secret = channel_create(
        owner=alice, kind="webhook", name="alice's", target=address(httpserver)
    )
    calls = [
        ("get", ""),
        ("patch", ""),
        ("put", ""),
        ("delete", ""),
        ("post", "/rotate"),
        ("post", "/rotate/finish"),
        ("post", "/test"),
    ]
    for method, suffix in calls:
        send = getattr(bob_api, method)
        path = url(channel, suffix)
        response = send(path) if method in ("get", "delete") else send(path, {"name": "bob's"})
        assert response.status_code == 404, (method, suffix, response.content)
        assert error_of(response)["code"] == "not_found"
        assert b"alice" not in response.content

    channel.refresh_from_db()
    assert (channel.name, channel.is_enabled) == ("alice's", True)
    assert channel.secrets.reveal() == {"current": secret}
    assert httpserver.log == []
    assert bob_api.get(CHANNELS).json()["results"] == []
