"""The dispatcher's Celery task: celery beat sends it every ``CONVEYOR_DISPATCH_INTERVAL`` seconds
(``CELERY_BEAT_SCHEDULE`` in config/settings.py); see ``executions/dispatch.py``.

Imported at the bottom of ``executions/tasks.py`` so that Celery's autodiscovery (which imports
``tasks`` modules only) registers it on every worker.
"""

from celery import shared_task
from django.conf import settings

from . import dispatch


@shared_task(
    name="executions.dispatch",
    ignore_result=True,
    # A tick that waited longer than one interval is stale: the next one does its work.
    expires=settings.CONVEYOR_DISPATCH_INTERVAL,
)
def dispatch_tick() -> None:
    """Start due scheduled slots, publish due delayed runs, re-publish stranded executions and
    reap attempts whose worker died. Safe to run several at once."""
    dispatch.tick()
