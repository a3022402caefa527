"""Request plumbing for production safety: the Content-Security-Policy header, the client's
address, and the sign-in throttle's backend and lockout page (django-axes).

The other security headers come from Django's own middleware, configured in settings:
``X-Content-Type-Options`` and ``Referrer-Policy`` (SecurityMiddleware), ``X-Frame-Options``
(XFrameOptionsMiddleware), HSTS and the HTTPS redirect (SecurityMiddleware).
"""

from __future__ import annotations

import math

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_client_username
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.shortcuts import render
from django.urls import reverse

# Every page's scripts are files under static/ (no inline <script>, no on...= attributes), so
# script-src is 'self' alone. Many templates carry style="..." attributes and htmx adds a small
# <style> element for its indicators, so style-src keeps 'unsafe-inline' (styles cannot run
# code). Images allow data: URIs for the API docs' icons. frame-ancestors 'none' is the CSP twin
# of X-Frame-Options: DENY.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    """Adds ``Content-Security-Policy`` to every response that does not set its own."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


def client_address(request) -> str:
    """The client's IP address, as counted by the sign-in and bad-token throttles.

    With ``CONVEYOR_TRUSTED_PROXIES = N`` proxies in front of web, each appending the address it
    saw to ``X-Forwarded-For``, the client is the N-th entry from the right; entries further left
    came from the client and could be anything. Without proxies it is the connection's address.
    """
    proxies = settings.CONVEYOR_TRUSTED_PROXIES
    if proxies:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR", "")


class SignInThrottleBackend(AxesStandaloneBackend):
    """django-axes' check before the password check, for sign-ins made by a web request.

    A sign-in without a request (a management command, a shell) has no address to count, so
    the throttle steps aside rather than refusing it as django-axes would.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def sign_in_locked_out(request, original_response=None, credentials=None):
    """django-axes' lockout answer, for /login/ and /admin/login/: the sign-in page, saying why.

    429, as django-axes answers by default. The form stays, for after the wait (or for another
    account).
    """
    minutes = math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    username = get_client_username(request, credentials) or ""
    default_next = reverse("admin:index") if request.path.startswith("/admin/") else ""
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "next": request.POST.get("next") or request.GET.get("next") or default_next,
        "locked_out_message": (
            "Too many failed sign-ins for this account from this address; try again in "
            f"{minutes} minute{'s' if minutes != 1 else ''}."
        ),
    }
    return render(request, "registration/login.html", context, status=429)
