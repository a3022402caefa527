"""The owner's notification settings page (/settings/notifications/): channels and the digest.

Every action is a POST by the channel's owner (another's channel is a 404, whatever the
method) that calls one service and comes back to the page. A webhook channel's signing secret is
revealed once, as the agent page reveals its webhook's (``agents.webhook_views``): the view that
makes it leaves a mark in the session (which channel and which secret, never its value) and the
next render of the page shows it and removes the mark, so a reload no longer shows it.
"""

from __future__ import annotations

import functools

import httpx
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from . import services
from .forms import ChannelEditForm, ChannelForm, DigestForm
from .models import Channel, Preferences

REVEAL_SESSION_KEY = "conveyor.channel_reveal"


def shown_target(channel: Channel) -> str:
    """Where a channel sends, safe to show on a page: an email address as it is; a URL without
    its user, password, query string and fragment (where tokens travel), "?…" saying that
    something was left out."""
    if channel.kind == Channel.Kind.EMAIL:
        return channel.target
    try:
        url = httpx.URL(channel.target)
    except (httpx.InvalidURL, ValueError):
        return ""
    port = f":{url.port}" if url.port else ""
    shown = f"{url.scheme}://{url.host}{port}{url.path}"
    return shown + ("?…" if url.query or url.fragment else "")


def _rows(request, *, edit_form: ChannelEditForm | None = None) -> list[dict]:
    """The owner's channels as the page lists them; consumes the pending reveals."""
    pending = dict(request.session.get(REVEAL_SESSION_KEY) or {})
    rows = []
    channels = Channel.objects.filter(owner=request.user).prefetch_related("agents")
    for channel in channels:
        target = shown_target(channel)
        secrets = channel.secrets.reveal() if channel.kind == Channel.Kind.WEBHOOK else {}
        reveal = None
        slot = pending.pop(str(channel.uuid), None)
        if slot is not None and secrets.get(slot):
            reveal = {"slot": slot, "secret": secrets[slot]}
        form = edit_form if edit_form is not None and edit_form.channel.pk == channel.pk else None
        rows.append(
            {
                "channel": channel,
                "target": target,
                "agents": sorted(agent.name for agent in channel.agents.all()),
                "rotating": bool(secrets.get("next")),
                "reveal": reveal,
                "edit_form": form or ChannelEditForm(channel=channel, shown_target=target),
                "editing": form is not None,
            }
        )
    if REVEAL_SESSION_KEY in request.session:
        # Marks of channels that are gone go too; the page shows a secret once.
        del request.session[REVEAL_SESSION_KEY]
    return rows


def _page(request, *, form=None, edit_form=None, digest_form=None, status=200):
    prefs = Preferences.objects.filter(user=request.user).first() or Preferences(user=request.user)
    return render(
        request,
        "notifications/channels.html",
        {
            "rows": _rows(request, edit_form=edit_form),
            "form": form or ChannelForm(prefix="new"),
            "digest_form": digest_form or DigestForm(instance=prefs, prefix="digest"),
            "email": request.user.email,
        },
        status=status,
    )


def _mark_reveal(request, channel: Channel, slot: str) -> None:
    pending = dict(request.session.get(REVEAL_SESSION_KEY) or {})
    pending[str(channel.uuid)] = slot
    request.session[REVEAL_SESSION_KEY] = pending


def _back(channel: Channel | None = None):
    url = reverse("notifications:channels")
    return redirect(f"{url}#channel-{channel.uuid}" if channel is not None else url)


def _add_errors(form, exc: ValidationError) -> None:
    """The service's per-field messages next to the fields; the rest above the form."""
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


@login_required
def channels(request):
    """GET: the page. POST: add a channel (errors inline; a webhook's secret shown once), or,
    from the digest form (``form=digest``), save the digest preference."""
    if request.method != "POST":
        return _page(request)
    if request.POST.get("form") == "digest":
        return _digest(request)
    form = ChannelForm(request.POST, prefix="new")
    if form.is_valid():
        try:
            channel, secret = services.channel_create(owner=request.user, **form.cleaned_data)
        except ValidationError as exc:
            _add_errors(form, exc)
        else:
            if secret is not None:
                _mark_reveal(request, channel, "current")
                messages.success(
                    request,
                    f"Channel “{channel.name}” added. Copy its signing secret below: it is "
                    "shown once.",
                )
            else:
                messages.success(
                    request,
                    f"Channel “{channel.name}” added. Choose it in an agent's settings to be "
                    "told about its runs.",
                )
            return _back(channel)
    return _page(request, form=form, status=422)


