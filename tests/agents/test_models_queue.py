"""An agent's queue is one the operators declared (agents.models.queue_validator, run by
agents.services.agent_validate for the pages, the API and the admin alike)."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from agents.models import queue_label
from agents.services import agent_create, agent_update
from executions.services import execution_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def reports(settings):
    """Operators declared "reports" (two runs at once) besides the executions queue."""
    settings.CONVEYOR_QUEUES = {
        settings.CONVEYOR_EXECUTIONS_QUEUE: {"description": "The default queue.",
                                             "concurrency": None},
        "reports": {"description": "Long reports", "concurrency": 2},
    }  # fmt: skip
    return "reports"


def create(alice, **fields):
    return agent_create(
        owner=alice, name="sync", kind="function", config={"function": "demo.echo"}, **fields
    )


def queue_error(call) -> str:
    with pytest.raises(ValidationError) as caught:
        call()
    (message,) = caught.value.message_dict["queue"]
    return message


def test_a_declared_queue_is_taken(alice, reports):
    assert create(alice, queue=reports).queue == "reports"


def test_an_unknown_queue_is_refused_with_every_declared_one_and_what_it_is_for(
    alice, reports, settings
):
    message = queue_error(lambda: create(alice, queue="nightly"))

    executions = settings.CONVEYOR_EXECUTIONS_QUEUE
    assert message == (
        "“nightly” is not one of this installation's queues. Choose one of: "
        f"“{executions}” (The default queue), “reports” (Long reports; at most 2 at once)."
    )


@pytest.mark.parametrize("which", ["CONVEYOR_MAINTENANCE_QUEUE", "CONVEYOR_NOTIFICATIONS_QUEUE"])
def test_conveyor_s_own_queues_are_refused_saying_what_they_are(alice, reports, settings, which):
    name = getattr(settings, which)
    message = queue_error(lambda: create(alice, queue=name))
    assert message.startswith(f"“{name}” is Conveyor's {which.split('_')[1].lower()} queue")
    assert "“reports” (Long reports; at most 2 at once)" in message


def test_a_queue_s_label_names_it_with_its_description_and_limit(reports, settings):
    assert queue_label("reports") == "reports — Long reports; at most 2 at once"
    assert queue_label(settings.CONVEYOR_EXECUTIONS_QUEUE).endswith(" — The default queue")


def test_an_agent_on_a_queue_no_longer_declared_keeps_running_and_saving_asks_for_another(
    alice, reports, settings
):
    agent = create(alice, queue=reports)
    # The operators take "reports" out of the settings.
    settings.CONVEYOR_QUEUES = {k: v for k, v in settings.CONVEYOR_QUEUES.items() if k != "reports"}

    # Its runs are still taken (a day away here, so that no worker picks this one up).
    run = execution_request(
        agent=agent, trigger="manual", not_before=timezone.now() + timedelta(days=1)
    )
    assert run.pk is not None

    message = queue_error(lambda: agent_update(agent=agent, description="Nightly"))
    assert message.startswith("“reports” is not one of this installation's queues.")

    agent_update(agent=agent, description="Nightly", queue=settings.CONVEYOR_EXECUTIONS_QUEUE)
    agent.refresh_from_db()
    assert (agent.queue, agent.description) == (settings.CONVEYOR_EXECUTIONS_QUEUE, "Nightly")
