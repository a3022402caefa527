"""The verbs of notifications.

* **Recording** (:func:`on_execution_ended`, :func:`on_execution_retrying`): receivers of the
  engine's signals, called inside the transaction that writes an execution's state. They decide
  from the agent's rules which channels hear of it and write one :class:`Delivery` per channel
  (unique per execution, event, attempt and channel: a second finish, a redelivered task or a
  reaper pass cannot write another), and the function's :class:`CompletionHook`; once that
  transaction commits, the ``notifications.deliver`` and ``notifications.run_hook`` tasks are
  sent (and, should that message be lost, the recovery pass in the dispatcher's tick sends them).
* **Sending** (:func:`delivery_send`): one attempt of one delivery, by email, as a signed
  webhook (Standard Webhooks) or to a Slack-compatible URL, through the SSRF-guarded outbound
  client, with a timeout, not following redirects. 2xx delivers; 410 Gone disables the channel
  (its owner sees why); 429 waits its Retry-After; anything else is tried again after the next
  wait of ``CONVEYOR_NOTIFY_RETRY_DELAYS`` until those run out.
* **Completion hooks** (:func:`hook_run`): the function's ``on_complete`` is called once the
  final state is committed; a hook that raises is tried again with backoff; it never changes the
  execution.
* **Channels** (:func:`channel_create`, :func:`channel_update`, :func:`channel_delete`,
  :func:`channel_rotate_start`, :func:`channel_rotate_finish`, :func:`channel_test`).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import EmailValidator
from django.db import transaction
from django.utils import timezone
from django.utils.html import escape

from agents import outbound
from agents.functions import get_function
from agents.secrets import Secrets
from agents.webhook_signing import generate_secret, sign
from executions.models import Execution

from . import messages
from .models import Channel, CompletionHook, Delivery, DeliveryAttempt

logger = logging.getLogger("conveyor.notifications")

Event = Delivery.Event
EVENT_OF = {
    Execution.Status.SUCCEEDED: Event.SUCCEEDED,
    Execution.Status.FAILED: Event.FAILED,
    Execution.Status.CANCELLED: Event.CANCELLED,
}
# How long a hook may look claimed before the recovery pass takes its process for dead.
HOOK_CLAIM_TIMEOUT = timedelta(minutes=10)


# --- Recording (inside the engine's transaction) ----------------------------------------------


def on_execution_ended(sender, execution: Execution, **kwargs) -> None:
    at = execution.finished_at or timezone.now()
    agent = execution.agent
    event = EVENT_OF[execution.status]
    recovered = False
    if _told_about(execution):
        recovered = event == Event.SUCCEEDED and agent.notify_recovery and _failed_before(execution)
        wanted = (
            agent.notify_on == agent.NotifyOn.ALWAYS
            or (agent.notify_on == agent.NotifyOn.FAILURE and event == Event.FAILED)
            or (agent.notify_on == agent.NotifyOn.SUCCESS and event == Event.SUCCEEDED)
            or recovered
        )
        if wanted:
            _record(execution, event=event, attempt=0, recovered=recovered, at=at)
    _record_hook(execution, at=at)


def on_execution_retrying(sender, execution: Execution, **kwargs) -> None:
    if execution.agent.notify_retries and _told_about(execution):
        _record(
            execution,
            event=Event.RETRYING,
            attempt=execution.attempt,
            recovered=False,
            at=timezone.now(),
        )


def breaker_opened(*, execution_id: int, at=None) -> None:
    """A circuit breaker opened on the failure of ``execution_id``: tell its agent's owner on
    the agent's channels, whatever ``notify_on`` says (no run will start until it closes)."""
    execution = Execution.objects.select_related("agent").filter(pk=execution_id).first()
    if execution is None:
        return
    with transaction.atomic():
        _record(
            execution,
            event=Event.CIRCUIT_OPENED,
            attempt=execution.attempt,
            recovered=False,
            at=at or timezone.now(),
        )


