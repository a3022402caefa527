"""POST /api/v1/agents/{id}/runs/batch: many runs in one request, each its own execution.

Every run is checked before any is written (one 422 naming each bad run by its index), keys
replay or conflict per run like the single run's Idempotency-Key, more than 1,000 runs is a
413, and the runs of a batch are published together and run on the real worker.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from executions.models import Execution, ExecutionEvent
from executions.services import (
    BATCH_MAX,
    BatchRefused,
    RunSpec,
    execution_request,
    execution_request_batch,
)
from tests.conftest import error_of, wait_for

from .conftest import ApiClient

pytestmark = pytest.mark.django_db


def batch(agent):
    return f"/api/v1/agents/{agent.uuid}/runs/batch"


def test_each_run_of_a_batch_is_its_own_execution_in_the_request_order(api, make_agent, alice):
    agent = make_agent(alice)
    response = api.post(batch(agent), {"runs": [{"input": {"n": n}} for n in range(5)]})

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["created"], body["replayed"]) == (5, 0)
    executions = [Execution.objects.get(uuid=run["id"]) for run in body["runs"]]
    assert [e.input for e in executions] == [{"n": n} for n in range(5)]
    assert {(e.agent_id, e.trigger, e.status, e.wait_reason) for e in executions} == {
        (agent.pk, "api", "queued", "broker")
    }
    assert len({e.celery_task_id for e in executions}) == 5
    assert body["runs"][0]["url"] == f"http://testserver/api/v1/executions/{executions[0].uuid}"
    assert {run["status"] for run in body["runs"]} == {"queued"}
    assert {run["replay"] for run in body["runs"]} == {False}
    # Each has its creation event, as one started alone has.
    events = ExecutionEvent.objects.filter(execution__in=executions)
    assert sorted(events.values_list("execution_id", "to_status", "reason")) == sorted(
        (e.pk, "queued", "Started (api)") for e in executions
    )


def test_a_batch_writes_the_same_rows_as_runs_started_one_by_one(make_agent, alice):
    agent = make_agent(alice)
    at = timezone.now()
    alone = execution_request(agent=agent, trigger="api", input={"x": 1}, at=at)
    (batched,) = execution_request_batch(
        agent=agent, trigger="api", runs=[RunSpec({"x": 1})], at=at
    )

    ignored = {"id", "uuid", "celery_task_id"}
    fields = [f.attname for f in Execution._meta.concrete_fields if f.attname not in ignored]
    row = Execution.objects.filter(pk=alone.pk).values(*fields).get()
    assert Execution.objects.filter(pk=batched.pk).values(*fields).get() == row
    event_fields = ["from_status", "to_status", "at", "attempt", "reason", "data"]
    assert list(ExecutionEvent.objects.filter(execution=batched).values(*event_fields)) == list(
        ExecutionEvent.objects.filter(execution=alone).values(*event_fields)
    )


def test_every_bad_run_is_named_by_its_index_and_none_is_started(api, make_agent, alice):
    agent = make_agent(alice, config={"function": "demo.slow"})
    runs = [
        {"input": {"seconds": 0}},
        {"input": {"seconds": "ten"}},
        {"input": {"seconds": 0}, "delay_seconds": -1},
        {"input": {"seconds": 0}, "idempotency_key": "é"},
        "not an object",
        {"input": {"seconds": 0}, "unknown": 1},
    ]

    response = api.post(batch(agent), {"runs": runs})

    assert response.status_code == 422, response.content
    error = error_of(response)
    assert set(error["details"]) == {
        "runs[2].delay_seconds",
        "runs[3].idempotency_key",
        "runs[4]",
        "runs[5].unknown",
    }
    assert error["message"].startswith("4 runs are not valid; none was started. runs[2].")
    # The shape is checked first; the kind's check of the inputs comes when the shapes are good.
    runs = [runs[0], runs[1], runs[0], {"input": {"seconds": -5}}]
    response = api.post(batch(agent), {"runs": runs})
    assert response.status_code == 422, response.content
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert set(error["details"]) == {"runs[1].input", "runs[3].input"}
    assert "“seconds” must be a number" in error["details"]["runs[1].input"][0]
    assert error["message"].startswith("2 runs are not valid; none was started. runs[1].input: ")
    assert not Execution.objects.exists()


@pytest.mark.parametrize(
    "body",
    [{}, {"runs": []}, {"runs": {"input": 1}}, [{"input": 1}], {"runs": [{}], "extra": 1}],
)
def test_a_body_that_is_not_a_list_of_runs_is_a_422_saying_what_to_send(api, make_agent, body):
    response = api.post(batch(make_agent()), body)
    assert response.status_code == 422, response.content
    assert "runs" in error_of(response)["message"]
    assert not Execution.objects.exists()


def test_more_runs_than_the_limit_is_a_413_and_starts_nothing(api, make_agent):
    response = api.post(batch(make_agent()), {"runs": [{"input": None}] * (BATCH_MAX + 1)})
    assert response.status_code == 413, response.content
    error = error_of(response)
    assert error["code"] == "too_many_runs"
    assert f"{BATCH_MAX + 1:,} runs in one request: at most {BATCH_MAX:,}" in error["message"]
    assert not Execution.objects.exists()


def test_a_body_over_the_size_limit_is_a_413(api, make_agent, settings):
    settings.CONVEYOR_API_MAX_BODY_BYTES = 1000
    response = api.post(batch(make_agent()), {"runs": [{"input": "x" * 100}] * 20})
    assert response.status_code == 413
    assert not Execution.objects.exists()


def test_the_full_limit_is_accepted(api, make_agent):
    response = api.post(batch(make_agent()), {"runs": [{"input": n} for n in range(BATCH_MAX)]})
    assert response.status_code == 202, error_of(response)
    assert response.json()["created"] == BATCH_MAX == Execution.objects.count()


def test_keys_replay_per_run_and_share_the_single_runs_header(api, make_agent, alice):
    agent = make_agent(alice)
    single = api.post(
        f"/api/v1/agents/{agent.uuid}/runs", {"input": 1}, HTTP_IDEMPOTENCY_KEY="one"
    ).json()
    body = {
        "runs": [{"input": 1, "idempotency_key": "one"}, {"input": 2, "idempotency_key": "two"}]
    }

    first = api.post(batch(agent), body).json()
    again = api.post(batch(agent), body).json()

    assert (first["created"], first["replayed"]) == (1, 1)
    assert first["runs"][0] == {**first["runs"][0], "id": single["id"], "replay": True}
    assert first["runs"][1]["replay"] is False
    assert (again["created"], again["replayed"]) == (0, 2)
    assert [run["id"] for run in again["runs"]] == [run["id"] for run in first["runs"]]
    assert Execution.objects.count() == 2


def test_a_key_used_with_another_input_is_a_409_naming_the_run(api, make_agent, alice):
    agent = make_agent(alice)
    api.post(batch(agent), {"runs": [{"input": 1, "idempotency_key": "k"}]})

    response = api.post(
        batch(agent), {"runs": [{"input": 3}, {"input": 2, "idempotency_key": "k"}]}
    )

    assert response.status_code == 409, response.content
    error = error_of(response)
    assert error["code"] == "idempotency_key_reused"
    assert error["details"] == {
        "runs[1].idempotency_key": ["This idempotency key was already used with a different input."]
    }
    assert Execution.objects.count() == 1  # the first run of the refused batch was not started


def test_the_same_key_twice_in_one_batch_is_refused(api, make_agent):
    response = api.post(
        batch(make_agent()),
        {"runs": [{"input": 1, "idempotency_key": "k"}, {"input": 1, "idempotency_key": "k"}]},
    )
    assert response.status_code == 422
    assert error_of(response)["details"] == {
        "runs[1].idempotency_key": ["The same key as runs[0]: one key, one run."]
    }
    assert not Execution.objects.exists()


def test_delayed_runs_of_a_batch_wait_for_their_time(api, make_agent):
    run_at = timezone.now() + timedelta(hours=1)
    body = api.post(
        batch(make_agent()),
        {"runs": [{"input": 1}, {"input": 2, "run_at": run_at.isoformat()}, {"delay_seconds": 60}]},
    ).json()
    now, later, soon = (Execution.objects.get(uuid=run["id"]) for run in body["runs"])
    assert (now.wait_reason, now.not_before) == ("broker", None)
    assert (later.wait_reason, later.wait_until) == ("delayed", run_at)
    assert soon.wait_reason == "delayed" and soon.not_before > timezone.now()


def test_a_paused_agent_starts_no_batch(api, make_agent):
    agent = make_agent(is_paused=True)
    response = api.post(batch(agent), {"runs": [{"input": 1}]})
    assert response.status_code == 409
    assert error_of(response)["code"] == "agent_paused"


def test_a_batch_on_another_users_agent_is_a_404(bob_api, make_agent):
    response = bob_api.post(batch(make_agent()), {"runs": [{"input": 1}]})
    assert response.status_code == 404
    assert not Execution.objects.exists()


def test_a_limited_agents_batch_waits_in_line_like_single_runs(make_agent, alice):
    agent = make_agent(alice, max_concurrency=1)
    blocker = execution_request(agent=agent, trigger="api", input=0)
    Execution.objects.filter(pk=blocker.pk).update(status="running", waits_on="")
    execution_request(agent=agent, trigger="api", input=1)  # waits for the slot

    batched = execution_request_batch(agent=agent, trigger="api", runs=[RunSpec(2), RunSpec(3)])

    assert {(e.wait_reason, e.waits_on) for e in batched} == {("slot", f"agent:{agent.uuid}")}


def test_the_service_refuses_more_than_the_limit(make_agent):
    with pytest.raises(ValueError, match="At most"):
        execution_request_batch(
            agent=make_agent(), trigger="api", runs=[RunSpec()] * (BATCH_MAX + 1)
        )


def test_the_service_names_each_bad_input(make_agent):
    agent = make_agent(config={"function": "demo.slow"})
    with pytest.raises(BatchRefused) as refused:
        execution_request_batch(
            agent=agent,
            trigger="api",
            runs=[RunSpec({"seconds": "x"}), RunSpec({"seconds": 1}), RunSpec({"seconds": -1})],
        )
    assert refused.value.code == "invalid_input"
    assert set(refused.value.errors) == {0, 2}
    assert refused.value.message.startswith("2 runs of the batch cannot start: runs[0].input:")


# --- Through the real worker ----------------------------------------------------------------


def test_every_run_of_a_batch_runs_on_the_worker(worker, make_agent, alice, make_token):
    api = ApiClient(make_token(alice))
    agent = make_agent(alice)
    flow = make_agent(
        alice,
        name="batched-flow",
        kind="flow",
        config={"steps": [{"key": "a", "agent": agent.name}]},
    )

    body = api.post(batch(agent), {"runs": [{"input": {"n": n}} for n in range(50)]}).json()
    flows = api.post(batch(flow), {"runs": [{"input": {"f": 1}}, {"input": {"f": 2}}]}).json()

    for run in body["runs"] + flows["runs"]:
        execution = wait_for(Execution.objects.get(uuid=run["id"]), "succeeded", "failed")
        assert execution.status == "succeeded", execution.error_message
    results = Execution.objects.filter(uuid__in=[run["id"] for run in body["runs"]])
    assert sorted(e.result["n"] for e in results) == list(range(50))
    assert {e.attempt for e in results} == {1}


@pytest.mark.parametrize(
    ("run", "field", "words"),
    [
        (5, "runs[0]", 'Each run is an object, e.g. {"input": {...}}, not a number.'),
        ([1], "runs[0]", 'Each run is an object, e.g. {"input": {...}}, not a list.'),
        (None, "runs[0]", 'Each run is an object, e.g. {"input": {...}}, not null.'),
        ({"idempotency_key": 5}, "runs[0].idempotency_key", "Give a string of 1 to 200"),
        ({"run_at": "tomorrow"}, "runs[0].run_at", "Give a date and time in ISO 8601"),
        ({"delay_seconds": "soon"}, "runs[0].delay_seconds", "Give a whole number of seconds."),
    ],
)
def test_a_bad_run_is_told_in_plain_words(api, make_agent, run, field, words):
    response = api.post(batch(make_agent()), {"runs": [run]})
    assert response.status_code == 422, response.content
    error = error_of(response)
    assert error["details"][field][0].startswith(words)
    assert ".;" not in error["message"] and not error["message"].endswith("..")
    assert not Execution.objects.exists()


def test_a_body_over_the_limit_says_how_much_is_allowed_and_what_to_do(api, make_agent, settings):
    settings.CONVEYOR_API_MAX_BODY_BYTES = 2048
    response = api.post(batch(make_agent()), {"runs": [{"input": "x" * 100}] * 30})
    assert response.status_code == 413
    message = error_of(response)["message"]
    assert "larger than 2 KiB (2,048 bytes)" in message and "split into several" in message
