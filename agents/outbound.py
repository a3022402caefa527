"""Every HTTP request Conveyor makes to the outside goes through this module.

An agent's owner chooses the URLs Conveyor calls, so a careless or hostile owner could point an
agent at the machine Conveyor runs on, at the private network behind it or at a cloud metadata
service that hands out credentials (server-side request forgery, SSRF). The guard here refuses
those addresses unless an operator allowed them.

How the guard works
-------------------
The check happens **when a connection is opened**, for every connection, including each hop of
a redirect: a custom httpcore network backend (:class:`GuardedBackend`) resolves the host itself
with ``getaddrinfo``, checks *every* address the name resolves to (one refused address refuses
the name), and then connects to one of the addresses it checked. A DNS answer that changes
between the check and the connection (DNS rebinding) therefore cannot swap in another address.
TLS still verifies the certificate for, and sends SNI with, the host name from the URL,
because httpcore starts TLS on the stream this backend returns. Checking the resolved address
also catches spellings of an address that only the resolver understands
(``http://2130706433/`` and ``http://127.1/`` are 127.0.0.1).

Only ``http`` and ``https`` URLs are followed, on every hop. Proxies and ``.netrc`` from the
environment are ignored (``trust_env=False``): a proxy would connect on Conveyor's behalf where
the guard cannot see it. (The CA bundle environment variables ``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` are still honoured: they only add trusted certificates.)

What is refused (:func:`blocked_reason`): loopback, private, link-local, multicast, reserved,
unspecified and shared (100.64.0.0/10) addresses, anything else that is not globally reachable
according to ``ipaddress`` or the IANA special-purpose registries, and the cloud metadata
addresses (169.254.169.254, fd00:ec2::254, 100.100.100.200 and the container credential
endpoints). IPv6 addresses that carry an IPv4 address are unwrapped and the IPv4 address is
judged: IPv4-mapped (``::ffff:a.b.c.d``), IPv4-translated (``::ffff:0:a.b.c.d``),
IPv4-compatible (``::a.b.c.d``), NAT64 (``64:ff9b::/96``), 6to4 (``2002::/16``) and Teredo
(``2001::/32``, server and client). ``ipaddress`` alone says some of these are global. The
local-use NAT64 prefix ``64:ff9b:1::/48`` is refused as a whole: it is not globally reachable,
and where a network puts the IPv4 address inside it depends on that network's translator.

The operator allow-list, ``settings.CONVEYOR_OUTBOUND_ALLOW``
-------------------------------------------------------------
A list of strings; each entry is one of:

* **a host** (no ``/``): matched case-insensitively against the host **exactly as written in
  the URL** (IPv6 without the brackets, international names in their ``xn--`` form). Whatever
  that host resolves to is then allowed.
  ``"127.0.0.1"`` allows ``http://127.0.0.1:8000/`` but neither ``http://localhost:8000/`` nor
  ``http://2130706433:8000/``; ``"billing.internal"`` allows that name only.
* **a network** (with ``/``, CIDR notation such as ``10.1.0.0/16`` or ``127.0.0.0/8``): matched
  against every **resolved** address, so ``"127.0.0.0/8"`` allows ``http://localhost/`` too. A
  network entry never opens the cloud metadata addresses, however wide it is; to call one of
  those, an operator must name it as a host entry.

Use
---
``check_url(url)`` applies the same rule when an agent is saved (the ``http`` kind's config
check), so an owner hears about a refused address at once; names that do not resolve yet are
left to the connection-time check. ``client(timeout=...)`` returns an ``httpx.Client`` with the
guard that follows up to ``CONVEYOR_HTTP_MAX_REDIRECTS`` redirects. A refused address raises
:class:`OutboundBlocked` (not an ``httpx`` error, so nothing retries it by accident). httpx's
own redirect following forwards every header except ``Authorization`` to another site and reads
each redirect's body whole; a caller that sends credentials in other headers or reads untrusted
answers uses ``send()``, which follows redirects itself and drops the given headers when a
redirect leaves the origin, and ``read_limited()``, which reads at most a given number of bytes
of the body::

    with outbound.client(timeout=10) as http:
        request = http.build_request("POST", url, json=payload, headers=headers)
        with outbound.send(http, request, sensitive_headers=["X-Api-Key"]) as response:
            body, truncated = outbound.read_limited(response, max_bytes=1_000_000)
"""

from __future__ import annotations

import ipaddress
import socket
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpcore
import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_HEADERS = {
    "User-Agent": "Conveyor",
    # Only what read_limited() can decompress within its bound.
    "Accept-Encoding": "gzip, deflate",
}


