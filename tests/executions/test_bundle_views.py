"""The execution page's "Download support bundle" link: a JSON attachment for the run's owner,
a 404 for anyone else, the traceback for staff only (the API's download:
tests/api/test_executions_api_bundle.py; the bundle's contents: test_bundle.py)."""

import json
import re

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

TRACEBACK = "Traceback (most recent call last): KeyError: 'order'"


@pytest.fixture
def failed_run(make_agent, make_execution):
    return make_execution(make_agent(), "failed", detail=TRACEBACK)


def link_on_the_page(client, execution) -> str:
    """The href of the page's Download support bundle link (the test fails if there is none)."""
    page = client.get(reverse("executions:detail", args=[execution.uuid])).content.decode()
    match = re.search(r'<a class="btn" href="([^"]+)" download>Download support bundle</a>', page)
    assert match, "the execution page has no Download support bundle link"
    return match.group(1)


def assert_is_the_bundle_file(response, execution) -> dict:
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="conveyor-run-{execution.uuid}.json"'
    )
    assert "no-store" in response["Cache-Control"]
    bundle = json.loads(response.content)
    assert bundle["run"]["id"] == str(execution.uuid)
    return bundle


def test_the_page_links_to_the_bundle_and_the_link_downloads_it(alice_client, failed_run):
    url = link_on_the_page(alice_client, failed_run)
    assert url == reverse("executions:bundle", args=[failed_run.uuid])

    bundle = assert_is_the_bundle_file(alice_client.get(url), failed_run)

    assert bundle["about"]["generated_by"] == "alice"
    assert bundle["error"]["category"] == "internal"
    assert TRACEBACK not in json.dumps(bundle)


def test_a_succeeded_run_s_page_links_to_its_bundle_too(alice_client, make_agent, make_execution):
    run = make_execution(make_agent(), "succeeded", result={"ok": True})

    bundle = assert_is_the_bundle_file(alice_client.get(link_on_the_page(alice_client, run)), run)

    assert bundle["result"] == {"ok": True} and bundle["error"] is None


def test_staff_get_the_traceback_in_their_own_run_s_bundle(
    staff_client, staff, make_agent, make_execution
):
    run = make_execution(make_agent(owner=staff), "failed", detail=TRACEBACK)

    bundle = assert_is_the_bundle_file(staff_client.get(link_on_the_page(staff_client, run)), run)

    assert bundle["error"]["traceback"] == TRACEBACK
    assert bundle["about"]["includes_traceback"] is True


def test_another_user_s_run_is_not_found(client, bob, failed_run):
    client.force_login(bob)

    assert client.get(reverse("executions:bundle", args=[failed_run.uuid])).status_code == 404


def test_without_signing_in_there_is_no_bundle(client, failed_run):
    response = client.get(reverse("executions:bundle", args=[failed_run.uuid]))

    assert response.status_code == 302 and "/login" in response["Location"]
