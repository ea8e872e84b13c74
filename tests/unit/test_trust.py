# SPDX-License-Identifier: GPL-2.0-or-later
"""The trust store: certificate files as Dogtag hands them out, CAs, pins and their contexts."""

from __future__ import annotations

import base64
import json
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from escd.config import TrustConfig
from escd.errors import InsecureUrlError, InvalidArgumentError
from escd.sim.ca import CertificateAuthority
from escd.trust import (
    PinMismatchError,
    TrustKind,
    TrustStore,
    check_url_allowed,
    fingerprint,
    fingerprint_plain,
    normalize_fingerprint,
    parse_certificates,
)

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


@dataclass(frozen=True)
class Chain:
    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key_pem: bytes


def make_chain() -> Chain:
    """A Dogtag-like hierarchy: root CA → subordinate CA → TPS server certificate."""
    root = CertificateAuthority.generate("CN=CA Signing Certificate, O=Example Corp")
    sub = root.subordinate("CN=Sub CA Signing Certificate, O=Example Corp")
    server = sub.server_credentials(["localhost", "127.0.0.1"])
    return Chain(root.certificate, sub.certificate, server.certificate, server.key_pem)


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


@pytest.fixture
def store(tmp_path: Path) -> TrustStore:
    return TrustStore(tmp_path / "trust", system_cas=False)


# --- certificate files -----------------------------------------------------------------


def test_pem_chain_in_order(chain: Chain) -> None:
    data = b"".join(c.public_bytes(PEM) for c in (chain.root, chain.intermediate, chain.leaf))
    assert parse_certificates(data) == [chain.root, chain.intermediate, chain.leaf]


def test_single_der_certificate(chain: Chain) -> None:
    assert parse_certificates(chain.root.public_bytes(DER)) == [chain.root]


def test_binary_pkcs7_chain_as_dogtag_downloads_it(chain: Chain) -> None:
    data = pkcs7.serialize_certificates([chain.root, chain.intermediate], DER)
    assert parse_certificates(data) == [chain.root, chain.intermediate]


def test_pem_pkcs7_chain(chain: Chain) -> None:
    data = pkcs7.serialize_certificates([chain.root, chain.intermediate], PEM)
    assert data.startswith(b"-----BEGIN PKCS7-----")
    assert parse_certificates(data) == [chain.root, chain.intermediate]


def test_base64_pkcs7_without_header_lines_as_dogtag_displays_it(chain: Chain) -> None:
    der = pkcs7.serialize_certificates([chain.root, chain.intermediate], DER)
    text = base64.encodebytes(der)  # wrapped at 76 columns, like the page
    assert parse_certificates(text) == [chain.root, chain.intermediate]


def test_other_pem_blocks_are_ignored_and_duplicates_dropped(chain: Chain) -> None:
    data = chain.root.public_bytes(PEM) + chain.leaf_key_pem + chain.root.public_bytes(PEM)
    assert parse_certificates(b"leading text\n" + data) == [chain.root]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        b"\x30\x03\x02\x01",
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"\x00" * (2 << 20),
    ],
    ids=["empty", "text", "truncated-der", "bad-base64", "not-a-cert", "only-a-key", "huge"],
)
def test_unusable_files_are_invalid_arguments(data: bytes) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_certificates(data)


# --- fingerprints ----------------------------------------------------------------------


def test_fingerprint_forms(chain: Chain) -> None:
    plain = fingerprint_plain(chain.leaf)
    shown = fingerprint(chain.leaf)
    assert len(plain) == 64 and plain == plain.lower()
    assert len(shown) == 95 and shown == shown.upper() and shown.count(":") == 31
    assert shown.replace(":", "").lower() == plain
    assert plain == chain.leaf.fingerprint(hashes.SHA256()).hex()
    assert normalize_fingerprint(shown) == plain
    assert normalize_fingerprint(f"SHA256:{plain.upper()}") == plain
    for bad in ("", "ab:cd", plain[:-1], plain + "00", "zz" * 32):
        with pytest.raises(InvalidArgumentError):
            normalize_fingerprint(bad)


# --- authorities -----------------------------------------------------------------------


