"""Celery tasks of notifications: thin, on their own queue (CONVEYOR_NOTIFICATIONS_QUEUE), so a
slow endpoint or hook never holds an agent's worker or the dispatcher."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import digest, services

# Seconds after which a hung send is stopped (each send has its own, shorter, timeout).
SEND_TIME_LIMIT = 120


@shared_task(
    bind=True,
    name="notifications.deliver",
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    soft_time_limit=SEND_TIME_LIMIT,
    time_limit=SEND_TIME_LIMIT + 10,
)
def deliver(self, delivery_id: int) -> None:
    """One attempt of delivery ``delivery_id``; the next is Celery's retry with the wait the
    delivery's record says (the dispatcher's recovery pass sends it if this message is lost)."""
    wait = services.delivery_send(delivery_id=delivery_id)
    if wait is not None:
        raise self.retry(countdown=wait, max_retries=None)


@shared_task(
    bind=True,
    name="notifications.run_hook",
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    soft_time_limit=SEND_TIME_LIMIT,
    time_limit=SEND_TIME_LIMIT + 10,
)
def run_hook(self, execution_id: int) -> None:
    """Call the completion hook of execution ``execution_id`` (once; retried if it raised)."""
    wait = services.hook_run(execution_id=execution_id)
    if wait is not None:
        raise self.retry(countdown=wait, max_retries=None)


@shared_task(name="notifications.send_digests", ignore_result=True)
def send_digests() -> int:
    """Send the daily and weekly digests that are due."""
    return digest.send_due()
