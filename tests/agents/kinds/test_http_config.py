"""The http kind's config schema (HttpConfigForm) and how a config is summarised."""

import json

import pytest
from django.test import override_settings

from agents.kinds.base import ConfigInvalid
from agents.kinds.http import HttpConfigForm, parse_statuses
from agents.kinds.http import kind as http_kind


def errors(config):
    with pytest.raises(ConfigInvalid) as caught:
        http_kind.clean_config(config)
    return caught.value.errors


def test_a_url_alone_gets_the_documented_defaults():
    config = http_kind.clean_config({"url": "https://example.com/hook"})

    assert config == {
        "method": "POST",
        "url": "https://example.com/hook",
        "headers": {},
        "secret_headers": {},
        "send_idempotency_key": False,
        "body": "input",
        "fixed_body": None,
        "timeout": 30.0,
        "expected_statuses": "200-299",
        "response_headers": "content-type",
        "keep_response": False,
    }


def test_a_cleaned_config_is_json_and_validates_to_itself():
    config = http_kind.clean_config(
        {
            "url": "example.com/api",
            "method": "patch",
            "headers": '{"Accept": "application/json"}',
            "secret_headers": {"Authorization": " api_token "},
            "body": "fixed",
            "fixed_body": '[1, {"a": null}]',
            "timeout": "2.5",
            "expected_statuses": " 2xx , 304 ",
            "response_headers": "Content-Type, X-Request-Id, content-type",
        }
    )

    assert config == json.loads(json.dumps(config))
    assert http_kind.clean_config(config) == config
    assert config["url"] == "https://example.com/api"
    assert config["method"] == "PATCH"
    assert config["secret_headers"] == {"Authorization": "api_token"}
    assert config["fixed_body"] == [1, {"a": None}]
    assert config["expected_statuses"] == "2xx,304"
    assert config["response_headers"] == "content-type,x-request-id"


def test_get_head_and_delete_send_no_body_unless_told_otherwise():
    for method in ("GET", "HEAD", "DELETE"):
        config = http_kind.clean_config({"url": "https://example.com/", "method": method})
        assert config["body"] == "none"


def test_a_blank_response_headers_field_keeps_no_headers():
    config = http_kind.clean_config({"url": "https://example.com/", "response_headers": ""})

    assert config["response_headers"] == ""


def test_the_page_form_with_its_prefix_tells_a_blank_field_from_a_missing_one():
    # The agent page renders the form with prefix="config" and posts every field.
    blank = HttpConfigForm(
        {"config-url": "https://example.com/", "config-response_headers": "", "config-body": ""},
        prefix="config",
    )
    missing = HttpConfigForm({"config-url": "https://example.com/"}, prefix="config")

    assert blank.is_valid(), blank.errors
    assert missing.is_valid(), missing.errors
    assert blank.cleaned_data["response_headers"] == ""
    assert missing.cleaned_data["response_headers"] == "content-type"
    assert blank.cleaned_data["body"] == "input"