def test_importing_a_chain_trusts_its_cas_and_refuses_the_leaf(
    store: TrustStore, chain: Chain
) -> None:
    result = store.import_authorities([chain.root, chain.intermediate, chain.leaf])
    assert [e.fingerprint for e in result.added] == [
        fingerprint(chain.root),
        fingerprint(chain.intermediate),
    ]
    assert result.added[0].subject == "CN=CA Signing Certificate,O=Example Corp"
    assert result.rejected == ((chain.leaf.subject.rfc4514_string(), result.rejected[0][1]),)
    assert "not a CA certificate" in result.rejected[0][1]
    assert {e.kind for e in store.list()} == {TrustKind.AUTHORITY}
    assert len(store.list()) == 2


def test_import_is_idempotent(store: TrustStore, chain: Chain) -> None:
    store.import_authorities([chain.root])
    again = store.import_authorities([chain.root])
    assert again.added == ()
    assert [e.fingerprint for e in again.already_trusted] == [fingerprint(chain.root)]
    assert len(store.list()) == 1


def test_imported_cas_survive_a_restart_and_can_be_removed(
    tmp_path: Path, store: TrustStore, chain: Chain
) -> None:
    store.import_authorities([chain.root])
    reopened = TrustStore(tmp_path / "trust", system_cas=False)
    (entry,) = reopened.list()
    assert entry.id == f"ca:{fingerprint_plain(chain.root)}"
    assert entry.not_after == chain.root.not_valid_after_utc
    assert reopened.remove(entry.id) == entry
    assert reopened.list() == ()
    with pytest.raises(InvalidArgumentError):
        reopened.remove(entry.id)


