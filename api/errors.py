"""The API's errors, in the one error format of ``common.errors``::

    {"error": {"code": "invalid", "message": "What went wrong, in words.", "details": {...}}}

The exceptions API views raise (each kind names its status, code and default message in its
class line), DRF's ``EXCEPTION_HANDLER`` that turns every error into the format, and the
format's description in the OpenAPI schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response

# error_response is the format as a plain Django response; API views import it from here.
from common.errors import error_body, error_response  # noqa: F401


class ApiError(exceptions.APIException):
    """An API error with a status, a stable code, a message and details."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "bad_request"
    default_detail = "The request is malformed."

    def __init_subclass__(cls, *, status_code: int, code: str, detail: str, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.status_code, cls.default_code, cls.default_detail = status_code, code, detail

    def __init__(self, message: str | None = None, *, code: str | None = None, details=None):
        super().__init__(message or self.default_detail, code or self.default_code)
        self.message = str(self.detail)
        self.error_code = code or self.default_code
        self.details = dict(details or {})


class Malformed(ApiError, status_code=400, code="malformed", detail="The request is malformed."):
    """Not JSON, nested too deeply, or a header that cannot be read."""


class InvalidQuery(
    ApiError, status_code=400, code="invalid_query", detail="A query parameter is not valid."
):
    """A filter, ordering or cursor in the query string that does not parse."""


class Conflict(
    ApiError,
    status_code=409,
    code="conflict",
    detail="The request conflicts with the current state.",
):
    """A paused agent, a finished execution, an Idempotency-Key reused with another input."""


class PayloadTooLarge(
    ApiError, status_code=413, code="too_large", detail="The request body is too large."
):
    """A body over CONVEYOR_API_MAX_BODY_BYTES."""


class Unprocessable(ApiError, status_code=422, code="invalid", detail="The request is not valid."):
    """Valid JSON whose content is not valid; ``details`` name the fields."""


def body_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than {_size(limit)}, the most this server accepts "
        "(CONVEYOR_API_MAX_BODY_BYTES). Send less in one request: a batch of runs can be "
        "split into several requests."
    )


def _size(size: int) -> str:
    """1048576 -> "1 MiB (1,048,576 bytes)"."""
    for unit, factor in (("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:g} {unit} ({size:,} bytes)"
    return f"{size:,} bytes"


def validation_details(error: DjangoValidationError) -> dict[str, list[str]]:
    """A Django ValidationError as {field: [messages]}; "config.url" style keys are kept."""
    if hasattr(error, "error_dict"):
        return {
            ("non_field_errors" if field == "__all__" else field): list(messages)
            for field, messages in error.message_dict.items()
        }
    return {"non_field_errors": list(error.messages)}


def _first_message(details: Any) -> str | None:
    if isinstance(details, str):
        return details
    if isinstance(details, Mapping):
        for key, value in details.items():
            found = _first_message(value)
            if found:
                return found if key == "non_field_errors" else f"{key}: {found}"
    if isinstance(details, list):
        for value in details:
            found = _first_message(value)
            if found:
                return found
    return None


def _plain(details: Any) -> Any:
    """DRF's ErrorDetail tree as plain strings, lists and dicts."""
    if isinstance(details, Mapping):
        return {str(k): _plain(v) for k, v in details.items()}
    if isinstance(details, list | tuple):
        return [_plain(v) for v in details]
    return str(details)


def exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every error the API raises, in the one format."""
    headers: dict[str, str] = {}
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = Unprocessable(details=validation_details(exc))

    if isinstance(exc, ApiError):
        code, message, details, status_code = (
            exc.error_code,
            exc.message,
            exc.details,
            exc.status_code,
        )
        if isinstance(exc, Unprocessable) and message == Unprocessable.default_detail:
            message = _first_message(details) or message
    elif isinstance(exc, exceptions.ValidationError):
        details = _plain(
            exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        )
        code, status_code = "invalid", status.HTTP_422_UNPROCESSABLE_ENTITY
        message = _first_message(details) or "The request is not valid."
    elif isinstance(exc, exceptions.APIException):
        status_code = exc.status_code
        details = {}
        message = str(exc.detail) if not isinstance(exc.detail, dict | list) else exc.default_detail
        code = _code(exc)
    else:
        return None  # a bug: let Django report it as a 500

    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    return Response(error_body(code, message, details), status=status_code, headers=headers)


_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "invalid_token",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ParseError: "malformed",
}


def _code(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    if isinstance(codes, str) and codes not in ("error", "invalid", exc.default_code):
        return codes
    for cls in type(exc).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return str(exc.default_code)


# --- Schema -------------------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, for programs: e.g. `invalid`, `not_found`.")
    message = serializers.CharField(help_text="For people.")
    details = serializers.DictField(
        help_text="Field name to list of messages for 422; otherwise empty."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


ERROR_DESCRIPTIONS = {
    400: "Malformed: not JSON, nested too deeply, a bad header (Content-Length, "
    "Idempotency-Key) or query parameter (cursor, limit, filters).",
    401: "No credentials, or a token that is not valid.",
    403: "Refused: a browser session sent no CSRF token.",
    404: "Not found, or not yours.",
    405: "This method is not allowed here.",
    406: "The Accept header asks for something other than JSON.",
    409: "Conflicts with the current state (paused agent, finished execution, key reused).",
    413: "The request body (or its announced Content-Length) is too large.",
    415: "The body is not JSON (send Content-Type: application/json).",
    422: "Valid JSON whose content is not valid; details name the fields.",
    429: "Too many requests: run requests past the rate per token, or too many tokens that are "
    "not valid from this address (any request with a token). Wait the number of seconds in "
    "Retry-After.",
}

# What any request can be answered, whatever the operation: a header that cannot be read or an
# announced body too large (checked before anything else), no or a bad token, an Accept header
# that JSON cannot satisfy, and the bad-token throttle (api.authentication), which refuses every
# request with a token from an address that sent too many invalid ones.
ANY_REQUEST = (400, 401, 406, 413, 429)


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """The documented error answers of an operation, all in the one format."""
    return {
        code: OpenApiResponse(response=ErrorSerializer, description=ERROR_DESCRIPTIONS[code])
        for code in codes
    }
