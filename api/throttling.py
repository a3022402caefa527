"""DRF's throttle for run requests, counted in Redis by ``common.rates`` (the same counter the
webhook endpoint uses), so that the limit holds across every web process."""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from common.rates import hit


class RunRateThrottle(BaseThrottle):
    """CONVEYOR_API_RUN_RATE per token (per user for a browser session) on run requests."""

    scope = "run"

    def allow_request(self, request, view):
        token = request.auth
        who = f"token:{token.prefix}{token.uuid.hex}" if token is not None else None
        if who is None:
            user = request.user
            who = f"user:{user.pk}:{user.date_joined.timestamp():.6f}"
        self._wait = hit(
            self.scope, who, settings.CONVEYOR_API_RUN_RATE, setting="CONVEYOR_API_RUN_RATE"
        )
        return self._wait is None

    def wait(self):
        return self._wait