def test_verifying_context_holds_exactly_the_trusted_cas(store: TrustStore, chain: Chain) -> None:
    assert store.ssl_context_for("tps.example.com", 8443).cert_store_stats()["x509_ca"] == 0
    store.import_authorities([chain.root, chain.intermediate])
    context = store.ssl_context_for("tps.example.com", 8443)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.cert_store_stats()["x509_ca"] == 2
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_shared_directory_cas_are_trusted_listed_and_read_only(
    tmp_path: Path, chain: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.joinpath("dogtag-chain.p7b").write_bytes(pkcs7.serialize_certificates([chain.root], DER))
    shared.joinpath("cert9.db").write_bytes(b"SQLite format 3\x00")
    shared.joinpath("README").write_text("not a certificate")
    store = TrustStore.from_config(
        TrustConfig(system_cas=False, shared_dir=str(shared)), tmp_path / "state"
    )
    assert store.directory == tmp_path / "state" / "trust"
    with caplog.at_level(logging.WARNING, logger="escd.trust"):
        (entry,) = store.list()
    assert entry.shared and entry.fingerprint == fingerprint(chain.root)
    assert "NSS database" in caplog.text
    assert "ignoring" in caplog.text and "README" in caplog.text
    assert store.ssl_context_for("x", 443).cert_store_stats()["x509_ca"] == 1
    with pytest.raises(InvalidArgumentError, match="shared directory"):
        store.remove(entry.id)


def test_a_damaged_authority_file_is_set_aside(store: TrustStore, chain: Chain) -> None:
    store.import_authorities([chain.root])
    (path,) = (store.directory / "authorities").glob("*.pem")
    path.write_text("garbage")
    assert store.list() == ()
    assert len(list(path.parent.glob("*.corrupt-*"))) == 1


# --- pins ------------------------------------------------------------------------------


def test_pins_are_idempotent_persisted_and_removable(
    tmp_path: Path, store: TrustStore, chain: Chain
) -> None:
    first = store.pin_server("TPS.Example.com", 8443, fingerprint(chain.leaf), "CN=localhost")
    again = store.pin_server("tps.example.com", 8443, fingerprint_plain(chain.leaf))
    assert first == again
    assert first.kind is TrustKind.SERVER
    assert (first.host, first.port, first.subject) == ("tps.example.com", 8443, "CN=localhost")
    assert store.pins_for("tps.example.com", 8443) == {fingerprint_plain(chain.leaf)}
    assert store.pins_for("tps.example.com", 443) == frozenset()

    reopened = TrustStore(tmp_path / "trust", system_cas=False)
    assert reopened.list() == (first,)
    reopened.remove(first.id)
    assert reopened.pins_for("tps.example.com", 8443) == frozenset()
    assert TrustStore(tmp_path / "trust", system_cas=False).list() == ()


def test_ipv6_hosts_pin_and_list(store: TrustStore, chain: Chain) -> None:
    entry = store.pin_server("[2001:DB8::1]", 443, fingerprint(chain.leaf))
    assert entry.host == "2001:db8::1"
    assert entry.id.startswith("pin:[2001:db8::1]:443:")
    assert store.pins_for("2001:db8:0::1", 443)
    store.remove(entry.id)
    assert store.list() == ()


@pytest.mark.parametrize(("host", "port"), [("", 443), ("x", 0), ("x", 70000)])
def test_bad_pins_are_refused(store: TrustStore, chain: Chain, host: str, port: int) -> None:
    with pytest.raises(InvalidArgumentError):
        store.pin_server(host, port, fingerprint(chain.leaf))


def test_a_corrupt_pin_file_is_set_aside(tmp_path: Path, store: TrustStore, chain: Chain) -> None:
    store.pin_server("tps.example.com", 8443, fingerprint(chain.leaf))
    pins = tmp_path / "trust" / "servers.json"
    pins.write_text(json.dumps({"version": 1, "pins": [{"host": "x", "port": "no"}]}))
    assert TrustStore(tmp_path / "trust", system_cas=False).list() == ()
    assert len(list(pins.parent.glob("servers.json.corrupt-*"))) == 1


def test_a_pinned_server_gets_a_context_that_only_knows_its_pins(
    store: TrustStore, chain: Chain
) -> None:
    verifying = store.ssl_context_for("tps.example.com", 8443)
    store.pin_server("tps.example.com", 8443, fingerprint(chain.leaf))
    pinned = store.ssl_context_for("tps.example.com", 8443)
    assert pinned is not verifying
    assert store.ssl_context_for("tps.example.com", 8443) is pinned  # cached
    assert store.ssl_context_for("other.example.com", 8443).verify_mode == ssl.CERT_REQUIRED
    assert store.ssl_context_for("tps.example.com", 443).verify_mode == ssl.CERT_REQUIRED


# --- pin enforcement, driven in memory -------------------------------------------------


def _server_context(chain: Chain, tmp_path: Path) -> ssl.SSLContext:
    cert = tmp_path / "server.pem"
    cert.write_bytes(chain.leaf.public_bytes(PEM) + chain.intermediate.public_bytes(PEM))
    key = tmp_path / "server.key"
    key.write_bytes(chain.leaf_key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


class _MemoryPair:
    """A TLS client and server joined by memory BIOs, the way asyncio and anyio drive TLS."""

    def __init__(self, client_context: ssl.SSLContext, server_context: ssl.SSLContext) -> None:
        self.c_in, self.c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.s_in, self.s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_context.wrap_bio(self.c_in, self.c_out, server_hostname="localhost")
        self.server = server_context.wrap_bio(self.s_in, self.s_out, server_side=True)

    def run(self, client_step: object) -> None:
        """Alternate ``client_step()`` and the server's handshake until the client is done."""
        assert callable(client_step)
        for _ in range(20):
            try:
                client_step()
                return
            except ssl.SSLWantReadError:
                pass
            finally:
                self.s_in.write(self.c_out.read())
            try:
                self.server.do_handshake()
            except ssl.SSLWantReadError:
                pass
            self.c_in.write(self.s_out.read())
        raise AssertionError("the handshake did not finish")


def test_the_pinned_certificate_completes_the_handshake(
    tmp_path: Path, store: TrustStore, chain: Chain
) -> None:
    store.pin_server("localhost", 8443, fingerprint(chain.leaf))
    pair = _MemoryPair(store.ssl_context_for("localhost", 8443), _server_context(chain, tmp_path))
    pair.run(pair.client.do_handshake)
    assert pair.client.getpeercert(binary_form=True) == chain.leaf.public_bytes(DER)


def test_another_certificate_fails_inside_the_handshake_with_its_fingerprint(
    tmp_path: Path, store: TrustStore, chain: Chain
) -> None:
    store.pin_server("localhost", 8443, fingerprint(make_chain().leaf))
    pair = _MemoryPair(store.ssl_context_for("localhost", 8443), _server_context(chain, tmp_path))
    with pytest.raises(PinMismatchError) as caught:
        pair.run(pair.client.do_handshake)
    assert isinstance(caught.value, ssl.SSLCertVerificationError)
    assert caught.value.fingerprint == fingerprint(chain.leaf)


def test_writing_before_the_handshake_cannot_skip_the_pin_check(
    tmp_path: Path, store: TrustStore, chain: Chain
) -> None:
    # OpenSSL would run the handshake inside SSL_write and send the data right after;
    # the pinned object must check the certificate before that can happen.
    store.pin_server("localhost", 8443, fingerprint(make_chain().leaf))
    pair = _MemoryPair(store.ssl_context_for("localhost", 8443), _server_context(chain, tmp_path))
    with pytest.raises(PinMismatchError):
        pair.run(lambda: pair.client.write(b"password=secret"))
    pair.s_in.write(pair.c_out.read())
    with pytest.raises((ssl.SSLWantReadError, ssl.SSLZeroReturnError)):
        pair.server.read(100)


def test_a_removed_pin_is_refused_at_once_and_other_contexts_are_kept(
    tmp_path: Path, store: TrustStore, chain: Chain
) -> None:
    verifying = store.ssl_context_for("other.example.com", 443)
    entry = store.pin_server("localhost", 8443, fingerprint(chain.leaf))
    store.pin_server("localhost", 8443, fingerprint(make_chain().leaf))  # rotation
    pair = _MemoryPair(store.ssl_context_for("localhost", 8443), _server_context(chain, tmp_path))
    pair.run(pair.client.do_handshake)
    store.remove(entry.id)
    pair = _MemoryPair(store.ssl_context_for("localhost", 8443), _server_context(chain, tmp_path))
    with pytest.raises(PinMismatchError):
        pair.run(pair.client.do_handshake)
    # Pins never change what the CA-verified servers get.
    assert store.ssl_context_for("other.example.com", 443) is verifying


def test_a_blocking_socket_with_a_pin_checks_it_before_sending(
    tmp_path: Path, store: TrustStore, chain: Chain
) -> None:
    store.pin_server("localhost", 8443, fingerprint(make_chain().leaf))
    server_context = _server_context(chain, tmp_path)
    client_sock, server_sock = socket.socketpair()
    received: list[bytes] = []

    def serve() -> None:
        try:
            with server_context.wrap_socket(server_sock, server_side=True) as tls:
                received.append(tls.recv(100))
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    client = store.ssl_context_for("localhost", 8443).wrap_socket(
        client_sock, server_hostname="localhost", do_handshake_on_connect=False
    )
    try:
        with pytest.raises(PinMismatchError):
            client.sendall(b"password=secret")
    finally:
        client.close()
        thread.join(timeout=10)
    assert received in ([], [b""])


# --- the http policy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://tps.example.com:8443/tps/tps", True),
        ("http://tps.example.com:8080/tps/phoneHome", True),
        ("http://TPS.example.com:8080/x", True),
        ("http://tps.example.com/tps/phoneHome", False),
        ("http://tps.example.com:8081/x", False),
        ("http://legacy.example.com/cgi-bin/home/index.cgi", True),
        ("http://legacy.example.com:80/x", True),
        ("http://[::1]:8080/x", True),
        ("http://[0:0::1]:8080/x", True),
        ("http://other.example.com:8080/x", False),
        ("ftp://tps.example.com/x", False),
        ("https:///x", False),
    ],
)
def test_check_url_allowed(url: str, allowed: bool) -> None:
    origins = ("http://tps.example.com:8080", "http://legacy.example.com", "http://[::1]:8080")
    if allowed:
        check_url_allowed(url, origins)
    else:
        with pytest.raises(InsecureUrlError) as caught:
            check_url_allowed(url, origins)
        assert caught.value.url == url


def test_plain_http_is_refused_by_default_and_says_how_to_allow_it() -> None:
    with pytest.raises(InsecureUrlError) as caught:
        check_url_allowed("http://tps.example.com:8080/tps/phoneHome", ())
    assert "tps.allow_http" in caught.value.reason
    assert "http://tps.example.com:8080" in caught.value.reason


def test_a_refused_url_never_repeats_its_password() -> None:
    with pytest.raises(InsecureUrlError) as caught:
        check_url_allowed("https://jdoe:s3cret@tps.example.com:8443/tps/tps", ())
    assert "user name or password" in caught.value.reason
    assert "s3cret" not in str(caught.value) and "s3cret" not in caught.value.url
