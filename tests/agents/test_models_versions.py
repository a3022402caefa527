"""agents.AgentVersion: the settings that shape a run, recorded when a write changes them."""

import pytest

from agents.models import AgentVersion
from agents.services import agent_pause, agent_resume, agent_update
from agents.webhook_services import webhook_enable

pytestmark = pytest.mark.django_db


def versions(agent):
    return list(AgentVersion.objects.filter(agent=agent).values_list("version", flat=True))


def test_a_new_agent_records_its_settings_as_version_1(make_agent):
    agent = make_agent(timeout=30)
    [recorded] = AgentVersion.objects.filter(agent=agent)
    assert recorded.version == agent.version == 1
    assert recorded.snapshot["kind"] == "function"
    assert recorded.snapshot["config"] == {"function": "demo.echo"}
    assert recorded.snapshot["timeout"] == 30


def test_a_change_of_settings_records_a_new_version(make_agent):
    agent = make_agent()
    agent_update(agent=agent, config={"function": "demo.flaky"}, max_retries=4)
    assert versions(agent) == [1, agent.version]
    latest = agent.version_at(agent.version)
    assert latest.snapshot["config"] == {"function": "demo.flaky"}
    assert latest.snapshot["max_retries"] == 4


def test_secrets_are_recorded_by_name_never_by_value(make_agent):
    agent = make_agent()
    agent_update(agent=agent, secrets={"API_TOKEN": "s3cr3t-value"})
    latest = agent.version_at(agent.version)
    assert latest.snapshot["secrets"] == ["API_TOKEN"]
    assert "s3cr3t-value" not in str(AgentVersion.objects.values_list("snapshot", flat=True))


def test_a_write_that_changes_no_recorded_setting_records_nothing(make_agent):
    agent = make_agent()
    agent_update(agent=agent, description="Now described")
    assert agent_pause(agent=agent) and agent_resume(agent=agent)
    webhook_enable(agent=agent)
    agent.refresh_from_db()
    assert agent.version > 3
    assert versions(agent) == [1]
    # The settings in force at any later version are still version 1's.
    assert agent.version_at(agent.version).version == 1


def test_the_settings_at_a_version_are_the_last_recorded_at_or_before_it(make_agent):
    agent = make_agent()
    agent_update(agent=agent, timeout=40)
    second = agent.version
    agent_pause(agent=agent)
    agent_update(agent=agent, timeout=50)
    assert agent.version_at(second + 1).version == second
    assert agent.version_at(agent.version).snapshot["timeout"] == 50
    assert agent.version_at(None) is None
    assert agent.version_at(0) is None


def test_a_run_records_the_agent_version_it_was_created_with(make_agent, make_execution):
    agent = make_agent()
    first = make_execution(agent)
    agent_update(agent=agent, timeout=45)
    second = make_execution(agent)
    assert first.agent_version == 1
    assert second.agent_version == agent.version > 1
