"""Settings fail loudly: a bad value stops the process at start-up with a message naming the
variable, and .env.example lists every key the settings read."""

import json
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


# --- The broker: BROKER_URL -------------------------------------------------------------------

BROKER_NAMES = ("CELERY_BROKER_URL", "CELERY_BROKER_TRANSPORT_OPTIONS", "REDIS_URL")
RABBITMQ = "amqp://conveyor:s3cret@rabbit.example:5672/conveyor"
# With RabbitMQ's default consumer_timeout (30 min), the default limits are refused (below).
FITS_RABBITMQ_DEFAULT = {"CONVEYOR_MAX_TIMEOUT": "900", "CONVEYOR_MAX_BACKOFF": "600"}


def settings_values(
    tmp_path: Path, *names: str, module: str = "config.settings", **env: str
) -> dict:
    """The values of ``names`` in ``module`` imported in a new interpreter with only ``env``
    (and PATH, DEBUG) set, and the Celery app's broker settings as it reads them."""
    code = (
        f"import json, os, {module} as s; "
        f"os.environ['DJANGO_SETTINGS_MODULE'] = {module!r}; "
        "from config.celery import app; "
        f"values = {{n: getattr(s, n, None) for n in {list(names)!r}}}; "
        "values['app'] = [app.conf.broker_url, app.conf.broker_transport_options, "
        "app.conf.broker_channel_error_retry]; "
        "print(json.dumps(values, default=str))"
    )
    clean_env = {"PATH": os.environ.get("PATH", ""), "CONVEYOR_VAR_DIR": str(tmp_path),
                 "DEBUG": "true", **env}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, env=clean_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_broker_url_the_broker_is_redis_url_s_redis(tmp_path):
    embedded = settings_values(tmp_path, *BROKER_NAMES)
    assert embedded["CELERY_BROKER_URL"] == f"redis+socket://{tmp_path}/redis.sock"
    assert embedded["REDIS_URL"] == f"unix://{tmp_path}/redis.sock"

    values = settings_values(tmp_path, *BROKER_NAMES, REDIS_URL="redis://cache:6379/2")
    assert values["CELERY_BROKER_URL"] == values["REDIS_URL"] == "redis://cache:6379/2"
    assert values["CELERY_BROKER_TRANSPORT_OPTIONS"]["visibility_timeout"] == 7810
    assert values["app"][:2] == [values["CELERY_BROKER_URL"],
                                 values["CELERY_BROKER_TRANSPORT_OPTIONS"]]  # fmt: skip


@pytest.mark.parametrize("scheme", ["amqp", "amqps", "pyamqp"])
def test_broker_url_may_name_a_rabbitmq_and_redis_still_counts_the_rates(tmp_path, scheme):
    url = RABBITMQ.replace("amqp", scheme, 1)
    values = settings_values(
        tmp_path, *BROKER_NAMES, BROKER_URL=url, REDIS_URL="redis://cache:6379/2",
        CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT="7810",
    )  # fmt: skip
    assert values["CELERY_BROKER_URL"] == url
    assert values["REDIS_URL"] == "redis://cache:6379/2"
    # The Redis transport's options (visibility_timeout, socket timeouts) are not passed on;
    # a publish to a RabbitMQ that stopped reading gives up after the write timeout.
    assert values["CELERY_BROKER_TRANSPORT_OPTIONS"] == {"write_timeout": 3.0}
    # A channel RabbitMQ closes makes the worker reconnect instead of stopping.
    assert values["app"] == [url, {"write_timeout": 3.0}, True]


def test_broker_url_may_name_another_redis_than_the_rates_one(tmp_path):
    values = settings_values(
        tmp_path, *BROKER_NAMES, BROKER_URL="redis://broker:6379/1", REDIS_URL="redis://cache/0"
    )
    assert (values["CELERY_BROKER_URL"], values["REDIS_URL"]) == (
        "redis://broker:6379/1",
        "redis://cache/0",
    )
    assert values["CELERY_BROKER_TRANSPORT_OPTIONS"]["visibility_timeout"] == 7810
    assert values["app"][2] is False

    sock = settings_values(tmp_path, *BROKER_NAMES, BROKER_URL="unix:///run/redis/broker.sock")
    assert sock["CELERY_BROKER_URL"] == "redis+socket:///run/redis/broker.sock"  # kombu's spelling


@pytest.mark.parametrize(
    ("url", "shown"),
    [("kafka://conveyor:hunter2@kafka:9092", "not a kafka:// URL"),
     ("http://conveyor:hunter2@rabbit:15672/", "not a http:// URL"),
     ("conveyor:hunter2@rabbit:5672", "not a URL without a scheme")],
)  # fmt: skip
def test_any_other_broker_is_refused_without_showing_its_password(tmp_path, url, shown):
    result = import_settings(tmp_path, DEBUG="true", BROKER_URL=url)
    assert result.returncode != 0
    assert "ImproperlyConfigured: BROKER_URL must be a RabbitMQ URL (amqp://, amqps://)" in (
        result.stderr
    )
    assert shown in result.stderr
    assert "hunter2" not in result.stderr


