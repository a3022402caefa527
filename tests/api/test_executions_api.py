"""Executions through the API: filtered cursor pages, the detail with its friendly error,
logs, retry and cancel."""

from datetime import timedelta

import pytest
from django.utils import timezone

from executions.models import Execution, ExecutionLog
from executions.services import execution_request
from tests.conftest import error_of, utc

from .conftest import ApiClient

pytestmark = pytest.mark.django_db

EXECUTIONS = "/api/v1/executions"


def url(execution, suffix=""):
    return f"{EXECUTIONS}/{execution.uuid}{suffix}"


@pytest.fixture
def failed(make_execution):
    """``failed(agent)``: an API run that could not reach its service on any of its attempts."""

    def make(agent, *, seconds=1.5):
        return make_execution(
            agent,
            "failed",
            trigger="api",
            input={"n": 1},
            attempt=agent.max_retries + 1,
            seconds=seconds,
            error_category="network",
            reason="Connection refused by example.com.",
            detail="Traceback (most recent call last): secret-sauce",
        )

    return make


def test_the_detail_has_status_progress_attempts_timings_and_a_friendly_error(
    api, make_agent, failed, alice
):
    execution = failed(make_agent(alice, max_retries=2), seconds=2.5)
    body = api.get(url(execution)).json()
    assert body["id"] == str(execution.uuid)
    assert body["status"] == "failed" and body["status_label"] == "Failed after 3 attempts"
    assert body["is_final"] is True
    assert (body["attempt"], body["max_attempts"], body["progress"]) == (3, 3, 0)
    assert body["duration_seconds"] == 2.5
    assert body["error"]["category"] == "network"
    assert body["error"]["title"] == "Could not reach the service"
    assert body["error"]["message"].startswith("Connection refused by example.com. No attempts")
    assert body["error"]["what_to_do"]
    assert "error_detail" not in body
    assert "secret-sauce" not in api.get(url(execution)).content.decode()
    assert "secret-sauce" not in api.get(EXECUTIONS).content.decode()


def test_staff_see_the_traceback_of_their_own_executions(staff, make_agent, make_token, failed):
    execution = failed(make_agent(staff))
    body = ApiClient(make_token(staff)).get(url(execution)).json()
    assert body["error_detail"].endswith("secret-sauce")


def test_a_queued_execution_has_no_error(api, make_agent, alice):
    body = api.get(url(execution_request(agent=make_agent(alice), trigger="api"))).json()
    assert body["error"] is None and body["status_label"] == "Queued"


def test_the_list_filters_by_status_agent_trigger_and_time(api, make_agent, alice, failed):
    a, b = make_agent(alice, name="a"), make_agent(alice, name="b")
    old = execution_request(agent=a, trigger="schedule", at=timezone.now() - timedelta(days=3))
    queued = execution_request(agent=a, trigger="api")
    from_hook = execution_request(agent=b, trigger="webhook")
    broken = failed(b)

    def ids(**params):
        response = api.client.get(EXECUTIONS, params)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids() == {str(e.uuid) for e in (old, queued, from_hook, broken)}
    assert ids(status="failed") == {str(broken.uuid)}
    assert ids(status=["failed", "queued"]) == {
        str(e.uuid) for e in (old, queued, from_hook, broken)
    }
    assert ids(agent=str(a.uuid)) == {str(old.uuid), str(queued.uuid)}
    assert ids(trigger="webhook") == {str(from_hook.uuid)}
    yesterday = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(created_after=yesterday, agent=str(a.uuid)) == {str(queued.uuid)}
    assert ids(created_before=yesterday) == {str(old.uuid)}


