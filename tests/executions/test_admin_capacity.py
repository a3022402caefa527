"""The admin of capacity: destinations (limits operators set per host), the limits' state
(read-only, with an action that closes breakers), and an execution's wait explained."""

from __future__ import annotations

from datetime import timedelta
from html import unescape

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from executions.models import Destination, Execution, Limiter

pytestmark = pytest.mark.django_db

DESTINATIONS = "/admin/executions/destination/"
LIMITERS = "/admin/executions/limiter/"


def limiter(key: str, **state) -> Limiter:
    return Limiter.objects.update_or_create(key=key, defaults=state)[0]


# --- Destinations -------------------------------------------------------------------------------


def test_operators_add_a_destination_with_help_on_every_field(staff_client):
    form = staff_client.get(f"{DESTINATIONS}add/")
    assert form.status_code == 200
    html = unescape(form.content.decode())
    assert "Every http agent calling it shares these limits." in html
    assert "Seconds within which those failures count as in a row." in html

    response = staff_client.post(
        f"{DESTINATIONS}add/",
        {
            "host": "API.Example.com",
            "rate_limit": "5 / MINUTE",  # kept as 5/min
            "breaker_threshold": 3,
            "breaker_window": 300,
            "breaker_cooldown": 60,
            "note": "Their documented quota",
        },
    )

    assert response.status_code == 302
    destination = Destination.objects.get()
    assert (destination.host, destination.rate_limit) == ("api.example.com", "5/min")


