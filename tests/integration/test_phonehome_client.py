# SPDX-License-Identifier: GPL-2.0-or-later
"""Phone home against real HTTP and TLS servers on loopback, with throw-away CAs.

The server is a small asyncio HTTP/1.1 responder: it serves a Java-TPS-style
``phoneHome.xml`` and a few misbehaving routes (huge, slow, compressed, redirecting).
Nothing of escd is faked; trust comes from a real ``TrustStore`` in a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from escd.errors import (
    InsecureUrlError,
    NetworkError,
    PhoneHomeError,
    TlsUntrustedError,
)
from escd.phonehome.client import create_client, fetch_service_info, phone_home_request_url
from escd.phonehome.parser import PhoneHomeInfo
from escd.sim.ca import CertificateAuthority
from escd.trust import (
    PinMismatchError,
    TrustStore,
    describe_untrusted,
    fetch_server_certificate,
    fingerprint,
)

CUID = "40906145c76224192d2b"
TEN_MB = 10 * 1024 * 1024
PEM = serialization.Encoding.PEM


# --- a throw-away PKI ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    root: x509.Certificate
    leaf: x509.Certificate
    chain_pem: bytes
    key_pem: bytes


def make_pki(label: str) -> Pki:
    ca = CertificateAuthority.generate(f"CN={label} CA")
    credentials = ca.server_credentials(["localhost", "127.0.0.1"])
    leaf = credentials.certificate
    # The server sends its own certificate only: the client must know the CA.
    return Pki(ca.certificate, leaf, leaf.public_bytes(PEM), credentials.key_pem)


def server_context(pki: Pki, tmp_path: Path) -> ssl.SSLContext:
    cert = tmp_path / f"{pki.root.serial_number}.pem"
    key = tmp_path / f"{pki.root.serial_number}.key"
    cert.write_bytes(pki.chain_pem)
    key.write_bytes(pki.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


# --- the server ----------------------------------------------------------------------------


def phone_home_xml(tps_url: str) -> bytes:
    return (
        "<ServiceInfo><IssuerName>Example Corp</IssuerName><Services>"
        f"<Operation>{tps_url}</Operation><UI></UI>"
        "<EnrolledTokenBrowserURL>http://www.example.com</EnrolledTokenBrowserURL>"
        "<TokenType>userKey</TokenType></Services></ServiceInfo>"
    ).encode()


Writer = asyncio.StreamWriter
Route = Callable[[Writer], Awaitable[None]]


@dataclass
class Server:
    """One loopback HTTP(S) server; ``requests`` records each request target."""

    host: str = "127.0.0.1"
    port: int = 0
    tls: bool = False
    requests: list[str] = field(default_factory=list)
    routes: dict[str, Route] = field(default_factory=dict)
    big_body_finished: asyncio.Event = field(default_factory=asyncio.Event)
    big_body_completed: bool = False
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def start(self, context: ssl.SSLContext | None) -> Server:
        self.tls = context is not None
        self._server = await asyncio.start_server(self._handle, self.host, 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]
        self.routes.setdefault("/tps/phoneHome", self._phone_home)
        self.routes.setdefault("/big", self._big_with_length)
        self.routes.setdefault("/big-stream", self._big_without_length)
        self.routes.setdefault("/slow", self._slow)
        self.routes.setdefault("/gzip", self._gzip)
        self.routes.setdefault("/loop", self._redirect("/loop"))
        self.routes.setdefault("/moved", self._redirect("/tps/phoneHome"))
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        # Let stalled handlers end by themselves: asyncio logs an error for a cancelled
        # client_connected_cb task.
        self._closing.set()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=10)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            self.requests.append(target)
            route = self.routes.get(target.split("?", 1)[0])
            if route is None:
                await self._send(writer, 404, b"not here")
            else:
                await route(writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1)
            except Exception:
                # A peer that vanished never sends TLS close_notify; don't wait 30 s for it.
                writer.transport.abort()
            self._handlers.discard(task)

    @staticmethod
    async def _send(writer: Writer, status: int, body: bytes, extra: str = "") -> None:
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def _phone_home(self, writer: Writer) -> None:
        await self._send(
            writer,
            200,
            phone_home_xml("https://tps.example.com:8443/tps/tps"),
            "Content-Type: application/xml\r\n",
        )

    async def _stream_ten_megabytes(self, writer: Writer, head: bytes) -> None:
        writer.write(head)
        chunk = b"<a>" + b"x" * 65529 + b"</a>"
        try:
            for _ in range(TEN_MB // len(chunk) + 1):
                writer.write(chunk)
                await writer.drain()
            self.big_body_completed = True
        finally:
            self.big_body_finished.set()

    async def _big_with_length(self, writer: Writer) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {TEN_MB}\r\nConnection: close\r\n\r\n"
        await self._stream_ten_megabytes(writer, head.encode())

    async def _big_without_length(self, writer: Writer) -> None:
        # Close-delimited: the client only finds out by counting.
        head = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n<ServiceInfo>"
        await self._stream_ten_megabytes(writer, head)

    async def _slow(self, writer: Writer) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n<Servi")
        await writer.drain()
        await self._closing.wait()  # stalls until the server shuts down

    async def _gzip(self, writer: Writer) -> None:
        await self._send(writer, 200, b"\x1f\x8b\x08\x00", "Content-Encoding: gzip\r\n")

    def _redirect(self, location: str) -> Route:
        async def route(writer: Writer) -> None:
            await self._send(writer, 302, b"", f"Location: {location}\r\n")

        return route


@pytest.fixture
def pki() -> Pki:
    return make_pki("Test")


@pytest.fixture
async def tls_server(pki: Pki, tmp_path: Path) -> AsyncIterator[Server]:
    server = await Server().start(server_context(pki, tmp_path))
    yield server
    await server.close()


@pytest.fixture
async def http_server() -> AsyncIterator[Server]:
    server = await Server().start(None)
    yield server
    await server.close()


@pytest.fixture
def store(tmp_path: Path) -> TrustStore:
    return TrustStore(tmp_path / "trust", system_cas=False)


async def fetch(
    store: TrustStore,
    url: str,
    *,
    max_size: int = 65536,
    timeout: float = 10.0,
    allow_http: tuple[str, ...] = (),
) -> PhoneHomeInfo:
    async with create_client(store.ssl_context_for) as client:
        return await fetch_service_info(
            url, CUID, client, max_size=max_size, timeout=timeout, allow_http=allow_http
        )


# --- the tests -----------------------------------------------------------------------------


async def test_fetch_fills_the_info_once_the_servers_ca_is_imported(
    tls_server: Server, store: TrustStore, pki: Pki
) -> None:
    store.import_authorities([pki.root])
    info = await fetch(store, f"{tls_server.base}/tps/phoneHome")
    assert info.issuer_name == "Example Corp"
    assert info.tps_url == "https://tps.example.com:8443/tps/tps"
    assert info.token_type == "userKey"
    assert tls_server.requests == [f"/tps/phoneHome?cuid={CUID}"]


async def test_a_url_with_a_query_gets_the_cuid_after_an_ampersand(
    tls_server: Server, store: TrustStore, pki: Pki
) -> None:
    store.import_authorities([pki.root])
    await fetch(store, f"{tls_server.base}/tps/phoneHome?profile=userKey")
    assert tls_server.requests == [f"/tps/phoneHome?profile=userKey&cuid={CUID}"]


def test_request_url_building() -> None:
    base = "http://tps.example.com:8080/tps/phoneHome"
    assert phone_home_request_url(base, CUID.upper()) == f"{base}?cuid={CUID}"
    assert phone_home_request_url(f"{base}?", CUID) == f"{base}?cuid={CUID}"
    assert phone_home_request_url(f"{base}?a=1#frag", CUID) == f"{base}?a=1&cuid={CUID}"
    assert phone_home_request_url(f"{base}?cuid=old&a=1", CUID) == f"{base}?a=1&cuid={CUID}"
    with pytest.raises(PhoneHomeError):
        phone_home_request_url("tps.example.com/phoneHome", CUID)


async def test_an_untrusted_certificate_is_refused_with_its_fingerprint(
    tls_server: Server, store: TrustStore, pki: Pki
) -> None:
    with pytest.raises(TlsUntrustedError) as caught:
        await fetch(store, f"{tls_server.base}/tps/phoneHome")
    error = caught.value
    assert (error.host, error.port) == ("127.0.0.1", tls_server.port)
    assert error.fingerprint == fingerprint(pki.leaf)
    assert "issuer" in error.reason
    assert tls_server.requests == []  # no request went out over the untrusted connection


async def test_pinning_the_servers_certificate_makes_it_work(
    tls_server: Server, store: TrustStore, pki: Pki
) -> None:
    with pytest.raises(TlsUntrustedError) as caught:
        await fetch(store, f"{tls_server.base}/tps/phoneHome")
    store.pin_server("127.0.0.1", tls_server.port, caught.value.fingerprint)
    info = await fetch(store, f"{tls_server.base}/tps/phoneHome")
    assert info.issuer_name == "Example Corp"


async def test_a_pin_accepts_no_other_certificate_not_even_a_ca_signed_one(
    tls_server: Server, store: TrustStore, pki: Pki
) -> None:
    store.import_authorities([pki.root])
    store.pin_server("127.0.0.1", tls_server.port, fingerprint(make_pki("Other").leaf))
    with pytest.raises(TlsUntrustedError) as caught:
        await fetch(store, f"{tls_server.base}/tps/phoneHome")
    assert caught.value.fingerprint == fingerprint(pki.leaf)
    assert "pinned" in caught.value.reason
    assert tls_server.requests == []


async def test_a_redirect_to_another_server_uses_that_servers_pin(
    tls_server: Server, store: TrustStore, pki: Pki, tmp_path: Path
) -> None:
    other_pki = make_pki("Other")
    other = await Server().start(server_context(other_pki, tmp_path))
    try:
        tls_server.routes["/elsewhere"] = tls_server._redirect(f"{other.base}/tps/phoneHome")
        store.import_authorities([pki.root])  # the first server: by its CA
        with pytest.raises(TlsUntrustedError) as caught:
            await fetch(store, f"{tls_server.base}/elsewhere")
        assert caught.value.port == other.port
        assert caught.value.fingerprint == fingerprint(other_pki.leaf)
        store.pin_server("127.0.0.1", other.port, fingerprint(other_pki.leaf))  # the second: pin
        info = await fetch(store, f"{tls_server.base}/elsewhere")
        assert info.issuer_name == "Example Corp"
        # The failed attempt sent nothing; the redirect target is used as the server gave it.
        assert other.requests == ["/tps/phoneHome"]
    finally:
        await other.close()


async def test_a_server_that_is_down_is_a_network_error(store: TrustStore) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NetworkError) as caught:
        await fetch(store, f"https://127.0.0.1:{port}/tps/phoneHome")
    assert type(caught.value) is NetworkError
    assert "cannot connect" in caught.value.message


async def test_a_ten_megabyte_answer_is_cut_off(
    tls_server: Server, store: TrustStore, pki: Pki
) -> None:
    store.import_authorities([pki.root])
    for route in ("/big", "/big-stream"):
        tls_server.big_body_finished.clear()
        started = time.monotonic()
        with pytest.raises(PhoneHomeError, match="larger than 65536 bytes"):
            await fetch(store, f"{tls_server.base}{route}", max_size=65536)
        assert time.monotonic() - started < 5
        await asyncio.wait_for(tls_server.big_body_finished.wait(), 10)
        assert tls_server.big_body_completed is False  # the client hung up early


async def test_a_server_that_stalls_is_a_network_error_after_the_timeout(
    tls_server: Server, store: TrustStore, pki: Pki
) -> None:
    store.import_authorities([pki.root])
    started = time.monotonic()
    with pytest.raises(NetworkError, match="took longer than 0.5 s"):
        await fetch(store, f"{tls_server.base}/slow", timeout=0.5)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("/missing", "HTTP 404"),
        ("/gzip", "compressed"),
        ("/loop", "redirects"),
    ],
)
async def test_unusable_answers_are_phone_home_errors(
    tls_server: Server, store: TrustStore, pki: Pki, route: str, reason: str
) -> None:
    store.import_authorities([pki.root])
    with pytest.raises(PhoneHomeError, match=reason):
        await fetch(store, f"{tls_server.base}{route}")


async def test_a_same_server_redirect_is_followed(
    tls_server: Server, store: TrustStore, pki: Pki
) -> None:
    store.import_authorities([pki.root])
    info = await fetch(store, f"{tls_server.base}/moved")
    assert info.issuer_name == "Example Corp"
    assert tls_server.requests == [f"/moved?cuid={CUID}", "/tps/phoneHome"]


async def test_plain_http_is_refused_unless_its_origin_is_allowed(
    http_server: Server, store: TrustStore
) -> None:
    url = f"{http_server.base}/tps/phoneHome"
    with pytest.raises(InsecureUrlError):
        await fetch(store, url)
    assert http_server.requests == []  # refused before connecting
    info = await fetch(store, url, allow_http=(http_server.base,))
    assert info.issuer_name == "Example Corp"


async def test_https_is_never_redirected_to_plain_http(
    tls_server: Server, http_server: Server, store: TrustStore, pki: Pki
) -> None:
    store.import_authorities([pki.root])
    tls_server.routes["/downgrade"] = tls_server._redirect(f"{http_server.base}/tps/phoneHome")
    with pytest.raises(PhoneHomeError, match="from https to plain http"):
        await fetch(store, f"{tls_server.base}/downgrade", allow_http=(http_server.base,))
    assert http_server.requests == []


async def test_hostile_xml_from_the_server_is_a_phone_home_error(
    tls_server: Server, store: TrustStore, pki: Pki
) -> None:
    store.import_authorities([pki.root])
    laughs = (
        b'<!DOCTYPE ServiceInfo [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
        b"<ServiceInfo><IssuerName>&b;</IssuerName><Services/></ServiceInfo>"
    )

    async def hostile(writer: Writer) -> None:
        await Server._send(writer, 200, laughs)

    tls_server.routes["/hostile"] = hostile
    with pytest.raises(PhoneHomeError, match="DTD"):
        await fetch(store, f"{tls_server.base}/hostile")


# --- the same contexts for the TPS connection (asyncio streams) ------------------------------


async def test_tps_style_connection_honours_pins_and_cas(
    tls_server: Server, store: TrustStore, pki: Pki
) -> None:
    host, port = "127.0.0.1", tls_server.port

    async def connect() -> None:
        _, writer = await asyncio.open_connection(
            host, port, ssl=store.ssl_context_for(host, port), server_hostname=host
        )
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    with pytest.raises(ssl.SSLCertVerificationError) as unverified:
        await connect()
    untrusted = await describe_untrusted(host, port, unverified.value, timeout=5)
    assert untrusted.fingerprint == fingerprint(pki.leaf)

    store.pin_server(host, port, fingerprint(make_pki("Other").leaf))
    with pytest.raises(PinMismatchError) as mismatch:
        await connect()
    assert mismatch.value.fingerprint == fingerprint(pki.leaf)

    store.pin_server(host, port, untrusted.fingerprint)  # a second pin: rotation
    await connect()


async def test_fetch_server_certificate_returns_the_leaf(tls_server: Server, pki: Pki) -> None:
    cert = await fetch_server_certificate("127.0.0.1", tls_server.port, timeout=5)
    assert cert == pki.leaf


async def test_fetch_server_certificate_from_nowhere_is_a_network_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NetworkError, match="cannot connect"):
        await fetch_server_certificate("127.0.0.1", port, timeout=5)


async def test_fetch_server_certificate_from_a_plain_server_is_a_network_error(
    http_server: Server,
) -> None:
    with pytest.raises(NetworkError):
        await fetch_server_certificate("127.0.0.1", http_server.port, timeout=1)