def _digest(request):
    prefs = Preferences.objects.filter(user=request.user).first() or Preferences(user=request.user)
    form = DigestForm(request.POST, instance=prefs, prefix="digest")
    if not form.is_valid():
        return _page(request, digest_form=form, status=422)
    form.save()
    if not prefs.digest:
        messages.success(request, "No digest: none will be sent.")
    elif request.user.email:
        messages.success(request, f"A {prefs.digest} digest will be sent to {request.user.email}.")
    else:
        messages.info(
            request,
            f"Saved, but your account has no email address: no {prefs.digest} digest can be "
            "sent until it has one.",
        )
    return redirect(reverse("notifications:channels") + "#digest")


def _channel_action(action):
    """A POST about one of the owner's channels. Another's channel, or none, is a 404 whatever
    the method (checked before the method, so that a GET does not tell that it exists)."""

    @login_required
    @functools.wraps(action)
    def view(request, uuid):
        channel = get_object_or_404(Channel, uuid=uuid, owner=request.user)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        return action(request, channel)

    return view


@_channel_action
def channel_edit(request, channel: Channel):
    target = shown_target(channel)
    form = ChannelEditForm(request.POST, channel=channel, shown_target=target)
    if form.is_valid():
        try:
            services.channel_update(channel=channel, **form.changes())
        except ValidationError as exc:
            channel.refresh_from_db()  # the page shows what is saved, next to the errors
            _add_errors(form, exc)
        else:
            messages.success(request, f"Channel “{channel.name}” saved.")
            return _back(channel)
    return _page(request, edit_form=form, status=422)


@_channel_action
def channel_enable(request, channel: Channel):
    try:
        services.channel_update(channel=channel, is_enabled=True)
    except ValidationError as exc:
        channel.refresh_from_db()
        problems = " ".join(" ".join(errors) for errors in exc.message_dict.values())
        messages.error(
            request,
            f"“{channel.name}” stays off: {problems} Change its address (Edit), then turn it on.",
        )
    else:
        messages.success(request, f"“{channel.name}” is on: it is sent notifications again.")
    return _back(channel)


@_channel_action
def channel_disable(request, channel: Channel):
    # Not channel_update: turning a channel off never fails, whatever its address has become.
    services.channel_disable(channel=channel, reason="")
    messages.info(request, f"“{channel.name}” is off: nothing is sent to it until you turn it on.")
    return _back(channel)


@_channel_action
def channel_delete(request, channel: Channel):
    name = channel.name
    services.channel_delete(channel=channel)
    messages.success(request, f"Channel “{name}” deleted; its agents no longer tell it anything.")
    return _back()


@_channel_action
def channel_rotate(request, channel: Channel):
    try:
        services.channel_rotate_start(channel=channel)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        _mark_reveal(request, channel, "next")
        messages.success(
            request,
            "New secret made: copy it below, it is shown once. Deliveries are signed with both "
            "secrets until you finish the rotation.",
        )
    return _back(channel)


@_channel_action
def channel_rotate_finish(request, channel: Channel):
    try:
        services.channel_rotate_finish(channel=channel)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request, "Rotation finished: deliveries are signed with the new secret only."
        )
    return _back(channel)


@_channel_action
def channel_test(request, channel: Channel):
    """Send a test message now; htmx gets the outcome in words, in place of the button's
    result line (a page without script gets it as a message)."""
    sent = services.channel_test(channel=channel)
    if sent.ok:
        outcome = f"Delivered ({sent.status_code})" if sent.status_code else "Sent"
    else:
        outcome = sent.error or "Not delivered."
    if request.htmx:
        return render(
            request,
            "notifications/_test_result.html",
            {"ok": sent.ok, "outcome": outcome, "channel": channel},
        )
    if sent.ok:
        messages.success(request, f"Test sent to “{channel.name}”: {outcome}.")
    else:
        messages.error(request, f"Test to “{channel.name}” failed: {outcome}")
    return _back(channel)
