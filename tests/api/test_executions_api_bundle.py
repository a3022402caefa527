"""GET /api/v1/executions/<id>/bundle: the run's support bundle as a JSON attachment, for its
owner; the traceback for staff only; 404 for anyone else's run (the page's link:
tests/executions/test_bundle_views.py; the contents: tests/executions/test_bundle.py)."""

import json

import pytest

from tests.api.conftest import ApiClient

pytestmark = pytest.mark.django_db

TRACEBACK = "Traceback (most recent call last): KeyError: 'order'"


@pytest.fixture
def failed_run(make_agent, make_execution):
    return make_execution(make_agent(), "failed", detail=TRACEBACK)


def bundle_url(execution) -> str:
    return f"/api/v1/executions/{execution.uuid}/bundle"


def test_the_owner_downloads_the_bundle_as_a_json_file(api, failed_run):
    response = api.get(bundle_url(failed_run))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="conveyor-run-{failed_run.uuid}.json"'
    )
    bundle = json.loads(response.content)
    assert bundle["run"]["id"] == str(failed_run.uuid)
    assert bundle["about"]["generated_by"] == "alice"
    assert bundle["error"]["category"] == "internal"
    assert TRACEBACK not in response.content.decode()


def test_staff_get_the_traceback_in_their_own_run_s_bundle(
    staff, make_agent, make_execution, make_token
):
    run = make_execution(make_agent(owner=staff), "failed", detail=TRACEBACK)

    response = ApiClient(make_token(staff)).get(bundle_url(run))

    assert response.status_code == 200
    assert json.loads(response.content)["error"]["traceback"] == TRACEBACK


def test_another_user_s_run_is_not_found(bob_api, failed_run):
    response = bob_api.get(bundle_url(failed_run))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_unknown_or_malformed_id_is_not_found(api):
    assert api.get("/api/v1/executions/not-a-uuid/bundle").status_code == 404
    unknown = api.get("/api/v1/executions/5b7c3f0e-0000-4000-8000-000000000000/bundle")
    assert unknown.status_code == 404


def test_without_a_token_there_is_no_bundle(anonymous_api, failed_run):
    assert anonymous_api.get(bundle_url(failed_run)).status_code == 401
