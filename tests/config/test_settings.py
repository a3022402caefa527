"""Settings fail loudly: a bad value stops the process at start-up with a message naming the
variable, and .env.example lists every key the settings read."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from honcho.environ import parse as parse_dotenv

from config.env import env_bool, env_float, env_int, env_list, env_str

ROOT = Path(__file__).resolve().parent.parent.parent
SETTINGS_FILES = [ROOT / "config" / "settings.py", ROOT / "config" / "settings_test.py"]
ENV_EXAMPLE = ROOT / ".env.example"

# The name a settings module reads: env_int("NAME", ...), os.environ.get("NAME"), ...
READ_ENV = re.compile(
    r"""(?:env_[a-z_]+\(|os\.environ(?:\.get|\.setdefault)?[(\[])\s*"""
    r"""["']([A-Z][A-Z0-9_]*)["']"""
)
# A key in .env.example, commented out or not: "# NAME=value" or "NAME=value".
EXAMPLE_KEY = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)


# --- The helpers ----------------------------------------------------------------------------


def test_a_whole_number_with_a_unit_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("CONVEYOR_DEFAULT_TIMEOUT", "30s")
    with pytest.raises(ImproperlyConfigured, match=r"CONVEYOR_DEFAULT_TIMEOUT.*'30s'"):
        env_int("CONVEYOR_DEFAULT_TIMEOUT", 300)


def test_a_number_below_the_minimum_is_refused(monkeypatch):
    monkeypatch.setenv("CONVEYOR_MAX_RETRIES", "-1")
    with pytest.raises(ImproperlyConfigured, match=r"CONVEYOR_MAX_RETRIES must be at least 0"):
        env_int("CONVEYOR_MAX_RETRIES", 20, minimum=0)


def test_a_fraction_below_the_minimum_is_refused(monkeypatch):
    monkeypatch.setenv("CONVEYOR_PROGRESS_INTERVAL", "-0.5")
    with pytest.raises(ImproperlyConfigured, match=r"CONVEYOR_PROGRESS_INTERVAL must be at least"):
        env_float("CONVEYOR_PROGRESS_INTERVAL", 0.5, minimum=0)


def test_a_fraction_that_is_not_a_number_is_refused(monkeypatch):
    monkeypatch.setenv("CONVEYOR_LOG_FLUSH_INTERVAL", "fast")
    with pytest.raises(ImproperlyConfigured, match=r"CONVEYOR_LOG_FLUSH_INTERVAL.*'fast'"):
        env_float("CONVEYOR_LOG_FLUSH_INTERVAL", 1.0)


def test_a_yes_no_value_that_is_neither_is_refused(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG.*'maybe'"):
        env_bool("DEBUG", False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("YES", True), (" on ", True), ("false", False), ("0", False),
     ("no", False), ("", False)],
)  # fmt: skip
def test_yes_no_values_are_read_in_their_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("CONVEYOR_TASK_EVENTS", raw)
    assert env_bool("CONVEYOR_TASK_EVENTS", not expected) is expected


def test_unset_or_empty_values_take_the_default(monkeypatch):
    monkeypatch.delenv("CONVEYOR_DEFAULT_TIMEOUT", raising=False)
    assert env_int("CONVEYOR_DEFAULT_TIMEOUT", 300, minimum=1) == 300
    monkeypatch.setenv("CONVEYOR_DEFAULT_TIMEOUT", " ")
    assert env_int("CONVEYOR_DEFAULT_TIMEOUT", 300, minimum=1) == 300
    monkeypatch.delenv("TIME_ZONE", raising=False)
    assert env_str("TIME_ZONE", "UTC") == "UTC"


def test_lists_are_comma_separated_and_ignore_blanks(monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", " example.com, ,127.0.0.1,")
    assert env_list("ALLOWED_HOSTS") == ["example.com", "127.0.0.1"]


# --- The settings module, started the way a process starts ------------------------------------


def import_settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``import config.settings`` in a new interpreter with only ``env`` (and PATH) set."""
    clean_env = {"PATH": os.environ.get("PATH", ""), "CONVEYOR_VAR_DIR": str(tmp_path), **env}
    return subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        cwd=ROOT, env=clean_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_without_a_secret_key_production_refuses_to_start(tmp_path):
    result = import_settings(tmp_path)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY is not set" in result.stderr


def test_in_debug_mode_it_starts_without_any_secret(tmp_path):
    result = import_settings(tmp_path, DEBUG="true")
    assert result.returncode == 0, result.stderr


def test_production_refuses_to_start_without_the_keys_for_agent_secrets(tmp_path):
    result = import_settings(tmp_path, SECRET_KEY="a-production-secret-key")
    assert result.returncode != 0
    assert "CONVEYOR_SECRET_KEYS is not set" in result.stderr


def test_a_bad_value_stops_the_settings_naming_the_variable(tmp_path):
    result = import_settings(tmp_path, DEBUG="true", CONVEYOR_DEFAULT_TIMEOUT="30s")
    assert result.returncode != 0
    assert "CONVEYOR_DEFAULT_TIMEOUT must be a whole number, not '30s'" in result.stderr


# --- .env.example -------------------------------------------------------------------------


def keys_read_by_the_settings() -> set[str]:
    return {name for path in SETTINGS_FILES for name in READ_ENV.findall(path.read_text())}


def keys_in_env_example() -> set[str]:
    return set(EXAMPLE_KEY.findall(ENV_EXAMPLE.read_text()))


def test_the_drift_check_sees_the_settings_keys():
    # Guards the regex: if it stopped matching, the drift tests below would pass vacuously.
    assert {"SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL", "CONVEYOR_VISIBILITY_TIMEOUT",
            "CONVEYOR_SECRET_KEYS"} <= keys_read_by_the_settings()  # fmt: skip


def test_env_example_lists_every_key_the_settings_read():
    missing = keys_read_by_the_settings() - keys_in_env_example()
    assert not missing, f"add these to .env.example: {sorted(missing)}"


def test_env_example_mentions_every_conveyor_name_in_the_settings():
    names = set(re.findall(r"\bCONVEYOR_[A-Z0-9_]+\b", SETTINGS_FILES[0].read_text()))
    missing = {name for name in names if name not in ENV_EXAMPLE.read_text()}
    assert not missing, f"add these to .env.example: {sorted(missing)}"


def test_env_example_lists_the_process_keys():
    assert {"FLOWER_BASIC_AUTH", "PORT"} <= keys_in_env_example()


def test_env_example_is_readable_by_honcho_once_uncommented():
    # honcho loads .env for `make run` and cannot read JSON values.
    lines = [line.lstrip("# ") for line in ENV_EXAMPLE.read_text().splitlines()
             if EXAMPLE_KEY.match(line)]  # fmt: skip
    assert lines
    assert not [line for line in lines if "{" in line or "[" in line.split("=", 1)[1]]
    parsed = parse_dotenv("\n".join(lines))
    assert set(parsed) <= keys_in_env_example()
    assert parsed["FLOWER_BASIC_AUTH"] == "admin:conveyor"
