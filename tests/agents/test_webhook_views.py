"""The webhook section of the agent page: the URL, on and off, rotation, a secret revealed
once, and example requests that work as written."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from django.urls import reverse

from agents.webhook_services import webhook_enable
from executions.models import Execution


def page(client, agent) -> str:
    response = client.get(reverse("agents:detail", args=[agent.uuid]))
    assert response.status_code == 200
    return response.content.decode()


def secret_of(agent, slot="current"):
    agent.refresh_from_db()
    return agent.webhook_secrets[slot]


@pytest.mark.django_db
def test_the_section_shows_the_absolute_url_and_that_it_is_off(alice_client, make_agent, alice):
    agent = make_agent(alice)
    html = page(alice_client, agent)
    assert f"http://testserver/hooks/{agent.uuid}/" in html
    assert "Turn on" in html and "Rotate secret" not in html


@pytest.mark.django_db
def test_turning_it_on_reveals_the_secret_on_the_next_render_only(alice_client, make_agent, alice):
    agent = make_agent(alice)
    response = alice_client.post(reverse("agents:webhook_enable", args=[agent.uuid]))
    assert response.status_code == 302
    assert response["Location"].endswith(f"/agents/{agent.uuid}/#webhook")
    secret = secret_of(agent)
    assert secret.startswith("whsec_")
    first = page(alice_client, agent)
    assert secret in first and "Turn off" in first
    second = page(alice_client, agent)
    assert secret not in second
    # The session held which secret to show, never the secret itself.
    assert secret not in json.dumps(dict(alice_client.session.items()))


@pytest.mark.django_db
def test_run_now_coming_back_with_an_error_shows_the_whole_page_and_the_secret_once(
    alice_client, make_agent, alice
):
    agent = make_agent(alice)
    alice_client.post(reverse("agents:webhook_enable", args=[agent.uuid]))
    secret = secret_of(agent)
    response = alice_client.post(reverse("agents:run", args=[agent.uuid]), {"input": '{"a": 1,}'})
    assert response.status_code == 422
    html = response.content.decode()
    assert "This is not valid JSON" in html
    assert secret in html and 'id="schedules"' in html and "No schedule yet" in html
    assert secret not in page(alice_client, agent)


@pytest.mark.django_db
def test_a_rotation_from_the_page(alice_client, make_agent, alice):
    agent = make_agent(alice)
    old = webhook_enable(agent=agent)
    alice_client.post(reverse("agents:webhook_rotate", args=[agent.uuid]))
    new = secret_of(agent, "next")
    html = page(alice_client, agent)
    assert new in html and old not in html
    assert "Finish rotation" in html and "Two secrets valid" in html
    assert new not in page(alice_client, agent)
    alice_client.post(reverse("agents:webhook_finish", args=[agent.uuid]))
    agent.refresh_from_db()
    assert agent.webhook_secrets.reveal() == {"current": new}
    html = page(alice_client, agent)
    assert "Finish rotation" not in html and new not in html


@pytest.mark.django_db
def test_finishing_a_rotation_that_did_not_start_explains_itself(alice_client, make_agent, alice):
    agent = make_agent(alice)
    webhook_enable(agent=agent)
    response = alice_client.post(reverse("agents:webhook_finish", args=[agent.uuid]), follow=True)
    assert "No rotation is under way" in response.content.decode()


@pytest.mark.django_db
def test_turning_it_off_from_the_page(alice_client, make_agent, alice):
    agent = make_agent(alice)
    webhook_enable(agent=agent)
    alice_client.post(reverse("agents:webhook_disable", args=[agent.uuid]))
    agent.refresh_from_db()
    assert agent.webhook_enabled is False
    assert "Turn on" in page(alice_client, agent)


@pytest.mark.django_db
@pytest.mark.parametrize("route", ["webhook_enable", "webhook_disable", "webhook_rotate",
                                   "webhook_finish"])  # fmt: skip
def test_only_the_owner_can_change_the_webhook(client, bob, make_agent, alice, route):
    agent = make_agent(alice)
    secret = webhook_enable(agent=agent)
    client.force_login(bob)
    assert client.post(reverse(f"agents:{route}", args=[agent.uuid])).status_code == 404
    agent.refresh_from_db()
    assert agent.webhook_enabled and agent.webhook_secrets.reveal() == {"current": secret}


@pytest.mark.django_db
def test_the_page_of_another_owner_reveals_nothing(client, bob, make_agent, alice):
    agent = make_agent(alice)
    client.force_login(alice)
    client.post(reverse("agents:webhook_enable", args=[agent.uuid]))
    client.force_login(bob)  # a new session: bob's
    assert client.get(reverse("agents:detail", args=[agent.uuid])).status_code == 404


@pytest.mark.django_db
def test_the_examples_show_the_url_and_never_the_secret(alice_client, make_agent, alice):
    agent = make_agent(alice)
    secret = webhook_enable(agent=agent)
    html = page(alice_client, agent)
    assert "webhook-signature: v1,$SIG" in html
    assert "CONVEYOR_WEBHOOK_SECRET" in html
    assert html.count(f"http://testserver/hooks/{agent.uuid}/") >= 3
    assert secret not in html


# --- The examples, run as a person would run them --------------------------------------------


def run_example(agent, secret, language, live_server):
    from agents.webhook_views import python_example, shell_example

    url = f"{live_server.url}/hooks/{agent.uuid}/"
    env = {**os.environ, "CONVEYOR_WEBHOOK_SECRET": secret}
    if language == "python":
        command = [sys.executable, "-c", python_example(url)]
    else:
        command = ["bash", "-c", shell_example(url)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("language", ["python", "shell"])
def test_the_example_requests_work_as_written(live_server, make_agent, alice, language):
    if language == "shell" and not all(shutil.which(t) for t in ("curl", "openssl", "base64")):
        pytest.skip("the shell example needs curl, openssl and base64")
    agent = make_agent(alice)
    secret = webhook_enable(agent=agent)
    answer = run_example(agent, secret, language, live_server)
    assert answer["replay"] is False
    execution = Execution.objects.get(uuid=answer["id"])
    assert execution.trigger == "webhook" and execution.input == {"hello": "world"}
