"""The registry of kinds of agent. One module per kind; see ``base`` for the protocol."""

from .base import Kind
from .flow import kind as flow_kind
from .function import kind as function_kind
from .http import kind as http_kind

KINDS: dict[str, Kind] = {k.name: k for k in (function_kind, http_kind, flow_kind)}


def get_kind(name: str) -> Kind | None:
    return KINDS.get(name)


def kind_choices() -> list[tuple[str, str]]:
    return [(k.name, k.label) for k in KINDS.values()]
