"""Agent secrets: encrypted at rest, masked in memory, never rendered or sent to the broker.

The column holds one Fernet token of the JSON object ``{"name": "value", ...}``.
``settings.CONVEYOR_SECRET_KEYS`` lists the keys, newest first: the first encrypts, every key
decrypts, so a key is rotated by putting a new one in front, running
``manage.py rotate_secret_keys`` (re-encrypts every row with the new key), then dropping the old.

:class:`Scrubber` is the one rule for taking secrets out of what Conveyor keeps or hands out: the
runner masks an agent's secret values in its logs, result, errors and files with it, and the
support bundle (``executions.bundle``) also removes what merely looks like a secret.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models


class Secrets(Mapping[str, str]):
    """A read-only mapping of secret names to values whose repr shows names only."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str] | None = None):
        self._values = {str(k): str(v) for k, v in (values or {}).items()}

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "Secrets(" + ", ".join(f"{k}=***" for k in sorted(self._values)) + ")"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secrets):
            return self._values == other._values
        if isinstance(other, Mapping):
            return self._values == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._values.items()))

    def reveal(self) -> dict[str, str]:
        """A plain dict with the values: only for encryption and for the kind that uses them."""
        return dict(self._values)


@cache
def _fernet() -> MultiFernet:
    keys = settings.CONVEYOR_SECRET_KEYS
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "CONVEYOR_SECRET_KEYS must hold Fernet keys (32 url-safe base64-encoded bytes), "
            f"comma-separated: {exc}"
        ) from None


def _reset_fernet(*, setting: str, **kwargs) -> None:
    if setting == "CONVEYOR_SECRET_KEYS":
        _fernet.cache_clear()


setting_changed.connect(_reset_fernet)


def encrypt(values: Mapping[str, str]) -> str:
    plain = json.dumps(dict(values), sort_keys=True, separators=(",", ":"))
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> Secrets:
    try:
        plain = _fernet().decrypt(token.encode())
    except InvalidToken:
        raise ImproperlyConfigured(
            "An agent's secrets cannot be decrypted with any key in CONVEYOR_SECRET_KEYS. "
            "Was a key removed before `manage.py rotate_secret_keys` re-encrypted them?"
        ) from None
    return Secrets(json.loads(plain))


def rotate(token: str) -> str:
    """Re-encrypt ``token`` with the newest key."""
    return _fernet().rotate(token.encode()).decode()


class EncryptedSecretsField(models.TextField):
    """Stores a :class:`Secrets` mapping as a Fernet token; empty means no secrets."""

    def from_db_value(self, value, expression, connection):
        if not value:
            return Secrets()
        return decrypt(value)

    def to_python(self, value):
        if isinstance(value, Secrets):
            return value
        if not value:
            return Secrets()
        if isinstance(value, Mapping):
            return Secrets(value)
        return decrypt(value)

    def get_prep_value(self, value):
        if value is None or value == "":
            return ""
        if not isinstance(value, Mapping):
            raise TypeError("Agent secrets must be a mapping of names to values.")
        if not value:
            return ""
        values = value.reveal() if isinstance(value, Secrets) else dict(value)
        return encrypt(values)

    def value_to_string(self, obj):
        # Serialisation (dumpdata) keeps the ciphertext, never the values.
        return self.get_prep_value(self.value_from_object(obj))


# --- Taking secrets out of text ---------------------------------------------------------------

# Shorter values are not looked for: "abc" would be cut out of every word that holds it.
SCRUB_MIN_LENGTH = 4

# A name whose value is taken for a secret (a header, a JSON field, a query parameter): matched
# anywhere in the lowercased name. "key" alone is too common to go by (a flow step's "key", the
# "Idempotency-Key" Conveyor sends, derived from the run's id), so NOT_SECRET_NAMES spares those.
_SECRET_NAME = re.compile(
    r"authorization|cookie|token|secret|passw(?:or)?d|pwd|credential|session|signature|key"
)
NOT_SECRET_NAMES = frozenset(
    {"key", "keys", "step_key", "idempotency_key", "idempotency-key", "sort_key", "cache_key"}
)

