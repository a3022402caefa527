"""Agent names (agents/models.py): letters of any script, one name per owner whatever its case,
enforced by the database and explained by the API and the pages."""

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from agents.models import Agent
from api.services import token_create
from tests.api.conftest import ApiClient
from tests.conftest import error_of

pytestmark = pytest.mark.django_db

CREATE_FORM = {
    "agent-max_retries": "3",
    "agent-retry_backoff": "5",
    "agent-retry_backoff_max": "60",
    "agent-timeout": "30",
    "agent-priority": "5",
    "agent-queue": "executions",
    "agent-overlap_policy": "skip",
    "config-function": "demo.echo",
}


def test_the_database_holds_one_name_per_owner_whatever_its_case(alice, bob, make_agent):
    make_agent(alice, name="Nightly Sync")
    with pytest.raises(IntegrityError), transaction.atomic():
        Agent.objects.create(owner=alice, name="nightly sync", kind="function")
    Agent.objects.create(owner=bob, name="nightly sync", kind="function")


def test_the_page_explains_a_name_taken_in_another_case(alice_client, make_agent):
    make_agent(name="Relevé")
    response = alice_client.post(
        reverse("agents:create", args=["function"]), {"agent-name": "relevé", **CREATE_FORM}
    )
    assert response.status_code == 422
    assert "You already have an agent named “Relevé”." in response.content.decode()
    assert Agent.objects.count() == 1


def test_the_page_accepts_a_name_in_another_script(alice_client):
    response = alice_client.post(
        reverse("agents:create", args=["function"]), {"agent-name": "Отчёт", **CREATE_FORM}
    )
    assert response.status_code == 302
    assert Agent.objects.get().name == "Отчёт"


def test_the_api_explains_a_name_taken_in_another_case(alice, make_agent):
    make_agent(alice, name="echo")
    api = ApiClient(token_create(owner=alice, name="test token")[1])
    body = {"name": "ECHO", "kind": "function", "config": {"function": "demo.echo"}}
    response = api.post("/api/v1/agents", body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["details"]["name"] == ["You already have an agent named “echo”."]
    assert "You already have an agent named “echo”." in error["message"]
