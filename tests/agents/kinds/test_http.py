"""The http kind's run(), in this process, against a real local HTTP server."""

import json
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from django.test import override_settings
from werkzeug import Response

from agents.kinds.base import (
    AgentTimeoutError,
    AuthError,
    ConfigurationError,
    NetworkError,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from agents.kinds.http import kind as http_kind
from agents.kinds.http import parse_retry_after
from tests.agents.conftest import http_context, local_url

pytestmark = pytest.mark.usefixtures("allow_local")

SECRET = "Bearer tok-5f1c9e2a7b"


def run(config, input=None, **kwargs):
    ctx = http_context(config, **kwargs)
    return http_kind.run(ctx, input), ctx


def failure(config, input=None, **kwargs):
    """Run, expecting an error; return it and the context (for the logs)."""
    ctx = http_context(config, **kwargs)
    with pytest.raises(Exception) as caught:  # callers check the type
        http_kind.run(ctx, input)
    return caught.value, ctx


# --- Success -----------------------------------------------------------------------------------


def test_a_200_answer_succeeds_with_status_headers_and_body(httpserver):
    httpserver.expect_request("/hook", method="POST", json={"order": 42}).respond_with_data(
        "received", headers={"X-Request-Id": "r-1"}, content_type="text/plain"
    )
    config = {
        "url": local_url(httpserver, "/hook"),
        "response_headers": "content-type, x-request-id",
    }

    result, _ = run(config, {"order": 42})

    assert result == {
        "status": 200,
        "headers": {"content-type": "text/plain", "x-request-id": "r-1"},
        "body": "received",
        "truncated": False,
    }
    json.dumps(result)  # stored in a JSONField


def test_a_json_answer_is_returned_parsed(httpserver):
    httpserver.expect_request("/api").respond_with_json({"ok": True, "items": [1, 2]})

    result, _ = run({"url": local_url(httpserver, "/api"), "method": "GET"})

    assert result["body"] == {"ok": True, "items": [1, 2]}
    assert result["headers"] == {"content-type": "application/json"}


def test_it_sends_the_fixed_body_when_configured(httpserver):
    httpserver.expect_request("/hook", method="PUT", json={"ping": True}).respond_with_data("ok")
    config = {
        "url": local_url(httpserver, "/hook"),
        "method": "PUT",
        "body": "fixed",
        "fixed_body": {"ping": True},
    }

    result, _ = run(config, {"ignored": "input"})

    assert result["status"] == 200


def test_it_sends_no_body_when_told_not_to(httpserver):
    httpserver.expect_request("/hook", method="DELETE", data=b"").respond_with_data("", status=204)

    result, _ = run({"url": local_url(httpserver, "/hook"), "method": "DELETE"}, {"x": 1})

    assert (result["status"], result["body"]) == (204, "")


def test_a_long_text_body_is_truncated_and_flagged(httpserver):
    httpserver.expect_request("/text").respond_with_data("abcdefghij" * 10)

    with override_settings(CONVEYOR_HTTP_RESULT_BODY_CHARS=25):
        result, _ = run({"url": local_url(httpserver, "/text"), "method": "GET"})

    assert result["body"] == "abcdefghijabcdefghijabcde"
    assert result["truncated"] is True


def test_a_json_body_too_long_to_keep_whole_is_kept_as_truncated_text(httpserver):
    httpserver.expect_request("/api").respond_with_data(
        json.dumps({"items": list(range(100))}), content_type="application/json"
    )

    with override_settings(CONVEYOR_HTTP_RESULT_BODY_CHARS=20):
        result, _ = run({"url": local_url(httpserver, "/api"), "method": "GET"})

    assert result["body"] == '{"items": [0, 1, 2, '
    assert result["truncated"] is True


def test_it_reads_no_more_than_the_response_byte_limit(httpserver):
    httpserver.expect_request("/big").respond_with_data(
        json.dumps({"blob": "x" * 10_000}), content_type="application/json"
    )

    with override_settings(CONVEYOR_HTTP_MAX_RESPONSE_BYTES=100):
        result, ctx = run({"url": local_url(httpserver, "/big"), "method": "GET"})

    # Cut at 100 bytes the JSON does not parse; what was read is kept as text.
    assert result["body"] == '{"blob": "' + "x" * 90
    assert result["truncated"] is True
    assert ctx.logs[-1][2]["bytes"] == 100


def test_a_body_with_nul_characters_is_made_storable(httpserver):
    # Postgres refuses \u0000 inside jsonb; the result must still be storable.
    httpserver.expect_request("/api").respond_with_data(
        '{"name": "a\\u0000b"}', content_type="application/json"
    )

    result, _ = run({"url": local_url(httpserver, "/api"), "method": "GET"})

    assert result["body"] == {"name": "a\ufffdb"}


def test_it_logs_the_request_line_without_the_query_and_the_answer(httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok", status=201)

    _, ctx = run({"url": local_url(httpserver, "/hook?token=q-secret-1"), "body": "none"})

    messages = [message for _, message, _ in ctx.logs]
    assert messages[0] == f"Sending POST http://127.0.0.1:{httpserver.port}/hook?…"
    assert messages[-1].startswith("The endpoint answered 201 Created in ")
    assert "q-secret-1" not in ctx.log_text()


# --- Secrets -----------------------------------------------------------------------------------


def test_a_secret_header_is_sent_and_appears_nowhere_in_result_or_logs(httpserver):
    httpserver.expect_request("/api", headers={"Authorization": SECRET}).respond_with_json(
        {"ok": True}
    )
    config = {"url": local_url(httpserver, "/api"), "secret_headers": {"Authorization": "token"}}

    result, ctx = run(config, {"q": 1}, secrets={"token": SECRET})

    assert result["body"] == {"ok": True}
    assert "tok-5f1c9e2a7b" not in json.dumps(result)
    assert "tok-5f1c9e2a7b" not in ctx.log_text()
    assert "tok-5f1c9e2a7b" not in json.dumps(ctx.config)


def test_a_missing_secret_is_a_configuration_error_that_names_it(httpserver):
    config = {"url": local_url(httpserver, "/api"), "secret_headers": {"Authorization": "token"}}

    error, _ = failure(config, secrets={"other": "value-not-used"})

    assert isinstance(error, ConfigurationError)
    assert "“token”" in error.message
    assert httpserver.log == []


def test_a_secret_that_cannot_travel_in_a_header_is_a_configuration_error_that_hides_it(
    httpserver,
):
    config = {"url": local_url(httpserver, "/api"), "secret_headers": {"X-Api-Key": "key"}}

    error, _ = failure(config, secrets={"key": "pässwörd-123"})

    assert isinstance(error, ConfigurationError)
    assert "pässwörd" not in error.message
    assert "header value is not allowed" in error.message
    assert httpserver.log == []


def test_secret_headers_are_not_forwarded_to_another_site_on_redirect(httpserver, other_server):
    httpserver.expect_request("/api").respond_with_response(
        Response(status=302, headers={"Location": local_url(other_server, "/landing")})
    )
    other_server.expect_request("/landing").respond_with_data("hello")
    config = {
        "url": local_url(httpserver, "/api"),
        "method": "GET",
        "secret_headers": {"X-Api-Key": "key"},
    }

    result, ctx = run(config, secrets={"key": "k-9d8c7b6a"})

    assert result["body"] == "hello"
    ((landed, _),) = other_server.log
    assert "X-Api-Key" not in landed.headers
    assert any(message.startswith("Redirected (302 Found) to ") for _, message, _ in ctx.logs)


# --- Failures ----------------------------------------------------------------------------------


def test_a_503_is_a_temporary_upstream_error(httpserver):
    httpserver.expect_request("/hook").respond_with_data("down", status=503)

    error, ctx = failure({"url": local_url(httpserver, "/hook")})

    assert type(error) is RetryableError
    assert (error.category, error.retryable) == ("upstream_error", True)
    assert error.message.startswith("The endpoint answered 503 Service Unavailable.")
    assert error.retry_after is None
    assert "503" in ctx.logs[-1][1]


def test_a_408_is_a_temporary_upstream_error(httpserver):
    httpserver.expect_request("/hook").respond_with_data("", status=408)

    error, _ = failure({"url": local_url(httpserver, "/hook")})

    assert type(error) is RetryableError
    assert error.category == "upstream_error"


def test_a_429_with_retry_after_is_rate_limited_for_that_long(httpserver):
    httpserver.expect_request("/hook").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "3"}
    )

    error, _ = failure({"url": local_url(httpserver, "/hook")})

    assert isinstance(error, RateLimitedError)
    assert (error.category, error.retryable, error.retry_after) == ("rate_limited", True, 3)
    assert "It asked to wait 3 seconds" in error.message