def agent_regressed(*, execution_id: int, at) -> None:
    """An agent does worse than its usual (ops.baseline opened a regression): tell its owner on
    the agent's channels, whatever ``notify_on`` says, with ``execution_id`` (its latest
    finished run of the last day). Called inside the transaction that opens the regression."""
    execution = Execution.objects.select_related("agent").filter(pk=execution_id).first()
    if execution is None:
        return
    _record(execution, event=Event.AGENT_REGRESSED, attempt=0, recovered=False, at=at)


def _told_about(execution: Execution) -> bool:
    """A flow's step is told about only when its flow asks for it (``notify_steps``)."""
    if execution.parent_id is None:
        return True
    return bool(
        Execution.objects.filter(pk=execution.parent_id)
        .values_list("agent__notify_steps", flat=True)
        .first()
    )


def _failed_before(execution: Execution) -> bool:
    """Whether the agent's previous run to end (before this one) failed."""
    previous = (
        Execution.objects.filter(
            agent_id=execution.agent_id,
            status__in=Execution.TERMINAL_STATUSES,
            finished_at__isnull=False,
        )
        .exclude(pk=execution.pk)
        .exclude(status=Execution.Status.CANCELLED)
        .order_by("-finished_at", "-id")
        .values_list("status", flat=True)
        .first()
    )
    return previous == Execution.Status.FAILED


def _record(execution: Execution, *, event: str, attempt: int, recovered: bool, at) -> None:
    channels = list(execution.agent.notify_channels.filter(is_enabled=True))
    if not channels:
        return
    Delivery.objects.bulk_create(
        [
            Delivery(
                execution=execution,
                channel=channel,
                event=event,
                attempt=attempt,
                recovered=recovered,
                message_id=f"msg_{uuid.uuid4().hex}",
                next_attempt_at=at,
                published_at=at,
                created_at=at,
            )
            for channel in channels
        ],
        # A second record of the same event (which the engine's compare-and-set never makes)
        # is dropped, not an error that would undo the execution's own state.
        ignore_conflicts=True,
    )
    ids = list(
        Delivery.objects.filter(
            execution=execution, event=event, attempt=attempt, status=Delivery.Status.PENDING
        ).values_list("pk", flat=True)
    )

    def send_deliveries():  # named: Django logs a robust callback's failure by its __qualname__
        for delivery_id in ids:
            publish_delivery(delivery_id)

    transaction.on_commit(send_deliveries, robust=True)


def _record_hook(execution: Execution, *, at) -> None:
    if execution.agent.kind != "function":
        return
    name = (execution.agent.config or {}).get("function", "")
    fn = get_function(name)
    if fn is None or fn.on_complete is None:
        return
    CompletionHook.objects.bulk_create(
        [CompletionHook(execution=execution, function=name, next_attempt_at=at, created_at=at)],
        ignore_conflicts=True,
    )
    execution_id = execution.pk

    def run_hook():
        publish_hook(execution_id)

    transaction.on_commit(run_hook, robust=True)


def publish_delivery(delivery_id: int, *, countdown: float | None = None) -> None:
    from .tasks import deliver

    deliver.apply_async(
        args=[delivery_id], queue=settings.CONVEYOR_NOTIFICATIONS_QUEUE, countdown=countdown
    )


def publish_hook(execution_id: int, *, countdown: float | None = None) -> None:
    from .tasks import run_hook

    run_hook.apply_async(
        args=[execution_id], queue=settings.CONVEYOR_NOTIFICATIONS_QUEUE, countdown=countdown
    )


