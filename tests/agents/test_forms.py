"""Every page form that takes JSON reads it with the API's parser and limits
(``common.jsonbody``): what the API refuses comes back inline on the page, never as a 500, and
nothing is created."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from agents.forms import RunForm
from agents.models import Schedule
from executions.models import Execution

pytestmark = pytest.mark.django_db

# What a person might paste, and words of the inline message that says why it is refused.
BAD_JSON = {
    "nul-escape": ('{"a": "\\u0000"}', "NUL character"),
    "nul-raw": ('{"a": "x\x00y"}', "Null characters are not allowed"),
    "lone-surrogate": ('{"a": "\\ud800"}', "unpaired surrogate"),
    "nan": ('{"a": NaN}', "NaN is not a JSON number"),
    "infinity": ('{"a": Infinity}', "Infinity is not a JSON number"),
    "minus-infinity": ("-Infinity", "-Infinity is not a JSON number"),
    "huge-float": ('{"a": 1e400}', "a number too large to represent"),
    "huge-integer": ("9" * 5000, "a number too large to represent"),
    "too-deep": ("[" * 65 + "]" * 65, "nested too deeply"),
    "recursion": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "syntax": ('{"a": 1,}', "This is not valid JSON"),
}


def post_run(client, agent, text):
    return client.post(reverse("agents:run", args=[agent.uuid]), {"input": text})


def post_retry(client, execution, text):
    url = reverse("executions:retry", args=[execution.uuid])
    return client.post(url, {"input": text, "edit": "on"})


def post_schedule(client, agent, text):
    url = reverse("agents:schedule_new", args=[agent.uuid])
    data = {"kind": "interval", "interval_seconds": 60, "catch_up": "latest", "input": text}
    return client.post(url, data)


@pytest.fixture
def forms(alice_client, alice, make_agent, make_execution):
    """Each page form that takes JSON: a function that posts ``text`` as its input."""
    agent = make_agent(alice)
    failed = make_execution(agent, "failed")
    return {
        "run now": lambda text: post_run(alice_client, agent, text),
        "retry with edited input": lambda text: post_retry(alice_client, failed, text),
        "schedule": lambda text: post_schedule(alice_client, agent, text),
    }


def nothing_created() -> bool:
    # The fixture made one failed execution; a refused form adds none, and no schedule.
    return Execution.objects.count() == 1 and not Schedule.objects.exists()


@pytest.mark.parametrize("form", ["run now", "retry with edited input", "schedule"])
@pytest.mark.parametrize(("text", "words"), BAD_JSON.values(), ids=BAD_JSON.keys())
def test_a_page_form_refuses_json_the_api_refuses_inline(forms, form, text, words):
    response = forms[form](text)
    assert response.status_code == 422
    assert words in response.content.decode()
    assert nothing_created()


@override_settings(CONVEYOR_API_MAX_BODY_BYTES=1000)
@pytest.mark.parametrize("form", ["run now", "retry with edited input", "schedule"])
def test_a_page_form_refuses_json_over_the_api_size_limit(forms, form):
    response = forms[form]('{"a": "' + "x" * 2000 + '"}')
    assert response.status_code == 422
    assert "This JSON is too large (more than 1,000 bytes)." in response.content.decode()
    assert nothing_created()


@override_settings(CONVEYOR_API_MAX_BODY_BYTES=1000)
def test_json_within_the_limits_still_runs(forms):
    text, deep = "x" * 800, "[" * 60 + "]" * 60
    response = forms["run now"](f'{{"a": "{text}", "deep": {deep}}}')
    assert response.status_code == 302
    assert Execution.objects.count() == 2


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10_000)
@pytest.mark.parametrize("form", ["run now", "retry with edited input", "schedule"])
def test_a_form_bigger_than_django_reads_gets_a_page_that_says_so(forms, form):
    response = forms[form]('{"a": "' + "x" * 20_000 + '"}')
    assert response.status_code == 413
    assert "The form was too large" in response.content.decode()
    assert nothing_created()


@pytest.mark.parametrize(
    ("unit", "seconds"), [("minutes", 600), ("hours", 36000), ("seconds", 10), ("", 600)]
)
def test_start_later_reads_the_delay_in_the_unit_beside_it_minutes_by_default(unit, seconds):
    before = timezone.now()
    form = RunForm({"input": "", "delay": "10", "delay_unit": unit, "when": "later"})
    assert form.is_valid(), form.errors
    waits = form.cleaned_data["not_before"] - before
    assert timedelta(seconds=seconds) <= waits < timedelta(seconds=seconds + 5)
    assert RunForm()["delay_unit"].initial == "minutes"
