"""One error format for the API and the webhook endpoint::

    {"error": {"code": "invalid", "message": "What went wrong, in words.", "details": {...}}}

``code`` is stable and meant for programs; ``message`` is for people; ``details`` is an object
(field name to messages for 422, empty otherwise). Statuses: 400 malformed request, 401 no or
bad credentials, 403 refused (a browser session without its CSRF token), 404 not found (also
for other people's objects), 405, 409 conflict with the current state, 413 too large, 415 not
JSON, 422 valid JSON with invalid content, 429 too many requests (with Retry-After).

The API's exceptions and DRF's exception handler build on this in ``api.errors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import JsonResponse


class Malformed(Exception):
    """A request body or header that cannot be read (HTTP 400); ``error_code`` says which way."""

    status_code = 400

    def __init__(self, message: str, *, code: str = "malformed"):
        super().__init__(message)
        self.message = message
        self.error_code = code


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    """The error format as a plain Django response (for views outside DRF: webhooks, 404s)."""
    response = JsonResponse(error_body(code, message, details), status=status_code)
    for name, value in (headers or {}).items():
        response[name] = value
    return response
