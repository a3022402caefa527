"""Conveyor's version: the one in pyproject.toml, which releases raise.

Read from the file rather than from installed package metadata: Conveyor runs from its source
tree (``uv sync --no-install-project`` in the image), so it has no metadata of its own.
"""

from __future__ import annotations

import tomllib
from functools import cache

from django.conf import settings

UNKNOWN = "unknown"


@cache
def conveyor_version() -> str:
    """ "0.1.0", or "unknown" when pyproject.toml is missing or has no version."""
    try:
        with open(settings.BASE_DIR / "pyproject.toml", "rb") as file:
            project = tomllib.load(file).get("project") or {}
    except (OSError, tomllib.TOMLDecodeError):
        return UNKNOWN
    return str(project.get("version") or UNKNOWN)