def test_single_label_hosts_are_accepted_for_operators_who_allow_them():
    config = http_kind.clean_config({"url": "http://billing:8080/charge"})

    assert config["url"] == "http://billing:8080/charge"


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"url": ""}, "url", "Enter the address to call, such as https://example.com/hook."),
        (
            {"url": "ftp://example.com/"},
            "url",
            "Use an address that starts with http:// or https://.",
        ),
        (
            {"url": "https://user:pw@example.com/"},
            "url",
            "Do not put a user name or password in the address: it would be stored in plain "
            "sight. Store it as a secret and send it with a secret header instead.",
        ),
        (
            {"url": "https://example.com/", "method": "TRACE"},
            "method",
            "Choose one of GET, POST, PUT, PATCH, DELETE, HEAD.",
        ),
        (
            {"url": "https://example.com/", "method": "GET", "body": "input"},
            "body",
            "A GET request does not carry a body. Choose “No body”, or use POST, PUT or PATCH.",
        ),
        (
            {"url": "https://example.com/", "body": "fixed"},
            "fixed_body",
            "Enter the JSON to send, or choose another body.",
        ),
        (
            {"url": "https://example.com/", "body": "fixed", "fixed_body": '"text"'},
            "fixed_body",
            'The fixed body must be a JSON object or list, e.g. {"ping": true}.',
        ),
        (
            {"url": "https://example.com/", "headers": "{not json"},
            "headers",
            'Enter valid JSON, e.g. {"Accept": "application/json"}.',
        ),
        (
            {"url": "https://example.com/", "headers": ["Accept"]},
            "headers",
            "Headers must be a JSON object of names and values, for example "
            '{"Accept": "application/json"}.',
        ),
        (
            {"url": "https://example.com/", "headers": {"X-Count": 3}},
            "headers",
            "The value of the “X-Count” header must be text: put it in quotes.",
        ),
        (
            {"url": "https://example.com/", "headers": {"X-Evil": "a\r\nHost: b"}},
            "headers",
            "The value of the “X-Evil” header cannot contain line breaks.",
        ),
        (
            {"url": "https://example.com/", "headers": {"X-Name": "Zoë"}},
            "headers",
            "The value of the “X-Name” header can only contain plain ASCII characters "
            "(no accents or symbols).",
        ),
        (
            {"url": "https://example.com/", "headers": {"Content-Length": "5"}},
            "headers",
            "Conveyor sets the “Content-Length” header itself; remove it from the headers.",
        ),
        (
            {"url": "https://example.com/", "secret_headers": {"Bad Name": "token"}},
            "secret_headers",
            "“Bad Name” in the secret headers is not a valid header name (letters, digits and - "
            "only, as in X-Request-Id).",
        ),
        (
            {"url": "https://example.com/", "secret_headers": {"Authorization": ""}},
            "secret_headers",
            "For the “Authorization” header, give the name of one of the agent's secrets.",
        ),
        (
            {
                "url": "https://example.com/",
                "headers": {"Authorization": "x"},
                "secret_headers": {"authorization": "token"},
            },
            "secret_headers",
            "“authorization” is set both as a header and as a secret header; keep only one.",
        ),
        (
            {"url": "https://example.com/", "timeout": 0},
            "timeout",
            "Enter a number of seconds greater than 0.",
        ),
        (
            {"url": "https://example.com/", "timeout": "soon"},
            "timeout",
            "Enter a number of seconds, such as 30 or 2.5.",
        ),
        (
            {"url": "https://example.com/", "expected_statuses": "200-299, ok"},
            "expected_statuses",
            "“ok” is not a status code. Write status codes like 200, ranges like 200-299 or "
            "classes like 2xx, separated by commas.",
        ),
        (
            {"url": "https://example.com/", "expected_statuses": "299-200"},
            "expected_statuses",
            "In “299-200” the range runs backwards; write 200-299.",
        ),
        (
            {"url": "https://example.com/", "expected_statuses": "200,700"},
            "expected_statuses",
            "700 is not an HTTP status code (they run from 100 to 599).",
        ),
        (
            {"url": "https://example.com/", "response_headers": "content-type, x y"},
            "response_headers",
            "“x y” is not a header name. List names such as content-type, separated by commas.",
        ),
    ],
)
def test_invalid_configs_are_refused_with_a_plain_message(config, field, message):
    assert errors(config) == {field: [message]}


def test_the_timeout_is_capped_by_the_installation():
    with override_settings(CONVEYOR_MAX_TIMEOUT=60):
        assert errors({"url": "https://example.com/", "timeout": 61}) == {
            "timeout": ["At most 60 seconds on this installation."]
        }
        assert (
            http_kind.clean_config({"url": "https://example.com/", "timeout": 60})["timeout"]
            == 60.0
        )


def test_expected_statuses_parse_into_ranges():
    assert parse_statuses("200-299,304") == [(200, 299), (304, 304)]
    assert parse_statuses("200, 201,204") == [(200, 200), (201, 201), (204, 204)]
    assert parse_statuses("2xx") == [(200, 299)]


def test_the_summary_reads_well_and_shows_secret_headers_as_set_or_missing():
    config = http_kind.clean_config(
        {
            "url": "https://api.example.com/orders",
            "headers": {"Accept": "application/json"},
            "secret_headers": {"Authorization": "api_token", "X-Team-Key": "team_key"},
            "timeout": 10,
        }
    )
    secrets = {"api_token": "Bearer do-not-show-me"}

    summary = http_kind.summary(config, secrets=secrets)

    assert summary == [
        ("Request", "POST https://api.example.com/orders"),
        ("Headers", "Accept: application/json"),
        (
            "Secret headers",
            "Authorization: secret “api_token” (set), X-Team-Key: secret “team_key” (missing)",
        ),
        ("Body", "The run's input, as JSON"),
        ("Request timeout", "10 seconds"),
        ("Expected statuses", "200-299"),
        ("Response headers kept", "content-type"),
    ]
    assert "do-not-show-me" not in repr(summary)


