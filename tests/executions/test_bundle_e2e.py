"""The support bundle of a real failed http run: the real worker calls a real local HTTP server
that answers 500 (and echoes what it was sent) until the retries run out; the bundle downloaded
from the execution page's link and from the API holds every attempt and log line and no secret.

The worker runs with CONVEYOR_OUTBOUND_ALLOW=127.0.0.1 (tests/conftest.py).
"""

import json
import re

import pytest
from django.test import override_settings
from django.urls import reverse
from werkzeug import Response

from api.services import token_create
from executions.services import execution_request
from tests.agents.conftest import local_url
from tests.api.conftest import ApiClient
from tests.conftest import wait_for

pytestmark = [pytest.mark.usefixtures("allow_local"), pytest.mark.slow]

TOKEN = "Bearer tok_live_5e1f0c9a7b3d4e2f8a6c"
SIGNING_KEY = "sk-signing-0a9b8c7d6e5f4a3b"
QUERY_PASSWORD = "qp-7781-xyzzy-0042"
HEADER_KEY = "plain-header-key-5521"
# Every value that must not leave in a bundle.
SECRETS = (
    TOKEN,
    TOKEN.removeprefix("Bearer "),
    SIGNING_KEY,
    QUERY_PASSWORD,
    HEADER_KEY,
)


@pytest.fixture
def allow_local():
    """The operator allows the test server's address, like the test worker does."""
    with override_settings(CONVEYOR_OUTBOUND_ALLOW=["127.0.0.1"]):
        yield


def api_client(user) -> ApiClient:
    return ApiClient(token_create(owner=user, name="bundle test")[1])


def echo_500(request):
    """The endpoint is down, and says what it was sent (secrets included) in its answer."""
    sent = {name: value for name, value in request.headers.items()}
    return Response(
        json.dumps(
            {"error": "database down", "you_sent": sent, "query": request.query_string.decode()}
        ),
        status=500,
        content_type="application/json",
    )


@pytest.fixture
def failed_http_run(worker, make_agent, httpserver):
    httpserver.expect_request("/orders").respond_with_handler(echo_500)
    agent = make_agent(
        name="orders-hook",
        kind="http",
        config={
            "url": local_url(httpserver, f"/orders?password={QUERY_PASSWORD}"),
            # A secret-looking header written in plain config, and two that carry secrets.
            "headers": {"X-Api-Key": HEADER_KEY, "Accept": "application/json"},
            "secret_headers": {"Authorization": "token", "X-Signing-Key": "signing"},
        },
        secrets={"token": TOKEN, "signing": SIGNING_KEY},
        max_retries=2,
        retry_backoff=1,
    )
    execution = execution_request(
        agent=agent, trigger="manual", input={"order": 7, "note": f"key {SIGNING_KEY}"}
    )
    execution = wait_for(execution, "succeeded", "failed", timeout=60)
    assert execution.status == "failed", execution.status
    assert execution.attempt == 3
    # The server did get the secrets: a bundle without them is the scrubbing's doing.
    assert len(httpserver.log) == 3
    request, _ = httpserver.log[0]
    assert request.headers["Authorization"] == TOKEN
    assert request.headers["X-Signing-Key"] == SIGNING_KEY
    return execution


def same_but_removed(shown: str, recorded: str) -> bool:
    """Whether ``shown`` is ``recorded`` with some parts replaced by “[secret removed]”."""
    pattern = ".+?".join(re.escape(part) for part in shown.split("[secret removed]"))
    return re.fullmatch(pattern, recorded, flags=re.DOTALL) is not None


def assert_complete_and_secret_free(raw: bytes, execution) -> dict:
    text = raw.decode()
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} is in the support bundle"
    bundle = json.loads(raw)
    attempts = list(execution.attempts.order_by("number"))
    assert [a["number"] for a in bundle["attempts"]] == [a.number for a in attempts] == [1, 2, 3]
    assert [a["outcome"] for a in bundle["attempts"]] == ["failed", "failed", "failed"]
    assert all(a["worker_host"] for a in bundle["attempts"])
    assert bundle["worker_hosts"] == sorted({a.worker for a in attempts})
    assert [a["retry_delay_seconds"] for a in bundle["attempts"][:2]] == [
        a.retry_delay for a in attempts[:2]
    ]
    logs = list(execution.logs.values_list("attempt", "level", "message"))
    assert len(logs) >= 6  # "Sending ..." and "Attempt n failed ..." of each attempt
    assert [(x["attempt"], x["level"]) for x in bundle["logs"]] == [(a, lv) for a, lv, _ in logs]
    for line, (_, _, message) in zip(bundle["logs"], logs, strict=True):
        assert same_but_removed(line["message"], message), (line["message"], message)
    assert [e["to"] for e in bundle["events"]] == list(
        execution.events.values_list("to_status", flat=True)
    )
    assert bundle["error"]["category"] == "upstream_error"
    assert bundle["error"]["title"] == execution.error_title
    assert bundle["run"]["status"] == "failed"
    assert bundle["run"]["kind"] == "http"
    assert bundle["input"]["order"] == 7
    assert bundle["agent"]["secret_names"] == ["signing", "token"]
    assert bundle["agent"]["config"]["headers"]["Accept"] == "application/json"
    return bundle


def test_a_failed_http_run_s_bundle_holds_every_attempt_and_log_line_and_no_secret(
    failed_http_run, client, alice
):
    execution = failed_http_run
    client.force_login(alice)
    page = client.get(reverse("executions:detail", args=[execution.uuid])).content.decode()
    link = re.search(r'href="([^"]+)" download>Download support bundle<', page)
    assert link, "the execution page has no Download support bundle link"

    from_page = client.get(link.group(1))
    from_api = api_client(alice).get(f"/api/v1/executions/{execution.uuid}/bundle")

    for response in (from_page, from_api):
        assert response.status_code == 200
        assert response["Content-Disposition"] == (
            f'attachment; filename="conveyor-run-{execution.uuid}.json"'
        )
        bundle = assert_complete_and_secret_free(response.content, execution)
        assert "traceback" not in bundle["error"] or bundle["error"]["traceback"].startswith(
            "Not included"
        )


def test_staff_s_bundle_of_their_failed_http_run_has_the_traceback_and_no_secret(
    worker, make_agent, httpserver, staff
):
    httpserver.expect_request("/down").respond_with_handler(echo_500)
    agent = make_agent(
        owner=staff,
        kind="http",
        config={"url": local_url(httpserver, "/down"), "secret_headers": {"Authorization": "t"}},
        secrets={"t": TOKEN},
        max_retries=0,
    )
    execution = wait_for(execution_request(agent=agent, trigger="manual"), "failed", timeout=60)

    response = api_client(staff).get(f"/api/v1/executions/{execution.uuid}/bundle")

    assert response.status_code == 200
    text = response.content.decode()
    assert TOKEN not in text and TOKEN.removeprefix("Bearer ") not in text
    bundle = json.loads(text)
    assert bundle["about"]["includes_traceback"] is True
    assert execution.error_detail.startswith("Traceback")
    assert same_but_removed(bundle["error"]["traceback"], execution.error_detail)
