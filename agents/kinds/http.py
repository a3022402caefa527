"""The ``http`` kind: calls an HTTP endpoint and returns its answer.

Every request goes through :mod:`agents.outbound`, so the SSRF guard checks the address the
URL resolves to, at connect time, on every redirect. How an answer is judged:

==========================================  ===============================================
the endpoint answers                        the attempt
==========================================  ===============================================
a status in ``expected_statuses``           succeeds; the result holds status, headers, body
5xx, 408                                    fails, temporary (``upstream_error``)
429                                         fails, temporary (``rate_limited``)
401, 403                                    fails for good (``auth``)
400, 422                                    fails for good (``invalid_input``)
other 4xx                                   fails for good (``upstream_error``)
another 1xx/2xx/3xx                         fails for good (``configuration``: widen
                                            ``expected_statuses`` if that answer is fine)
nothing in time / no connection             temporary (``timeout`` / ``network``)
a refused (internal) address                fails for good (``configuration``)
==========================================  ===============================================

A temporary failure honours the ``Retry-After`` header (seconds or an HTTP date).

With ``send_idempotency_key`` on, every request carries ``Idempotency-Key: conveyor-<execution
id>`` (``ctx.idempotency_key``): the same value on every attempt of a run, so an endpoint that
honours the header does the work once even when an attempt is cut off after the request went
out and the next attempt sends it again. A header of that name in ``headers`` or
``secret_headers`` is refused when the agent is saved while the option is on: Conveyor never
quietly replaces a value the owner wrote, nor sends the header twice.

With ``keep_response`` on, the body of an answer with an expected status is also kept whole as
a file of the execution, named ``response``, with the answer's content type
(``ctx.save_artifact``); its owner downloads it from the execution's page or the API. The body
is then read up to the larger of ``CONVEYOR_HTTP_MAX_RESPONSE_BYTES`` and
``CONVEYOR_ARTIFACT_MAX_BYTES``; a longer one fails the attempt for good (it could not be kept
whole), as does a file over the execution's limits. The result still holds the body as usual
(cut at ``CONVEYOR_HTTP_RESULT_BODY_CHARS``). Each attempt that gets an expected answer saves
it again, replacing the file. Secret values the endpoint echoes back are masked in the file,
as in the result.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx
from django import forms
from django.conf import settings
from django.utils import timezone

from .. import outbound
from .base import (
    AgentTimeoutError,
    AuthError,
    CancelledError,
    ConfigurationError,
    Kind,
    NetworkError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    RunContext,
    is_media_type,
)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
METHODS_WITHOUT_BODY = ("GET", "HEAD")
BODY_CHOICES = (
    ("", "The default: the run's input for POST, PUT and PATCH, nothing otherwise"),
    ("input", "The run's input, as JSON"),
    ("fixed", "A fixed JSON body"),
    ("none", "No body"),
)
DEFAULT_TIMEOUT = 30.0
DEFAULT_EXPECTED_STATUSES = "200-299"
DEFAULT_RESPONSE_HEADERS = "content-type"
# Headers the HTTP client manages itself; setting them by hand breaks requests.
MANAGED_HEADERS = ("host", "content-length", "transfer-encoding", "connection")
IDEMPOTENCY_HEADER = "Idempotency-Key"
# The name of the file keep_response saves.
RESPONSE_ARTIFACT = "response"

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 header field name
_STATUS_ITEM = re.compile(r"^(\d{3})(?:-(\d{3}))?$")
_STATUS_CLASS = re.compile(r"^([1-5])xx$")
_STATUS_HELP = (
    "Write status codes like 200, ranges like 200-299 or classes like 2xx, separated by commas."
)


# --- Pure helpers ------------------------------------------------------------------------------


def parse_statuses(text: str) -> list[tuple[int, int]]:
    """``"200-299,304"`` -> ``[(200, 299), (304, 304)]``; ValueError with a message for people."""
    ranges = []
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise ValueError(f"List at least one status code. {_STATUS_HELP}")
    for item in items:
        if not item:
            continue
        if match := _STATUS_CLASS.match(item.lower()):
            low = int(match.group(1)) * 100
            ranges.append((low, low + 99))
            continue
        match = _STATUS_ITEM.match(item.replace(" ", ""))
        if not match:
            raise ValueError(f"“{item}” is not a status code. {_STATUS_HELP}")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        for code in (low, high):
            if not 100 <= code <= 599:
                raise ValueError(f"{code} is not an HTTP status code (they run from 100 to 599).")
        if high < low:
            raise ValueError(f"In “{item}” the range runs backwards; write {high}-{low}.")
        ranges.append((low, high))
    return ranges


def status_expected(status: int, ranges: list[tuple[int, int]]) -> bool:
    return any(low <= status <= high for low, high in ranges)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or timezone.now())).total_seconds()
        return max(0.0, seconds)
    if seconds != seconds or seconds < 0 or seconds == float("inf"):  # NaN, negative, inf
        return None
    return seconds


def _seconds(value: float) -> str:
    """``30.0`` -> ``"30"``, ``2.5`` -> ``"2.5"``, ``12.3456`` -> ``"12.3"``."""
    return f"{round(float(value), 1):g}" if value < 1e6 else f"{int(value)}"


def status_text(status: int, reason: str = "") -> str:
    """``503`` -> ``"503 Service Unavailable"``."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = reason
    return f"{status} {phrase}".strip()


