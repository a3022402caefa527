"""The http kind's Idempotency-Key option, run in this process against a real local server.

That the key is the same on every attempt of an execution and new for a manual retry is the
runner's part: tests/executions/test_runner_idempotency_key.py and the end-to-end test
test_http_idempotency_e2e.py check it with the real context.
"""

import pytest
from werkzeug import Response

from agents.kinds.base import ConfigurationError
from agents.kinds.http import kind as http_kind
from tests.agents.conftest import http_context, local_url

pytestmark = pytest.mark.usefixtures("allow_local")

KEY = "conveyor-0b8f6c1e-5d2a-4f7e-9c3b-1a2b3c4d5e6f"


def run(config, input=None, *, key=KEY, **kwargs):
    ctx = http_context(config, **kwargs)
    ctx.idempotency_key = key  # what ExecutionContext gives every attempt of one execution
    return http_kind.run(ctx, input), ctx


def sent_keys(server):
    return [request.headers.get("Idempotency-Key") for request, _ in server.log]


def test_with_the_option_on_the_request_carries_the_runs_key(httpserver):
    httpserver.expect_request(
        "/charge", method="POST", headers={"Idempotency-Key": KEY}, json={"amount": 5}
    ).respond_with_json({"charged": True})
    config = {"url": local_url(httpserver, "/charge"), "send_idempotency_key": True}

    result, _ = run(config, {"amount": 5})

    assert result["body"] == {"charged": True}
    assert sent_keys(httpserver) == [KEY]


def test_without_the_option_no_idempotency_key_is_sent(httpserver):
    httpserver.expect_request("/charge").respond_with_data("ok")

    run({"url": local_url(httpserver, "/charge")})

    assert sent_keys(httpserver) == [None]


def test_each_attempt_sends_the_key_it_is_given_even_after_a_failure(httpserver):
    httpserver.expect_oneshot_request("/charge").respond_with_data("down", status=503)
    httpserver.expect_request("/charge").respond_with_data("ok")
    config = {"url": local_url(httpserver, "/charge"), "send_idempotency_key": True}

    with pytest.raises(Exception, match="503 Service Unavailable"):
        run(config, {}, attempt=1)
    result, _ = run(config, {}, attempt=2)

    assert result["status"] == 200
    assert sent_keys(httpserver) == [KEY, KEY]


def test_the_key_goes_along_with_a_redirect(httpserver):
    httpserver.expect_request("/old").respond_with_response(
        Response(status=307, headers={"Location": local_url(httpserver, "/new")})
    )
    httpserver.expect_request("/new", method="POST").respond_with_data("ok")
    config = {"url": local_url(httpserver, "/old"), "send_idempotency_key": True}

    run(config, {"amount": 5})

    assert [request.path for request, _ in httpserver.log] == ["/old", "/new"]
    assert sent_keys(httpserver) == [KEY, KEY]


def test_the_key_is_logged_with_the_request_so_the_owner_can_find_it_on_the_other_side(
    httpserver,
):
    httpserver.expect_request("/charge").respond_with_data("ok")
    config = {"url": local_url(httpserver, "/charge"), "send_idempotency_key": True}

    _, ctx = run(config, {})

    sending = [data for _, message, data in ctx.logs if message.startswith("Sending POST")]
    assert sending == [
        {"method": "POST", "url": local_url(httpserver, "/charge"), "idempotency_key": KEY}
    ]


def test_it_sits_beside_the_owners_other_headers_and_secret_headers(httpserver):
    httpserver.expect_request(
        "/charge",
        headers={"Idempotency-Key": KEY, "Accept": "application/json", "Authorization": "B tok"},
    ).respond_with_data("ok")
    config = {
        "url": local_url(httpserver, "/charge"),
        "headers": {"Accept": "application/json"},
        "secret_headers": {"Authorization": "token"},
        "send_idempotency_key": True,
    }

    result, _ = run(config, {}, secrets={"token": "B tok"})

    assert result["status"] == 200


def test_a_config_with_its_own_key_header_that_escaped_the_form_is_refused_not_overwritten(
    httpserver,
):
    # Every save goes through the form, which refuses this config; a row written some other
    # way (a data migration, a hand edit) still never gets its header quietly replaced.
    ctx = http_context({"url": local_url(httpserver, "/charge")})
    ctx.config = {
        **ctx.config,
        "headers": {"idempotency-key": "mine"},
        "send_idempotency_key": True,
    }
    ctx.idempotency_key = KEY

    with pytest.raises(ConfigurationError) as caught:
        http_kind.run(ctx, {})

    assert caught.value.message == (
        "This agent sets an Idempotency-Key header of its own and also asks Conveyor to send "
        "one. Remove the header, or turn the option off."
    )
    assert httpserver.log == []