# --- Sending ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One attempt's outcome: ``status_code`` (HTTP) or ``error`` (words); ``retry_after`` the
    wait the other side asked for; ``gone``: the endpoint said 410."""

    ok: bool
    status_code: int | None = None
    error: str = ""
    retry_after: float | None = None
    gone: bool = False


def delivery_send(*, delivery_id: int, at: datetime | None = None) -> float | None:
    """Make the next attempt of a pending delivery. Returns the seconds to wait before the
    next attempt when there is one, else None (delivered, given up, or nothing to do)."""
    at = at or timezone.now()
    delivery = (
        Delivery.objects.select_related("channel", "execution__agent", "execution__parent")
        .filter(pk=delivery_id, status=Delivery.Status.PENDING)
        .first()
    )
    if delivery is None:
        return None
    channel = delivery.channel
    if not channel.is_enabled:
        _close(delivery, status=Delivery.Status.FAILED, at=at, error="The channel is turned off.")
        return None
    began = time.monotonic()
    sent = send(channel, delivery=delivery, at=at)
    number = delivery.attempts + 1
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=number,
        at=at,
        status_code=sent.status_code,
        error=sent.error[:500],
        seconds=round(time.monotonic() - began, 3),
    )
    fields: dict[str, Any] = {
        "attempts": number,
        "last_status_code": sent.status_code,
        "last_error": sent.error[:500],
    }
    if sent.ok:
        fields.update(status=Delivery.Status.DELIVERED, delivered_at=at, next_attempt_at=None)
        Delivery.objects.filter(pk=delivery.pk).update(**fields)
        return None
    if sent.gone:
        channel_disable(
            channel=channel,
            reason=f"The endpoint answered 410 Gone on {at:%d %b %Y, %H:%M} UTC: it asked not "
            "to be sent anything more. Check its address, then turn the channel on again.",
        )
        fields.update(status=Delivery.Status.FAILED, next_attempt_at=None)
        Delivery.objects.filter(pk=delivery.pk).update(**fields)
        return None
    delays = settings.CONVEYOR_NOTIFY_RETRY_DELAYS
    if number > len(delays):
        fields.update(status=Delivery.Status.FAILED, next_attempt_at=None)
        Delivery.objects.filter(pk=delivery.pk).update(**fields)
        logger.warning(
            "notification given up",
            extra={"action": "delivery_failed", "delivery": str(delivery.uuid)},
        )
        return None
    wait = float(delays[number - 1])
    if sent.retry_after is not None:
        wait = max(wait, sent.retry_after)
    wait = min(wait, float(settings.CONVEYOR_MAX_BACKOFF))
    fields.update(next_attempt_at=at + timedelta(seconds=wait), published_at=at)
    Delivery.objects.filter(pk=delivery.pk).update(**fields)
    return wait


def _close(delivery: Delivery, *, status: str, at, error: str) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(
        status=status, next_attempt_at=None, last_error=error
    )


def send(channel: Channel, *, delivery: Delivery | None, at: datetime) -> Sent:
    """One message to ``channel``: about ``delivery``, or a test message when None."""
    if delivery is not None:
        summary = messages.summary(
            execution=delivery.execution,
            event=delivery.event,
            recovered=delivery.recovered,
            at=at,
        )
        message_id = delivery.message_id
    else:
        summary = messages.test_summary(channel)
        message_id = f"msg_test_{uuid.uuid4().hex}"
    if channel.kind == Channel.Kind.EMAIL:
        return _send_email(channel, summary)
    if channel.kind == Channel.Kind.SLACK:
        return _post(channel, json_body=messages.slack_body(summary))
    body = messages.webhook_body(summary, at=at)
    timestamp = int(at.timestamp())
    values = channel.secrets.reveal() if isinstance(channel.secrets, Secrets) else {}
    signatures = " ".join(
        sign(secret=values[name], msg_id=message_id, timestamp=timestamp, body=body)
        for name in ("current", "next")
        if values.get(name)
    )
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }
    return _post(channel, content=body, headers=headers)


def _send_email(channel: Channel, summary: messages.Summary) -> Sent:
    text = "\n\n".join(summary.lines())
    html = "".join(f"<p>{escape(line)}</p>" for line in summary.lines()[:-1]) + (
        f'<p><a href="{escape(summary.url)}">Open it in Conveyor</a></p>'
    )
    mail = EmailMultiAlternatives(
        subject=messages.email_subject(summary),
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[channel.target],
    )
    mail.attach_alternative(html, "text/html")
    try:
        mail.send()
    except Exception as exc:  # the mail server's refusal, in its words
        return Sent(ok=False, error=f"The mail server refused it: {exc}"[:500])
    return Sent(ok=True)


def _post(channel: Channel, *, json_body=None, content: bytes | None = None, headers=None) -> Sent:
    timeout = settings.CONVEYOR_NOTIFY_TIMEOUT
    try:
        with outbound.client(timeout=timeout, follow_redirects=False) as http:
            request = http.build_request(
                "POST", channel.target, json=json_body, content=content, headers=headers
            )
            # Sent once: a redirect is answered, not followed (the guard checks the address).
            response = http.send(request, stream=True, follow_redirects=False)
            try:
                outbound.read_limited(response, 4096, deadline=time.monotonic() + timeout)
            finally:
                response.close()
    except outbound.OutboundBlocked as exc:
        return Sent(ok=False, error=exc.message)
    except httpx.TimeoutException:
        return Sent(ok=False, error=f"No answer within {timeout:g} s.")
    except httpx.HTTPError as exc:
        return Sent(ok=False, error=f"Could not reach the endpoint: {exc}"[:500])
    code = response.status_code
    if 200 <= code < 300:
        return Sent(ok=True, status_code=code)
    if 300 <= code < 400:
        return Sent(
            ok=False,
            status_code=code,
            error=f"The endpoint answered {code} (a redirect); redirects are not followed: "
            "give the final address.",
        )
    retry_after = _retry_after(response.headers.get("retry-after")) if code == 429 else None
    return Sent(
        ok=False,
        status_code=code,
        error=f"The endpoint answered {code}.",
        retry_after=retry_after,
        gone=code == 410,
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - timezone.now()).total_seconds())


class ResendRefused(Exception):
    """Why a delivery is not sent again (``reason``: a few words)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def delivery_resend(*, delivery: Delivery, at: datetime | None = None) -> Delivery:
    """Send a delivered or given-up delivery again (same message id), from the admin.

    Refused (:class:`ResendRefused`) while it is still being sent (a second send would race the
    first) and when its channel is turned off."""
    at = at or timezone.now()
    if not Channel.objects.filter(pk=delivery.channel_id, is_enabled=True).exists():
        raise ResendRefused("channel turned off")
    changed = Delivery.objects.filter(
        pk=delivery.pk, status__in=[Delivery.Status.DELIVERED, Delivery.Status.FAILED]
    ).update(status=Delivery.Status.PENDING, next_attempt_at=at, published_at=at)
    if not changed:
        raise ResendRefused("still being sent")
    delivery_id = delivery.pk

    def send_again():  # named: Django logs a robust callback's failure by its __qualname__
        publish_delivery(delivery_id)

    transaction.on_commit(send_again, robust=True)
    delivery.refresh_from_db()
    return delivery


