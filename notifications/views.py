"""The owner's notification settings page (channels, digest)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from .models import Channel


@login_required
def channels(request):
    return render(
        request,
        "notifications/channels.html",
        {"channels": Channel.objects.filter(owner=request.user)},
    )
