"""Every page and action is private: others get 404, anonymous visitors are sent to sign in.

The list of routes comes from the URLconf, so a new route without a rule here fails.
"""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from agents.schedule_services import schedule_create
from api.services import token_create
from artifacts.services import artifact_save
from executions.bulk import bulk_action_create
from executions.services import execution_request
from notifications.services import channel_create

pytestmark = pytest.mark.django_db

# Routes outside the owner's pages, with why they are not checked here.
# "webhook" (POST /hooks/<uuid>/) answers signed requests from other systems, not people:
# tests/webhooks covers who may call it.
# "healthz" is public by design (no data); "metrics" is for staff or a scraper's token:
# tests/ops covers both.
PUBLIC_OR_OTHER = {"login", "logout", "webhook", "healthz", "metrics"}
POST_ONLY = {"agents:run", "agents:pause", "agents:resume", "executions:cancel", "executions:retry",
             "agents:webhook_enable", "agents:webhook_disable", "agents:webhook_rotate",
             "agents:webhook_finish", "tokens:revoke", "agents:schedule_pause",
             "agents:schedule_resume", "agents:schedule_delete",
             "notifications:channel_edit", "notifications:channel_enable",
             "notifications:channel_disable", "notifications:channel_test",
             "notifications:channel_rotate", "notifications:channel_rotate_finish",
             "notifications:channel_delete"}  # fmt: skip
# Routes with a confirmation page (GET, checked with every other route) in front of the action
# (POST, checked by test_the_action_behind_a_confirmation_page_is_private_too).
CONFIRM_THEN_POST = {"agents:delete"}


def owner_routes():
    """(name, pattern) for every named route of the user pages."""
    routes = []

    def walk(patterns, namespace=None):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if entry.namespace == "admin":
                    continue  # the admin has its own staff-only checks
                if entry.namespace == "api":
                    continue  # token-authenticated JSON: tests/api/test_isolation.py covers it
                if entry.namespace == "ops":
                    continue  # staff-only operations pages: tests/ops covers who may see them
                walk(entry.url_patterns, entry.namespace or namespace)
            elif isinstance(entry, URLPattern) and entry.name:
                name = f"{namespace}:{entry.name}" if namespace else entry.name
                if name not in PUBLIC_OR_OTHER:
                    routes.append((name, entry.pattern))

    walk(get_resolver().url_patterns)
    return routes


@pytest.fixture
def alices_objects(make_agent, alice):
    agent = make_agent(alice, name="alices-agent", secrets={"token": "alice-token-1"})
    execution = execution_request(agent=agent, trigger="manual", input={"private": "data"})
    token, _ = token_create(owner=alice, name="alices-token")
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=300)
    channel, _ = channel_create(
        owner=alice, kind="webhook", name="alices-channel", target="https://hooks.example.com/a"
    )
    artifact = artifact_save(
        execution=execution, attempt=1, name="private.txt", data="private data"
    )
    return {
        "agent": agent,
        "execution": execution,
        "token": token,
        "schedule": schedule,
        "channel": channel,
        "artifact": artifact,
        "bulk_action": bulk_action_create(owner=alice, action="cancel", filter={}, via="page"),
    }


def url_for(name, pattern, objects):
    params = list(pattern.converters)
    if not params:
        return reverse(name)
    if name == "artifacts:download":  # under /executions/<execution uuid>/files/
        kwargs = {"execution": objects["execution"].uuid, "uuid": objects["artifact"].uuid}
        return reverse(name, kwargs=kwargs)
    if params == ["uuid"]:
        owner = objects["agent"] if name.startswith("agents:") else objects["execution"]
        if name.startswith("executions:bulk"):
            owner = objects["bulk_action"]
        if name.startswith("tokens:"):
            owner = objects["token"]
        if name.startswith("notifications:"):
            owner = objects["channel"]
        return reverse(name, kwargs={"uuid": owner.uuid})
    if params == ["kind"]:
        return reverse(name, kwargs={"kind": "function"})
    if params == ["uuid", "other"]:  # two executions compared: both Alice's
        kwargs = {"uuid": objects["execution"].uuid, "other": objects["execution"].uuid}
        return reverse(name, kwargs=kwargs)
    if params == ["uuid", "schedule_uuid"]:
        kwargs = {"uuid": objects["agent"].uuid, "schedule_uuid": objects["schedule"].uuid}
        return reverse(name, kwargs=kwargs)
    raise AssertionError(f"No isolation rule for route {name} with parameters {params}.")


def request(client, name, url):
    return client.post(url) if name in POST_ONLY else client.get(url)


def test_there_are_routes_to_check():
    names = {name for name, _ in owner_routes()}
    assert {"home", "agents:detail", "executions:detail", "executions:live"} <= names
    # Fragments are pages too: the schedule form's preview (GET, the agent's uuid) is checked
    # like the agent page.
    assert {"agents:schedule_preview"} <= names


@pytest.mark.parametrize(("name", "pattern"), owner_routes(), ids=lambda v: str(v))
def test_anonymous_visitors_are_sent_to_sign_in(client, alices_objects, name, pattern):
    url = url_for(name, pattern, alices_objects)
    response = request(client, name, url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize(("name", "pattern"), owner_routes(), ids=lambda v: str(v))
def test_bob_never_sees_alices_objects(client, bob, alices_objects, name, pattern):
    client.force_login(bob)
    url = url_for(name, pattern, alices_objects)
    response = request(client, name, url)
    if "uuid" in pattern.converters:
        assert response.status_code == 404
    else:
        # 302: a page that leads elsewhere when asked nothing (the bulk page, to the list).
        assert response.status_code in (200, 302, 405)
        assert b"alices-agent" not in response.content
        assert b"private" not in response.content


def test_bobs_actions_on_alices_execution_change_nothing(client, bob, alices_objects):
    client.force_login(bob)
    execution = alices_objects["execution"]
    client.post(reverse("executions:cancel", args=[execution.uuid]))
    execution.refresh_from_db()
    assert execution.status == "queued"


@pytest.mark.parametrize("name", sorted(CONFIRM_THEN_POST))
def test_the_action_behind_a_confirmation_page_is_private_too(client, bob, alices_objects, name):
    url = url_for(name, dict(owner_routes())[name], alices_objects)

    anonymous = client.post(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("login"))

    client.force_login(bob)
    assert client.post(url).status_code == 404
    alices_objects["agent"].refresh_from_db()  # still there
