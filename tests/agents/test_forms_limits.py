"""The agent form's queue (a choice among the declared queues), "Limits and protection" and "Logs
and retention": good values are saved, bad ones come back next to their field with the model's
message (the API's and the admin's too: agents.services.agent_validate) and nothing is saved."""

import json

import pytest
from django.urls import reverse

from agents.models import Agent
from tests.agents.test_views_notifications import function_form

pytestmark = pytest.mark.django_db

NEW_FUNCTION = reverse("agents:create", args=["function"])


@pytest.fixture
def reports(settings):
    settings.CONVEYOR_QUEUES = {
        **settings.CONVEYOR_QUEUES,
        "reports": {"description": "Long reports", "concurrency": 2},
    }
    return "reports"


def field_errors(response, name) -> list[str]:
    assert response.status_code == 422, response.content.decode()[:2000]
    return response.context["form"].errors.get(name, [])


# --- The queue ----------------------------------------------------------------------------------


def test_the_queue_is_a_choice_of_the_declared_queues_with_what_each_is_for(
    alice_client, reports, settings
):
    response = alice_client.get(NEW_FUNCTION)
    html = response.content.decode()

    assert '<select name="agent-queue"' in html
    assert '<option value="reports">reports — Long reports; at most 2 at once</option>' in html
    default = settings.CONVEYOR_EXECUTIONS_QUEUE
    assert f'<option value="{default}" selected>{default} — The default queue</option>' in html


def test_an_unknown_queue_is_refused_with_the_valid_ones_and_nothing_is_saved(
    alice_client, reports
):
    response = alice_client.post(NEW_FUNCTION, function_form(queue="nightly"))

    (message,) = field_errors(response, "queue")
    assert message.startswith("“nightly” is not one of this installation's queues. Choose one of:")
    assert "“reports” (Long reports; at most 2 at once)" in message
    assert not Agent.objects.filter(name="mailer").exists()


def test_a_declared_queue_is_saved(alice_client, reports):
    response = alice_client.post(NEW_FUNCTION, function_form(queue="reports"))
    assert response.status_code == 302
    assert Agent.objects.get(name="mailer").queue == "reports"


def test_an_agent_whose_queue_is_gone_shows_it_and_saving_asks_for_a_declared_one(
    alice_client, make_agent, reports, settings
):
    agent = make_agent(name="mailer", queue="reports")
    settings.CONVEYOR_QUEUES = {k: v for k, v in settings.CONVEYOR_QUEUES.items() if k != "reports"}
    edit = reverse("agents:edit", args=[agent.uuid])

    html = alice_client.get(edit).content.decode()
    assert "reports — no longer offered: choose another</option>" in html

    response = alice_client.post(edit, function_form(queue="reports"))
    (message,) = field_errors(response, "queue")
    assert message.startswith("“reports” is not one of this installation's queues.")

    response = alice_client.post(edit, function_form(queue=settings.CONVEYOR_EXECUTIONS_QUEUE))
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.queue == settings.CONVEYOR_EXECUTIONS_QUEUE


# --- Limits and protection, logs and retention ---------------------------------------------------

GOOD = {
    "max_concurrency": "3",
    "rate_limit": "5/min",
    "breaker_threshold": "4",
    "breaker_window": "120",
    "breaker_cooldown": "30",
    "log_level": "warning",
    "retain_succeeded_days": "7",
    "retain_failed_days": "60",
}


def test_the_sections_show_every_setting_with_its_help(alice_client, settings):
    settings.CONVEYOR_RETAIN_FAILED_DAYS = 45

    html = alice_client.get(NEW_FUNCTION).content.decode()

    assert '<fieldset id="limits"><legend>Limits and protection</legend>' in html
    assert '<fieldset id="retention"><legend>Logs and retention</legend>' in html
    for name in GOOD:
        assert f'name="agent-{name}"' in html
    assert "e.g. 5/min or 100/hour (empty: no limit)" in html
    assert (
        "The lines Conveyor writes about the run (a retry, a cancel, a saved file) are always kept."
        in html
    )
    # An empty retention is the site's, which the box shows.
    assert 'placeholder="45 (the site&#x27;s default)"' in html


def test_good_values_are_saved(alice_client):
    response = alice_client.post(NEW_FUNCTION, function_form(**GOOD))

    assert response.status_code == 302
    agent = Agent.objects.get(name="mailer")
    assert (agent.max_concurrency, agent.rate_limit) == (3, "5/min")
    assert (agent.breaker_threshold, agent.breaker_window, agent.breaker_cooldown) == (4, 120, 30)
    assert agent.log_level == "warning"
    assert (agent.retain_succeeded_days, agent.retain_failed_days) == (7, 60)


