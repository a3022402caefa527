"""Reading ./.env the way ``make run`` does, for ``manage.py`` run by hand.

``make run`` starts every process with honcho, which reads ``./.env`` and lets its values win
over variables already set in the shell. ``manage.py`` reads it with honcho's own parser and the
same precedence, so a command typed in a second terminal uses the same database and settings as
the running processes. ``make test`` does not read it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from honcho.environ import parse


def load_dotenv(path: Path, environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Put the values of ``path`` (if it exists) into ``environ``, over what is there."""
    try:
        content = path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        return {}
    try:
        values = parse(content)
    except ValueError as exc:  # honcho refuses the same file when `make run` starts
        raise ImproperlyConfigured(f"{path} cannot be read: {exc}.") from None
    environ.update(values)
    return values
