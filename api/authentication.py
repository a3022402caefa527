"""API authentication: ``Authorization: Bearer <token>`` (or ``Token <token>``).

Guessing is throttled per client address: past ``CONVEYOR_API_BAD_TOKEN_RATE`` tokens that are
not valid, every request with a token from that address gets 429 with Retry-After until the
window ends, a valid token included (else a guess that works would still stand out).
"""

from __future__ import annotations

import contextlib
import logging
import math

import redis
from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from common.rates import hit, redis_client
from config.security import client_address

from .services import token_find, token_touch

logger = logging.getLogger("conveyor.api")

KEYWORDS = (b"bearer", b"token")
# Set, with the wait as its expiry, when an address passes the bad-token rate.
REFUSED_KEY = "conveyor:bad-token-refused:{address}"


class BearerTokenAuthentication(BaseAuthentication):
    """Authenticates with an API token; ``request.auth`` is the ApiToken row.

    Without an Authorization header it steps aside (the browser's session may authenticate);
    with a wrong one it refuses: a client that sends a token means to use it.
    """

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in KEYWORDS:
            return None
        address = client_address(request) or "unknown"
        _raise_if_refused(address)
        if len(parts) != 2:
            _count_bad_token(address)
            raise exceptions.AuthenticationFailed(
                "Send the token as “Authorization: Bearer <token>”.", code="invalid_token"
            )
        try:
            plain = parts[1].decode("ascii")
        except UnicodeDecodeError:
            plain = ""
        token = token_find(plain) if plain else None
        if token is None or not token.owner.is_active:
            _count_bad_token(address)
            raise exceptions.AuthenticationFailed(
                "This token is not valid: it may have been revoked or mistyped.",
                code="invalid_token",
            )
        token_touch(token=token)
        return token.owner, token

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return 'Bearer realm="api"'


def _throttled(wait: float) -> exceptions.Throttled:
    seconds = max(1, math.ceil(wait))
    refused = exceptions.Throttled(wait=seconds)
    refused.detail = exceptions.ErrorDetail(
        "Too many requests with a token that is not valid from this address; try again in "
        f"{seconds} second{'s' if seconds != 1 else ''}.",
        code="rate_limited",
    )
    return refused


def _raise_if_refused(address: str) -> None:
    """429 while the address is refused. If Redis cannot be reached, the request goes on (as
    ``common.rates.hit`` lets it): the throttle must not take the API down with it."""
    try:
        milliseconds = redis_client().pttl(REFUSED_KEY.format(address=address))
    except redis.RedisError:
        return
    if milliseconds > 0:
        raise _throttled(milliseconds / 1000)


def _count_bad_token(address: str) -> None:
    """Counts a token that is not valid; past the rate, refuses the address for the rest of
    the window, this request included."""
    wait = hit(
        "bad_token",
        address,
        settings.CONVEYOR_API_BAD_TOKEN_RATE,
        setting="CONVEYOR_API_BAD_TOKEN_RATE",
    )
    if wait is None:
        return
    seconds = max(1, math.ceil(wait))
    with contextlib.suppress(redis.RedisError):  # this request is refused all the same
        redis_client().set(REFUSED_KEY.format(address=address), 1, ex=seconds)
    logger.warning(
        "API tokens that are not valid: %s refused for %s s",
        address,
        seconds,
        extra={"action": "api_bad_token_refused", "address": address},
    )
    raise _throttled(wait)


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.BearerTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token from the API tokens page: `Authorization: Bearer cvy_…`.",
        }
