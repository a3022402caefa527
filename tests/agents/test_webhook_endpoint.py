"""POST /hooks/<agent uuid>/: a signed request starts a run with its JSON body as input;
every refusal answers in the API's error format with the status that says why."""

import time

import pytest
from django.test import override_settings

from agents.models import Agent
from agents.services import agent_pause
from agents.webhook_services import (
    webhook_disable,
    webhook_enable,
    webhook_rotate_finish,
    webhook_rotate_start,
)
from agents.webhook_signing import generate_secret
from executions.models import Execution
from tests.conftest import error_of, standard_sign

pytestmark = pytest.mark.django_db


def test_a_signed_request_starts_a_run_with_the_body_as_input(sender, hooked):
    agent, secret = hooked
    response = sender.send(agent, {"order": 42}, secret=secret)
    assert response.status_code == 202, response.content
    body = response.json()
    execution = Execution.objects.get(uuid=body["id"])
    assert (execution.agent, execution.trigger, execution.input) == (
        agent,
        "webhook",
        {"order": 42},
    )
    assert body == {"id": str(execution.uuid), "status": "queued", "replay": False}


def test_an_empty_body_is_a_run_without_input(sender, hooked):
    agent, secret = hooked
    response = sender.send(agent, raw=b"", secret=secret)
    assert response.status_code == 202
    assert Execution.objects.get().input is None


def test_a_replayed_webhook_id_returns_the_first_execution_and_starts_nothing(sender, hooked):
    agent, secret = hooked
    first = sender.send(agent, {"n": 1}, secret=secret, msg_id="msg_same")
    again = sender.send(agent, {"n": 1}, secret=secret, msg_id="msg_same")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == {**first.json(), "replay": True}
    assert Execution.objects.count() == 1
    assert Execution.objects.get().idempotency_key == "webhook:msg_same"


def test_a_replay_with_a_fresh_timestamp_still_starts_nothing(sender, hooked):
    agent, secret = hooked
    sender.send(agent, {"n": 1}, secret=secret, msg_id="msg_same", timestamp=int(time.time()) - 200)
    again = sender.send(agent, {"n": 1}, secret=secret, msg_id="msg_same")
    assert again.status_code == 200
    assert Execution.objects.count() == 1


def test_a_stale_timestamp_is_a_401_that_says_so(sender, hooked):
    agent, secret = hooked
    response = sender.send(agent, {"n": 1}, secret=secret, timestamp=int(time.time()) - 600)
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "timestamp_out_of_tolerance"
    assert "5 minutes" in error["message"]
    assert not Execution.objects.exists()


def test_a_wrong_signature_is_a_401_that_leaks_no_secret(sender, hooked):
    agent, secret = hooked
    response = sender.send(agent, {"n": 1}, secret=generate_secret())
    assert response.status_code == 401
    assert error_of(response)["code"] == "signature_invalid"
    assert secret.removeprefix("whsec_") not in response.content.decode()
    assert not Execution.objects.exists()


def test_a_missing_signature_is_a_401_and_missing_headers_a_400(sender, hooked):
    agent, secret = hooked
    headers = sender.headers(secret, b"{}")
    no_signature = {k: v for k, v in headers.items() if k != "webhook-signature"}
    response = sender.send(agent, raw=b"{}", secret=secret, headers=no_signature)
    assert response.status_code == 401
    assert error_of(response)["code"] == "signature_missing"
    response = sender.send(agent, raw=b"{}", secret=secret, headers={})
    assert response.status_code == 400
    assert error_of(response)["code"] == "missing_headers"


@pytest.mark.parametrize(
    "raw", [b"{not json", b'{"a": NaN}', b'{"a": "\\u0000"}', b"[" * 50_000, b"\xff"]
)
def test_a_signed_body_that_is_not_usable_json_is_a_400(sender, hooked, raw):
    agent, secret = hooked
    response = sender.send(agent, raw=raw, secret=secret)
    assert response.status_code == 400
    assert error_of(response)["code"] in ("malformed_json", "too_deep")
    assert not Execution.objects.exists()


