"""The Celery application shared by web, worker, beat and Flower."""

import os

from celery import Celery
from celery.signals import task_prerun
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("conveyor")
# Only documented setting names work with the CELERY namespace; see config/settings.py.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect(weak=False)
def drop_broken_connections(sender=None, **kwargs) -> None:
    """Before every task, close a database connection that saw an error or outlived
    CONN_MAX_AGE, as Django does before every request.

    Workers reuse their connection across tasks (CELERY_DB_REUSE_MAX), and Celery itself checks
    it only every so many tasks: after a database restart every task would fail on the dead
    connection until the worker restarted. The first task that meets the dead connection fails
    (and its message is sent again, see executions.tasks); the next one reconnects. It costs no
    query: a healthy connection is kept as it is. A task run in the caller's process
    (``Task.apply``) shares the caller's connection and transaction: left alone, as Celery's
    own fixup leaves it.
    """
    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    close_old_connections()