def test_with_rabbitmq_the_default_limits_outlast_its_default_consumer_timeout(tmp_path):
    result = import_settings(tmp_path, DEBUG="true", BROKER_URL=RABBITMQ)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "CONVEYOR_TIME_LIMIT_GRACE = 7210 s" in message
    assert "CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT=1800 s" in message
    assert "consumer_timeout = 7810000, in milliseconds" in message
    assert "CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT=7810" in message
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    ("env", "starts"),
    [({"CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT": "7210"}, False),  # equal is not enough
     ({"CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT": "7211"}, True),
     (FITS_RABBITMQ_DEFAULT, True),  # 900 + 600 + 10 < 1800
     ({**FITS_RABBITMQ_DEFAULT, "CONVEYOR_TIME_LIMIT_GRACE": "300"}, False)],
)  # fmt: skip
def test_with_rabbitmq_the_consumer_timeout_must_outlast_the_longest_hold(tmp_path, env, starts):
    result = import_settings(tmp_path, DEBUG="true", BROKER_URL=RABBITMQ, **env)
    assert (result.returncode == 0) is starts, result.stderr


def test_the_consumer_timeout_does_not_concern_redis(tmp_path):
    result = import_settings(
        tmp_path, DEBUG="true", BROKER_URL="redis://broker:6379/1",
        CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT="1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_the_test_settings_keep_broker_url_and_start_their_own_redis_for_the_rates(tmp_path):
    names = (*BROKER_NAMES, "CONVEYOR_EXECUTIONS_QUEUE", "CONVEYOR_MAINTENANCE_QUEUE",
             "CONVEYOR_MAX_TIMEOUT")  # fmt: skip
    amqp = settings_values(tmp_path, *names, module="config.settings_test", BROKER_URL=RABBITMQ)
    assert amqp["CELERY_BROKER_URL"] == RABBITMQ
    assert amqp["REDIS_URL"] == f"unix://{tmp_path}/test-redis.sock"
    # Queues of this run's own on a RabbitMQ that other runs may share.
    assert re.fullmatch(r"test-executions-[0-9a-f]{8}", amqp["CONVEYOR_EXECUTIONS_QUEUE"])
    assert amqp["CONVEYOR_MAINTENANCE_QUEUE"].startswith("test-maintenance-")
    assert amqp["CONVEYOR_MAX_TIMEOUT"] == 900

    redis = settings_values(tmp_path, *names, module="config.settings_test")
    assert redis["CELERY_BROKER_URL"] == f"redis+socket://{tmp_path}/test-redis.sock"
    assert redis["CONVEYOR_EXECUTIONS_QUEUE"] == "test-executions"
    assert redis["CONVEYOR_MAX_TIMEOUT"] == 3600


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


EMAIL_NAMES = ("EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER",
               "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS", "EMAIL_USE_SSL")  # fmt: skip


def test_mail_is_printed_unless_a_mail_server_is_given(tmp_path):
    values = settings_values(tmp_path, *EMAIL_NAMES)
    assert values["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"

    url = settings_values(
        tmp_path, *EMAIL_NAMES, EMAIL_URL="smtp://conveyor:p%40ss@mail.example.com:587/?tls"
    )
    assert [url[n] for n in EMAIL_NAMES] == [
        "django.core.mail.backends.smtp.EmailBackend", "mail.example.com", 587, "conveyor",
        "p@ss", True, False,
    ]  # fmt: skip
    implicit = settings_values(tmp_path, *EMAIL_NAMES, EMAIL_URL="smtps://mail.example.com")
    assert (implicit["EMAIL_PORT"], implicit["EMAIL_USE_SSL"]) == (465, True)

    django_style = settings_values(
        tmp_path, *EMAIL_NAMES, EMAIL_HOST="smtp.example.com", EMAIL_PORT="2525",
        EMAIL_USE_TLS="true",
    )  # fmt: skip
    assert [django_style[n] for n in EMAIL_NAMES[:3]] == [
        "django.core.mail.backends.smtp.EmailBackend", "smtp.example.com", 2525,
    ]  # fmt: skip
    assert django_style["EMAIL_USE_TLS"] is True


def test_an_email_url_of_another_scheme_is_refused(tmp_path):
    result = import_settings(tmp_path, DEBUG="true", EMAIL_URL="http://mail.example.com")
    assert result.returncode != 0
    assert "EMAIL_URL must start with smtp:// or smtps://." in result.stderr
