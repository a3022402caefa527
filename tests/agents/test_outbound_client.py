"""The outbound client against a real local HTTP server: what the guard lets through and what
it stops, at connect time and on every redirect."""

import gzip
import socket
import ssl
import threading
import tracemalloc
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.test import override_settings
from pytest_httpserver import HTTPServer
from werkzeug import Response

from agents import outbound
from agents.outbound import OutboundBlocked

from .conftest import local_url


def get(url, **kwargs):
    with outbound.client(timeout=5, **kwargs) as http:
        return http.get(url)


def test_it_calls_an_address_the_operator_allowed(httpserver, allow_local):
    httpserver.expect_request("/ping").respond_with_data("pong")

    response = get(local_url(httpserver, "/ping"))

    assert response.status_code == 200
    assert response.text == "pong"


def test_it_blocks_localhost_when_only_127_0_0_1_is_allowed(httpserver, allow_local):
    httpserver.expect_request("/ping").respond_with_data("pong")

    with pytest.raises(OutboundBlocked) as caught:
        get(local_url(httpserver, "/ping", host="localhost"))

    assert caught.value.host == "localhost"
    assert caught.value.address == "127.0.0.1"
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),  # 127.0.0.1 as one decimal number
        ("127.1", "127.0.0.1"),  # the short form
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),  # IPv4-mapped IPv6
    ],
)
def test_it_blocks_other_spellings_of_loopback(httpserver, allow_local, host, address):
    httpserver.expect_request("/ping").respond_with_data("pong")

    with pytest.raises(OutboundBlocked) as caught:
        get(local_url(httpserver, "/ping", host=host))

    assert caught.value.address == address
    assert "loopback" in caught.value.reason
    assert httpserver.log == []


def test_it_blocks_everything_internal_with_an_empty_allow_list(httpserver):
    httpserver.expect_request("/ping").respond_with_data("pong")

    with override_settings(CONVEYOR_OUTBOUND_ALLOW=[]), pytest.raises(OutboundBlocked):
        get(local_url(httpserver, "/ping"))

    assert httpserver.log == []


def test_a_network_entry_allows_every_name_that_resolves_into_it(httpserver):
    httpserver.expect_request("/ping").respond_with_data("pong")

    with override_settings(CONVEYOR_OUTBOUND_ALLOW=["127.0.0.0/8"]):
        response = get(local_url(httpserver, "/ping", host="localhost"))

    assert response.text == "pong"


def test_it_checks_every_redirect_hop(httpserver, allow_local):
    httpserver.expect_request("/start").respond_with_response(
        Response(
            status=302, headers={"Location": local_url(httpserver, "/inside", host="localhost")}
        )
    )
    httpserver.expect_request("/inside").respond_with_data("secret internal page")

    with pytest.raises(OutboundBlocked) as caught:
        get(local_url(httpserver, "/start"))

    assert caught.value.host == "localhost"
    assert [request.path for request, _ in httpserver.log] == ["/start"]


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/pub"])
def test_it_follows_redirects_to_http_and_https_only(httpserver, allow_local, location):
    httpserver.expect_request("/start").respond_with_response(
        Response(status=302, headers={"Location": location})
    )

    with pytest.raises(OutboundBlocked, match="only calls http:// and https://"):
        get(local_url(httpserver, "/start"))


def test_it_follows_at_most_the_configured_number_of_redirects(httpserver, allow_local):
    httpserver.expect_request("/loop").respond_with_response(
        Response(status=302, headers={"Location": "/loop"})
    )

    with pytest.raises(httpx.TooManyRedirects):
        get(local_url(httpserver, "/loop"), max_redirects=3)

    assert len(httpserver.log) == 4  # the request and three redirects


def test_it_ignores_proxies_from_the_environment(httpserver, allow_local, monkeypatch):
    # A proxy would connect on Conveyor's behalf, out of the guard's sight.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    httpserver.expect_request("/ping").respond_with_data("pong")

    assert get(local_url(httpserver, "/ping")).text == "pong"


# --- DNS answers -------------------------------------------------------------------------------


@pytest.fixture
def fake_dns(monkeypatch):
    """Answers for made-up names (*.test); every other name goes to the real resolver.

    ``answers[name]`` is a list of answers, one per lookup (the last one repeats).
    """
    real = socket.getaddrinfo
    answers: dict[str, list[list[str]]] = {}
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, str) and host in answers:
            lookups.append(host)
            queue = answers[host]
            addresses = queue.pop(0) if len(queue) > 1 else queue[0]
            return [item for a in addresses for item in real(a, port, *args, **kwargs)]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers, lookups