# --- Completion hooks -------------------------------------------------------------------------


def hook_run(*, execution_id: int, at: datetime | None = None) -> float | None:
    """Call the function's ``on_complete`` for a finished execution, once: claimed with a
    compare-and-set. Returns the wait before another try when it raised and tries are left."""
    at = at or timezone.now()
    hook = CompletionHook.objects.filter(
        execution_id=execution_id, status=CompletionHook.Status.PENDING
    ).first()
    if hook is None:
        return None
    claimed = CompletionHook.objects.filter(
        pk=hook.pk, status=CompletionHook.Status.PENDING, attempts=hook.attempts
    ).update(status=CompletionHook.Status.RUNNING, claimed_at=at, attempts=hook.attempts + 1)
    if not claimed:
        return None
    execution = Execution.objects.select_related("agent").get(pk=execution_id)
    fn = get_function(hook.function)
    try:
        if fn is None or fn.on_complete is None:
            raise LookupError(
                f"No completion hook for “{hook.function}” is registered on this worker."
            )
        if execution.status == Execution.Status.SUCCEEDED:
            payload = execution.result
        else:
            payload = {
                "category": execution.error_category,
                "title": execution.error_title,
                "message": execution.error_message,
            }
        fn.on_complete(str(execution.uuid), execution.status, payload)
    except Exception as exc:
        number = hook.attempts + 1
        delays = settings.CONVEYOR_NOTIFY_RETRY_DELAYS
        error = f"{type(exc).__name__}: {exc}"[:2000]
        logger.warning(
            "completion hook failed",
            extra={"action": "hook_failed", "execution_id": str(execution.uuid), "error": error},
        )
        if number > len(delays):
            CompletionHook.objects.filter(pk=hook.pk).update(
                status=CompletionHook.Status.FAILED, last_error=error, next_attempt_at=None
            )
            return None
        wait = float(min(delays[number - 1], settings.CONVEYOR_MAX_BACKOFF))
        CompletionHook.objects.filter(pk=hook.pk).update(
            status=CompletionHook.Status.PENDING,
            last_error=error,
            next_attempt_at=at + timedelta(seconds=wait),
        )
        return wait
    CompletionHook.objects.filter(pk=hook.pk).update(
        status=CompletionHook.Status.DONE, done_at=timezone.now(), next_attempt_at=None
    )
    return None


