"""The executions list's filters (ExecutionFilterForm, executions.selectors.executions_search):
search by id and text, error category and duration, on top of keyset pages and a constant
number of queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from executions.forms import ExecutionFilterForm

pytestmark = pytest.mark.django_db

LIST = reverse("executions:list")


def listed(client, **params) -> list[int]:
    response = client.get(LIST, params)
    assert response.status_code == 200
    return [e.pk for e in response.context["rows"]]


@pytest.fixture
def runs(alice, make_agent, make_execution):
    """A few finished runs of alice's two agents, named by what tells them apart."""
    sync, report = make_agent(alice, name="nightly-sync"), make_agent(alice, name="Relevé")
    return {
        "fast": make_execution(sync, "succeeded", seconds=0.5),
        "slow": make_execution(sync, "succeeded", seconds=30),
        "auth": make_execution(
            report, "failed", error_category="auth", reason="The token was refused by Ledger."
        ),
        "timeout": make_execution(report, "failed", error_category="timeout", seconds=5),
    }


def test_searching_a_whole_id_finds_that_run(alice_client, runs):
    wanted = runs["slow"]
    assert listed(alice_client, q=str(wanted.uuid)) == [wanted.pk]
    assert listed(alice_client, q=f"  {str(wanted.uuid).upper()} ") == [wanted.pk]


def test_searching_the_start_of_an_id_finds_that_run(alice_client, runs):
    wanted = runs["auth"]
    assert wanted.pk in listed(alice_client, q=str(wanted.uuid)[:8])
    assert runs["fast"].pk not in listed(alice_client, q=str(wanted.uuid)[:13])


def test_searching_words_finds_them_in_the_agent_name_and_the_error(alice_client, runs):
    assert set(listed(alice_client, q="SYNC")) == {runs["fast"].pk, runs["slow"].pk}
    assert listed(alice_client, q="refused by ledger") == [runs["auth"].pk]
    assert set(listed(alice_client, q="Relevé")) == {runs["auth"].pk, runs["timeout"].pk}
    assert listed(alice_client, q="nothing like this") == []


def test_searching_never_shows_someone_elses_runs(bob, make_agent, make_execution, alice_client):
    theirs = make_execution(make_agent(bob, name="nightly-sync"), "succeeded")
    assert listed(alice_client, q="nightly") == []
    assert listed(alice_client, q=str(theirs.uuid)) == []


def test_filtering_by_error_category(alice_client, runs):
    assert listed(alice_client, error_category="auth") == [runs["auth"].pk]
    assert listed(alice_client, error_category="timeout") == [runs["timeout"].pk]


def test_filtering_by_duration(alice_client, runs):
    assert listed(alice_client, slower_than="10") == [runs["slow"].pk]
    assert runs["fast"].pk in listed(alice_client, faster_than="1")
    assert runs["slow"].pk not in listed(alice_client, faster_than="1")
    between = listed(alice_client, slower_than="1", faster_than="10")
    assert runs["timeout"].pk in between and runs["slow"].pk not in between


def test_an_impossible_duration_range_is_explained_and_ignored(alice_client, runs):
    response = alice_client.get(LIST, {"slower_than": "10", "faster_than": "5"})
    assert "No run can be that quick and that slow at once." in response.content.decode()
    assert len(response.context["rows"]) == len(runs)


@pytest.mark.parametrize(
    "params", [{"slower_than": "-1"}, {"slower_than": "nan"}, {"faster_than": "1e400"}]
)
def test_nonsense_durations_are_refused_without_an_error_page(alice_client, runs, params):
    response = alice_client.get(LIST, params)
    assert response.status_code == 200
    assert response.context["form"].errors


def test_the_new_filters_show_in_the_form(alice_client, runs):
    html = alice_client.get(LIST).content.decode()
    for name in ("q", "error_category", "slower_than", "faster_than"):
        assert f'name="{name}"' in html


def test_filters_keep_keyset_pages(alice_client, make_agent, make_execution, alice):
    agent = make_agent(alice, name="many")
    for _ in range(55):
        make_execution(agent, "failed", error_category="auth")
    first = alice_client.get(LIST, {"q": "many", "error_category": "auth"})
    assert len(first.context["rows"]) == 50 and first.context["next_cursor"]
    assert "q=many" in first.context["filter_query"]
    second = alice_client.get(
        LIST, {"q": "many", "error_category": "auth", "after": first.context["next_cursor"]}
    )
    assert len(second.context["rows"]) == 5


def test_the_filtered_list_runs_a_constant_number_of_queries(
    alice_client, make_agent, make_execution, alice, django_assert_max_num_queries
):
    params = {"q": "agent", "error_category": "auth", "slower_than": "0", "faster_than": "60"}

    def fill(count):
        agent = make_agent(alice)
        for _ in range(count):
            make_execution(agent, "failed", error_category="auth")

    fill(2)
    with CaptureQueriesContext(connection) as small:
        assert alice_client.get(LIST, params).status_code == 200
    fill(20)
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert len(alice_client.get(LIST, params).context["rows"]) == 22


def test_an_unbound_form_is_not_active(alice):
    assert not ExecutionFilterForm(None, owner=alice).active
    assert ExecutionFilterForm({"q": "x"}, owner=alice).active


def test_filtering_by_several_statuses_lists_each_run_once_without_distinct(alice_client, runs):
    """The choice filters select on the run's own columns: no DISTINCT, which would sort every
    matching row of a big table before the page's limit."""
    with CaptureQueriesContext(connection) as queries:
        found = listed(alice_client, status=["failed", "succeeded"], trigger=["manual", "api"])
    assert sorted(found) == sorted(r.pk for r in runs.values() if r.trigger in ("manual", "api"))
    assert found and len(found) == len(set(found))
    assert not any("DISTINCT" in q["sql"] for q in queries.captured_queries)