def test_date_filters_take_any_offset_python_reads(api, make_agent, make_execution, alice):
    # 11:47 UTC on the 2nd. PostgreSQL refuses offsets past 15:59: the filter converts to UTC.
    execution = make_execution(make_agent(alice), "succeeded", at=utc(2026, 1, 2, 12))
    response = api.get(EXECUTIONS, {"created_after": "2026-01-01T19:00:00-16:47"})
    assert response.status_code == 200, response.content
    assert [row["id"] for row in response.json()["results"]] == [str(execution.uuid)]
    response = api.get(EXECUTIONS, {"created_before": "2026-01-01T19:00:00-16:47"})
    assert response.json()["results"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "exploded"}, "status"),
        ({"agent": "not-a-uuid"}, "agent"),
        ({"created_after": "last tuesday"}, "created_after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "5000"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "WyJ4Il0"}, "cursor"),  # a list of the wrong length
    ],
)
def test_bad_query_parameters_are_a_400_naming_them(api, params, field):
    response = api.get(EXECUTIONS, params)
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "invalid_query"
    assert field in error["details"]


def test_cursor_pages_walk_every_execution_once_newest_first(api, make_agent, alice):
    agent = make_agent(alice)
    now = timezone.now()
    made = []
    for n in range(7):
        # Two share a timestamp: the id breaks the tie.
        execution = execution_request(
            agent=agent, trigger="api", at=now - timedelta(minutes=n // 2)
        )
        made.append(execution)
    seen, page = [], api.get(EXECUTIONS, {"limit": 3}).json()
    while True:
        seen += [row["id"] for row in page["results"]]
        if not page["next"]:
            break
        page = api.get(page["next"]).json()
    expected = sorted(made, key=lambda e: (now - timedelta(minutes=made.index(e) // 2), e.pk))
    assert seen == [str(e.uuid) for e in reversed(expected)]


def test_logs_come_oldest_first_in_pages(api, make_agent, alice):
    execution = execution_request(agent=make_agent(alice), trigger="api")
    for n in range(5):
        ExecutionLog.objects.create(
            execution=execution, attempt=1, at=timezone.now(), level="info", message=f"line {n}"
        )
    first = api.get(url(execution, "/logs"), {"limit": 3}).json()
    assert [line["message"] for line in first["results"]] == ["line 0", "line 1", "line 2"]
    second = api.get(first["next"]).json()
    assert [line["message"] for line in second["results"]] == ["line 3", "line 4"]
    assert second["next"] is None


def test_retry_creates_a_new_execution_with_the_same_or_a_new_input(api, make_agent, alice, failed):
    original = failed(make_agent(alice))
    same = api.post(url(original, "/retry"))
    assert same.status_code == 201, same.content
    assert same["Location"] == same.json()["url"]
    new = Execution.objects.get(uuid=same.json()["id"])
    assert (new.retry_of, new.input, new.trigger) == (original, {"n": 1}, "retry")
    assert same.json()["retry_of"] == str(original.uuid)
    original.refresh_from_db()
    assert original.status == "failed"


def test_retry_with_a_new_input(api, make_agent, alice, failed):
    original = failed(make_agent(alice))
    edited = api.post(url(original, "/retry"), {"input": {"n": 2}}).json()
    assert Execution.objects.get(uuid=edited["id"]).input == {"n": 2}


def test_an_execution_already_retried_is_a_409_naming_its_retry(api, make_agent, alice, failed):
    original = failed(make_agent(alice))
    first = api.post(url(original, "/retry")).json()
    again = api.post(url(original, "/retry"), {"input": {"n": 2}})
    assert again.status_code == 409
    assert error_of(again)["code"] == "already_retried"
    assert first["id"] in error_of(again)["message"]
    assert original.retried_as.count() == 1


def test_retrying_with_an_input_the_agent_refuses_is_a_422(api, make_agent, alice, failed):
    original = failed(make_agent(alice, config={"function": "demo.slow"}))
    response = api.post(url(original, "/retry"), {"input": {"seconds": "x"}})
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_input"


def test_retrying_an_active_execution_is_a_409(api, make_agent, alice):
    execution = execution_request(agent=make_agent(alice), trigger="api")
    response = api.post(url(execution, "/retry"))
    assert response.status_code == 409
    assert error_of(response)["code"] == "not_retryable"


def test_cancel_is_accepted_once_then_409(api, make_agent, alice):
    execution = execution_request(agent=make_agent(alice), trigger="api")
    response = api.post(url(execution, "/cancel"))
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    again = api.post(url(execution, "/cancel"))
    assert again.status_code == 409
    assert error_of(again)["code"] == "already_finished"