def hook_rerun(*, hook: CompletionHook, at: datetime | None = None) -> bool:
    """Call a done or given-up completion hook again, with a fresh set of tries (the admin's
    "Run again"). False, and nothing done, while it is waiting to run or running."""
    at = at or timezone.now()
    changed = CompletionHook.objects.filter(
        pk=hook.pk, status__in=[CompletionHook.Status.DONE, CompletionHook.Status.FAILED]
    ).update(status=CompletionHook.Status.PENDING, attempts=0, next_attempt_at=at, done_at=None)
    if not changed:
        return False
    execution_id = hook.execution_id

    def run_hook():  # named: Django logs a robust callback's failure by its __qualname__
        publish_hook(execution_id)

    transaction.on_commit(run_hook, robust=True)
    return True


# --- Recovery (the dispatcher's tick) ---------------------------------------------------------


RECOVERY_GRACE = timedelta(seconds=30)


def resend_stalled(*, at: datetime, limit: int = 500) -> int:
    """Send again what should be under way and is not: deliveries and hooks due for more than
    ``RECOVERY_GRACE`` whose message was lost (the process died after the commit), and hooks
    whose process died while calling them."""
    cutoff = at - RECOVERY_GRACE
    sent = 0
    due = Delivery.objects.filter(
        status=Delivery.Status.PENDING, next_attempt_at__lte=cutoff, published_at__lte=cutoff
    ).order_by("next_attempt_at")[:limit]
    for delivery in due:
        if Delivery.objects.filter(pk=delivery.pk, published_at=delivery.published_at).update(
            published_at=at
        ):
            publish_delivery(delivery.pk)
            sent += 1
    hooks = CompletionHook.objects.filter(
        status=CompletionHook.Status.PENDING, next_attempt_at__lte=cutoff
    ).order_by("next_attempt_at")[:limit]
    for hook in hooks:
        if CompletionHook.objects.filter(
            pk=hook.pk, status=CompletionHook.Status.PENDING, next_attempt_at=hook.next_attempt_at
        ).update(next_attempt_at=at):
            publish_hook(hook.execution_id)
            sent += 1
    # A hook claimed long ago whose process died mid-call: let it be tried again.
    CompletionHook.objects.filter(
        status=CompletionHook.Status.RUNNING, claimed_at__lte=at - HOOK_CLAIM_TIMEOUT
    ).update(status=CompletionHook.Status.PENDING, next_attempt_at=at)
    return sent


# --- Channels ---------------------------------------------------------------------------------


