"""Typed readers for environment variables that fail loudly on bad values.

Every setting Conveyor reads from the environment goes through one of these, so a typo such as
``CONVEYOR_DEFAULT_TIMEOUT=30s`` stops the process at start-up with a message naming the
variable instead of surfacing later as a confusing runtime error.
"""

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of true/false/1/0/yes/no, not {raw!r}.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_origins(name: str) -> list[str]:
    """A comma-separated list of origins, each ``scheme://host[:port]``."""
    origins = env_list(name)
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not host or "/" in host:
            raise ImproperlyConfigured(
                f"{name} lists origins such as https://conveyor.example.com (scheme and host, "
                f"no path), not {origin!r}."
            )
    return origins


def env_header_value(name: str) -> tuple[str, str] | None:
    """``HEADER,value`` as Django's ``("HTTP_HEADER", "value")``; unset or empty is None.

    The header may be written as sent (``X-Forwarded-Proto``) or as Django names it in
    ``request.META`` (``HTTP_X_FORWARDED_PROTO``).
    """
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) != 2 or not all(parts) or not all(part.isprintable() for part in parts):
        raise ImproperlyConfigured(
            f"{name} must be a header and its value, such as X-Forwarded-Proto,https, not {raw!r}."
        )
    header = parts[0].upper().replace("-", "_")
    if not header.replace("_", "").isalnum():
        raise ImproperlyConfigured(f"{name} names a header that is not valid: {parts[0]!r}.")
    if not header.startswith("HTTP_"):
        header = "HTTP_" + header
    return header, parts[1]