def test_an_unknown_agent_or_a_webhook_that_is_off_is_a_404(sender, hooked, make_agent, alice):
    agent, secret = hooked
    other = make_agent(alice, name="never-hooked")
    for target in (other, Agent(uuid="00000000-0000-0000-0000-000000000000")):
        response = sender.send(target, {"n": 1}, secret=secret)
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"
    assert sender.client.post("/hooks/not-a-uuid/").status_code == 404
    webhook_disable(agent=agent)
    assert sender.send(agent, {"n": 1}, secret=secret).status_code == 404
    # Turned on again, the same secret works.
    assert webhook_enable(agent=agent) is None
    assert sender.send(agent, {"n": 1}, secret=secret).status_code == 202


def test_only_post_is_answered(sender, hooked):
    agent, _ = hooked
    response = sender.client.get(f"/hooks/{agent.uuid}/")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert error_of(response)["code"] == "method_not_allowed"


@override_settings(CONVEYOR_API_MAX_BODY_BYTES=100)
def test_a_body_over_the_limit_is_a_413(sender, hooked):
    agent, secret = hooked
    response = sender.send(agent, {"text": "x" * 200}, secret=secret)
    assert response.status_code == 413
    assert error_of(response)["code"] == "too_large"
    assert sender.send(agent, {"text": "x" * 20}, secret=secret).status_code == 202


@override_settings(CONVEYOR_WEBHOOK_RATE="2/min")
def test_calls_past_the_agents_rate_are_429_with_retry_after(sender, hooked, make_agent, alice):
    agent, secret = hooked
    assert sender.send(agent, {"n": 1}, secret=secret).status_code == 202
    assert sender.send(agent, {"n": 2}, secret=secret).status_code == 202
    refused = sender.send(agent, {"n": 3}, secret=secret)
    assert refused.status_code == 429
    assert error_of(refused)["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert Execution.objects.count() == 2
    # The limit is per agent.
    other = make_agent(alice, name="other")
    other_secret = webhook_enable(agent=other)
    assert sender.send(other, {"n": 4}, secret=other_secret).status_code == 202


@override_settings(CONVEYOR_WEBHOOK_RATE="1/min")
def test_requests_with_bad_signatures_do_not_use_up_the_rate(sender, hooked):
    agent, secret = hooked
    for _ in range(3):
        assert sender.send(agent, {"n": 0}, secret=generate_secret()).status_code == 401
    assert sender.send(agent, {"n": 1}, secret=secret).status_code == 202


def test_a_paused_agent_is_a_409(sender, hooked):
    agent, secret = hooked
    agent_pause(agent=agent)
    response = sender.send(agent, {"n": 1}, secret=secret)
    assert response.status_code == 409
    assert error_of(response)["code"] == "agent_paused"


def test_an_input_the_agent_refuses_is_a_422(sender, make_agent, alice):
    agent = make_agent(alice, config={"function": "demo.slow"})
    secret = webhook_enable(agent=agent)
    response = sender.send(agent, {"seconds": "ten"}, secret=secret)
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_input"
    assert not Execution.objects.exists()


def test_rotation_keeps_the_old_secret_valid_until_it_finishes(sender, hooked):
    agent, old = hooked
    new = webhook_rotate_start(agent=agent)
    assert new != old and new.startswith("whsec_")
    assert sender.send(agent, {"n": 1}, secret=old).status_code == 202
    assert sender.send(agent, {"n": 2}, secret=new).status_code == 202
    webhook_rotate_finish(agent=agent)
    refused = sender.send(agent, {"n": 3}, secret=old)
    assert refused.status_code == 401
    assert error_of(refused)["code"] == "signature_invalid"
    assert sender.send(agent, {"n": 4}, secret=new).status_code == 202
    agent.refresh_from_db()
    assert agent.webhook_secrets.reveal() == {"current": new}


def test_a_request_signed_with_both_secrets_during_a_rotation_is_accepted(sender, hooked):
    agent, old = hooked
    new = webhook_rotate_start(agent=agent)
    now, body = int(time.time()), b'{"n": 1}'
    headers = {
        "webhook-id": "msg_both",
        "webhook-timestamp": str(now),
        "webhook-signature": " ".join(standard_sign(s, "msg_both", now, body) for s in (old, new)),
    }
    assert sender.send(agent, raw=body, secret=old, headers=headers).status_code == 202


def test_the_webhook_needs_no_csrf_token_and_no_session(sender, hooked):
    # The Sender's client enforces CSRF checks and has no session: the 202s above prove it;
    # this one checks it explicitly.
    agent, secret = hooked
    assert sender.client.handler.enforce_csrf_checks is True
    assert sender.send(agent, {"n": 1}, secret=secret).status_code == 202