# --- Addresses the outbound guard refuses, refused when the agent is saved --------------------

REFUSED = (
    "which Conveyor does not call for safety. An operator can allow it with "
    "CONVEYOR_OUTBOUND_ALLOW."
)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://127.0.0.1:8000/hook",
            "The address “127.0.0.1” is a private or internal network address (127.0.0.1 — "
            f"loopback: this machine itself), {REFUSED}",
        ),
        (
            "http://localhost/hook",
            "The address “localhost” resolves to a private or internal network address "
            f"(127.0.0.1 — loopback: this machine itself), {REFUSED}",
        ),
        (
            "https://10.1.2.3/",
            "The address “10.1.2.3” is a private or internal network address (10.1.2.3 — "
            f"a private network), {REFUSED}",
        ),
        (
            "http://169.254.169.254/latest/meta-data/",
            "The address “169.254.169.254” is a private or internal network address "
            f"(169.254.169.254 — a cloud metadata service), {REFUSED}",
        ),
        (
            "http://169.254.1.1/",
            "The address “169.254.1.1” is a private or internal network address (169.254.1.1 — "
            f"link-local), {REFUSED}",
        ),
        (
            "http://[::1]:8080/",
            "The address “::1” is a private or internal network address (::1 — loopback: this "
            f"machine itself), {REFUSED}",
        ),
    ],
)
def test_an_internal_address_is_refused_at_save_time_with_the_runs_message(url, message):
    with override_settings(CONVEYOR_OUTBOUND_ALLOW=[]):
        assert errors({"url": url}) == {"url": [message]}


def test_the_save_time_message_is_the_one_the_run_gives():
    from agents import outbound

    with override_settings(CONVEYOR_OUTBOUND_ALLOW=[]):
        with pytest.raises(outbound.OutboundBlocked) as caught:
            outbound.check_host("localhost", outbound._resolve("localhost", 80))
        assert errors({"url": "http://localhost/"}) == {"url": [caught.value.message]}


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        (["127.0.0.1"], "http://127.0.0.1:8000/hook"),
        (["127.0.0.0/8"], "http://localhost:8000/hook"),
        (["billing.internal"], "http://billing.internal/charge"),
    ],
)
def test_an_address_the_operator_allowed_is_accepted(allow, url):
    with override_settings(CONVEYOR_OUTBOUND_ALLOW=allow):
        assert http_kind.clean_config({"url": url})["url"] == url


def test_a_name_that_does_not_resolve_yet_is_left_to_the_run():
    # It may resolve only inside the workers' network; the run checks it when it connects.
    with override_settings(CONVEYOR_OUTBOUND_ALLOW=[]):
        config = http_kind.clean_config({"url": "https://not-deployed-yet.invalid/hook"})

    assert config["url"] == "https://not-deployed-yet.invalid/hook"


# --- The page's form -------------------------------------------------------------------------


def test_empty_json_fields_show_empty_boxes_not_null():
    form = HttpConfigForm(prefix="config")
    saved = HttpConfigForm(
        prefix="config", initial=http_kind.clean_config({"url": "https://example.com/"})
    )

    for page in (form, saved):
        for name in ("headers", "secret_headers", "fixed_body"):
            assert "null" not in str(page[name]), name
            assert page[name].value() in (None, "", {}), name
    assert ">{}<" not in str(saved["headers"])


def test_the_fixed_body_is_ignored_unless_the_body_is_fixed():
    config = http_kind.clean_config(
        {"url": "https://example.com/", "body": "input", "fixed_body": "{not json"}
    )

    assert config["body"] == "input"
    assert config["fixed_body"] is None


def test_the_fixed_body_is_kept_when_the_body_is_fixed():
    config = http_kind.clean_config(
        {"url": "https://example.com/", "body": "fixed", "fixed_body": '{"ping": true}'}
    )

    assert config["fixed_body"] == {"ping": True}


def test_the_request_timeout_and_the_time_limit_say_which_is_which():
    from agents.forms import AgentForm

    request_timeout = HttpConfigForm().fields["timeout"]
    time_limit = AgentForm().fields["timeout"]

    assert request_timeout.label == "Request timeout (per HTTP call, seconds)"
    assert time_limit.label == "Time limit (whole attempt, s)"
    assert "whole attempt" in request_timeout.help_text
    assert "one attempt may run in all" in time_limit.help_text
