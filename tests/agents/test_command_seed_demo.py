"""manage.py seed_demo: the demo user and agents, created once and put back on later runs."""

import json
import re
import uuid
from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.test import override_settings

from agents.management.commands import seed_demo
from agents.models import Agent
from agents.services import agent_update
from executions.models import Execution, FlowStep
from executions.services import execution_request
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db

DEMO_KINDS = {
    "echo": "function",
    "flaky": "function",
    "slow": "function",
    "broken": "function",
    "count": "function",
    "report": "function",
    "http-example": "http",
    "pipeline": "flow",
    "fan-out": "flow",
}


def seed(**kwargs) -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out, stderr=StringIO(), **kwargs)
    return out.getvalue()


def printed_password(output: str) -> str:
    match = re.search(r"password: (\S+)", output)
    assert match, output
    return match.group(1)


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_running_it_twice_creates_nothing_new():
    seed()
    users, agents = get_user_model().objects.count(), Agent.objects.count()

    output = seed()

    assert get_user_model().objects.count() == users
    assert Agent.objects.count() == agents
    assert "password: unchanged" in output


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_it_creates_the_demo_agents_with_their_kinds_and_policies():
    seed()

    demo = get_user_model().objects.get(username="demo")
    agents = {agent.name: agent for agent in Agent.objects.filter(owner=demo)}
    assert {name: agent.kind for name, agent in agents.items()} == DEMO_KINDS
    assert agents["flaky"].config == {"function": "demo.flaky"}
    assert (agents["flaky"].retry_backoff, agents["flaky"].max_retries) == (2, 3)
    assert agents["slow"].timeout == 120
    assert agents["broken"].config == {"function": "demo.broken"}
    assert agents["http-example"].config["url"].startswith("https://")


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_it_prints_the_login_with_a_made_up_password_that_works():
    output = seed()

    assert "http://127.0.0.1:8000/admin/" in output
    assert "username: demo" in output
    password = printed_password(output)
    assert authenticate(username="demo", password=password) is not None
    for name in DEMO_KINDS:
        assert name in output


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_a_second_run_keeps_the_password_it_made_up():
    password = printed_password(seed())

    seed()

    assert authenticate(username="demo", password=password) is not None


def test_the_password_comes_from_the_setting_when_it_is_set():
    with override_settings(CONVEYOR_DEMO_PASSWORD=None):
        seed()

    with override_settings(CONVEYOR_DEMO_PASSWORD="correct horse battery staple"):
        output = seed()

    assert authenticate(username="demo", password="correct horse battery staple") is not None
    assert "CONVEYOR_DEMO_PASSWORD" in output
    # The value set by the operator is not echoed to the terminal (or a CI log).
    assert "correct horse battery staple" not in output


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_the_demo_user_can_log_in_to_the_admin_but_is_no_superuser():
    seed()

    demo = get_user_model().objects.get(username="demo")
    assert demo.is_staff and not demo.is_superuser
    assert demo.has_perm("agents.view_agent")
    assert demo.has_perm("executions.view_execution")


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_a_later_run_puts_back_a_changed_demo_agent():
    seed()
    flaky = Agent.objects.get(owner__username="demo", name="flaky")
    agent_update(agent=flaky, max_retries=0, is_paused=True)

    output = seed()

    flaky.refresh_from_db()
    assert (flaky.max_retries, flaky.is_paused) == (3, False)
    assert re.search(r"flaky\s+function\s+updated", output)
    assert re.search(r"echo\s+function\s+unchanged", output)


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_an_http_config_the_kind_rejects_is_a_warning_not_a_crash(monkeypatch):
    specs = [
        *(spec for spec in seed_demo.demo_agents() if spec.kind != "http"),
        seed_demo.DemoAgent(
            "http-example", "http", {"method": "GET", "url": "not a url"}, optional=True
        ),
    ]
    monkeypatch.setattr(seed_demo, "demo_agents", lambda: specs)
    out, err = StringIO(), StringIO()

    call_command("seed_demo", stdout=out, stderr=err)

    assert "Warning: skipped the agent “http-example”" in err.getvalue()
    assert "config.url" in err.getvalue()
    assert set(Agent.objects.values_list("name", flat=True)) == set(DEMO_KINDS) - {"http-example"}


# --- The login again (make run's last lines) and a local superuser ----------------------------


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    """The made-up password is kept under VAR_DIR: a directory of this test's own."""
    settings.VAR_DIR = tmp_path
    return tmp_path


def login(**kwargs) -> str:
    return seed(login=True, **kwargs)


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_the_login_points_to_the_home_page_and_repeats_the_made_up_password(var_dir):
    password = printed_password(seed())

    output = login()

    assert "Conveyor: http://127.0.0.1:8000/ " in output
    assert f"Sign in as demo, password: {password}" in output
    assert (var_dir / "demo-password").stat().st_mode & 0o777 == 0o600


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_the_login_changes_nothing(var_dir):
    assert "No demo user yet" in login()
    assert not get_user_model().objects.exists()


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_a_password_changed_since_is_not_shown(var_dir):
    password = printed_password(seed())
    demo = get_user_model().objects.get(username="demo")
    demo.set_password("changed in the admin")
    demo.save()

    output = login()

    assert password not in output and "changed in the admin" not in output
    assert "set CONVEYOR_DEMO_PASSWORD" in output


def test_a_chosen_password_is_never_written_down_or_shown(var_dir):
    with override_settings(CONVEYOR_DEMO_PASSWORD=None):
        seed()
    with override_settings(CONVEYOR_DEMO_PASSWORD="correct horse battery staple"):
        seed()
        output = login()
    assert "password: the value of CONVEYOR_DEMO_PASSWORD" in output
    assert "correct horse battery staple" not in output
    assert not (var_dir / "demo-password").exists()


