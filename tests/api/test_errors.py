"""One error format for every failure, the right status for each, and never a 500 for bad
input (a fuzz test sends a few hundred malformed bodies, headers and parameters)."""

import io
import json
import os
import random
import subprocess
import sys

import pytest
from django.test import Client, override_settings

from api.errors import PayloadTooLarge
from api.parsers import JSONParser
from executions.models import Execution
from tests.conftest import error_of

from .conftest import ApiClient

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/agents"


def runs(agent):
    return f"{AGENTS}/{agent.uuid}/runs"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "malformed_json"),
        (b'{"input": NaN}', "malformed_json"),
        (b'{"input": Infinity}', "malformed_json"),
        (b'{"input": 1e400}', "malformed_json"),
        (b'{"input": "\\u0000"}', "malformed_json"),
        (b'{"input": "\\ud800"}', "malformed_json"),
        (b'{"in\\u0000put": 1}', "malformed_json"),
        (b"\xff\xfe{", "malformed_json"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),  # a RecursionError inside json
        (b'{"input": ' + b"[" * 65 + b"]" * 65 + b"}", "too_deep"),
        (b'{"input": ' + b"9" * 5000 + b"}", "malformed_json"),
    ],
)
def test_malformed_json_is_a_400_that_says_why(api, make_agent, alice, raw, code):
    response = api.post(runs(make_agent(alice)), raw=raw)
    assert response.status_code == 400, response.content
    assert error_of(response)["code"] == code
    assert not Execution.objects.exists()


def test_deep_but_allowed_json_is_accepted(api, make_agent, alice):
    nested = json.loads("[" * 60 + "]" * 60)
    assert api.post(runs(make_agent(alice)), {"input": nested}).status_code == 202


def test_a_body_that_is_not_json_is_a_415(api, make_agent, alice):
    response = api.post(runs(make_agent(alice)), raw=b"input=1", content_type="text/plain")
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


@override_settings(CONVEYOR_API_MAX_BODY_BYTES=1000)
def test_a_body_over_the_limit_is_a_413(api, make_agent, alice):
    agent = make_agent(alice)
    response = api.post(runs(agent), {"input": "x" * 2000})
    assert response.status_code == 413
    assert error_of(response)["code"] == "too_large"
    assert api.post(runs(agent), {"input": "x" * 900}).status_code == 202


@override_settings(CONVEYOR_API_MAX_BODY_BYTES=1000)
def test_a_body_longer_than_its_content_length_claims_is_still_a_413(make_agent, alice):
    # The parser reads at most the limit plus one byte, whatever the header said.
    with pytest.raises(PayloadTooLarge):
        JSONParser().parse(io.BytesIO(b'{"input": "' + b"x" * 2000 + b'"}'))