def test_a_503_with_a_retry_after_date_waits_until_then(httpserver):
    later = datetime.now(UTC) + timedelta(seconds=120)
    httpserver.expect_request("/hook").respond_with_data(
        "", status=503, headers={"Retry-After": format_datetime(later, usegmt=True)}
    )

    error, _ = failure({"url": local_url(httpserver, "/hook")})

    assert 100 < error.retry_after <= 120


def test_a_404_is_a_permanent_upstream_error(httpserver):
    httpserver.expect_request("/missing").respond_with_data("no such thing", status=404)

    error, _ = failure({"url": local_url(httpserver, "/missing")})

    assert type(error) is PermanentError
    assert (error.category, error.retryable) == ("upstream_error", False)
    assert error.message.startswith("The endpoint answered 404 Not Found.")


@pytest.mark.parametrize("status", [400, 422])
def test_a_400_or_422_means_the_input_was_not_accepted(httpserver, status):
    httpserver.expect_request("/hook").respond_with_json(
        {"error": "order is required"}, status=status
    )

    error, _ = failure({"url": local_url(httpserver, "/hook")}, {})

    assert (error.category, error.retryable) == ("invalid_input", False)
    assert 'It said: “{"error": "order is required"}”' in error.message


@pytest.mark.parametrize("status", [401, 403])
def test_a_401_or_403_is_an_auth_error(httpserver, status):
    httpserver.expect_request("/api").respond_with_data("", status=status)
    config = {"url": local_url(httpserver, "/api"), "secret_headers": {"Authorization": "token"}}

    error, _ = failure(config, secrets={"token": SECRET})

    assert isinstance(error, AuthError)
    assert "did not accept the credentials" in error.message
    assert "“token”" in error.message
    assert "tok-5f1c9e2a7b" not in error.message