# Values that look like secrets wherever they stand (groups: what is kept, then the secret).
_VALUE_PATTERNS = (
    # An Authorization header's value: "Bearer <token>", "Basic <base64>" (the token holds a
    # digit or a symbol, so that "Basic authentication" stays).
    re.compile(
        r"(?i)\b((?:bearer|basic|token)\s+)"
        r"((?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,})"
    ),
    # name=value in a URL's query or in text, where the name looks secret (token=, password=,
    # api_key=, access_token=, ...).
    re.compile(
        r"(?i)((?<![A-Za-z0-9])[A-Za-z0-9_.-]*?"
        r"(?:token|secret|passw(?:or)?d|pwd|api[-_]?key|apikey|credential|signature|sig)"
        r"[A-Za-z0-9_.-]*=)([^&\s\"'<>]+)"
    ),
    # "name": "value" in JSON text, where the name looks secret.
    re.compile(
        r'(?i)("[^"]*?(?:authorization|cookie|token|secret|passw(?:or)?d|api[-_]?key|apikey|'
        r'credential)[^"]*"\s*:\s*")((?:[^"\\]|\\.)+)'
    ),
    # A header written out on a line of its own ("X-Api-Key: ...", "Cookie: ...").
    re.compile(
        r"(?im)^(\s*[A-Za-z0-9_-]*(?:authorization|cookie|token|secret|passw(?:or)?d|"
        r"api-?key|apikey|credential)[A-Za-z0-9_-]*\s*:[ \t]*)(\S[^\r\n]*)$"
    ),
    # A URL's user information: scheme://user:password@host.
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)(?=@)"),
    # Tokens that say what they are: JWTs, Conveyor's API tokens and webhook secrets, and the
    # best-known services' keys.
    re.compile(
        r"()(\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
        r"|\b(?:cvy_|whsec_|ghp_|gho_|github_pat_|glpat-|xox[abprs]-|sk_live_|sk-)[A-Za-z0-9_-]{8,}"
        r"|\bAKIA[0-9A-Z]{16}\b)"
    ),
)


def looks_like_secret_name(name: str) -> bool:
    """Whether a value stored under ``name`` (a header, a JSON field) is taken for a secret:
    Authorization, Cookie, X-Api-Key, access_token, client_secret, password ... but not a flow
    step's ``key`` nor ``Idempotency-Key``."""
    lowered = str(name).strip().lower()
    return lowered not in NOT_SECRET_NAMES and bool(_SECRET_NAME.search(lowered))


class Scrubber:
    """Takes secrets out of text and JSON values.

    Every occurrence of one of ``values`` (an agent's secret values, at least
    ``SCRUB_MIN_LENGTH`` characters; the longest first, so that a secret holding another goes
    whole) becomes ``replacement``. With ``lookalikes`` it also removes what looks like a
    secret whatever its value: the value of a JSON field whose name looks secret
    (:func:`looks_like_secret_name`), and in any text "Bearer ...", ``token=...`` /
    ``password=...``, ``"api_key": "..."``, a URL's password and tokens with a telling prefix.
    """

    def __init__(
        self, values: Iterable[str] = (), *, replacement: str = "***", lookalikes: bool = False
    ):
        unique = {str(v) for v in values if len(str(v)) >= SCRUB_MIN_LENGTH}
        self.values: list[str] = sorted(unique, key=len, reverse=True)
        self.replacement = replacement
        self.lookalikes = lookalikes

    def __bool__(self) -> bool:
        return bool(self.values) or self.lookalikes

    def text(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, self.replacement)
        if self.lookalikes:
            for pattern in _VALUE_PATTERNS:
                text = pattern.sub(self._keep_name, text)
        return text

    def _keep_name(self, match: re.Match) -> str:
        secret = match.group(2)
        if secret == self.replacement or not secret:
            return match.group(0)
        return match.group(1) + self.replacement

    def json(self, value: Any) -> Any:
        """``text`` applied to every string inside a JSON value, names included; with
        ``lookalikes``, a string under a name that looks secret is replaced whole. A
        number that shows a secret becomes the replacement too."""
        if not self:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            return [self.json(item) for item in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self._field(str(k), v) for k, v in value.items()}
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self.replacement if self.text(str(value)) != str(value) else value
        return value

    def _field(self, name: str, value: Any) -> Any:
        # Strings only: a number under such a name is a count far more often than a secret
        # ({"tokens": 1250} from a language model).
        if self.lookalikes and isinstance(value, str) and value and looks_like_secret_name(name):
            return self.replacement
        return self.json(value)