def test_an_unknown_address_under_the_api_is_a_json_404(api):
    tries = [
        ("get", "/api/v1/nothing-here"),
        ("get", "/api/v1/agents/not-a-uuid"),
        ("post", "/api/v1/agents/1/runs"),
        ("delete", "/api/v1/agents/x/y/z"),
    ]
    for method, path in tries:
        response = getattr(api, method)(path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "not_found"


UNKNOWN = ["/api/v1/nothing-here", "/api/v1/agents/x/y/z", "/api/v1/executions/1/nope/"]
METHODS = ["get", "head", "options", "post", "put", "patch", "delete"]


@pytest.mark.parametrize("path", UNKNOWN)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("who", ["anonymous", "token", "browser session"])
def test_an_unknown_address_is_a_json_404_for_every_method_and_caller(
    alice, make_token, who, method, path
):
    # A browser session with the CSRF check on: a POST without a token must not get Django's
    # HTML 403 page.
    client = Client(enforce_csrf_checks=True)
    if who == "token":
        client = Client(
            enforce_csrf_checks=True, headers={"Authorization": "Bearer " + make_token(alice)}
        )
    elif who == "browser session":
        client.force_login(alice)
    kwargs = (
        {}
        if method in ("get", "head", "options")
        else {"data": b'{"a": 1}', "content_type": "application/json"}
    )
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == 404, response.content[:200]
    assert response["Content-Type"] == "application/json"
    if method != "head":
        assert error_of(response)["code"] == "not_found"


def test_a_trailing_slash_gets_a_404_that_says_so(api):
    response = api.get("/api/v1/agents/")
    assert response.status_code == 404
    assert "Did you mean /api/v1/agents (without the final slash)?" in error_of(response)["message"]


def test_a_wrong_method_is_a_405_listing_the_allowed_ones(api, make_agent, alice):
    agent = make_agent(alice)
    response = api.get(runs(agent))
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert "POST" in response["Allow"]
    assert api.delete("/api/v1/executions").status_code == 405


def test_validation_errors_are_422_with_field_details(api):
    response = api.post(AGENTS, {"name": "", "kind": "function"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid"
    assert "name" in error["details"]
    assert error["message"].startswith("name:")


# --- Rate limits ------------------------------------------------------------------------------


@override_settings(CONVEYOR_API_RUN_RATE="2/min")
def test_run_requests_past_the_rate_are_429_with_retry_after(api, make_agent, alice, make_token):
    agent = make_agent(alice)
    assert api.post(runs(agent), {"input": 1}).status_code == 202
    assert api.post(runs(agent), {"input": 2}).status_code == 202
    refused = api.post(runs(agent), {"input": 3})
    assert refused.status_code == 429
    assert error_of(refused)["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert Execution.objects.count() == 2
    # The count is per token: another token of the same person has its own.
    assert ApiClient(make_token(alice, "second")).post(runs(agent), {"input": 4}).status_code == 202
    # Reading is not limited.
    assert api.get(f"{AGENTS}/{agent.uuid}").status_code == 200


@override_settings(CONVEYOR_API_RUN_RATE="1/min")
def test_retries_count_as_run_requests(api, make_agent, make_execution, alice):
    agent = make_agent(alice)
    execution = make_execution(agent, "failed", trigger="api")
    assert api.post(f"/api/v1/executions/{execution.uuid}/retry").status_code == 201
    assert api.post(f"/api/v1/executions/{execution.uuid}/retry").status_code == 429


@override_settings(CONVEYOR_API_RUN_RATE="1/min")
def test_the_count_is_kept_in_redis_where_every_web_process_sees_it(api, make_agent, alice):
    from api.models import ApiToken
    from common.rates import redis_client

    api.post(runs(make_agent(alice)), {"input": 1})
    token = ApiToken.objects.get(name="alice's token")
    keys = redis_client().keys(f"conveyor:rate:run:token:{token.prefix}{token.uuid.hex}:*")
    assert len(keys) == 1
    assert int(redis_client().get(keys[0])) == 1
    assert 0 < redis_client().ttl(keys[0]) <= 61


@override_settings(CONVEYOR_API_RUN_RATE="1/min", REDIS_URL="redis://127.0.0.1:1/0")
def test_when_redis_cannot_be_reached_runs_are_still_accepted(api, make_agent, alice):
    # A limit must not take the API down with it: it fails open (and logs a warning).
    agent = make_agent(alice)
    assert api.post(runs(agent), {"input": 1}).status_code == 202
    assert api.post(runs(agent), {"input": 2}).status_code == 202


def test_a_malformed_rate_setting_stops_the_process():
    from django.core.exceptions import ImproperlyConfigured

    from common.rates import parse_rate

    assert parse_rate("60/min") == (60, 60)
    assert parse_rate("5/sec") == (5, 1)
    with pytest.raises(ImproperlyConfigured, match="CONVEYOR_API_RUN_RATE"):
        parse_rate("sixty a minute", setting="CONVEYOR_API_RUN_RATE")
    # At start-up: a process with a bad rate refuses to start, naming the variable.
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test",
             "CONVEYOR_WEBHOOK_RATE": "lots"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert started.returncode != 0
    assert "CONVEYOR_WEBHOOK_RATE must look like 60/min" in started.stderr


# --- Fuzz -------------------------------------------------------------------------------------


def _junk(rng: random.Random):
    """A JSON-ish value, often of the wrong type, sometimes huge or odd."""
    choices = [
        lambda: None, lambda: True, lambda: -1, lambda: 2**70, lambda: 1.5, lambda: "",
        lambda: "x" * rng.randint(1, 300), lambda: "\u202e\U0001f600", lambda: [],
        lambda: {}, lambda: [1, "two", None], lambda: {"a": {"b": {"c": []}}},
        lambda: "2030-01-01T00:00:00Z", lambda: "9999-12-31T23:59:59-14:00",
        lambda: "0001-01-01T00:00:00+14:00", lambda: str(rng.random()),
    ]  # fmt: skip
    return rng.choice(choices)()


AGENT_FIELDS = ["name", "description", "kind", "config", "secrets", "is_paused", "max_retries",
                "retry_backoff", "retry_backoff_max", "retry_jitter", "retry_on", "timeout",
                "queue", "priority", "webhook", "id", "max_concurrency", "rate_limit",
                "breaker_threshold", "breaker_window", "breaker_cooldown", "log_level",
                "retain_succeeded_days", "retain_failed_days"]  # fmt: skip
RUN_FIELDS = ["input", "run_at", "delay_seconds"]
RAW_BODIES = [b"", b" ", b"null", b"[]", b'"', b"{", b"}", b"{{}}", b'{"a":1,}', b"\x00",
              b"\xc3\x28", b'{"input": tru}', b"[" * 3000, b'{"a": "\\x"}', b"1" * 5000,
              b'{"input": -0}', b'{"input": 1E999}', b'{"name": "\\udfff"}']  # fmt: skip
QUERY_KEYS = ["status", "agent", "trigger", "created_after", "created_before", "cursor", "limit",
              "window", "unknown"]  # fmt: skip


def _body(rng, fields):
    if rng.random() < 0.25:
        return rng.choice(RAW_BODIES)
    if rng.random() < 0.1:
        return json.dumps(_junk(rng)).encode()
    data = {name: _junk(rng) for name in rng.sample(fields, rng.randint(0, len(fields)))}
    if "kind" in data and rng.random() < 0.5:
        data["kind"] = rng.choice(["function", "http"])
    return json.dumps(data).encode()


def _query(rng):
    return {key: str(_junk(rng)) for key in rng.sample(QUERY_KEYS, rng.randint(1, 4))}


def test_no_malformed_request_gets_a_500(api, make_agent, make_execution, alice):
    """Several hundred malformed bodies, headers and parameters: each answered 2xx or 4xx in
    the error format. Seeded, so a failure can be replayed."""
    rng = random.Random(20261123)
    agent = make_agent(alice, name="target")
    execution = make_execution(agent, "failed", trigger="api")
    agent_url, execution_url = f"{AGENTS}/{agent.uuid}", f"/api/v1/executions/{execution.uuid}"
    content_types = [
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ]
    requests = []
    for _ in range(120):
        requests.append(("post", AGENTS, _body(rng, AGENT_FIELDS)))
        requests.append(("patch", agent_url, _body(rng, AGENT_FIELDS)))
        requests.append(("post", f"{agent_url}/runs", _body(rng, RUN_FIELDS)))
    for _ in range(40):
        requests.append(("put", agent_url, _body(rng, AGENT_FIELDS)))
        requests.append(("post", f"{execution_url}/retry", _body(rng, ["input"])))
        requests.append(("get", "/api/v1/executions", _query(rng)))
        requests.append(("get", f"{execution_url}/logs", _query(rng)))
        requests.append(("get", f"{agent_url}/stats", _query(rng)))
        requests.append(("get", AGENTS, _query(rng)))
    failures = []
    api.client.raise_request_exception = False  # collect 500s instead of stopping at the first
    with override_settings(CONVEYOR_API_RUN_RATE="100000/min"):
        for method, path, payload in requests:
            headers = {}
            if rng.random() < 0.2:
                headers["Idempotency-Key"] = rng.choice(["k", "x" * 300, "\u00e9", " ", "a\tb"])
            if method == "get":
                response = api.client.get(path, payload)
            else:
                response = getattr(api.client, method)(
                    path,
                    data=payload,
                    content_type=rng.choice(content_types) if rng.random() < 0.2 else
                    "application/json",
                    headers=headers,
                )  # fmt: skip
            if response.status_code >= 500:
                failures.append((method, path, str(payload)[:200], response.status_code))
            elif response.status_code >= 400:
                error_of(response)
    assert len(requests) >= 500
    assert not failures, failures[:5]