# --- The config form ---------------------------------------------------------------------------


class _MethodField(forms.ChoiceField):
    def to_python(self, value):
        return super().to_python(value).strip().upper()


class _HttpUrlField(forms.URLField):
    """A URL to call. Django's URLValidator is left out on purpose: it refuses single-label
    hosts such as ``http://billing:8080/`` that an operator may allow; the address itself is
    judged by the outbound guard (HttpConfigForm.clean_url, and again when the agent runs)."""

    default_validators = []

    def clean(self, value):
        value = super().clean(value)
        if not value:
            return value
        if any(ch.isspace() for ch in value):
            raise forms.ValidationError("The address cannot contain spaces.")
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise forms.ValidationError(f"This is not a valid web address ({exc}).") from None
        if url.scheme not in ("http", "https"):
            raise forms.ValidationError("Use an address that starts with http:// or https://.")
        if not url.host:
            raise forms.ValidationError(
                "The address needs a host name, as in https://example.com/."
            )
        if url.userinfo:
            raise forms.ValidationError(
                "Do not put a user name or password in the address: it would be stored in plain "
                "sight. Store it as a secret and send it with a secret header instead."
            )
        return value


class _JSONField(forms.JSONField):
    """A JSON field whose empty value shows as an empty box, not as the word null.

    ``blank`` lists more values shown as an empty box (``{}`` for the header maps, where an
    empty box means the same)."""

    widget = forms.Textarea(attrs={"rows": 3, "spellcheck": "false"})

    def __init__(self, *, blank=(), **kwargs):
        self.blank = (None, *blank)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if any(value == b and type(value) is type(b) for b in self.blank):
            return ""
        return super().prepare_value(value)


class CheckboxWidget(forms.CheckboxInput):
    """A checkbox that also reads a JSON boolean (the API) and does not guess at anything else.

    Django's own turns any value into a bool, so ``"no"`` or ``0`` from an API call would be
    read as on or off without a word; here they reach the field, which refuses them. (The name
    keeps Django's ``widget_type`` "checkbox", which templates/_field.html lays out as one.)"""

    def value_from_datadict(self, data, files, name):
        if name not in data:
            return False  # an unticked box is not posted; an API call may leave the option out
        value = data.get(name)
        if isinstance(value, str):
            words = {"on": True, "true": True, "false": False, "": False}
            return words.get(value.strip().lower(), value)
        return value


class _SwitchField(forms.BooleanField):
    widget = CheckboxWidget
    default_error_messages = {"invalid": "Enter true or false."}

    def to_python(self, value):
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        raise forms.ValidationError(self.error_messages["invalid"], code="invalid")


def _check_header_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise forms.ValidationError(
            f"“{name}” in {where} is not a valid header name (letters, digits and - only, "
            "as in X-Request-Id)."
        )
    if name.lower() in MANAGED_HEADERS:
        raise forms.ValidationError(
            f"Conveyor sets the “{name}” header itself; remove it from {where}."
        )
    return name


