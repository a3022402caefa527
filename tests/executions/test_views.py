"""The execution pages, through Django's test client: the live part, cancel, retry, the list
(browser tests live in test_views_browser.py)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from executions.models import Execution
from executions.services import execution_cancel, execution_request

pytestmark = pytest.mark.django_db


def test_the_live_fragment_polls_while_active_and_stops_when_final(alice_client, make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")
    live = reverse("executions:live", args=[execution.uuid])
    assert 'hx-trigger="every 1s' in alice_client.get(live).content.decode()
    execution_cancel(execution=execution)
    final = alice_client.get(live).content.decode()
    assert "hx-trigger" not in final and "Cancelled" in final


def test_cancel_from_the_page_returns_the_updated_fragment(alice_client, make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")
    response = alice_client.post(
        reverse("executions:cancel", args=[execution.uuid]), HTTP_HX_REQUEST="true"
    )
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert 'data-status="cancelled"' in response.content.decode()


def test_retry_with_edited_input_lands_on_the_new_execution(alice_client, make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual", input={"v": 1})
    execution_cancel(execution=execution)
    response = alice_client.post(
        reverse("executions:retry", args=[execution.uuid]),
        {"edit": "1", "input": '{"v": 2}'},
        HTTP_HX_REQUEST="true",
    )
    new = Execution.objects.exclude(pk=execution.pk).get()
    assert new.input == {"v": 2} and new.retry_of == execution
    assert response["HX-Redirect"] == reverse("executions:detail", args=[new.uuid])


def test_retry_with_broken_json_says_so_and_creates_nothing(alice_client, make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual", input={"v": 1})
    execution_cancel(execution=execution)
    response = alice_client.post(
        reverse("executions:retry", args=[execution.uuid]),
        {"edit": "1", "input": "{v: 2}"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 422
    assert "This is not valid JSON" in response.content.decode()
    assert Execution.objects.count() == 1


def test_the_traceback_is_for_staff_only(client, alice, staff, make_agent, make_execution):
    def broken(owner):
        return make_execution(
            make_agent(owner),
            "failed",
            reason="It broke.",
            detail="Traceback (most recent call last): secret-sauce",
        )

    client.force_login(alice)
    page = client.get(reverse("executions:detail", args=[broken(alice).uuid])).content.decode()
    assert "It broke." in page and "secret-sauce" not in page
    # Staff who own an execution see the traceback on the page too.
    client.force_login(staff)
    page = client.get(reverse("executions:detail", args=[broken(staff).uuid])).content.decode()
    assert "secret-sauce" in page


def test_the_executions_list_filters_and_pages_by_keyset(alice_client, make_agent):
    a, b = make_agent(name="a-one"), make_agent(name="b-two")
    for _ in range(55):
        execution_request(agent=a, trigger="manual")
    cancelled = execution_request(agent=b, trigger="api")
    execution_cancel(execution=cancelled)

    first = alice_client.get(reverse("executions:list"))
    assert first.context["next_cursor"] and len(first.context["rows"]) == 50
    second = alice_client.get(reverse("executions:list"), {"after": first.context["next_cursor"]})
    assert len(second.context["rows"]) == 6
    seen = {e.pk for e in first.context["rows"]} | {e.pk for e in second.context["rows"]}
    assert len(seen) == 56

    only = alice_client.get(reverse("executions:list"), {"status": "cancelled", "trigger": "api"})
    assert [e.pk for e in only.context["rows"]] == [cancelled.pk]
    by_agent = alice_client.get(reverse("executions:list"), {"agent": str(b.uuid)})
    assert [e.pk for e in by_agent.context["rows"]] == [cancelled.pk]
    bad_cursor = alice_client.get(reverse("executions:list"), {"after": "!!garbage!!"})
    assert bad_cursor.status_code == 200 and len(bad_cursor.context["rows"]) == 50


@pytest.mark.parametrize("url_name", ["home", "agents:list", "executions:list"])
def test_list_pages_run_a_constant_number_of_queries(
    alice_client, make_agent, django_assert_max_num_queries, url_name
):
    def fill(agents, runs):
        for i in range(agents):
            agent = make_agent(name=f"{url_name.replace(':', '-')}-{agents}-{i}")
            for _ in range(runs):
                execution_request(agent=agent, trigger="manual")

    fill(2, 2)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as small:
        assert alice_client.get(reverse(url_name)).status_code == 200
    fill(6, 8)
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert alice_client.get(reverse(url_name)).status_code == 200


def test_pages_explain_themselves_when_empty(alice_client):
    assert "No agents yet" in alice_client.get("/").content.decode()
    assert "No executions yet" in alice_client.get(reverse("executions:list")).content.decode()


def test_an_unknown_page_is_a_friendly_404(alice_client):
    response = alice_client.get("/executions/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404


def test_the_list_says_on_hover_why_a_queued_run_waits(alice_client, make_agent):
    start = timezone.now() + timedelta(hours=1)
    execution_request(agent=make_agent(), trigger="api", not_before=start)
    html = alice_client.get(reverse("executions:list")).content.decode()
    assert 'data-status="queued" title="Delayed until its start time (until ' in html


def test_a_retrying_run_says_it_is_waiting_and_that_the_wait_is_randomised(
    alice_client, make_agent, make_execution
):
    execution = make_execution(make_agent(retry_jitter=True), "retrying", ago=timedelta(0))
    html = alice_client.get(reverse("executions:detail", args=[execution.uuid])).content.decode()
    assert "now waiting" in html and "then waited" not in html
    assert "the wait is randomised" in html


def test_a_finished_run_says_how_long_each_wait_was(alice_client, make_agent, make_execution):
    execution = make_execution(make_agent(retry_jitter=False), "succeeded", attempt=2)
    html = alice_client.get(reverse("executions:detail", args=[execution.uuid])).content.decode()
    assert "then waited" in html and "now waiting" not in html


def test_a_delayed_run_is_listed_as_starting_in_a_while_on_every_list(alice_client, make_agent):
    agent = make_agent()
    start = timezone.now() + timedelta(minutes=19, seconds=10)
    execution_request(agent=agent, trigger="manual", not_before=start)
    lists = ("home",), ("executions:list",), ("agents:detail", agent.uuid)
    for name, *args in lists:
        html = alice_client.get(reverse(name, args=args)).content.decode()
        assert ">starts in 19 min</time>" in html, name
        assert "queued <time" not in html, name


def test_a_running_attempt_whose_worker_went_silent_says_what_happens_next(
    alice_client, make_agent, make_execution, settings
):
    settings.CONVEYOR_HEARTBEAT_INTERVAL = 5
    settings.CONVEYOR_HEARTBEAT_TIMEOUT = 20
    execution = make_execution(make_agent(max_retries=2), "running", ago=timedelta(seconds=30))
    live = reverse("executions:live", args=[execution.uuid])

    Execution.objects.filter(pk=execution.pk).update(heartbeat_at=timezone.now())
    assert 'id="worker-silent"' not in alice_client.get(live).content.decode()

    silent_since = timezone.now() - timedelta(seconds=14)
    Execution.objects.filter(pk=execution.pk).update(heartbeat_at=silent_since)
    page = alice_client.get(live).content.decode()
    assert "No sign of life from its worker for 14 s" in page
    assert "within 20 s of the last one, the attempt is taken for lost and retried" in page
