"""docker-compose.yml, checked offline: against the Compose specification's JSON schema, and
for the promises the README makes about it (the six processes, Flower never open to the world,
migrations before anything starts, secrets required)."""

import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML  # installed with check-jsonschema

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_SERVICES = ("web", "worker", "maintenance", "notifier", "beat", "flower")


def check_against_compose_spec(path: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "check_jsonschema"]
    command += ["--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def compose():
    return YAML(typ="safe").load(COMPOSE_FILE.read_text())


def published_host_ips(service: dict) -> list[str]:
    """The host address of each published port (short or long syntax); "" means every one."""
    ips = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ips.append(port.get("host_ip", ""))
        else:
            parts = str(port).rsplit(":", 2)
            ips.append(parts[0] if len(parts) == 3 else "")
    return ips


def test_the_compose_file_follows_the_compose_specification():
    result = check_against_compose_spec(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_broken_file(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  web:\n    imagee: conveyor\n    ports: {http: 8000}\n")
    assert check_against_compose_spec(broken).returncode != 0


def test_it_runs_the_six_processes(compose):
    assert {"postgres", "redis", "web", "worker", "beat", "flower"} <= set(compose["services"])


def test_flower_is_published_on_the_loopback_only(compose):
    ips = published_host_ips(compose["services"]["flower"])
    assert ips, "flower publishes no port"
    assert all(ip in ("127.0.0.1", "::1", "[::1]") for ip in ips), ips


def test_flower_requires_a_login(compose):
    login = compose["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert login.startswith("${FLOWER_BASIC_AUTH:?"), login


def test_every_process_waits_for_the_migrations(compose):
    services = compose["services"]
    assert services["migrate"]["restart"] == "no"
    for name in APP_SERVICES:
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert depends_on["postgres"]["condition"] == "service_healthy", name
        assert depends_on["redis"]["condition"] == "service_healthy", name


def test_postgres_and_redis_report_their_health(compose):
    for name in ("postgres", "redis"):
        assert compose["services"][name]["healthcheck"]["test"], name


@pytest.mark.parametrize("name", ["SECRET_KEY", "CONVEYOR_SECRET_KEYS"])
def test_secrets_come_from_the_environment_and_are_required(compose, name):
    for service in APP_SERVICES:
        value = compose["services"][service]["environment"][name]
        assert value.startswith(f"${{{name}:?"), (service, value)


def command_line(service: dict) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else " ".join(command)


def test_there_is_one_beat(compose):
    services = compose["services"]
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1
    others = [name for name, service in services.items() if " beat" in command_line(service)]
    assert others == ["beat"]


def queues_of(service: dict) -> set[str]:
    command = service["command"]
    return set(command[command.index("-Q") + 1].split(","))


def test_maintenance_has_a_worker_that_agent_runs_cannot_fill(compose):
    services = compose["services"]
    assert queues_of(services["maintenance"]) == {"maintenance"}
    assert "maintenance" not in queues_of(services["worker"])


def test_web_and_the_workers_share_the_artifacts_volume(compose):
    services = compose["services"]
    mounts = {name: set(services[name].get("volumes", [])) for name in ("web", "worker")}
    assert "artifacts:/app/var/artifacts" in mounts["web"] & mounts["worker"]
    assert "artifacts" in compose["volumes"]


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60}
    return float(duration[:-1]) * units[duration[-1]]


def test_a_stopping_worker_gets_its_soft_shutdown_before_it_is_killed(compose):
    worker = compose["services"]["worker"]
    assert worker["environment"]["REMAP_SIGTERM"] == "SIGQUIT"
    grace = worker["environment"]["CONVEYOR_SHUTDOWN_GRACE"]  # "${CONVEYOR_SHUTDOWN_GRACE:-30}"
    default = float(grace.rsplit("-", 1)[1].rstrip("}"))
    assert seconds(worker["stop_grace_period"]) >= default + 10