def test_an_unexpected_success_status_explains_the_expected_ones(httpserver):
    httpserver.expect_request("/hook").respond_with_data("", status=204)
    config = {"url": local_url(httpserver, "/hook"), "expected_statuses": "200,201"}

    error, _ = failure(config)

    assert (error.category, error.retryable) == ("configuration", False)
    assert error.message == (
        "The endpoint answered 204 No Content. This agent only accepts 200,201. If 204 is a "
        "good answer, add it to the agent's expected statuses."
    )


def test_an_error_status_listed_as_expected_succeeds(httpserver):
    httpserver.expect_request("/hook").respond_with_data("gone", status=410)

    result, _ = run({"url": local_url(httpserver, "/hook"), "expected_statuses": "2xx,410"})

    assert result["status"] == 410


def test_an_endpoint_that_does_not_answer_in_time_is_a_timeout(allow_local):
    # A real listening socket that accepts connections and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"

        error, _ = failure({"url": url, "timeout": 0.3})

    assert isinstance(error, AgentTimeoutError)
    assert error.message == "The endpoint did not answer within 0.3 seconds."


def test_a_refused_connection_is_a_network_error(allow_local):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there

    error, _ = failure({"url": f"http://127.0.0.1:{port}/"})

    assert isinstance(error, NetworkError)
    assert (error.category, error.retryable) == ("network", True)
    assert "refused" in error.message


def test_too_many_redirects_is_a_permanent_error(httpserver):
    httpserver.expect_request("/loop").respond_with_response(
        Response(status=302, headers={"Location": "/loop"})
    )

    with override_settings(CONVEYOR_HTTP_MAX_REDIRECTS=2):
        error, _ = failure({"url": local_url(httpserver, "/loop"), "method": "GET"})

    assert (type(error), error.category) == (PermanentError, "upstream_error")
    assert "more than 2 times" in error.message


# --- The guard, as the kind reports it -------------------------------------------------------


def test_it_blocks_localhost_when_only_127_0_0_1_is_allowed(httpserver):
    error, _ = failure({"url": local_url(httpserver, "/hook", host="localhost")})

    assert isinstance(error, ConfigurationError)
    assert error.message == (
        "The address “localhost” resolves to a private or internal network address "
        "(127.0.0.1 — loopback: this machine itself), which Conveyor does not call for safety. "
        "An operator can allow it with CONVEYOR_OUTBOUND_ALLOW."
    )
    assert httpserver.log == []


@pytest.mark.parametrize("host", ["2130706433", "[::ffff:127.0.0.1]"])
def test_it_blocks_other_spellings_of_the_allowed_address(httpserver, host):
    error, _ = failure({"url": local_url(httpserver, "/hook", host=host)})

    assert isinstance(error, ConfigurationError)
    assert "CONVEYOR_OUTBOUND_ALLOW" in error.message
    assert httpserver.log == []


def test_it_blocks_a_redirect_to_a_disallowed_host(httpserver):
    httpserver.expect_request("/hook").respond_with_response(
        Response(
            status=302, headers={"Location": local_url(httpserver, "/inside", host="localhost")}
        )
    )
    httpserver.expect_request("/inside").respond_with_data("internal")

    error, _ = failure({"url": local_url(httpserver, "/hook"), "method": "GET"})

    assert isinstance(error, ConfigurationError)
    assert error.message.startswith(
        f"The endpoint redirected Conveyor to http://localhost:{httpserver.port}/inside. "
        "The address “localhost” resolves to a private or internal network address"
    )
    assert [request.path for request, _ in httpserver.log] == ["/hook"]


def test_it_blocks_everything_internal_with_an_empty_allow_list(httpserver):
    with override_settings(CONVEYOR_OUTBOUND_ALLOW=[]):
        error, _ = failure({"url": local_url(httpserver, "/hook")})

    assert isinstance(error, ConfigurationError)
    assert httpserver.log == []


def test_a_network_entry_allows_localhost(httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")

    with override_settings(CONVEYOR_OUTBOUND_ALLOW=["127.0.0.0/8"]):
        result, _ = run({"url": local_url(httpserver, "/hook", host="localhost")})

    assert result["status"] == 200


# --- Retry-After ------------------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)

    assert parse_retry_after("3", now=now) == 3
    assert parse_retry_after(" 120 ", now=now) == 120
    assert parse_retry_after("Fri, 01 May 2026 12:00:30 GMT", now=now) == 30
    assert parse_retry_after("Fri, 01 May 2026 11:00:00 GMT", now=now) == 0  # already past
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("-5", now=now) is None
    assert parse_retry_after(None, now=now) is None
