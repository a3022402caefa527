"""Bob gets a 404 for each of alice's objects on every API endpoint, and changes nothing.

The endpoints come from the router, with the methods each one accepts, so a new endpoint is
covered (or this test fails to know what object to give it) without anyone remembering to.
"""

import pytest
from django.urls import reverse

from agents.models import Agent
from api.urls import router
from executions.bulk import bulk_action_create
from executions.models import BulkAction, Execution
from notifications.models import Channel
from notifications.services import channel_create
from tests.conftest import error_of

pytestmark = pytest.mark.django_db

OBJECT_OF_BASENAME = {
    "agent": "agent",
    "execution": "execution",
    "channel": "channel",
    "bulk": "bulk_action",  # bulk-action-detail
}


def detail_endpoints():
    """(route name, HTTP method) for every router endpoint that takes an object id."""
    endpoints = []
    for pattern in router.urls:
        if "id" not in pattern.pattern.regex.groupindex:
            continue
        # DRF adds "head" (as "get") to the map once a view has answered: same as get.
        for method in sorted(set(pattern.callback.actions) - {"head"}):
            endpoints.append((pattern.name, method))
    return endpoints


def url_of(name: str, target) -> str:
    """The endpoint's URL for ``target``; an endpoint comparing two runs compares the target
    with itself (both Alice's)."""
    kwargs = {"id": target.uuid}
    if "other" in reverse_pattern_params(name):
        kwargs["other"] = target.uuid
    return reverse(f"api:{name}", kwargs=kwargs)


def reverse_pattern_params(name: str) -> set[str]:
    (pattern,) = (p for p in router.urls if p.name == name)
    return set(pattern.pattern.regex.groupindex)


@pytest.fixture
def alices(make_agent, make_execution, alice):
    agent = make_agent(alice, name="alices-agent", secrets={"token": "alice-token-1"})
    execution = make_execution(agent, "failed", trigger="api", input={"private": "data"})
    channel, _ = channel_create(
        owner=alice, kind="webhook", name="alices-agent hook", target="https://example.com/in"
    )
    bulk_action = bulk_action_create(owner=alice, action="retry", filter={}, via="api")
    return {"agent": agent, "execution": execution, "channel": channel, "bulk_action": bulk_action}


def test_the_router_gives_every_kind_of_endpoint():
    names = {name for name, _ in detail_endpoints()}
    assert {"agent-detail", "agent-run", "agent-webhook-rotate", "execution-detail",
            "execution-logs", "execution-retry", "execution-cancel", "channel-detail",
            "channel-rotate", "channel-rotate-finish", "channel-send-test"} <= names  # fmt: skip


@pytest.mark.parametrize(("name", "method"), detail_endpoints(), ids=lambda v: str(v))
def test_bob_gets_404_for_alices_objects(bob_api, alices, name, method):
    basename = name.split("-", 1)[0]
    target = alices[OBJECT_OF_BASENAME[basename]]
    url = url_of(name, target)
    body = {"name": "taken", "kind": "function", "config": {"function": "demo.echo"}}
    send = getattr(bob_api, method)
    response = send(url) if method in ("get", "delete") else send(url, body)
    assert response.status_code == 404, (name, method, response.content)
    assert error_of(response)["code"] == "not_found"
    assert b"alices-agent" not in response.content and b"private" not in response.content


def test_bobs_calls_changed_nothing_of_alices(bob_api, alices):
    for name, method in detail_endpoints():
        target = alices[OBJECT_OF_BASENAME[name.split("-", 1)[0]]]
        url = url_of(name, target)
        getattr(bob_api, method)(url)
    agent = Agent.objects.get(pk=alices["agent"].pk)
    assert (agent.name, agent.is_paused, agent.webhook_enabled) == ("alices-agent", False, False)
    assert agent.secrets.reveal() == {"token": "alice-token-1"}
    assert Execution.objects.filter(agent=agent).count() == 1
    channel = Channel.objects.get(pk=alices["channel"].pk)
    assert (channel.name, channel.is_enabled) == ("alices-agent hook", True)
    assert channel.secrets.reveal() == alices["channel"].secrets.reveal()
    assert BulkAction.objects.get(owner=alices["bulk_action"].owner).status == "pending"


def test_bobs_lists_show_none_of_alices_objects(bob_api, alices):
    for path, params in [("/api/v1/agents", {}), ("/api/v1/executions", {}),
                         ("/api/v1/executions", {"agent": str(alices["agent"].uuid)}),
                         ("/api/v1/channels", {}), ("/api/v1/executions/bulk", {})]:  # fmt: skip
        response = bob_api.get(path, params)
        assert response.status_code == 200
        assert response.json()["results"] == []
