"""What every kind of agent shares: the run protocol, the run context and the errors.

A kind is a module in this package that defines a :class:`Kind` subclass instance with

* ``name`` (stored on the agent), ``label`` and ``description`` for people;
* ``config_form``: a Django form that is the kind's config schema. The pages render it, the
  services validate with it, and ``cleaned_data`` (JSON-safe) is what gets stored;
* ``run(ctx, input)``: does the work and returns a JSON-safe result.

``run`` signals failure by raising one of the errors below. Anything else it raises is
classified by ``executions.errors.classify`` (connection problems and timeouts are temporary,
the rest is an internal error that is not retried).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, BinaryIO, ClassVar, Protocol

from django import forms


class AgentError(Exception):
    """The agent failed."""

    #: One of executions.errors.Category; decides the title and what the user is told.
    category: ClassVar[str] = "internal"
    #: Whether trying again later may help (the agent's policy decides if it actually does).
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str | None = None,
        *,
        category: str | None = None,
        retry_after: float | None = None,
    ):
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        if category is not None:
            self.category = category
        #: Seconds the other side asked us to wait (e.g. a Retry-After header).
        self.retry_after = retry_after
        super().__init__(self.message)


class RetryableError(AgentError):
    """A temporary problem: trying again later may work."""

    category = "upstream_error"
    retryable = True


class PermanentError(AgentError):
    """A problem that trying again will not fix."""

    category = "internal"
    retryable = False


class NetworkError(RetryableError):
    """The agent could not reach the service it calls."""

    category = "network"


class RateLimitedError(RetryableError):
    """The service the agent calls asked it to slow down."""

    category = "rate_limited"


class AgentTimeoutError(RetryableError):
    """The call took longer than allowed."""

    category = "timeout"


class AuthError(PermanentError):
    """The service the agent calls refused its credentials."""

    category = "auth"


class InvalidInputError(PermanentError):
    """The input does not fit what the agent expects."""

    category = "invalid_input"


class ConfigurationError(PermanentError):
    """The agent's configuration does not work."""

    category = "configuration"


class CancelledError(AgentError):
    """The execution was cancelled."""

    category = "cancelled"


class RunContext(Protocol):
    """What a running agent can see and do. Implemented by ``executions.runner``.

    ``idempotency_key`` is for the services an agent changes something in. An execution's work
    can run more than once: an attempt cut off after its side effect (worker killed, machine
    lost, time limit) is followed by the next attempt, which does it again. The key is the same
    on every attempt of one execution and differs between executions (a manual retry is a new
    execution, so it gets a new key). Send it with the request (an ``Idempotency-Key`` header,
    a payment API's idempotency key, a unique column) so the other side can recognise a repeat
    and do the work once.
    """

    execution_id: str  # the public UUID, for logs
    idempotency_key: str  # "conveyor-<execution_id>": the same on every attempt of this run
    attempt: int  # 1 for the first attempt
    max_attempts: int
    deadline: datetime  # when the soft time limit strikes
    config: Mapping[str, Any]  # the agent's validated config
    secrets: Mapping[str, str]  # the agent's secrets (masked repr)
    last_checkpoint: Any  # what an earlier attempt saved with checkpoint(); None at first

    def checkpoint(self, state: Any) -> None:
        """Save where long work stands (JSON, size-limited): the next attempt of this execution
        (after a timeout, a lost worker, a temporary error) reads it as ``last_checkpoint``
        and resumes there instead of starting over."""

    def save_artifact(
        self, name: str, data: bytes | str | BinaryIO, content_type: str | None = None
    ) -> None:
        """Keep a file with this execution: ``data`` as bytes, text (stored as UTF-8) or a file
        opened in binary mode. Its owner lists and downloads it on the execution's page and
        through the API. ``name`` is what people see (and the download's file name);
        ``content_type`` is guessed from the name when not given. Saving a name again replaces
        that file. Written at once: a later failure, or a retry, does not take it back.
        Size-limited per file and per execution, and in number: over a limit it raises a
        ValueError that says which (the run fails with it unless the agent catches it)."""

    def log(self, level: str, message: str, **data: Any) -> None:
        """A line of the execution's log (debug, info, warning or error). Lines below the
        agent's log level are not kept."""

    def progress(self, percent: int, message: str = "") -> None: ...

    def is_cancelled(self) -> bool: ...


# "type/subtype" with optional parameters ("text/csv; charset=utf-8"): what an artifact's
# content type may be (agents name it; the http kind passes on what an endpoint sent).
_MEDIA_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    r"(?:\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(?:[A-Za-z0-9!#$&^_.+-]+|\"[^\"\\\x00-\x1f\x7f]*\"))*\Z"
)


def is_media_type(value: Any) -> bool:
    """Whether ``value`` is a content type such as ``text/csv; charset=utf-8``."""
    return isinstance(value, str) and len(value) <= 255 and bool(_MEDIA_TYPE.match(value))


class ConfigInvalid(Exception):
    """An agent's config does not fit its kind's schema; ``errors`` maps field to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


class Kind:
    name: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str]
    config_form: ClassVar[type[forms.Form]]

    def clean_config(self, config: Mapping[str, Any] | None, *, agent=None) -> dict[str, Any]:
        """Validate ``config`` with the kind's form; return what to store or raise ConfigInvalid.

        ``agent``: the agent being saved (its owner, its own row), for kinds whose config
        refers to other agents."""
        form = self.config_form(data=dict(config or {}))
        if not form.is_valid():
            raise ConfigInvalid({field: list(msgs) for field, msgs in form.errors.items()})
        return form.cleaned_data

    def summary(
        self, config: Mapping[str, Any], secrets: Mapping[str, str] | None = None
    ) -> list[tuple[str, str]]:
        """(label, value) pairs that describe a config to a person. Secrets never appear;
        ``secrets`` (the agent's; names are enough) lets a kind say which are set or missing."""
        return [(str(key), str(value)) for key, value in config.items()]

    def validate_input(self, config: Mapping[str, Any], input: Any) -> None:
        """Raise InvalidInputError if ``input`` cannot work, before anything is queued."""

    def input_example(self, config: Mapping[str, Any]) -> Any:
        """An input this agent accepts, as a person would type it (None: no contract)."""
        return None

    def run(self, ctx: RunContext, input: Any) -> Any:
        raise NotImplementedError
