"""The API's only parser: JSON, size-limited, refusing what cannot be stored (see jsonbody)."""

from __future__ import annotations

from django.conf import settings
from rest_framework.parsers import BaseParser

from .errors import body_too_large
from .jsonbody import parse_json_bytes


class JSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.CONVEYOR_API_MAX_BODY_BYTES
        # Content-Length was checked before; a body longer than announced stops here too.
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise body_too_large(limit)
        return parse_json_bytes(raw)