def test_empty_limits_mean_none_and_the_breaker_settings_keep_their_defaults(alice_client):
    blank = dict.fromkeys(GOOD, "")

    response = alice_client.post(NEW_FUNCTION, function_form(**blank))

    assert response.status_code == 302
    agent = Agent.objects.get(name="mailer")
    assert (agent.max_concurrency, agent.rate_limit) == (None, "")
    assert (agent.breaker_threshold, agent.breaker_window, agent.breaker_cooldown) == (0, 300, 60)
    assert agent.log_level == "debug"
    assert (agent.retain_succeeded_days, agent.retain_failed_days) == (None, None)


def test_an_empty_breaker_threshold_turns_the_breaker_off(alice_client, make_agent):
    agent = make_agent(name="mailer", breaker_threshold=3, breaker_window=60)

    response = alice_client.post(
        reverse("agents:edit", args=[agent.uuid]),
        function_form(breaker_threshold="", breaker_window=""),
    )

    assert response.status_code == 302
    agent.refresh_from_db()
    assert (agent.breaker_threshold, agent.breaker_window) == (0, 60)


BAD = {
    "max_concurrency": ("0", "Ensure this value is greater than or equal to 1."),
    "rate_limit": (
        "5 per minute",
        "“5 per minute” is not a rate: write a number of starts per sec, min, hour or day, "
        "e.g. 5/min.",
    ),
    "breaker_threshold": ("101", "Ensure this value is less than or equal to 100."),
    "breaker_window": ("0", "Ensure this value is greater than or equal to 1."),
    "breaker_cooldown": ("90000", "Ensure this value is less than or equal to 86400."),
    "log_level": ("loud", "Select a valid choice. loud is not one of the available choices."),
    "retain_succeeded_days": ("0", "Ensure this value is greater than or equal to 1."),
    "retain_failed_days": ("4000", "Ensure this value is less than or equal to 3650."),
}


@pytest.mark.parametrize(("name", "bad"), BAD.items(), ids=BAD.keys())
def test_a_bad_value_is_refused_next_to_its_field_and_nothing_is_saved(alice_client, name, bad):
    value, message = bad

    response = alice_client.post(NEW_FUNCTION, function_form(**{name: value}))

    assert field_errors(response, name) == [message]
    assert not Agent.objects.filter(name="mailer").exists()


def test_a_form_sent_without_the_new_settings_keeps_the_agent_s(alice_client, make_agent):
    agent = make_agent(name="mailer", max_concurrency=2, rate_limit="1/sec", breaker_threshold=3,
                       log_level="error", retain_failed_days=9)  # fmt: skip

    response = alice_client.post(reverse("agents:edit", args=[agent.uuid]), function_form())

    assert response.status_code == 302
    agent.refresh_from_db()
    assert (agent.max_concurrency, agent.rate_limit, agent.breaker_threshold) == (2, "1/sec", 3)
    assert (agent.log_level, agent.retain_failed_days) == ("error", 9)


def test_a_flow_s_form_leaves_out_the_breaker_and_the_log_level(alice_client, make_agent):
    make_agent(name="echo")
    html = alice_client.get(reverse("agents:create", args=["flow"])).content.decode()
    for present in ("max_concurrency", "rate_limit", "retain_succeeded_days", "retain_failed_days"):
        assert f'name="agent-{present}"' in html
    for absent in ("breaker_threshold", "breaker_window", "breaker_cooldown", "log_level"):
        assert f'name="agent-{absent}"' not in html

    response = alice_client.post(
        reverse("agents:create", args=["flow"]),
        {
            "agent-name": "nightly",
            "agent-queue": "executions",
            "agent-overlap_policy": "skip",
            "agent-max_concurrency": "1",
            "agent-retain_failed_days": "30",
            "config-steps": json.dumps([{"key": "a", "agent": "echo"}]),
            "config-result": "last",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    flow = Agent.objects.get(name="nightly")
    assert (flow.max_concurrency, flow.retain_failed_days, flow.breaker_threshold) == (1, 30, 0)


def test_the_number_fields_take_the_model_s_ranges(alice_client):
    form = alice_client.get(NEW_FUNCTION).context["form"]
    for name, (low, high) in {
        "max_concurrency": (1, 1000),
        "breaker_threshold": (0, 100),
        "breaker_window": (1, 86400),
        "breaker_cooldown": (1, 86400),
        "priority": (0, 9),
    }.items():
        attrs = form.fields[name].widget.attrs
        assert (attrs.get("min"), attrs.get("max")) == (low, high), name


def test_a_new_function_agent_has_no_function_chosen_for_it(alice_client):
    html = alice_client.get(NEW_FUNCTION).content.decode()
    select = html[html.index('name="config-function"') :]
    select = select[: select.index("</select>")]
    assert '<option value="" selected>Choose a function…</option>' in select
    assert select.count("selected") == 1

    response = alice_client.post(NEW_FUNCTION, {**function_form(), "config-function": ""})
    assert response.status_code == 422
    assert "This field is required." in response.content.decode()
