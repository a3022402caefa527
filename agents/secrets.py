"""Agent secrets: encrypted at rest, masked in memory, never rendered or sent to the broker.

The column holds one Fernet token of the JSON object ``{"name": "value", ...}``.
``settings.CONVEYOR_SECRET_KEYS`` lists the keys, newest first: the first encrypts, every key
decrypts, so a key is rotated by putting a new one in front, running
``manage.py rotate_secret_keys`` (re-encrypts every row with the new key), then dropping the old.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cache

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
