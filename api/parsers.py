"""The API's only parser: JSON, size-limited, refusing what cannot be stored
(see ``common.jsonbody``)."""

from __future__ import annotations

from django.conf import settings
from rest_framework.parsers import BaseParser

from common import errors as common_errors
from common.jsonbody import parse_json_bytes

from .errors import Malformed, body_too_large


class JSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.CONVEYOR_API_MAX_BODY_BYTES
        # Content-Length was checked before; a body longer than announced stops here too.
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise body_too_large(limit)
        try:
            return parse_json_bytes(raw)
        except common_errors.Malformed as exc:
            raise Malformed(exc.message, code=exc.error_code) from None