def channel_validate(*, channel: Channel, check_target: bool = True) -> None:
    """The channel's name, kind and target in words; ``check_target`` False leaves an unchanged
    target alone (an address refused since does not stop a rename)."""
    errors: dict[str, list[str]] = {}
    if not (channel.name or "").strip():
        errors["name"] = ["Give the channel a name."]
    if channel.kind not in Channel.Kind.values:
        errors["kind"] = [f"Choose one of: {', '.join(Channel.Kind.values)}."]
    elif not check_target:
        pass
    elif channel.kind == Channel.Kind.EMAIL:
        try:
            EmailValidator(message="Enter an email address.")(channel.target)
        except ValidationError as exc:
            errors["target"] = list(exc.messages)
    else:
        try:
            url = httpx.URL(channel.target)
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError
        except (ValueError, httpx.InvalidURL):
            errors["target"] = ["Enter the http:// or https:// address to send to."]
        else:
            try:
                outbound.check_url(channel.target)
            except outbound.OutboundBlocked as exc:
                errors["target"] = [exc.message]
    if errors:
        raise ValidationError(errors)


def channel_create(*, owner, kind: str, name: str, target: str) -> tuple[Channel, str | None]:
    """Create a channel; a webhook channel gets its signing secret, returned once."""
    channel = Channel(owner=owner, kind=kind, name=name.strip(), target=target.strip())
    channel_validate(channel=channel)
    secret = None
    if kind == Channel.Kind.WEBHOOK:
        secret = generate_secret()
        channel.secrets = Secrets({"current": secret})
    channel.save()
    return channel, secret


def channel_update(*, channel: Channel, **fields: Any) -> Channel:
    """Change name, target or is_enabled. Turning a channel on clears why it was turned off."""
    unknown = set(fields) - {"name", "target", "is_enabled"}
    if unknown:
        raise TypeError(f"Unknown channel fields: {', '.join(sorted(unknown))}")
    before = channel.target
    for name, value in fields.items():
        setattr(channel, name, value.strip() if isinstance(value, str) else value)
    if fields.get("is_enabled"):
        channel.disabled_reason = ""
    # Turning a channel on sends to its address again: check it then too.
    channel_validate(
        channel=channel, check_target=channel.target != before or bool(fields.get("is_enabled"))
    )
    channel.save()
    return channel


def channel_disable(*, channel: Channel, reason: str = "") -> None:
    """Stop sending to a channel: its owner turned it off (no reason), or Conveyor did, saying
    why (``reason``, shown to the owner), after its endpoint answered 410 Gone."""
    Channel.objects.filter(pk=channel.pk).update(is_enabled=False, disabled_reason=reason[:300])
    channel.is_enabled, channel.disabled_reason = False, reason[:300]
    if reason:
        logger.warning(
            "notification channel turned off",
            extra={"action": "channel_disabled", "channel": str(channel.uuid), "reason": reason},
        )


def channel_delete(*, channel: Channel) -> None:
    channel.delete()


def channel_rotate_start(*, channel: Channel) -> str:
    """A webhook channel gets a next secret, shown once: deliveries are signed with both until
    :func:`channel_rotate_finish` makes it the only one."""
    if channel.kind != Channel.Kind.WEBHOOK:
        raise ValidationError("Only webhook channels have a signing secret.")
    values = channel.secrets.reveal()
    values["next"] = generate_secret()
    channel.secrets = Secrets(values)
    channel.save(update_fields=["secrets"])
    return values["next"]


def channel_rotate_finish(*, channel: Channel) -> None:
    values = channel.secrets.reveal()
    if not values.get("next"):
        raise ValidationError("No rotation is under way.")
    channel.secrets = Secrets({"current": values["next"]})
    channel.save(update_fields=["secrets"])


def channel_test(*, channel: Channel) -> Sent:
    """Send a test message now and say how it went (nothing is recorded)."""
    return send(channel, delivery=None, at=timezone.now())
