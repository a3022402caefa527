"""Creating and changing agents: validation, limits, secrets and pausing."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import override_settings

from agents.models import Agent
from agents.secrets import Secrets
from agents.services import agent_create, agent_pause, agent_resume, agent_update

pytestmark = pytest.mark.django_db


def errors_of(call):
    with pytest.raises(ValidationError) as info:
        call()
    return info.value.message_dict


def test_a_valid_agent_gets_the_installation_defaults(alice, settings):
    agent = agent_create(
        owner=alice, name="echo", kind="function", config={"function": "demo.echo"}
    )
    assert agent.uuid and agent.max_retries == settings.CONVEYOR_DEFAULT_MAX_RETRIES
    assert agent.timeout == settings.CONVEYOR_DEFAULT_TIMEOUT
    assert agent.queue == settings.CONVEYOR_EXECUTIONS_QUEUE
    assert "timeout" in agent.retry_on and "internal" not in agent.retry_on


def test_config_is_checked_against_the_kinds_schema(alice):
    errors = errors_of(
        lambda: agent_create(owner=alice, name="x", kind="function", config={"function": "no.such"})
    )
    assert "config.function" in errors


def test_an_unknown_kind_is_refused_with_the_choices(alice):
    errors = errors_of(lambda: agent_create(owner=alice, name="x", kind="telepathy"))
    assert "function" in errors["kind"][0] and "http" in errors["kind"][0]


def test_the_maintenance_queue_is_refused_for_agent_runs(alice, settings):
    errors = errors_of(
        lambda: agent_create(
            owner=alice,
            name="x",
            kind="function",
            config={"function": "demo.echo"},
            queue=settings.CONVEYOR_MAINTENANCE_QUEUE,
        )
    )
    assert "maintenance queue" in errors["queue"][0]
    assert settings.CONVEYOR_EXECUTIONS_QUEUE in errors["queue"][0]


def test_names_are_unique_per_owner_only(alice, bob):
    agent_create(owner=alice, name="sync", kind="function", config={"function": "demo.echo"})
    errors = errors_of(
        lambda: agent_create(
            owner=alice, name="sync", kind="function", config={"function": "demo.echo"}
        )
    )
    assert errors["name"] == ["You already have an agent named “sync”."]
    agent_create(owner=bob, name="sync", kind="function", config={"function": "demo.echo"})


@pytest.mark.parametrize("other", ["Sync", "SYNC", "sYnC"])
def test_names_are_unique_whatever_their_case(alice, other):
    agent_create(owner=alice, name="sync", kind="function", config={"function": "demo.echo"})
    errors = errors_of(
        lambda: agent_create(
            owner=alice, name=other, kind="function", config={"function": "demo.echo"}
        )
    )
    assert errors["name"] == ["You already have an agent named “sync”."]


@pytest.mark.parametrize("name", ["Relevé", "Отчёт", "日報 2", "Ärger-Äpfel_1.0"])
def test_names_can_be_written_in_any_script(alice, name):
    agent = agent_create(owner=alice, name=name, kind="function", config={"function": "demo.echo"})
    assert agent.name == name


def test_names_in_any_script_are_unique_whatever_their_case(alice):
    agent_create(owner=alice, name="Relevé", kind="function", config={"function": "demo.echo"})
    errors = errors_of(
        lambda: agent_create(
            owner=alice, name="RELEVÉ", kind="function", config={"function": "demo.echo"}
        )
    )
    assert errors["name"] == ["You already have an agent named “Relevé”."]


@pytest.mark.parametrize("name", ["_hidden", "-dash", "a/b", "tab\there", "line\n", "x!"])
def test_names_start_with_a_letter_or_digit_and_hold_no_other_signs(alice, name):
    errors = errors_of(
        lambda: agent_create(
            owner=alice, name=name, kind="function", config={"function": "demo.echo"}
        )
    )
    assert "name" in errors


def test_renaming_an_agent_to_its_own_name_in_another_case_is_allowed(alice):
    agent = agent_create(
        owner=alice, name="sync", kind="function", config={"function": "demo.echo"}
    )
    agent_update(agent=agent, name="Sync")
    agent.refresh_from_db()
    assert agent.name == "Sync"


def test_the_database_refuses_a_duplicate_that_skips_the_service(alice, make_agent):
    make_agent(alice, name="sync")
    with pytest.raises(IntegrityError), transaction.atomic():
        Agent.objects.create(owner=alice, name="SYNC", kind="function")


def test_names_cannot_hold_a_slash(alice):
    errors = errors_of(
        lambda: agent_create(
            owner=alice, name="a/b", kind="function", config={"function": "demo.echo"}
        )
    )
    assert "name" in errors


@override_settings(CONVEYOR_MAX_TIMEOUT=60, CONVEYOR_MAX_BACKOFF=100, CONVEYOR_MAX_RETRIES=5)
def test_limits_of_the_installation_apply(alice):
    errors = errors_of(
        lambda: agent_create(
            owner=alice,
            name="x",
            kind="function",
            config={"function": "demo.echo"},
            timeout=61,
            retry_backoff=101,
            retry_backoff_max=500,
            max_retries=6,
            retry_on=["timeout", "nonsense"],
        )
    )
    assert set(errors) >= {
        "timeout",
        "retry_backoff",
        "retry_backoff_max",
        "max_retries",
        "retry_on",
    }


def test_secrets_are_stored_encrypted_and_merge_on_update(alice):
    agent = agent_create(
        owner=alice,
        name="x",
        kind="function",
        config={"function": "demo.echo"},
        secrets={"a": "alpha-1", "b": "beta-2"},
    )
    agent_update(agent=agent, secrets={"a": "alpha-3", "b": None, "c": "gamma-4"})

    stored = Agent.objects.get(pk=agent.pk)
    assert stored.secrets == {"a": "alpha-3", "c": "gamma-4"}
    assert isinstance(stored.secrets, Secrets)
    assert "alpha-3" not in repr(stored.secrets)


def test_blank_secrets_update_keeps_them(alice):
    agent = agent_create(
        owner=alice,
        name="x",
        kind="function",
        config={"function": "demo.echo"},
        secrets={"a": "alpha-1"},
    )
    agent_update(agent=agent, description="new words", secrets={})
    assert Agent.objects.get(pk=agent.pk).secrets == {"a": "alpha-1"}


def test_pausing_and_resuming_say_whether_anything_changed(make_agent):
    agent = make_agent()
    assert agent_pause(agent=agent) and not agent_pause(agent=agent)
    assert Agent.objects.get(pk=agent.pk).is_paused
    assert agent_resume(agent=agent) and not agent_resume(agent=agent)


def test_two_agents_named_alike_at_once_leave_the_loser_the_message_not_a_database_error(
    alice, make_agent, monkeypatch
):
    """The race between validation and insert: the second request passed its check before the
    first one's row existed, so only the unique constraint sees the clash."""
    from agents import services

    make_agent(name="Nightly")
    real = services._name_taken
    calls = iter([None])  # the first check runs before the other row existed
    monkeypatch.setattr(services, "_name_taken", lambda agent: next(calls, real(agent)))

    with pytest.raises(ValidationError) as refused:
        services.agent_create(
            owner=alice, name="nightly", kind="function", config={"function": "demo.echo"}
        )
    assert refused.value.message_dict == {"name": ["You already have an agent named “Nightly”."]}