@pytest.mark.parametrize(
    "host",
    ["https://api.example.com", "api.example.com:443", "api.example.com/v1", "", "a b.com", "x..y"],
)
def test_a_host_written_as_a_url_is_refused_with_what_to_write(staff_client, host):
    response = staff_client.post(
        f"{DESTINATIONS}add/",
        {"host": host, "breaker_threshold": 0, "breaker_window": 300, "breaker_cooldown": 60},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["host"]
    assert not Destination.objects.exists()


def test_a_wildcard_host_is_refused_saying_a_destination_is_one_host(staff_client):
    response = staff_client.post(
        f"{DESTINATIONS}add/",
        {"host": "*.example.com", "breaker_threshold": 0, "breaker_window": 300,
         "breaker_cooldown": 60},
    )  # fmt: skip
    assert response.status_code == 200
    [message] = response.context["adminform"].form.errors["host"]
    assert "wildcards are not matched" in message
    assert not Destination.objects.exists()


def test_a_bad_rate_is_refused(staff_client):
    response = staff_client.post(
        f"{DESTINATIONS}add/",
        {
            "host": "api.example.com",
            "rate_limit": "lots",
            "breaker_threshold": 0,
            "breaker_window": 300,
            "breaker_cooldown": 60,
        },
    )
    assert "is not a rate" in unescape(response.content.decode())


@pytest.mark.parametrize(
    ("field", "value"),
    [("breaker_window", 0), ("breaker_window", 86401), ("breaker_cooldown", 0),
     ("breaker_cooldown", 86401), ("breaker_threshold", 101)],
)  # fmt: skip
def test_breaker_settings_out_of_range_are_refused_as_for_an_agent(staff_client, field, value):
    fields = {"host": "api.example.com", "breaker_threshold": 3, "breaker_window": 300}
    response = staff_client.post(
        f"{DESTINATIONS}add/", {**fields, "breaker_cooldown": 60, field: value}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field]
    assert not Destination.objects.exists()


def test_the_list_is_searchable_and_shows_each_breaker_now(staff_client):
    Destination.objects.create(host="api.example.com", rate_limit="5/min", breaker_threshold=3)
    Destination.objects.create(host="other.example.org")
    limiter("host:api.example.com", state=Limiter.State.OPEN, failures=3)

    response = staff_client.get(DESTINATIONS, {"q": "example.com"})

    assert response.status_code == 200
    assert [d.host for d in response.context["cl"].result_list] == ["api.example.com"]
    html = response.content.decode()
    assert "after 3 failures in 5 min, cool-down 1 min" in html and ">Open<" in html
    change = staff_client.get(f"{DESTINATIONS}{Destination.objects.first().pk}/change/")
    assert change.status_code == 200


# --- Limiters ----------------------------------------------------------------------------------


def test_the_limits_state_is_read_only(staff_client):
    row = limiter(
        "host:api.example.com",
        state=Limiter.State.OPEN,
        failures=3,
        last_failure="503",
        probe_at=timezone.now() + timedelta(minutes=1),
    )

    assert staff_client.get(LIMITERS).status_code == 200
    change = staff_client.get(f"{LIMITERS}{row.pk}/change/")
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()
    assert staff_client.get(f"{LIMITERS}add/").status_code == 403
    assert staff_client.post(f"{LIMITERS}{row.pk}/delete/").status_code == 403


def test_the_list_names_whose_limit_each_row_is_and_hides_a_closed_breaker_s_past(
    staff_client, make_agent
):
    agent = make_agent(name="mailer", breaker_threshold=3)
    long_ago = timezone.now() - timedelta(days=2)
    limiter(
        f"agent:{agent.uuid}",
        state=Limiter.State.CLOSED,
        failures=0,
        opened_at=long_ago,
        last_failure="The service answered 503 a while ago.",
    )
    limiter("queue:reports")
    limiter("agent:00000000-0000-0000-0000-000000000000")

    html = unescape(staff_client.get(LIMITERS).content.decode())

    change = reverse("admin:agents_agent_change", args=[agent.pk])
    assert f'the agent <a href="{change}">alice/mailer</a>' in html
    assert "the queue “reports”" in html
    assert "a deleted agent (00000000-0000-0000-0000-000000000000)" in html
    assert "503 a while ago" not in html  # closed: its last failure is history
    assert f"{timezone.localtime(long_ago):%Y-%m-%d %H:%M}" not in html


def test_the_list_reads_its_agents_in_one_query_whatever_their_number(
    staff_client, make_agent, django_assert_max_num_queries
):
    first = limiter(f"agent:{make_agent(name='first').uuid}", state=Limiter.State.OPEN)
    with CaptureQueriesContext(connection) as one:
        assert staff_client.get(LIMITERS).status_code == 200
    for n in range(6):
        limiter(f"agent:{make_agent(name=f'more-{n}').uuid}", state=Limiter.State.OPEN)
    with django_assert_max_num_queries(len(one.captured_queries)):
        html = staff_client.get(LIMITERS).content.decode()
    assert all(f"alice/more-{n}" in html for n in range(6))
    assert "alice/first" in staff_client.get(f"{LIMITERS}{first.pk}/change/").content.decode()


def test_an_action_closes_the_selected_breakers_and_says_which_were_not_open(
    staff_client, make_agent, make_execution
):
    agent = make_agent(breaker_threshold=3)
    key = f"agent:{agent.uuid}"
    opened = limiter(key, state=Limiter.State.OPEN, failures=3, opened_at=timezone.now())
    closed = limiter("host:fine.example.com", state=Limiter.State.CLOSED)
    run = make_execution(agent, "queued")
    Execution.objects.filter(pk=run.pk).update(wait_reason="circuit", waits_on=key)

    response = staff_client.post(
        LIMITERS,
        {"action": "close_selected", ACTION_CHECKBOX_NAME: [opened.pk, closed.pk], "index": 0},
        follow=True,
    )

    assert [m.message for m in response.context["messages"]] == [
        "1 closed. 1 skipped: not open (1)."
    ]
    opened.refresh_from_db()
    run.refresh_from_db()
    assert opened.state == Limiter.State.CLOSED and run.wait_reason != "circuit"


# --- An execution's wait ------------------------------------------------------------------------


def test_an_executions_page_explains_its_wait_with_the_runs_it_waits_for(
    staff_client, make_agent, make_execution
):
    agent = make_agent(max_concurrency=1)
    holder = make_execution(agent, "running")
    run = make_execution(agent, "queued")
    Execution.objects.filter(pk=run.pk).update(wait_reason="slot", waits_on=f"agent:{agent.uuid}")

    response = staff_client.get(reverse("admin:executions_execution_change", args=[run.pk]))

    html = unescape(response.content.decode())
    assert "Waiting for a slot: 1 of 1 busy." in html
    assert reverse("admin:executions_execution_change", args=[holder.pk]) in html
    assert f"agent:{agent.uuid}" in html
