"""Conveyor settings, read from the environment.

Every key is listed in ``.env.example``. Bad values stop the process at start-up with
``ImproperlyConfigured`` naming the variable (see ``config/env.py``).
"""

import base64
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from common.rates import parse_rate

from .env import (
    env_bool,
    env_float,
    env_header_value,
    env_int,
    env_list,
    env_origins,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# Runtime files of the zero-setup default: the SQLite database and the embedded Redis socket.
VAR_DIR = Path(env_str("CONVEYOR_VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment (or set DEBUG=true for local "
            "development, which uses a fixed, insecure development key)."
        )
    SECRET_KEY = "conveyor-insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
# Origins (scheme and host) whose HTTPS form posts are trusted, e.g. https://conveyor.example.com.
CSRF_TRUSTED_ORIGINS = env_origins("CSRF_TRUSTED_ORIGINS")

# --- HTTPS and browser security headers ---------------------------------------------------
# Production is served over HTTPS, usually by a TLS-terminating proxy in front of web. These
# keep `manage.py check --deploy` clean; DEBUG turns the HTTPS-only ones off by default.
# The proxy's "this request came over HTTPS" header, as HEADER,value (X-Forwarded-Proto,https).
# Set it only behind a proxy that sets that header itself: a client could send it otherwise.
SECURE_PROXY_SSL_HEADER = env_header_value("SECURE_PROXY_SSL_HEADER")
# Redirect plain HTTP to HTTPS. The health check and /metrics are exempt: probes and scrapers
# often call web over plain HTTP from inside the network.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# Strict-Transport-Security, sent on HTTPS responses only: browsers then refuse plain HTTP to
# this host (and its subdomains) for that many seconds. Preload (the browsers' built-in list)
# is hard to undo, so it is off unless asked for.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# check --deploy warns while preload is off (security.W021); off is the deliberate default.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Sent on every response by SecurityMiddleware, XFrameOptionsMiddleware and
# config.security.ContentSecurityPolicyMiddleware (which also sends frame-ancestors 'none').
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "django_celery_beat",
    "django_htmx",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "axes",
    "agents",
    "executions",
    "api",
    "ops",
    "notifications",
    "artifacts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before anything reads a form's body (the CSRF check runs after every middleware).
    "config.middleware.FormTooLargeMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "config.middleware.UserTimezoneMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "builtins": ["executions.templatetags.conveyor"],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
# Postgres in production and CI (DATABASE_URL=postgres://...); SQLite in WAL mode in var/ as
# the zero-setup default.
DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'conveyor.sqlite3'}"
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # Web, worker and beat write at once: WAL plus IMMEDIATE transactions and a busy
        # timeout avoid "database is locked".
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so that the test suite's worker process can share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Sign-in throttle (django-axes) ----------------------------------------------------------
# After CONVEYOR_LOGIN_FAILURE_LIMIT failed sign-ins for one account from one address, on
# /login/ and /admin/login/, that account is refused from that address (even with the right
# password) for CONVEYOR_LOGIN_LOCKOUT_MINUTES. Staff lift a lockout early under Axes in the
# admin, or with `manage.py axes_reset_username <name>`.
CONVEYOR_LOGIN_FAILURE_LIMIT = env_int("CONVEYOR_LOGIN_FAILURE_LIMIT", 5, minimum=1)
CONVEYOR_LOGIN_LOCKOUT_MINUTES = env_int("CONVEYOR_LOGIN_LOCKOUT_MINUTES", 15, minimum=1)
# Proxies in front of web that append the client's address to X-Forwarded-For (0: none, the
# connection's address is the client's). The sign-in throttle and the API's bad-token throttle
# count per client address.
CONVEYOR_TRUSTED_PROXIES = env_int("CONVEYOR_TRUSTED_PROXIES", 0, minimum=0)
AUTHENTICATION_BACKENDS = [
    "config.security.SignInThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = CONVEYOR_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=CONVEYOR_LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "config.security.client_address"
AXES_LOCKOUT_CALLABLE = "config.security.sign_in_locked_out"
# Failed sign-ins only: no row per successful sign-in.
AXES_DISABLE_ACCESS_LOG = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# collectstatic's target; WhiteNoise serves it, and the app's own static files without it.
STATIC_ROOT = Path(env_str("STATIC_ROOT") or VAR_DIR / "static")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True

# --- Files: artifacts ----------------------------------------------------------------------
# The files agents save (ctx.save_artifact, the http kind's "keep the response"), stored through
# Django's storage API in the "artifacts" storage below: by default the file system under
# CONVEYOR_ARTIFACTS_DIR, which web and every worker must share (one machine, or a shared
# volume); or any Django storage backend (e.g. an S3-compatible one from django-storages,
# "storages.backends.s3.S3Storage") named by CONVEYOR_ARTIFACTS_STORAGE, with its options as a
# JSON object in CONVEYOR_ARTIFACTS_STORAGE_OPTIONS (README, Artifacts).
FILE_SYSTEM_STORAGE = "django.core.files.storage.FileSystemStorage"
CONVEYOR_ARTIFACTS_DIR = Path(env_str("CONVEYOR_ARTIFACTS_DIR") or VAR_DIR / "artifacts")
CONVEYOR_ARTIFACTS_STORAGE = env_str("CONVEYOR_ARTIFACTS_STORAGE") or FILE_SYSTEM_STORAGE
if "." not in CONVEYOR_ARTIFACTS_STORAGE.strip(". "):
    raise ImproperlyConfigured(
        "CONVEYOR_ARTIFACTS_STORAGE names a storage class by its dotted path, such as "
        f"storages.backends.s3.S3Storage, not {CONVEYOR_ARTIFACTS_STORAGE!r}."
    )
try:
    _artifacts_options = json.loads(env_str("CONVEYOR_ARTIFACTS_STORAGE_OPTIONS") or "{}")
except ValueError as exc:
    raise ImproperlyConfigured(
        f"CONVEYOR_ARTIFACTS_STORAGE_OPTIONS must be a JSON object ({exc})."
    ) from None
if not isinstance(_artifacts_options, dict):
    raise ImproperlyConfigured(
        'CONVEYOR_ARTIFACTS_STORAGE_OPTIONS must be a JSON object, e.g. {"bucket_name": "x"}.'
    )
if CONVEYOR_ARTIFACTS_STORAGE == FILE_SYSTEM_STORAGE:
    # Agents' output is private: readable by Conveyor's own user (and its group) only.
    _artifacts_options = {
        "location": str(CONVEYOR_ARTIFACTS_DIR),
        "file_permissions_mode": 0o640,
        "directory_permissions_mode": 0o750,
        **_artifacts_options,
    }
STORAGES = {
    # Django's own defaults for these two (setting STORAGES replaces them all).
    "default": {"BACKEND": FILE_SYSTEM_STORAGE},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "artifacts": {"BACKEND": CONVEYOR_ARTIFACTS_STORAGE, "OPTIONS": _artifacts_options},
}
# Limits of what one execution keeps: bytes per file, bytes and files per execution. A save
# over a limit is refused with a ValueError that the run's error shows.
CONVEYOR_ARTIFACT_MAX_BYTES = env_int("CONVEYOR_ARTIFACT_MAX_BYTES", 10 * 1024 * 1024, minimum=1)
CONVEYOR_ARTIFACTS_MAX_BYTES = env_int("CONVEYOR_ARTIFACTS_MAX_BYTES", 50 * 1024 * 1024, minimum=1)
CONVEYOR_ARTIFACTS_MAX_COUNT = env_int("CONVEYOR_ARTIFACTS_MAX_COUNT", 100, minimum=1)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "filters": {"routine_tasks": {"()": "config.log_filters.RoutineTaskFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # httpx logs every request line at INFO; the http kind keeps its own record.
        "httpx": {"level": "WARNING"},
        # django-axes logs every sign-in at INFO; a lockout is a WARNING.
        "axes": {"level": "WARNING"},
        # The worker's "Task executions.dispatch[...] received/succeeded" lines: debug only.
        "celery.worker.strategy": {"filters": ["routine_tasks"]},
        "celery.app.trace": {"filters": ["routine_tasks"]},
    },
}

# --- Redis and Celery ---------------------------------------------------------------------
# REDIS_URL: redis://host:port/db, rediss://..., or unix:///path/to/socket. Without it, the
# embedded Redis server that `make run` starts on a unix socket in var/.
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
REDIS_URL = env_str("REDIS_URL") or f"unix://{EMBEDDED_REDIS_SOCKET}"
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://", "redis+socket://")):
    raise ImproperlyConfigured(
        f"REDIS_URL must start with redis://, rediss:// or unix://, not {REDIS_URL!r}."
    )


def _broker_url(redis_url: str) -> str:
    # kombu spells a unix socket redis+socket://; redis-py spells it unix://.
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url.removeprefix("unix://")
    return redis_url


# BROKER_URL: Celery's message broker, RabbitMQ (amqp://user:password@host:5672/vhost,
# amqps://...) or a Redis (the REDIS_URL forms). Without it, REDIS_URL's Redis.
# Redis stays required with RabbitMQ: the rate limits are counted in REDIS_URL's Redis.
AMQP_BROKER_SCHEMES = ("amqp://", "amqps://", "pyamqp://")
REDIS_BROKER_SCHEMES = ("redis://", "rediss://", "unix://", "redis+socket://")


def _celery_broker_url() -> str:
    url = env_str("BROKER_URL")
    if not url:
        return _broker_url(REDIS_URL)
    if not url.startswith(AMQP_BROKER_SCHEMES + REDIS_BROKER_SCHEMES):
        # Only the scheme is shown: the rest of the URL may hold a password.
        given = f"a {url.split('://', 1)[0]}:// URL" if "://" in url else "a URL without a scheme"
        raise ImproperlyConfigured(
            "BROKER_URL must be a RabbitMQ URL (amqp://, amqps://) or a Redis URL (redis://, "
            f"rediss://, unix://), not {given}."
        )
    return _broker_url(url)


# Conveyor's own knobs (CONVEYOR_*). Defaults for new agents:
CONVEYOR_DEFAULT_MAX_RETRIES = env_int("CONVEYOR_DEFAULT_MAX_RETRIES", 3, minimum=0)
CONVEYOR_DEFAULT_RETRY_BACKOFF = env_int("CONVEYOR_DEFAULT_RETRY_BACKOFF", 5, minimum=0)
CONVEYOR_DEFAULT_RETRY_BACKOFF_MAX = env_int("CONVEYOR_DEFAULT_RETRY_BACKOFF_MAX", 600, minimum=0)
CONVEYOR_DEFAULT_RETRY_JITTER = env_bool("CONVEYOR_DEFAULT_RETRY_JITTER", True)
CONVEYOR_DEFAULT_TIMEOUT = env_int("CONVEYOR_DEFAULT_TIMEOUT", 300, minimum=1)
# Limits an agent may not exceed; they size the broker's visibility timeout below.
CONVEYOR_MAX_TIMEOUT = env_int("CONVEYOR_MAX_TIMEOUT", 3600, minimum=1)
CONVEYOR_MAX_BACKOFF = env_int("CONVEYOR_MAX_BACKOFF", 3600, minimum=0)
CONVEYOR_MAX_RETRIES = env_int("CONVEYOR_MAX_RETRIES", 20, minimum=0)
# Notifications (notifications/): the absolute address of this installation, for the links in
# messages; how long one delivery may take; the waits between a delivery's attempts (seconds;
# Standard Webhooks' guidance: quick first retries, then minutes, then hours; each capped at
# CONVEYOR_MAX_BACKOFF), after which it is given up.
CONVEYOR_BASE_URL = (env_str("CONVEYOR_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
CONVEYOR_NOTIFY_TIMEOUT = env_float("CONVEYOR_NOTIFY_TIMEOUT", 10.0, minimum=0.1)
CONVEYOR_NOTIFY_RETRY_DELAYS = [
    int(v) for v in env_list("CONVEYOR_NOTIFY_RETRY_DELAYS", ["5", "300", "1800", "3600", "3600"])
]
# Email: EMAIL_URL=smtp://user:password@host:587/?tls (or smtps://... for implicit TLS), or
# Django's EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS/SSL; without
# either, messages are written to the notifier's log (Django's console backend).
EMAIL_URL = env_str("EMAIL_URL")
if EMAIL_URL:
    _email = urlsplit(EMAIL_URL)
    if _email.scheme not in ("smtp", "smtps"):
        raise ImproperlyConfigured("EMAIL_URL must start with smtp:// or smtps://.")
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = _email.hostname or "localhost"
    EMAIL_PORT = _email.port or (465 if _email.scheme == "smtps" else 25)
    EMAIL_HOST_USER = unquote(_email.username or "")
    EMAIL_HOST_PASSWORD = unquote(_email.password or "")
    EMAIL_USE_SSL = _email.scheme == "smtps"
    EMAIL_USE_TLS = "tls" in parse_qs(_email.query, keep_blank_values=True)
    EMAIL_TIMEOUT = 10
elif env_str("EMAIL_HOST"):
    # Or Django's own settings, one variable each.
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = env_str("EMAIL_HOST")
    EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER") or ""
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD") or ""
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
    EMAIL_TIMEOUT = 10
else:
    EMAIL_BACKEND = env_str("EMAIL_BACKEND") or "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or "Conveyor <conveyor@localhost>"
# Flows (agents/kinds/flow.py): the longest time limit a flow may set and the longest wait step
# (30 days each), and how deep flows may run flows.
CONVEYOR_FLOW_MAX_TIMEOUT = env_int("CONVEYOR_FLOW_MAX_TIMEOUT", 30 * 86400, minimum=1)
CONVEYOR_FLOW_MAX_WAIT = env_int("CONVEYOR_FLOW_MAX_WAIT", 30 * 86400, minimum=1)
CONVEYOR_FLOW_MAX_DEPTH = env_int("CONVEYOR_FLOW_MAX_DEPTH", 3, minimum=1)
# The largest state an agent may save with ctx.checkpoint(), as JSON bytes.
CONVEYOR_CHECKPOINT_MAX_BYTES = env_int("CONVEYOR_CHECKPOINT_MAX_BYTES", 65536, minimum=1)
# Seconds between the soft time limit (the agent's timeout) and the hard kill.
CONVEYOR_TIME_LIMIT_GRACE = env_int("CONVEYOR_TIME_LIMIT_GRACE", 10, minimum=1)
# Seconds a running execution gets to stop by itself after a cancel before it is terminated.
CONVEYOR_CANCEL_GRACE = env_int("CONVEYOR_CANCEL_GRACE", 5, minimum=0)
# Throttles for the writes a running agent causes.
CONVEYOR_PROGRESS_INTERVAL = env_float("CONVEYOR_PROGRESS_INTERVAL", 0.5, minimum=0)
CONVEYOR_LOG_FLUSH_INTERVAL = env_float("CONVEYOR_LOG_FLUSH_INTERVAL", 1.0, minimum=0)
CONVEYOR_CANCEL_CHECK_INTERVAL = env_float("CONVEYOR_CANCEL_CHECK_INTERVAL", 0.5, minimum=0)
# On Postgres the claim and the successful finish of an attempt are one statement each
# (executions/fastpath.py); off, they take the ORM path that SQLite uses. Both write the same rows.
CONVEYOR_FASTPATH = env_bool("CONVEYOR_FASTPATH", True)
# Those statements are prepared on each connection (planned once, then only executed). Off
# behind a connection pooler in transaction mode, which may hand the next transaction to a
# connection where they were never prepared.
CONVEYOR_DB_PREPARE = env_bool("CONVEYOR_DB_PREPARE", True)
CONVEYOR_EXECUTIONS_QUEUE = env_str("CONVEYOR_EXECUTIONS_QUEUE", "executions")
# Notifications and completion hooks have a worker of their own: a slow endpoint never holds
# an agent's slot, nor the dispatcher's.
CONVEYOR_NOTIFICATIONS_QUEUE = env_str("CONVEYOR_NOTIFICATIONS_QUEUE", "notifications")
CONVEYOR_MAINTENANCE_QUEUE = env_str("CONVEYOR_MAINTENANCE_QUEUE", "maintenance")
# The queues agents may put their runs on, declared by operators: name -> {"description",
# "concurrency"} (concurrency: at most that many runs of the queue's agents at once, None for no
# limit). CONVEYOR_QUEUES="reports:2=Long reports;fast=Quick calls" (config/queues.py); the
# executions queue is always one of them, the maintenance and notifications queues never.
from .queues import env_queues  # noqa: E402 (kept with the setting it reads)

CONVEYOR_QUEUES = env_queues(
    "CONVEYOR_QUEUES",
    executions=CONVEYOR_EXECUTIONS_QUEUE,
    reserved={
        CONVEYOR_MAINTENANCE_QUEUE: "the maintenance queue (CONVEYOR_MAINTENANCE_QUEUE)",
        CONVEYOR_NOTIFICATIONS_QUEUE: "the notifications queue (CONVEYOR_NOTIFICATIONS_QUEUE)",
    },
)
# The dispatcher (executions/dispatch.py): seconds between two ticks (due schedules, then the
# recovery passes: due delayed and held runs, re-publishing, reaping); seconds a slot may be
# late before it counts as missed (and its schedule's catch-up policy applies); seconds an
# execution handed to the broker may wait unclaimed before it is published again.
CONVEYOR_DISPATCH_INTERVAL = env_int("CONVEYOR_DISPATCH_INTERVAL", 2, minimum=1)
CONVEYOR_SCHEDULE_MISFIRE_GRACE = env_int("CONVEYOR_SCHEDULE_MISFIRE_GRACE", 60, minimum=0)
CONVEYOR_REPUBLISH_AFTER = env_int("CONVEYOR_REPUBLISH_AFTER", 60, minimum=1)
# Heartbeats (executions/heartbeat.py): a running attempt's worker stamps heartbeat_at every
# CONVEYOR_HEARTBEAT_INTERVAL seconds while the agent runs; the reaper takes an attempt whose
# stamp is older than CONVEYOR_HEARTBEAT_TIMEOUT seconds for one whose worker died. A dead
# worker's run is therefore back within timeout + interval + one dispatcher tick (about 20-27 s
# with the defaults), whatever the agent's own timeout.
CONVEYOR_HEARTBEAT_INTERVAL = env_float("CONVEYOR_HEARTBEAT_INTERVAL", 5.0, minimum=0.1)
CONVEYOR_HEARTBEAT_TIMEOUT = env_float("CONVEYOR_HEARTBEAT_TIMEOUT", 20.0, minimum=1)
if CONVEYOR_HEARTBEAT_TIMEOUT < 3 * CONVEYOR_HEARTBEAT_INTERVAL:
    raise ImproperlyConfigured(
        "CONVEYOR_HEARTBEAT_TIMEOUT must be at least 3 times CONVEYOR_HEARTBEAT_INTERVAL, or a "
        "live attempt whose heartbeat is delayed once (a busy database) is taken for a dead one."
    )
# Retention (executions/retention.py): days a finished run is kept, from its end: succeeded
# ones, then failed and cancelled ones (an agent's own retain_*_days replace these for its runs);
# django-celery-results' rows go after the succeeded days too. The daily task
# (executions.retention, beat entry conveyor-retention) deletes them CONVEYOR_RETENTION_BATCH
# top-level executions at a time, one short transaction each, for at most
# CONVEYOR_RETENTION_MAX_SECONDS per task, then sends itself again until it is done: the
# maintenance worker runs one task at a time, so the dispatcher's tick waits that long at most.
CONVEYOR_RETAIN_SUCCEEDED_DAYS = env_int("CONVEYOR_RETAIN_SUCCEEDED_DAYS", 30, minimum=1)
CONVEYOR_RETAIN_FAILED_DAYS = env_int("CONVEYOR_RETAIN_FAILED_DAYS", 90, minimum=1)
CONVEYOR_RETENTION_BATCH = env_int("CONVEYOR_RETENTION_BATCH", 500, minimum=1)
CONVEYOR_RETENTION_MAX_SECONDS = env_int("CONVEYOR_RETENTION_MAX_SECONDS", 20, minimum=1)
# Outbound HTTP: hosts (as written in the URL) or networks (CIDR, matched against the resolved
# address) that the SSRF guard lets through although they are private or loopback.
CONVEYOR_OUTBOUND_ALLOW = env_list("CONVEYOR_OUTBOUND_ALLOW", [])
CONVEYOR_HTTP_MAX_RESPONSE_BYTES = env_int("CONVEYOR_HTTP_MAX_RESPONSE_BYTES", 1_048_576, minimum=1)
CONVEYOR_HTTP_RESULT_BODY_CHARS = env_int("CONVEYOR_HTTP_RESULT_BODY_CHARS", 4096, minimum=0)
CONVEYOR_HTTP_MAX_REDIRECTS = env_int("CONVEYOR_HTTP_MAX_REDIRECTS", 5, minimum=0)
# Operations: a queued execution older than this (seconds) is shown as stuck on the dashboard;
# the dashboard links to Flower here; /metrics also accepts "Authorization: Bearer <token>".
CONVEYOR_STUCK_QUEUED_AFTER = env_int("CONVEYOR_STUCK_QUEUED_AFTER", 300, minimum=1)
CONVEYOR_FLOWER_URL = env_str("CONVEYOR_FLOWER_URL", "http://127.0.0.1:5555/")
CONVEYOR_METRICS_TOKEN = env_str("CONVEYOR_METRICS_TOKEN") or None
# REST API and inbound webhooks: largest request body (bytes), and how many runs a token may
# request and how many webhook calls an agent may take, per window ("60/min", "1000/hour"),
# counted in Redis so the limits hold across web processes.
CONVEYOR_API_MAX_BODY_BYTES = env_int("CONVEYOR_API_MAX_BODY_BYTES", 1_048_576, minimum=1)
CONVEYOR_API_RUN_RATE = env_str("CONVEYOR_API_RUN_RATE", "60/min")
CONVEYOR_WEBHOOK_RATE = env_str("CONVEYOR_WEBHOOK_RATE", "120/min")
parse_rate(CONVEYOR_API_RUN_RATE, setting="CONVEYOR_API_RUN_RATE")
parse_rate(CONVEYOR_WEBHOOK_RATE, setting="CONVEYOR_WEBHOOK_RATE")
# Requests with a token that is not valid, per client address and window; past it, every
# request with a token from that address gets 429 until the window ends.
CONVEYOR_API_BAD_TOKEN_RATE = env_str("CONVEYOR_API_BAD_TOKEN_RATE", "10/min")
parse_rate(CONVEYOR_API_BAD_TOKEN_RATE, setting="CONVEYOR_API_BAD_TOKEN_RATE")
# Password of the demo user created by `seed_demo` (random and printed when unset).
CONVEYOR_DEMO_PASSWORD = env_str("CONVEYOR_DEMO_PASSWORD")


def _secret_keys() -> list[str]:
    keys = env_list("CONVEYOR_SECRET_KEYS")
    if not keys:
        if not DEBUG and env_str("SECRET_KEY"):
            raise ImproperlyConfigured(
                "CONVEYOR_SECRET_KEYS is not set. It lists the Fernet keys that encrypt agent "
                'secrets, newest first. Make one with: python -c "from cryptography.fernet '
                'import Fernet; print(Fernet.generate_key().decode())" (or, on a development '
                "machine, DEBUG=true python manage.py generate_secret_key)."
            )
        # Development only: a key derived from the (development) SECRET_KEY.
        digest = hashlib.sha256(("conveyor-secrets:" + SECRET_KEY).encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return keys


# Fernet keys for agent secrets, newest first: the first encrypts, all decrypt.
CONVEYOR_SECRET_KEYS = _secret_keys()

# The broker redelivers a message not acknowledged within the visibility timeout, including a
# retry waiting out its countdown. It must outlast the longest backoff plus the longest run.
CONVEYOR_VISIBILITY_TIMEOUT = env_int(
    "CONVEYOR_VISIBILITY_TIMEOUT",
    CONVEYOR_MAX_BACKOFF + CONVEYOR_MAX_TIMEOUT + CONVEYOR_TIME_LIMIT_GRACE + 600,
)
if (
    CONVEYOR_VISIBILITY_TIMEOUT
    <= CONVEYOR_MAX_BACKOFF + CONVEYOR_MAX_TIMEOUT + CONVEYOR_TIME_LIMIT_GRACE
):
    raise ImproperlyConfigured(
        "CONVEYOR_VISIBILITY_TIMEOUT must be longer than CONVEYOR_MAX_BACKOFF + "
        "CONVEYOR_MAX_TIMEOUT + CONVEYOR_TIME_LIMIT_GRACE, or a waiting retry is redelivered."
    )
# RabbitMQ has no visibility timeout: its consumer_timeout (rabbitmq.conf, in milliseconds; 30
# minutes by default) closes the channel of a worker that holds a message unacknowledged for
# longer, and every message the worker held is delivered again. Conveyor cannot read it from the
# server, so it is declared here, in seconds, and must outlast the same longest hold.
CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT = env_int("CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT", 1800, minimum=1)

CELERY_BROKER_URL = _celery_broker_url()
# Redis broker URLs use config/broker.py's transport: a message a worker cannot read is set aside.
from . import broker as _redis_transport  # noqa: E402, F401

CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CONVEYOR_VISIBILITY_TIMEOUT}
if CELERY_BROKER_URL.startswith(AMQP_BROKER_SCHEMES):
    _longest_hold = CONVEYOR_MAX_BACKOFF + CONVEYOR_MAX_TIMEOUT + CONVEYOR_TIME_LIMIT_GRACE
    if _longest_hold >= CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT:
        raise ImproperlyConfigured(
            "With RabbitMQ, a worker holds a run's message unacknowledged while its retry waits "
            "out the countdown and then runs: up to CONVEYOR_MAX_BACKOFF + CONVEYOR_MAX_TIMEOUT "
            f"+ CONVEYOR_TIME_LIMIT_GRACE = {_longest_hold} s, longer than RabbitMQ's "
            "consumer_timeout (CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT="
            f"{CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT} s). Raise consumer_timeout in rabbitmq.conf "
            "(e.g. consumer_timeout = "
            f"{(_longest_hold + 600) * 1000}, in milliseconds) and set "
            f"CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT={_longest_hold + 600}, or lower "
            "CONVEYOR_MAX_BACKOFF and CONVEYOR_MAX_TIMEOUT."
        )
    # The options above are the Redis transport's; none of them apply to RabbitMQ.
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
    # A channel that RabbitMQ closes (an acknowledgement timeout, say) makes the worker
    # reconnect rather than stop. The messages it held are delivered again; a run already
    # claimed does not run twice.
    CELERY_BROKER_CHANNEL_ERROR_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
# No celery.backend_cleanup (one DELETE of every result older than a day, at 04:00): retention
# deletes them in batches, after CONVEYOR_RETAIN_SUCCEEDED_DAYS.
CELERY_RESULT_EXPIRES = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = CONVEYOR_MAINTENANCE_QUEUE
CELERY_TASK_ROUTES = {
    "executions.run_execution": {"queue": CONVEYOR_EXECUTIONS_QUEUE},
    "notifications.*": {"queue": CONVEYOR_NOTIFICATIONS_QUEUE},
}
CELERY_TASK_TIME_LIMIT = 600
CELERY_TASK_SOFT_TIME_LIMIT = 540
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True
# Task events cost the worker's main process time on every task; Flower switches them on in the
# workers itself while it runs, so they are off by default.
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CONVEYOR_TASK_EVENTS", False)
CELERY_TASK_SEND_SENT_EVENT = CELERY_WORKER_SEND_TASK_EVENTS
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# One entry: the dispatcher's tick. The DatabaseScheduler installs it into its tables at start.
# It expires after one interval (django-celery-beat reads "expire_seconds"), so ticks that a busy
# worker could not take in time are dropped rather than replayed in a burst.
CELERY_BEAT_SCHEDULE = {
    "conveyor-dispatch": {
        "task": "executions.dispatch",
        "schedule": float(CONVEYOR_DISPATCH_INTERVAL),
        "options": {
            "queue": CONVEYOR_MAINTENANCE_QUEUE,
            "expire_seconds": CONVEYOR_DISPATCH_INTERVAL,
        },
    },
    # The daily and weekly digests of the users who asked for one (each is sent when due).
    "conveyor-digests": {
        "task": "notifications.send_digests",
        "schedule": 3600.0,
        "options": {"queue": CONVEYOR_NOTIFICATIONS_QUEUE, "expire_seconds": 3600},
    },
    # Retention, once a day at 03:15 (CELERY_TIMEZONE); a day missed is caught up the next.
    "conveyor-retention": {
        "task": "executions.retention",
        "schedule": crontab(minute="15", hour="3"),
        "options": {"queue": CONVEYOR_MAINTENANCE_QUEUE, "expire_seconds": 6 * 3600},
    },
    # The hourly and daily rollups (ops.rollups), five minutes past every hour: by then the
    # last hour's finished runs have settled (ops.rollups.SETTLE), so the whole hour is rolled.
    "conveyor-rollups": {
        "task": "ops.tasks.roll_up",
        "schedule": crontab(minute="5"),
        "options": {"queue": CONVEYOR_MAINTENANCE_QUEUE, "expire_seconds": 3600},
    },
    # What waits in each queue, once a minute, for the dashboard's backlog over time
    # (ops.backlog.sample). Dropped rather than replayed when late: a minute has one sample.
    "conveyor-queue-samples": {
        "task": "ops.tasks.sample_queues",
        "schedule": 60.0,
        "options": {"queue": CONVEYOR_MAINTENANCE_QUEUE, "expire_seconds": 60},
    },
    # Each agent against its own usual (ops.baseline.check): opens the regressions of agents
    # worse than their last 14 days (telling their owners once) and closes those back to it.
    "conveyor-baselines": {
        "task": "ops.tasks.check_baselines",
        "schedule": 300.0,
        "options": {"queue": CONVEYOR_MAINTENANCE_QUEUE, "expire_seconds": 300},
    },
}
# Celery's Django fixup closes the database connection around every task unless this is set,
# so each execution would pay a new Postgres connection. Read by celery.fixups.django.
CELERY_DB_REUSE_MAX = env_int("CONVEYOR_DB_REUSE_MAX", 1000, minimum=0)
# Reuse is safe because every task first drops a connection that failed or outlived
# CONN_MAX_AGE (config/celery.py), so workers reconnect by themselves after a database restart.

# Celery's documented caveats, each settled here.
# Seconds a broker may take to accept a connection, and to answer once connected. Publishing at
# commit runs inside the web request: a broker that drops packets must cost it seconds, not hang
# it (the run then waits in the database and the republish pass sends it later).
CONVEYOR_BROKER_CONNECT_TIMEOUT = env_float("CONVEYOR_BROKER_CONNECT_TIMEOUT", 2.0, minimum=0.1)
CONVEYOR_BROKER_SOCKET_TIMEOUT = env_float("CONVEYOR_BROKER_SOCKET_TIMEOUT", 3.0, minimum=1.0)
CELERY_BROKER_CONNECTION_TIMEOUT = CONVEYOR_BROKER_CONNECT_TIMEOUT
if CELERY_BROKER_URL.startswith(("redis", "rediss")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **CELERY_BROKER_TRANSPORT_OPTIONS,
        "socket_connect_timeout": CONVEYOR_BROKER_CONNECT_TIMEOUT,
        "socket_timeout": CONVEYOR_BROKER_SOCKET_TIMEOUT,
    }
else:
    # RabbitMQ: a server that stops reading (an alarm blocks publishers) fails a publish after
    # this long. Not a read timeout: a consuming worker waits for messages as long as it likes.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **CELERY_BROKER_TRANSPORT_OPTIONS,
        "write_timeout": CONVEYOR_BROKER_SOCKET_TIMEOUT,
    }
# One quick second try of a publish, then give up: the republish pass is the real retry.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0.2,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
# False: when the broker connection drops, a running attempt carries on and records its end in
# the database; the redelivered message then finds the attempt claimed and does nothing.
# Cancelling it would cut a healthy attempt after its side effects and run it again.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Deploys: a worker told to stop by SIGTERM remapped to Celery's soft shutdown
# (REMAP_SIGTERM=SIGQUIT, as docker-compose.yml sets it) gives running attempts this many
# seconds, then cuts what is left and hands its messages back; the reaper retries a cut attempt.
# Keep the process manager's stop grace above it (compose: stop_grace_period). A plain SIGTERM
# without the remap is Celery's warm shutdown, which waits for every run however long.
CONVEYOR_SHUTDOWN_GRACE = env_float("CONVEYOR_SHUTDOWN_GRACE", 30.0, minimum=0)
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = CONVEYOR_SHUTDOWN_GRACE
# False: an idle worker stops at once. A retry it held for its countdown goes back to the broker
# at shutdown, and if that fails the republish pass sends it again from the database.
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = False

# --- REST API (/api/v1/) -------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Conveyor API",
    "DESCRIPTION": "Start agents, watch their executions. Authenticate with "
    "`Authorization: Bearer <token>` (create tokens under API tokens).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two "status" enums: each keeps a name of its own.
    "ENUM_NAME_OVERRIDES": {
        "StatusEnum": "executions.models.Execution.Status",
        "BulkActionStatusEnum": "executions.models.BulkAction.Status",
    },
}
