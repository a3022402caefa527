"""The agent admin's queue (the declared queues), "Limits and protection" and "Logs and
retention": saved through agents.services, refused with the page's and the API's messages."""

from __future__ import annotations

import pytest

from tests.agents.test_admin_services import change_url, post_form
from tests.agents.test_forms_limits import BAD

pytestmark = pytest.mark.django_db


def test_the_change_form_groups_the_settings_and_offers_the_declared_queues(
    staff_client, make_agent, settings
):
    agent = make_agent()

    response = staff_client.get(change_url(agent))

    html = response.content.decode()
    assert "Limits and protection" in html and "Logs and retention" in html
    for name in BAD:
        assert f'name="{name}"' in html
    default = settings.CONVEYOR_EXECUTIONS_QUEUE
    assert f'<option value="{default}" selected>{default} — The default queue</option>' in html


def test_good_values_are_saved(staff_client, make_agent):
    agent = make_agent()

    response = post_form(
        staff_client, change_url(agent),
        max_concurrency="2", rate_limit="10/hour", breaker_threshold="3", breaker_window="60",
        breaker_cooldown="15", log_level="info", retain_succeeded_days="3",
        retain_failed_days="",
    )  # fmt: skip

    assert response.status_code == 302, response.context["adminform"].form.errors
    agent.refresh_from_db()
    assert (agent.max_concurrency, agent.rate_limit, agent.breaker_threshold) == (2, "10/hour", 3)
    assert (agent.breaker_window, agent.breaker_cooldown, agent.log_level) == (60, 15, "info")
    assert (agent.retain_succeeded_days, agent.retain_failed_days) == (3, None)


@pytest.mark.parametrize(
    "name", ["max_concurrency", "rate_limit", "breaker_window", "log_level", "retain_failed_days"]
)
def test_a_bad_value_gets_the_page_s_message(staff_client, make_agent, name):
    agent = make_agent()
    value, message = BAD[name]

    response = post_form(staff_client, change_url(agent), **{name: value})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors[name] == [message]
    agent.refresh_from_db()
    assert getattr(agent, name) != value


def test_an_unknown_queue_is_refused_with_the_declared_ones(staff_client, make_agent):
    agent = make_agent()

    response = post_form(staff_client, change_url(agent), queue="nightly")

    assert response.status_code == 200
    (message,) = response.context["adminform"].form.errors["queue"]
    assert message.startswith("“nightly” is not one of this installation's queues. Choose one of:")