class OutboundBlocked(Exception):
    """Conveyor refused to call an address, for safety (see the module docstring)."""

    def __init__(self, message: str, *, host: str = "", address: str = "", reason: str = ""):
        self.message = message
        #: The host as written in the URL (IPv6 without brackets).
        self.host = host
        #: The resolved address that was refused, if the address was the problem.
        self.address = address
        #: Why that address is refused, in a few words ("loopback: this machine itself").
        self.reason = reason
        super().__init__(message)

    @classmethod
    def for_address(cls, *, host: str, address: str, reason: str) -> OutboundBlocked:
        verb = "is" if host == address else "resolves to"
        return cls(
            f"The address “{host}” {verb} a private or internal network address ({address} — "
            f"{reason}), which Conveyor does not call for safety. An operator can allow it with "
            "CONVEYOR_OUTBOUND_ALLOW.",
            host=host,
            address=address,
            reason=reason,
        )

    @classmethod
    def for_scheme(cls, url: httpx.URL) -> OutboundBlocked:
        return cls(
            f"Conveyor only calls http:// and https:// addresses, and “{_display(url)}” is "
            "neither.",
            host=url.host,
            reason=f"{url.scheme or 'no'} scheme",
        )


# --- The address check ---------------------------------------------------------------------

_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS Pod Identity
        "fd00:ec2::23",  # AWS EKS Pod Identity over IPv6
    )
)

_SHARED = ipaddress.ip_network("100.64.0.0/10")


def _networks(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Not globally reachable per the IANA special-purpose registries, listed here because the
# tables inside ``ipaddress`` differ between Python versions (3.11 says 192.0.0.8 and
# 64:ff9b:1::1 are global).
_NOT_GLOBAL = _networks(
    "0.0.0.0/8",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "240.0.0.0/4",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "3fff::/20",
    "5f00::/16",
    "64:ff9b:1::/48",
    "fc00::/7",
    "fec0::/10",
)
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why Conveyor does not connect to ``address`` (the allow-list aside), or None.

    ``address`` is an IP address, not a host name: callers resolve first. The reason is a few
    plain words, e.g. ``"loopback: this machine itself"``.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, v4, only_v4_counts = embedded
            reason = blocked_reason(v4)
            if reason is not None:
                return f"the {form} form of {v4}, {reason}"
            if only_v4_counts:
                return None
    return _own_reason(ip)


def _own_reason(ip: IPAddress) -> str | None:
    if ip in _METADATA:
        return "a cloud metadata service"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback: this machine itself"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip in _SHARED:
        return "shared carrier-grade NAT space"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64_LOCAL:
        return "a local-use NAT64 prefix"
    if ip.is_reserved:  # before is_private, which also covers 240.0.0.0/4
        return "reserved"
    if ip.is_private:
        return "a private network"
    if not ip.is_global or any(ip in net for net in _NOT_GLOBAL if net.version == ip.version):
        return "not publicly routable"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address, bool] | None:
    """The IPv4 address an IPv6 address carries: (form, address, whether it alone counts).

    When the IPv4 address alone counts, the IPv6 address is just another way of writing it
    (the host connects to, or a translator forwards to, that IPv4 address).
    """
    last32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped, True
    if ip in _TRANSLATED:
        return "IPv4-translated", last32, True
    if ip in _NAT64:
        return "NAT64", last32, True
    if ip in _NAT64_LOCAL:
        # The position of the IPv4 address depends on the local translator: the /96 form is
        # read for the message; the prefix is refused anyway (see _own_reason).
        return "NAT64", last32, False
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour, False
    if ip.teredo is not None:
        server, client = ip.teredo
        if blocked_reason(client) is not None:
            return "Teredo", client, False
        return "Teredo", server, False
    if ip in _COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves, not 0.0.0.x
        return "IPv4-compatible", last32, False
    return None


# --- The operator's allow-list -------------------------------------------------------------


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts, networks = set(), []
        for raw in entries:
            entry = str(raw).strip()
            if not entry:
                continue
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ImproperlyConfigured(
                        f"CONVEYOR_OUTBOUND_ALLOW: “{entry}” contains “/” but is not a network "
                        "in CIDR notation (such as 10.1.0.0/16)."
                    ) from None
            else:
                hosts.add(_normalise_host(entry))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return _normalise_host(host) in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        if ip in _METADATA:  # only a host entry opens those
            return False
        return any(ip in net for net in self.networks if net.version == ip.version)


def _normalise_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


@lru_cache(maxsize=8)
def _parse_allow_list(entries: tuple[str, ...]) -> AllowList:
    return AllowList.parse(entries)