def test_it_connects_to_the_address_it_checked_so_dns_rebinding_cannot_swap_it(
    httpserver, fake_dns
):
    answers, lookups = fake_dns
    # The first answer is allowed; any later lookup would give 127.0.0.2, where nothing listens.
    answers["rebind.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    httpserver.expect_request("/ping").respond_with_data("pong")

    with override_settings(CONVEYOR_OUTBOUND_ALLOW=["127.0.0.1/32"]):
        response = get(local_url(httpserver, "/ping", host="rebind.test"))

    assert response.text == "pong"
    assert lookups == ["rebind.test"]


def test_it_refuses_a_name_that_resolves_to_a_public_and_an_internal_address(httpserver, fake_dns):
    answers, _ = fake_dns
    answers["mixed.test"] = [["93.184.216.34", "127.0.0.1"]]

    with override_settings(CONVEYOR_OUTBOUND_ALLOW=[]), pytest.raises(OutboundBlocked) as caught:
        get(local_url(httpserver, "/ping", host="mixed.test"))

    assert caught.value.address == "127.0.0.1"


# --- send(): redirects and credentials ---------------------------------------------------------


def test_send_drops_sensitive_headers_when_a_redirect_leaves_the_origin(
    httpserver, other_server, allow_local
):
    httpserver.expect_request("/start", headers={"X-Api-Key": "k-123456"}).respond_with_response(
        Response(status=307, headers={"Location": local_url(other_server, "/elsewhere")})
    )
    other_server.expect_request("/elsewhere").respond_with_data("landed")

    with outbound.client(timeout=5) as http:
        request = http.build_request(
            "GET", local_url(httpserver, "/start"), headers={"X-Api-Key": "k-123456"}
        )
        with outbound.send(http, request, sensitive_headers=["X-Api-Key"]) as response:
            body, _ = outbound.read_limited(response, 1000)

    assert body == b"landed"
    assert [r.status_code for r in response.history] == [307]
    ((landed, _),) = other_server.log
    assert "X-Api-Key" not in landed.headers


def test_send_keeps_sensitive_headers_on_the_same_origin(httpserver, allow_local):
    httpserver.expect_request("/start").respond_with_response(
        Response(status=302, headers={"Location": "/next"})
    )
    httpserver.expect_request("/next", headers={"X-Api-Key": "k-123456"}).respond_with_data("ok")

    with outbound.client(timeout=5) as http:
        request = http.build_request(
            "GET", local_url(httpserver, "/start"), headers={"X-Api-Key": "k-123456"}
        )
        with outbound.send(http, request, sensitive_headers=["X-Api-Key"]) as response:
            assert response.status_code == 200


# --- read_limited ------------------------------------------------------------------------------


def test_read_limited_stops_reading_at_the_limit(httpserver, allow_local):
    produced = []

    def endless():
        while True:
            produced.append(65536)
            yield b"x" * 65536

    httpserver.expect_request("/big").respond_with_response(Response(endless()))

    with outbound.client(timeout=5) as http:
        request = http.build_request("GET", local_url(httpserver, "/big"))
        with outbound.send(http, request) as response:
            body, truncated = outbound.read_limited(response, 100_000)

    assert (len(body), truncated) == (100_000, True)
    # The server keeps producing until the socket buffers fill, but nowhere near all of it.
    assert sum(produced) < 20_000_000


def test_read_limited_bounds_what_a_compressed_body_inflates_to(allow_local):
    bomb = gzip.compress(b"\0" * 50_000_000)  # about 50 KB on the wire
    # A one-shot server that has sent everything before the measure starts, so the memory
    # measured is the client's alone (werkzeug's thread allocates megabytes as it finishes).
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        connections = []

        def answer():
            connection, _ = server.accept()
            connection.recv(65536)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(bomb), bomb)
            )
            connections.append(connection)

        answering = threading.Thread(target=answer)
        answering.start()
        with outbound.client(timeout=5) as http:
            request = http.build_request("GET", f"http://127.0.0.1:{server.getsockname()[1]}/")
            with outbound.send(http, request) as response:
                answering.join()
                tracemalloc.start()
                try:
                    body, truncated = outbound.read_limited(response, 1000)
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
        connections[0].close()

    assert (body, truncated) == (b"\0" * 1000, True)
    # Inflating the whole first chunk would take tens of megabytes at once.
    assert peak < 5_000_000


def test_read_limited_decodes_a_whole_small_gzip_body(httpserver, allow_local):
    httpserver.expect_request("/small").respond_with_data(
        gzip.compress(b'{"ok": true}'), headers={"Content-Encoding": "gzip"}
    )

    with outbound.client(timeout=5) as http:
        request = http.build_request("GET", local_url(httpserver, "/small"))
        with outbound.send(http, request) as response:
            assert outbound.read_limited(response, 1000) == (b'{"ok": true}', False)


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path, monkeypatch):
    """An HTTPS server on 127.0.0.1 whose certificate names only "localhost", signed by a CA
    the client trusts through SSL_CERT_FILE."""

    def certificate(subject, issuer, key, signing_key, *, ca):
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            ).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("Conveyor test CA", "Conveyor test CA", ca_key, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("localhost", "Conveyor test CA", key, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    yield server
    server.clear()
    server.stop()


def test_tls_verifies_the_host_name_although_it_connects_to_the_checked_ip(tls_server):
    # The certificate names "localhost" only, not 127.0.0.1: it verifies only if TLS uses
    # the host name from the URL while the socket goes to the address that was checked.
    tls_server.expect_request("/ping").respond_with_data("secure pong")

    with override_settings(CONVEYOR_OUTBOUND_ALLOW=["127.0.0.0/8"]):
        assert get(f"https://localhost:{tls_server.port}/ping").text == "secure pong"
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            get(f"https://127.0.0.1:{tls_server.port}/ping")
