"""Reading ./.env the way ``make run`` does, for ``manage.py`` run by hand.

``make run`` starts every process with honcho, which reads ``./.env`` and lets its values win
over variables already set in the shell. ``manage.py`` does the same, with the same rules, so a
command typed in a second terminal uses the same database and settings as the running
processes: one ``KEY=value`` a line, read with shell quoting (``KEY="a b"``, ``# comments``),
``\\n`` and ``\\t`` in a value become a newline and a tab, other lines are skipped. No
variable expansion, as in honcho. ``make test`` does not read it.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import MutableMapping
from pathlib import Path

NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*\Z")


def parse_dotenv(content: str) -> dict[str, str]:
    values = {}
    for line in content.splitlines():
        try:
            tokens = list(shlex.shlex(line, posix=True))
        except ValueError:  # an unclosed quote: honcho stops there; skip the line
            continue
        if len(tokens) < 3 or tokens[1] != "=" or not NAME.match(tokens[0]):
            continue
        value = "".join(tokens[2:]).replace(r"\n", "\n").replace(r"\t", "\t")
        values[tokens[0]] = value
    return values


def load_dotenv(path: Path, environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Put the values of ``path`` (if it exists) into ``environ``, over what is there."""
    try:
        content = path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        return {}
    values = parse_dotenv(content)
    environ.update(values)
    return values
