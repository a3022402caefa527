"""config/urls.py's error handlers: a request too large for Django to read gets a page that
says so (pages) or the JSON error format (API, webhooks), not a bare 400."""

import json

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from executions.models import Execution

pytestmark = pytest.mark.django_db

BIG = "x" * 20_000


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10_000)
def test_a_page_form_too_large_to_read_gets_the_friendly_413_page(alice_client, make_agent):
    agent = make_agent()
    response = alice_client.post(reverse("agents:run", args=[agent.uuid]), {"input": BIG})
    assert response.status_code == 413
    html = response.content.decode()
    assert "The form was too large" in html and "nothing was saved" in html
    assert not Execution.objects.exists()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10_000)
def test_a_form_too_large_for_the_csrf_check_still_gets_the_page(alice, make_agent):
    # With the CSRF check on, the body is first read by the middleware, before any view.
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    agent = make_agent()
    client.get(reverse("agents:detail", args=[agent.uuid]))  # sets the CSRF cookie
    assert "csrftoken" in client.cookies
    response = client.post(reverse("agents:run", args=[agent.uuid]), {"input": BIG})
    assert response.status_code == 413
    assert "The form was too large" in response.content.decode()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10)
def test_too_many_bytes_on_the_sign_in_page_get_the_page_too(client):
    response = client.post(reverse("login"), {"username": "alice", "password": BIG})
    assert response.status_code == 413
    assert "The form was too large" in response.content.decode()


@override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=5)
def test_too_many_fields_get_the_page_too(alice_client, make_agent):
    agent = make_agent()
    fields = {f"f{n}": "1" for n in range(10)}
    response = alice_client.post(reverse("agents:run", args=[agent.uuid]), fields)
    assert response.status_code == 413


def test_other_bad_requests_get_the_400_page(alice_client, rf, alice):
    from config.urls import bad_request

    request = rf.get("/agents/")
    request.user = alice
    response = bad_request(request, exception=None)
    assert response.status_code == 400
    assert "This request could not be read" in response.content.decode()


def test_the_api_keeps_its_json_answers(rf):
    from django.core.exceptions import RequestDataTooBig, SuspiciousOperation

    from config.urls import bad_request

    too_large = bad_request(rf.post("/api/v1/agents"), RequestDataTooBig("too big"))
    assert too_large.status_code == 413
    assert json.loads(too_large.content)["error"]["code"] == "too_large"
    other = bad_request(rf.post("/hooks/x/"), SuspiciousOperation("odd"))
    assert other.status_code == 400
    assert json.loads(other.content)["error"]["code"] == "malformed"


def test_every_page_names_the_favicon(client):
    from django.contrib.staticfiles import finders

    html = client.get(reverse("login")).content.decode()
    assert 'rel="icon"' in html and "favicon.svg" in html
    assert finders.find("favicon.svg")


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10_000, DEBUG=True)
def test_under_debug_as_make_run_runs_a_too_large_form_still_gets_the_friendly_page(
    alice_client, make_agent
):
    agent = make_agent()
    response = alice_client.post(reverse("agents:run", args=[agent.uuid]), {"input": BIG})
    assert response.status_code == 413
    assert "The form was too large" in response.content.decode()
    assert not Execution.objects.exists()
