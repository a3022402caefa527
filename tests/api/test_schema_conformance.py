"""The API answers as its OpenAPI schema says: schemathesis generates requests from the schema
(valid and invalid ones) and sends them in-process to Conveyor's WSGI application, signed in
as alice with her token, against the test database; every answer must

* never be a 5xx;
* have a status the operation documents;
* have a body that matches the documented schema for that status;
* have the documented content type.

Some requests name real rows (alice's agent, her executions), so that paths with an id reach
the views' real work and not only their 404. Each request runs in a savepoint that is rolled
back, so a DELETE or a pause does not change what the next request finds.

Bounded: derandomized with a fixed seed and a few examples per operation.
"""

from __future__ import annotations

import json
import uuid

import hypothesis
import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck
from hypothesis import strategies as st
from rest_framework.utils.encoders import JSONEncoder
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agents.models import Agent
from executions.models import Execution

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]

# Fixed ids for the rows the requests may name (see the ``flatmap_path_parameters`` hook).
AGENT_ID = uuid.UUID("a11ce000-0000-4000-8000-000000000001")
FAILED_ID = uuid.UUID("a11ce000-0000-4000-8000-000000000002")
RUNNING_ID = uuid.UUID("a11ce000-0000-4000-8000-000000000003")
SUCCEEDED_ID = uuid.UUID("a11ce000-0000-4000-8000-000000000004")
EXECUTION_IDS = (FAILED_ID, RUNNING_ID, SUCCEEDED_ID)

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261130,
        # Generating the agent bodies takes a while.
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        "generation": {
            "mode": "all",  # valid requests and invalid ones: the 400s and 422s are checked too
            "max-examples": 25,
            "deterministic": True,
            "database": "none",  # nothing written to disk between runs
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            # Sequences of calls (create, then read what was created) need a server that keeps
            # state between requests; each request here is rolled back.
            "stateful": {"enabled": False},
        },
    }
)


def openapi_document() -> dict:
    """The schema /api/v1/schema/ serves, generated in-process as plain JSON values."""
    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(json.dumps(generated, cls=JSONEncoder))


schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Now and then, the id of a real row of the kind the path names instead of a random one."""
    path = context.operation.path
    if not path_parameters or "id" not in path_parameters:
        return st.just(path_parameters)
    if path.startswith("/api/v1/agents/"):
        real = [AGENT_ID]
    elif path.startswith("/api/v1/executions/"):
        real = list(EXECUTION_IDS)
    else:
        return st.just(path_parameters)
    return st.one_of(
        st.just(path_parameters),
        st.sampled_from([{**path_parameters, "id": str(one)} for one in real]),
    )


@pytest.fixture
def application(db, settings):
    """Conveyor's WSGI application, as the server runs it, inside the test's transaction.

    Django closes the database connection around each request (``close_old_connections``),
    which would end the test's transaction; Django's own test client disconnects it the same
    way. The requests come with ``Host: localhost``.

    The run rate is raised: at the usual 60 a minute, the requests with random ids use the
    token's quota up before a real one comes, and the runs endpoint answers nothing but 429
    (whose own tests are in test_errors.py).
    """
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]
    settings.CONVEYOR_API_RUN_RATE = "100000/min"
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def alice_rows(alice, make_agent, make_execution):
    """Alice's agent and three executions of it, under the fixed ids the hook hands out."""
    agent = make_agent(alice, name="nightly-report")
    Agent.objects.filter(pk=agent.pk).update(uuid=AGENT_ID)
    rows = {
        FAILED_ID: make_execution(agent, "failed", error_category="network", input={"n": 1}),
        RUNNING_ID: make_execution(agent, "running"),
        SUCCEEDED_ID: make_execution(agent, "succeeded", result={"ok": True}),
    }
    for public_id, execution in rows.items():
        Execution.objects.filter(pk=execution.pk).update(uuid=public_id)
    return agent


@pytest.fixture
def alice_headers(alice, make_token):
    return {"Authorization": f"Bearer {make_token(alice, 'conformance')}"}


@schema.parametrize()
# The fixtures are shared by every request of an operation on purpose: each request is rolled
# back, so they are as fresh for the last request as for the first.
@hypothesis.settings(
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ]
)
def test_the_api_answers_as_its_schema_says(case, application, alice_rows, alice_headers):
    with transaction.atomic():
        response = case.call(app=application, headers=alice_headers)
        transaction.set_rollback(True)
    case.validate_response(response, checks=CHECKS, headers=alice_headers)