def allow_list() -> AllowList:
    """The current ``CONVEYOR_OUTBOUND_ALLOW``, read at each connection (tests override it)."""
    entries = settings.CONVEYOR_OUTBOUND_ALLOW or ()
    if isinstance(entries, str):  # a bare string would otherwise be read letter by letter
        entries = entries.split(",")
    return _parse_allow_list(tuple(entries))


def check_host(host: str, addresses: Sequence[IPAddress]) -> None:
    """Raise OutboundBlocked unless every address ``host`` resolved to may be called."""
    allowed = allow_list()
    if allowed.allows_host(host):
        return
    for ip in addresses:
        if allowed.allows_address(ip):
            continue
        reason = blocked_reason(ip)
        if reason is not None:
            raise OutboundBlocked.for_address(
                host=_normalise_host(host), address=str(ip), reason=reason
            )


def check_url(url: str | httpx.URL) -> None:
    """The same rule, ahead of time: raise OutboundBlocked if ``url`` would be refused.

    For the checks made when an agent is saved, so that a refused address is reported in the
    form rather than at the first run; the connection-time check stays the one that counts
    (a name may resolve to another address by then). A literal address and a name that resolves
    now are judged like at connection time. A name that does not resolve now is let through:
    it may only resolve inside the workers' network, or once a service is deployed, and the
    connection-time check judges it then.
    """
    url = httpx.URL(url) if isinstance(url, str) else url
    if url.scheme not in ALLOWED_SCHEMES:
        raise OutboundBlocked.for_scheme(url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = _resolve(url.host, port)
    except httpcore.ConnectError:
        return  # does not resolve now: judged when the agent runs (see above)
    check_host(url.host, addresses)


# --- The connection layer ------------------------------------------------------------------


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(
            f"the name “{host}” could not be looked up ({getattr(exc, 'strerror', '') or exc})"
        ) from exc
    addresses: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 scope
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise httpcore.ConnectError(f"the name “{host}” has no IP address")
    return addresses


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's blocking backend, resolving and checking the address before connecting."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = _resolve(host, port)
        check_host(host, addresses)
        failure: Exception | None = None
        for ip in addresses:
            try:
                # An IP literal: the parent's create_connection does no second DNS lookup.
                return super().connect_tcp(
                    str(ip),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectTimeout as exc:
                failure = exc
            except httpcore.ConnectError as exc:
                failure = httpcore.ConnectError(_connect_failure(exc, ip, port))
                failure.__cause__ = exc
        assert failure is not None
        raise failure


def _connect_failure(exc: Exception, ip: IPAddress, port: int) -> str:
    cause = exc.__cause__ or exc.__context__
    where = f"{ip} port {port}"
    if isinstance(cause, ConnectionRefusedError):
        return f"the connection was refused at {where} (nothing is listening there)"
    if isinstance(cause, OSError) and cause.strerror:
        return f"{cause.strerror.lower()} ({where})"
    return f"{exc} ({where})"


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the guarded backend and a scheme check on every request.

    ``HTTPTransport`` takes no network backend, so the pool it builds (without a proxy) is
    rebuilt here the same way with :class:`GuardedBackend`.
    """

    def __init__(self, *, limits: httpx.Limits | None = None, retries: int = 0):
        limits = limits or httpx.Limits()
        # trust_env here only means the CA roots of SSL_CERT_FILE / SSL_CERT_DIR.
        ssl_context = httpx.create_ssl_context(trust_env=True)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits, retries=retries)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            retries=retries,
            network_backend=GuardedBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ALLOWED_SCHEMES:
            raise OutboundBlocked.for_scheme(request.url)
        return super().handle_request(request)


def client(
    *,
    timeout: float | httpx.Timeout,
    max_redirects: int | None = None,
    follow_redirects: bool = True,
    headers: dict[str, str] | None = None,
) -> httpx.Client:
    """An ``httpx.Client`` whose every connection passes the guard. Use it as a context manager.

    It follows up to ``max_redirects`` (default ``CONVEYOR_HTTP_MAX_REDIRECTS``) redirects,
    each one checked like the first request.
    """
    return httpx.Client(
        transport=GuardedTransport(),
        trust_env=False,
        timeout=timeout,
        follow_redirects=follow_redirects,
        max_redirects=(
            settings.CONVEYOR_HTTP_MAX_REDIRECTS if max_redirects is None else max_redirects
        ),
        headers={**DEFAULT_HEADERS, **(headers or {})},
    )


@contextmanager
def send(
    http: httpx.Client,
    request: httpx.Request,
    *,
    sensitive_headers: Iterable[str] = (),
    on_redirect: Callable[[httpx.Response, httpx.Request], None] | None = None,
) -> Iterator[httpx.Response]:
    """Send ``request`` with ``http`` and yield the final response, unread (stream it).

    Redirects are followed here, up to ``http.max_redirects``, rather than by httpx: httpx
    keeps every header but ``Authorization`` when a redirect goes to another site, and an
    agent's secrets may travel in any header. ``sensitive_headers`` are dropped whenever a
    redirect leaves the origin (scheme, host and port), except for an upgrade from http to
    https on the same host. ``on_redirect(response, next_request)`` is called for each hop.
    The response's ``history`` lists the redirect responses (closed, bodies unread).
    """
    sensitive = list(sensitive_headers)
    history: list[httpx.Response] = []
    while True:
        response = http.send(request, stream=True, follow_redirects=False)
        next_request = response.next_request
        if next_request is None:
            break
        response.close()
        history.append(response)
        if len(history) > http.max_redirects:
            raise httpx.TooManyRedirects(
                f"More than {http.max_redirects} redirects.", request=request
            )
        if not _keeps_credentials(request.url, next_request.url):
            for name in sensitive:
                next_request.headers.pop(name, None)
        if on_redirect is not None:
            on_redirect(response, next_request)
        request = next_request
    response.history = history
    try:
        yield response
    finally:
        response.close()


def _keeps_credentials(old: httpx.URL, new: httpx.URL) -> bool:
    if (old.scheme, old.host, old.port) == (new.scheme, new.host, new.port):
        return True
    return (
        old.host == new.host
        and old.scheme == "http"
        and new.scheme == "https"
        and old.port in (None, 80)
        and new.port in (None, 443)
    )


def read_limited(
    response: httpx.Response, max_bytes: int, *, deadline: float | None = None
) -> tuple[bytes, bool]:
    """Up to ``max_bytes`` of the decoded body of a streamed response, and whether it had more.

    Raw chunks are decompressed here with a bound: httpx's decoders inflate each chunk whole,
    so a small compressed body could take gigabytes of memory. Bodies in an encoding other
    than gzip or deflate (which the client does not ask for) are returned as received.
    ``deadline`` (a ``time.monotonic()`` value) bounds the whole read, where httpx's read
    timeout only bounds the wait for each chunk.
    """
    decompress = _Inflater.for_response(response)
    body = bytearray()
    received = 0
    for chunk in response.iter_raw():
        received += len(chunk)
        if decompress is not None:
            chunk = decompress(chunk, max_bytes + 1 - len(body))
        body += chunk
        if len(body) > max_bytes or received > max_bytes:
            return bytes(body[:max_bytes]), True
        if deadline is not None and time.monotonic() > deadline:
            raise httpx.ReadTimeout(
                "The response took too long to arrive.", request=response.request
            )
    return bytes(body), False


class _Inflater:
    """Bounded gzip/deflate decompression of a body that arrives in chunks."""

    def __init__(self, encoding: str, request: httpx.Request):
        self.encoding = encoding
        self.request = request
        # gzip has one format; "deflate" arrives zlib-wrapped or raw, depending on the server.
        self.formats = (
            [zlib.MAX_WBITS | 16] if encoding != "deflate" else [zlib.MAX_WBITS, -zlib.MAX_WBITS]
        )
        self.obj = zlib.decompressobj(self.formats[0])
        self.started = False

    @classmethod
    def for_response(cls, response: httpx.Response) -> _Inflater | None:
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            return cls(encoding, response.request)
        return None

    def __call__(self, data: bytes, limit: int) -> bytes:
        """Decompress ``data``, returning at most ``limit`` bytes (the rest is dropped)."""
        try:
            out = self.obj.decompress(data, max(1, limit))
        except zlib.error as exc:
            if not self.started and len(self.formats) > 1:
                self.formats.pop(0)
                self.obj = zlib.decompressobj(self.formats[0])
                return self(data, limit)
            raise httpx.DecodingError(
                f"The response claims to be {self.encoding}-compressed but is not ({exc}).",
                request=self.request,
            ) from exc
        self.started = True
        return out


def _display(url: httpx.URL) -> str:
    """The URL without credentials or query string, for logs and messages."""
    netloc = url.netloc.decode("ascii", "replace")
    text = f"{url.scheme}://{netloc}{url.path}" if url.scheme else str(url.path)
    return text + ("?…" if url.query else "")


def display_url(url: str | httpx.URL) -> str:
    """``url`` fit for a log line: without user info, query string or fragment."""
    return _display(httpx.URL(url) if isinstance(url, str) else url)