@override_settings(CONVEYOR_DEMO_PASSWORD=None, DEBUG=True)
def test_superuser_creates_a_local_administrator_once():
    output = seed(superuser=True)
    match = re.search(r"superuser: admin, password: (\S+)", output)
    assert match, output
    admin = authenticate(username="admin", password=match.group(1))
    assert admin is not None and admin.is_superuser and admin.is_staff

    again = seed(superuser=True)

    assert "superuser: admin, password: unchanged" in again
    assert get_user_model().objects.filter(username="admin").count() == 1


@override_settings(CONVEYOR_DEMO_PASSWORD=None, DEBUG=False)
def test_superuser_is_refused_without_debug():
    with pytest.raises(CommandError, match="createsuperuser"):
        seed(superuser=True)
    assert not get_user_model().objects.filter(username="admin").exists()


def test_the_commands_it_suggests_run_through_the_projects_environment(monkeypatch, settings):
    monkeypatch.setenv("DEBUG", "true")
    settings.DEBUG = True
    output = seed()
    assert "  DEBUG=true uv run python manage.py run_agent demo/echo" in output
    assert "uv run python manage.py run_agent demo/flaky --input" in output


# --- The demo flows ---------------------------------------------------------------------------


def demo_agent(name: str) -> Agent:
    return Agent.objects.get(owner__username="demo", name=name)


def step_agents(flow: Agent) -> dict[str, str]:
    """Step key -> the name of the agent it runs (members of parallel groups too)."""
    steps = []
    for step in flow.config["steps"]:
        steps += step.get("parallel", [step])
    names = dict(Agent.objects.values_list("uuid", "name"))
    return {s["key"]: names[uuid.UUID(s["agent"])] for s in steps if "agent" in s}


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_the_demo_flows_run_the_demo_agents_stored_by_uuid():
    seed()

    pipeline, fan_out = demo_agent("pipeline"), demo_agent("fan-out")
    assert step_agents(pipeline) == {"fetch": "echo", "transform": "flaky", "deliver": "echo"}
    assert step_agents(fan_out) == {
        "prepare": "echo",
        "a": "slow",
        "b": "slow",
        "c": "echo",
        "summarise": "echo",
    }
    assert pipeline.config["steps"][0]["agent"] == str(demo_agent("echo").uuid)
    assert pipeline.config["steps"][1]["retry"] == {
        "max_retries": 2,
        "backoff": 1,
        "jitter": False,
    }
    assert fan_out.config["steps"][1] == {"key": "cool-off", "wait": {"seconds": 5}}
    assert demo_agent("count").config == {"function": "demo.count"}


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_a_second_run_leaves_the_flows_as_they_are():
    seed()
    before = {a.name: (a.updated_at, a.config) for a in Agent.objects.all()}

    output = seed()

    assert {a.name: (a.updated_at, a.config) for a in Agent.objects.all()} == before
    assert re.search(r"pipeline\s+flow\s+unchanged", output)
    assert re.search(r"fan-out\s+flow\s+unchanged", output)


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_a_later_run_puts_back_a_changed_flow():
    seed()
    pipeline = demo_agent("pipeline")
    agent_update(agent=pipeline, config={"steps": [{"key": "only", "agent": "broken"}]})

    output = seed()

    pipeline.refresh_from_db()
    assert step_agents(pipeline) == {"fetch": "echo", "transform": "flaky", "deliver": "echo"}
    assert re.search(r"pipeline\s+flow\s+updated", output)


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_the_flows_run_the_agents_of_the_demo_names_again_after_a_rename():
    seed()
    renamed = demo_agent("echo")
    agent_update(agent=renamed, name="my-echo")

    output = seed()

    echo = demo_agent("echo")
    assert echo.pk != renamed.pk
    assert demo_agent("pipeline").config["steps"][0]["agent"] == str(echo.uuid)
    assert demo_agent("fan-out").config["steps"][0]["agent"] == str(echo.uuid)
    assert re.search(r"pipeline\s+flow\s+updated", output)


@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_it_suggests_running_the_flows_with_the_input_they_need():
    output = seed()

    assert 'run_agent demo/pipeline --input \'{"report": "weekly"}\' --wait' in output
    assert 'run_agent demo/fan-out --input \'{"batch": "demo"}\' --wait' in output


@pytest.mark.slow
@override_settings(CONVEYOR_DEMO_PASSWORD=None)
def test_the_demo_flows_succeed_through_the_real_worker(worker, beat):
    seed()
    beat()  # the tick ends the fan-out's wait
    runs = {}
    for spec in seed_demo.demo_agents():
        if spec.kind == "flow":
            agent = demo_agent(spec.name)
            runs[spec.name] = execution_request(
                agent=agent, trigger="manual", input=json.loads(spec.try_input)
            )

    for name, run in runs.items():
        run = wait_for(run, "succeeded", "failed", "cancelled", timeout=90)
        steps = {s.key: s.status for s in FlowStep.objects.filter(flow=run)}
        assert run.status == "succeeded", (name, run.error_message, steps)
        assert set(steps.values()) == {"succeeded"}, (name, steps)

    pipeline = runs["pipeline"]
    assert pipeline.result == {
        "report": "weekly",
        "rows": [3, 1, 2],
        "transformed_on_attempt": 2,
        "message": "The weekly report is ready.",
    }
    transform = FlowStep.objects.get(flow=pipeline, key="transform").execution
    assert transform.attempt == 2
    fan_out = runs["fan-out"]
    assert fan_out.result["batch"] == "demo"
    assert set(fan_out.result["results"]) == {"a", "b", "c"}
    assert fan_out.result["results"]["c"] == {"item": "c"}
    assert Execution.objects.filter(parent=fan_out).count() == 5