def _json_object(value: Any, what: str, example: str) -> dict:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise forms.ValidationError(
            f"{what} must be a JSON object of names and values, for example {example}."
        )
    return value


class HttpConfigForm(forms.Form):
    method = _MethodField(
        choices=[(m, m) for m in METHODS],
        required=False,
        initial="POST",
        help_text="The HTTP method. POST unless you choose another.",
        error_messages={"invalid_choice": f"Choose one of {', '.join(METHODS)}."},
    )
    url = _HttpUrlField(
        label="URL",
        assume_scheme="https",
        max_length=2000,
        help_text="The address to call, starting with https:// or http://.",
        error_messages={"required": "Enter the address to call, such as https://example.com/hook."},
    )
    headers = _JSONField(
        required=False,
        blank=({},),
        help_text='Extra request headers as a JSON object, e.g. {"Accept": "application/json"}.',
        error_messages={"invalid": 'Enter valid JSON, e.g. {"Accept": "application/json"}.'},
    )
    secret_headers = _JSONField(
        required=False,
        blank=({},),
        help_text=(
            "Headers whose value is one of this agent's secrets, as a JSON object of header "
            'name to secret name, e.g. {"Authorization": "api_token"}. The value is read from '
            "the secret when the agent runs and is never stored here."
        ),
        error_messages={"invalid": 'Enter valid JSON, e.g. {"Authorization": "api_token"}.'},
    )
    send_idempotency_key = _SwitchField(
        required=False,
        label=f"Send an {IDEMPOTENCY_HEADER} header",
        help_text=(
            f"Adds an {IDEMPOTENCY_HEADER} header with the same value on every attempt of a run "
            "(a new run, a manual retry included, gets a new value). If an attempt is cut off "
            "after its request went out, the next attempt sends the request again; a service "
            "that supports the header can recognise the repeat and ignore it."
        ),
    )
    body = forms.ChoiceField(
        choices=BODY_CHOICES,
        required=False,
        help_text=(
            "What to send: the run's input as JSON (the default for POST, PUT and PATCH), a "
            "fixed JSON body, or nothing (the default for GET, HEAD and DELETE)."
        ),
        error_messages={"invalid_choice": "Choose input, fixed or none."},
    )
    # Only used (and only shown, see conveyor.css) when the body is "fixed".
    fixed_body = _JSONField(
        required=False,
        label="Fixed body (JSON)",
        help_text='The JSON object or list to send, e.g. {"ping": true}.',
        error_messages={"invalid": 'Enter valid JSON, e.g. {"ping": true}.'},
    )
    # Not to be confused with the agent's time limit (Agent.timeout), which bounds a whole
    # attempt: this one bounds each HTTP call, and is cut short by the attempt's deadline.
    timeout = forms.FloatField(
        required=False,
        label="Request timeout (per HTTP call, seconds)",
        initial=DEFAULT_TIMEOUT,
        help_text=(
            "How long one HTTP call may take to connect and answer. The agent's time limit "
            "(under Retries and limits) bounds the whole attempt and cuts a call short when it "
            "runs out first."
        ),
        error_messages={"invalid": "Enter a number of seconds, such as 30 or 2.5."},
    )
    expected_statuses = forms.CharField(
        required=False,
        max_length=200,
        initial=DEFAULT_EXPECTED_STATUSES,
        help_text=f"Answers that count as success. {_STATUS_HELP}",
    )
    response_headers = forms.CharField(
        required=False,
        max_length=1000,
        initial=DEFAULT_RESPONSE_HEADERS,
        help_text="Response headers to keep in the result, separated by commas.",
    )
    keep_response = _SwitchField(
        required=False,
        label="Keep the response as a file",
        help_text=(
            "Also keeps the whole body of a successful answer as a file of the run, named "
            "“response”, with the answer's content type, to download from the run's page or "
            "the API (within this installation's file size limits; a larger answer fails the "
            "run). The result keeps its shortened copy of the body either way."
        ),
    )

    def clean_method(self):
        return self.cleaned_data.get("method") or "POST"

    def clean_url(self):
        url = self.cleaned_data.get("url")
        if url:
            # The rule the run applies at each connection (agents.outbound), checked now too.
            try:
                outbound.check_url(url)
            except outbound.OutboundBlocked as exc:
                raise forms.ValidationError(exc.message) from None
        return url

    def clean_headers(self):
        headers = _json_object(
            self.cleaned_data.get("headers"), "Headers", '{"Accept": "application/json"}'
        )
        for name, value in headers.items():
            _check_header_name(name, "the headers")
            if not isinstance(value, str):
                raise forms.ValidationError(
                    f"The value of the “{name}” header must be text: put it in quotes."
                )
            if any(ch in value for ch in "\r\n\0"):
                raise forms.ValidationError(
                    f"The value of the “{name}” header cannot contain line breaks."
                )
            if not value.isascii():
                raise forms.ValidationError(
                    f"The value of the “{name}” header can only contain plain ASCII characters "
                    "(no accents or symbols)."
                )
        return dict(headers)

    def clean_secret_headers(self):
        secret_headers = _json_object(
            self.cleaned_data.get("secret_headers"),
            "Secret headers",
            '{"Authorization": "api_token"}',
        )
        for name, secret in secret_headers.items():
            _check_header_name(name, "the secret headers")
            if not isinstance(secret, str) or not secret.strip():
                raise forms.ValidationError(
                    f"For the “{name}” header, give the name of one of the agent's secrets."
                )
        return {name: secret.strip() for name, secret in secret_headers.items()}

    def clean_fixed_body(self):
        value = self.cleaned_data.get("fixed_body")
        if value is None:
            return None
        if not isinstance(value, dict | list):
            raise forms.ValidationError(
                'The fixed body must be a JSON object or list, e.g. {"ping": true}.'
            )
        return value

    def clean_timeout(self):
        value = self.cleaned_data.get("timeout")
        limit = settings.CONVEYOR_MAX_TIMEOUT
        if value is None:
            return min(DEFAULT_TIMEOUT, float(limit))
        if value <= 0:
            raise forms.ValidationError("Enter a number of seconds greater than 0.")
        if value > limit:
            raise forms.ValidationError(f"At most {limit} seconds on this installation.")
        return float(value)

    def clean_expected_statuses(self):
        text = (self.cleaned_data.get("expected_statuses") or "").strip()
        if not text:
            return DEFAULT_EXPECTED_STATUSES
        try:
            parse_statuses(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return ",".join(
            item.strip().replace(" ", "").lower() for item in text.split(",") if item.strip()
        )

    def clean_response_headers(self):
        # Left out (an API call): the default. Left blank (the page's field): none at all.
        if self.add_prefix("response_headers") not in self.data:
            return DEFAULT_RESPONSE_HEADERS
        names: list[str] = []
        for raw in (self.cleaned_data.get("response_headers") or "").split(","):
            name = raw.strip().lower()
            if not name:
                continue
            if not _TOKEN.match(name):
                raise forms.ValidationError(
                    f"“{raw.strip()}” is not a header name. List names such as content-type, "
                    "separated by commas."
                )
            if name not in names:
                names.append(name)
        return ",".join(names)

    def clean(self):
        data = super().clean()
        method = data.get("method") or "POST"
        body = data.get("body") or (
            "none" if method in (*METHODS_WITHOUT_BODY, "DELETE") else "input"
        )
        data["body"] = body
        if body != "none" and method in METHODS_WITHOUT_BODY:
            self.add_error(
                "body",
                f"A {method} request does not carry a body. Choose “No body”, "
                "or use POST, PUT or PATCH.",
            )
        if body != "fixed":
            # Ignored unless the body is fixed (the page hides the box then).
            data["fixed_body"] = None
            self.errors.pop("fixed_body", None)
        elif data.get("fixed_body") is None and "fixed_body" not in self.errors:
            self.add_error("fixed_body", "Enter the JSON to send, or choose another body.")
        both = {n.lower() for n in data.get("headers") or {}} & {
            n.lower() for n in data.get("secret_headers") or {}
        }
        if both:
            self.add_error(
                "secret_headers",
                f"“{sorted(both)[0]}” is set both as a header and "
                "as a secret header; keep only one.",
            )
        if data.get("send_idempotency_key"):
            # Refused rather than quietly replaced: the owner sees which value is sent.
            for field, where in (
                ("headers", "the headers"),
                ("secret_headers", "the secret headers"),
            ):
                for name in data.get(field) or {}:
                    if name.lower() == IDEMPOTENCY_HEADER.lower():
                        self.add_error(
                            field,
                            f"Conveyor sends the “{name}” header itself while “Send an "
                            f"{IDEMPOTENCY_HEADER} header” is on; remove it from {where}, or "
                            "turn that option off to send your own value.",
                        )
        return data


# --- The kind ----------------------------------------------------------------------------------


class HttpKind(Kind):
    name = "http"
    label = "HTTP request"
    description = (
        "Calls an HTTP endpoint (a webhook, an API) with the run's input or a fixed body, and "
        "returns the status, chosen headers and body of the answer."
    )
    config_form = HttpConfigForm

    def summary(
        self, config: Mapping[str, Any], secrets: Mapping[str, str] | None = None
    ) -> list[tuple[str, str]]:
        """``secrets`` (the agent's, names are enough) turns secret headers into set/missing."""
        method = config.get("method") or "POST"
        pairs = [("Request", f"{method} {config.get('url', '')}")]
        headers = config.get("headers") or {}
        pairs.append(("Headers", ", ".join(f"{k}: {v}" for k, v in headers.items()) or "None"))
        secret_headers = config.get("secret_headers") or {}
        if secret_headers:
            shown = []
            for header, secret in secret_headers.items():
                state = "" if secrets is None else (" (set)" if secret in secrets else " (missing)")
                shown.append(f"{header}: secret “{secret}”{state}")
            pairs.append(("Secret headers", ", ".join(shown)))
        if config.get("send_idempotency_key"):
            pairs.append(
                ("Idempotency key", f"Sent as {IDEMPOTENCY_HEADER}, the same on every attempt")
            )
        body = config.get("body") or "input"
        if body == "fixed":
            text = json.dumps(config.get("fixed_body"), ensure_ascii=False)
            pairs.append(("Body", "Fixed: " + (text if len(text) <= 200 else text[:199] + "…")))
        else:
            pairs.append(("Body", dict(BODY_CHOICES).get(body, body)))
        timeout = _seconds(config.get("timeout") or DEFAULT_TIMEOUT)
        pairs.append(("Request timeout", f"{timeout} seconds"))
        pairs.append(
            ("Expected statuses", config.get("expected_statuses") or DEFAULT_EXPECTED_STATUSES)
        )
        kept = config.get("response_headers", DEFAULT_RESPONSE_HEADERS) or ""
        pairs.append(("Response headers kept", kept.replace(",", ", ") if kept else "None"))
        if config.get("keep_response"):
            pairs.append(("Response body", f"Kept as the file “{RESPONSE_ARTIFACT}”"))
        return pairs

    def run(self, ctx: RunContext, input: Any) -> Any:
        config = ctx.config
        method = config.get("method") or "POST"
        url = httpx.URL(config["url"])
        shown_url = outbound.display_url(url)
        timeout = self._timeout(ctx, config)
        secret_headers = dict(config.get("secret_headers") or {})
        headers = dict(config.get("headers") or {})
        for header, secret in secret_headers.items():
            if secret not in ctx.secrets:
                raise ConfigurationError(
                    f"The “{header}” header should carry the secret “{secret}”, but this agent "
                    "has no secret by that name. Add the secret to the agent, or change its "
                    "secret headers."
                )
            headers[header] = ctx.secrets[secret]
        sent_key: dict[str, str] = {}
        if config.get("send_idempotency_key"):
            if any(name.lower() == IDEMPOTENCY_HEADER.lower() for name in headers):
                # The form refuses this config; one stored some other way is not guessed at.
                raise ConfigurationError(
                    f"This agent sets an {IDEMPOTENCY_HEADER} header of its own and also asks "
                    "Conveyor to send one. Remove the header, or turn the option off."
                )
            headers[IDEMPOTENCY_HEADER] = sent_key["idempotency_key"] = ctx.idempotency_key
        content = self._body(config, input)
        if ctx.is_cancelled():
            raise CancelledError()

        ctx.log("info", f"Sending {method} {shown_url}", method=method, url=shown_url, **sent_key)
        ctx.progress(10, f"Calling {shown_url}")
        redirects: list[str] = []

        def on_redirect(response: httpx.Response, next_request: httpx.Request) -> None:
            target = outbound.display_url(next_request.url)
            redirects.append(target)
            ctx.log(
                "info",
                f"Redirected ({status_text(response.status_code)}) to {target}",
                status=response.status_code,
                url=target,
            )

        keep = bool(config.get("keep_response"))
        result_limit = settings.CONVEYOR_HTTP_MAX_RESPONSE_BYTES
        # A body kept as a file is read whole, up to what one file may be.
        read_limit = result_limit
        if keep:
            read_limit = max(result_limit, settings.CONVEYOR_ARTIFACT_MAX_BYTES)
        started = time.monotonic()
        try:
            with outbound.client(timeout=timeout) as http:
                request = http.build_request(method, url, headers=headers, **content)
                with outbound.send(
                    http, request, sensitive_headers=secret_headers, on_redirect=on_redirect
                ) as response:
                    raw, cut = outbound.read_limited(
                        response, read_limit, deadline=started + timeout
                    )
        except outbound.OutboundBlocked as exc:
            message = exc.message
            if redirects:
                message = f"The endpoint redirected Conveyor to {redirects[-1]}. {message}"
            raise ConfigurationError(message) from exc
        except httpx.TooManyRedirects as exc:
            raise PermanentError(
                f"The endpoint redirected more than {settings.CONVEYOR_HTTP_MAX_REDIRECTS} "
                "times, so Conveyor stopped following it. Check the agent's URL.",
                category="upstream_error",
            ) from exc
        except httpx.ConnectTimeout as exc:
            raise AgentTimeoutError(
                f"Could not connect to {url.host} within {_seconds(timeout)} seconds."
            ) from exc
        except httpx.TimeoutException as exc:
            raise AgentTimeoutError(
                f"The endpoint did not answer within {_seconds(timeout)} seconds."
            ) from exc
        except httpx.ConnectError as exc:
            raise NetworkError(f"Could not connect to {url.host}: {exc}.") from exc
        except httpx.RemoteProtocolError as exc:
            raise NetworkError(
                f"The connection to {url.host} broke off or the answer was garbled ({exc})."
            ) from exc
        except (httpx.LocalProtocolError, UnicodeEncodeError) as exc:
            # Not quoting exc: it may hold a header value, and header values may be secrets.
            raise ConfigurationError(
                "Conveyor could not send this request: a header value is not allowed in HTTP "
                "(only plain ASCII text without line breaks is). Check the agent's headers and "
                "the secrets its secret headers use."
            ) from exc
        except httpx.DecodingError as exc:
            raise PermanentError(str(exc), category="upstream_error") from exc
        except httpx.TransportError as exc:
            raise NetworkError(
                f"The connection to {url.host} failed ({type(exc).__name__}: {exc})."
            ) from exc

        elapsed = time.monotonic() - started
        status = response.status_code
        ctx.log(
            "info",
            f"The endpoint answered {status_text(status)} in {elapsed:.2f} s.",
            status=status,
            bytes=len(raw),
            truncated=cut,
        )
        # The result is built from what it always was: at most the result limit's bytes.
        if len(raw) > result_limit:
            result = self._result(response, raw[:result_limit], True, config)
        else:
            result = self._result(response, raw, cut, config)
        ranges = parse_statuses(config.get("expected_statuses") or DEFAULT_EXPECTED_STATUSES)
        if status_expected(status, ranges):
            if keep:
                self._keep(ctx, response, raw, cut, read_limit)
            ctx.progress(100, status_text(status))
            return result
        raise self._failure(response, result, config)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _keep(ctx: RunContext, response: httpx.Response, raw: bytes, cut: bool, limit: int) -> None:
        """Save the whole body as the execution's file ``response`` (keep_response)."""
        if cut:
            raise PermanentError(
                f"The answer is longer than the {limit:,} bytes Conveyor keeps as a file, so it "
                "could not be kept whole. Turn off “Keep the response as a file”, or ask the "
                "operators to raise the file size limit.",
                category="configuration",
            )
        media = response.headers.get("content-type", "").strip()
        # What the endpoint said, if it is a content type at all; otherwise plain bytes.
        content_type = media if is_media_type(media) else "application/octet-stream"
        ctx.save_artifact(RESPONSE_ARTIFACT, raw, content_type=content_type)

    @staticmethod
    def _timeout(ctx: RunContext, config: Mapping[str, Any]) -> float:
        """The configured timeout, shortened so the call ends before the attempt's deadline."""
        timeout = float(config.get("timeout") or DEFAULT_TIMEOUT)
        left = (ctx.deadline - timezone.now()).total_seconds()
        return max(0.1, min(timeout, left)) if left > 0 else timeout

    @staticmethod
    def _body(config: Mapping[str, Any], input: Any) -> dict[str, Any]:
        body = config.get("body") or "input"
        if body == "fixed":
            return {"json": config.get("fixed_body")}
        if body == "input" and input is not None:
            return {"json": input}
        return {}

    @staticmethod
    def _result(
        response: httpx.Response, raw: bytes, cut: bool, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        keep = config.get("response_headers", DEFAULT_RESPONSE_HEADERS) or ""
        headers = {}
        for name in filter(None, keep.split(",")):
            values = response.headers.get_list(name)
            if values:
                headers[name] = _clean_json(", ".join(values))
        limit = settings.CONVEYOR_HTTP_RESULT_BODY_CHARS
        text = _clean_json(_decode(raw, response.charset_encoding))
        body: Any = text
        truncated = cut or len(text) > limit
        if not cut and _is_json(response):
            parsed = _parse_json(text)
            if parsed is not _NOT_JSON and len(json.dumps(parsed, ensure_ascii=False)) <= limit:
                body, truncated = parsed, False
        if isinstance(body, str):
            body = body[:limit]
        return {
            "status": response.status_code,
            "headers": headers,
            "body": body,
            "truncated": truncated,
        }

    @staticmethod
    def _failure(
        response: httpx.Response, result: dict[str, Any], config: Mapping[str, Any]
    ) -> Exception:
        status = response.status_code
        answered = f"The endpoint answered {status_text(status, response.reason_phrase)}."
        said = _excerpt(response, result)
        if status >= 500 or status in (408, 429):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            wait = ""
            if retry_after is not None:
                wait = f" It asked to wait {_seconds(retry_after)} seconds before trying again."
            error = RateLimitedError if status == 429 else RetryableError
            return error(f"{answered}{wait}{said}", retry_after=retry_after)
        if status in (401, 403):
            secret_headers = config.get("secret_headers") or {}
            if secret_headers:
                hint = (
                    " Check the secrets it sends ("
                    + ", ".join(f"“{s}”" for s in secret_headers.values())
                    + ") and what they may access."
                )
            else:
                hint = " This agent sends no secret headers; the endpoint may need one."
            return AuthError(f"{answered} It did not accept the credentials.{hint}{said}")
        if status in (400, 422):
            return PermanentError(
                f"{answered} It did not accept the request.{said}", category="invalid_input"
            )
        if status >= 400:
            return PermanentError(f"{answered}{said}", category="upstream_error")
        expected = config.get("expected_statuses") or DEFAULT_EXPECTED_STATUSES
        return PermanentError(
            f"{answered} This agent only accepts {expected}. If {status} is a good answer, "
            "add it to the agent's expected statuses.",
            category="configuration",
        )


_NOT_JSON = object()


def _is_json(response: httpx.Response) -> bool:
    media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(text: str) -> Any:
    try:
        return _clean_json(json.loads(text, parse_constant=_reject_constant))
    except ValueError:  # JSONDecodeError too
        return _NOT_JSON


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _clean_json(value: Any) -> Any:
    """Make text storable in any JSON column: no NUL characters (Postgres refuses them in
    jsonb) and no lone surrogates (not encodable as UTF-8)."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, list):
        return [_clean_json(item) for item in value]
    if isinstance(value, dict):
        return {_clean_json(str(k)): _clean_json(v) for k, v in value.items()}
    return value


def _excerpt(response: httpx.Response, result: dict[str, Any]) -> str:
    """A short quote of an error answer, when it is text meant to be read."""
    media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not (_is_json(response) or media == "text/plain"):
        return ""
    body = result["body"]
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    text = " ".join(text.split())
    if not text:
        return ""
    if len(text) > 300:
        text = text[:299] + "…"
    return f" It said: “{text}”"


kind = HttpKind()
