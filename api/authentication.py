"""API authentication: ``Authorization: Bearer <token>`` (or ``Token <token>``)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from .services import token_find, token_touch

KEYWORDS = (b"bearer", b"token")


class BearerTokenAuthentication(BaseAuthentication):
    """Authenticates with an API token; ``request.auth`` is the ApiToken row.

    Without an Authorization header it steps aside (the browser's session may authenticate);
    with a wrong one it refuses: a client that sends a token means to use it.
    """

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in KEYWORDS:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Send the token as “Authorization: Bearer <token>”.", code="invalid_token"
            )
        try:
            plain = parts[1].decode("ascii")
        except UnicodeDecodeError:
            plain = ""
        token = token_find(plain) if plain else None
        if token is None or not token.owner.is_active:
            raise exceptions.AuthenticationFailed(
                "This token is not valid: it may have been revoked or mistyped.",
                code="invalid_token",
            )
        token_touch(token=token)
        return token.owner, token

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return 'Bearer realm="api"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.BearerTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token from the API tokens page: `Authorization: Bearer cvy_…`.",
        }
