"""Settings for the test suite: the real stack, with fixed keys and fast throttles.

The worker process the suite starts uses this module too, so both sides agree.
"""

import os
import uuid

os.environ.setdefault("SECRET_KEY", "conveyor-test-secret-key")
os.environ.setdefault("CONVEYOR_SECRET_KEYS", "Mdtqm0vYqS6M4Q0b9KCyN9vjYvqmIrLGxIXj0cr3fE8=")
# With BROKER_URL=amqp://... the suite runs on a RabbitMQ that other suites may share (there is
# no embedded one): its queue names end with a suffix of this run's own, which the processes it
# starts inherit through the environment.
RABBITMQ = os.environ.get("BROKER_URL", "").startswith(("amqp://", "amqps://", "pyamqp://"))
RUN_SUFFIX = f"-{uuid.uuid4().hex[:8]}" if RABBITMQ else ""
# Queues of their own: the suite's worker never takes a developer's messages, nor theirs ours,
# and the suite may purge them, even when REDIS_URL is a Redis that `make run` also uses.
os.environ.setdefault("CONVEYOR_EXECUTIONS_QUEUE", f"test-executions{RUN_SUFFIX}")
os.environ.setdefault("CONVEYOR_MAINTENANCE_QUEUE", f"test-maintenance{RUN_SUFFIX}")
os.environ.setdefault("CONVEYOR_NOTIFICATIONS_QUEUE", f"test-notifications{RUN_SUFFIX}")
# Agents may only use declared queues (config/queues.py). Besides the executions queue, the
# suite's agents use queues "<executions queue>-<purpose>" (an end-to-end test's private worker,
# or a queue no worker reads so that a run waits in the broker), and a few fixed names. Set here,
# over what the environment says (the processes the suite starts inherit it); a test that needs
# another queue declares it with pytest-django's ``settings`` fixture.
SUITE_QUEUES = (
    "held", "inspected", "nobody-listens", "poison", "waits", "checkpoint", "killed-between",
    "killed-after-end", "doomed", "doomed-notify",
)  # fmt: skip
FIXED_QUEUES = ("executions", "reports", "nobody-listens", "ops-fast",
                *(f"ops-q{i}" for i in range(10)))  # fmt: skip
os.environ["CONVEYOR_QUEUES"] = ";".join(
    [f"{os.environ['CONVEYOR_EXECUTIONS_QUEUE']}-{purpose}" for purpose in SUITE_QUEUES]
    + [f"{name}=A queue of the test suite" for name in FIXED_QUEUES]
)
# Quick retries of notifications, so that the suite sees a retry within seconds.
os.environ.setdefault("CONVEYOR_NOTIFY_RETRY_DELAYS", "1,2,4")
if RABBITMQ:
    # The suite's agents wait and run for seconds: limits that fit RabbitMQ's default
    # consumer_timeout (30 min, see config/settings.py) let it run on a RabbitMQ as installed.
    os.environ.setdefault("CONVEYOR_MAX_BACKOFF", "600")
    os.environ.setdefault("CONVEYOR_MAX_TIMEOUT", "900")

from .settings import *  # noqa: E402, F403 (after the environment above)
from .settings import VAR_DIR, env_str  # noqa: E402

# Without REDIS_URL the suite starts its own embedded Redis on this socket (tests/conftest.py),
# apart from the one `make run` may be using.
TEST_REDIS_SOCKET = VAR_DIR / "test-redis.sock"
if not env_str("REDIS_URL"):
    REDIS_URL = f"unix://{TEST_REDIS_SOCKET}"
    if not env_str("BROKER_URL"):
        CELERY_BROKER_URL = f"redis+socket://{TEST_REDIS_SOCKET}"

# Hooks the worker processes the suite starts load (tests/hooks/apps.py): end-to-end tests
# that need a worker to fail at one exact moment.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.hooks"]  # noqa: F405 (from .settings)

# Mail the worker processes send lands in files here, where end-to-end tests read it (pytest
# gives the test process itself Django's in-memory outbox).
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = str(VAR_DIR / "test-mail")

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CONVEYOR_PROGRESS_INTERVAL = 0.2
CONVEYOR_LOG_FLUSH_INTERVAL = 0.2
CONVEYOR_CANCEL_CHECK_INTERVAL = 0.1
CONVEYOR_CANCEL_GRACE = 2
CONVEYOR_TIME_LIMIT_GRACE = 2
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_SEND_SENT_EVENT = False
# The suite serves plain HTTP (the test client, live_server): no redirect to HTTPS, and cookies
# the browser tests' chromium sends back over HTTP. tests/config/test_security.py checks the
# production values.
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
# Every test client comes from 127.0.0.1: the bad-token throttle's own tests set a low rate and
# an address of their own.
CONVEYOR_API_BAD_TOKEN_RATE = "100000/min"  # noqa: S105 (a rate, not a password)
# Heartbeats: a stamp every second, an attempt silent for 8 s is taken for lost (the end-to-end
# tests of the reaper wait that long, not the production 20 s).
CONVEYOR_HEARTBEAT_INTERVAL = 1.0
CONVEYOR_HEARTBEAT_TIMEOUT = 8.0
