# SPDX-License-Identifier: GPL-2.0-or-later
"""Whom escd trusts for TPS and phone-home connections: CA certificates and server pins.

Owns ``state_dir()/trust/``: ``authorities/<sha256>.pem`` (CA certificates the user
imported, ESC's "Authorities" tab) and ``servers.json`` (server pins, ESC's "Servers"
tab / "Add Exception"). It hands out ``ssl.SSLContext`` objects that both TLS clients
use: the TPS connection (h11 over ``asyncio.open_connection(ssl=…)``) and phone home
(httpx). It also holds the plain-http policy (``check_url_allowed``).

Trust rules (ESC accepted almost any certificate, and plain http TPS URLs: its bad-cert
hooks let unknown issuers, expired certificates and bad signatures through, ESC
rhCoolKey.cpp ``badCertHandler`` and NssHttpClient engine.cpp ``myBadCertHandler``; we
don't):

* A host:port without a pin is verified in full, chain and host name, against the
  system CAs (``trust.system_cas``), the CAs in ``trust.shared_dir`` and the imported ones.
* A pinned host:port accepts exactly the pinned leaf certificates (SHA-256 of the DER)
  and nothing else, whoever signed them and whatever their dates or names say: a pin is
  a decision about one certificate, which is what a self-signed TPS needs. It never
  falls back to "anything the CAs accept" or to "anything at all".
* A certificate that is not trusted ends in ``TlsUntrustedError`` carrying the
  fingerprint the user would have to pin; nothing is accepted silently.

How a pin is enforced: the context for a pinned server disables OpenSSL's own chain
check and installs its own ``SSLObject``/``SSLSocket`` classes whose ``do_handshake``
compares the peer's certificate with the pins before returning, and whose read/write
complete (and check) the handshake first. asyncio and anyio (httpx) both drive TLS
through ``SSLContext.wrap_bio`` and ``do_handshake``, so no caller can forget the check:
a mismatch raises ``PinMismatchError`` (an ``ssl.SSLCertVerificationError``) from
inside the handshake, before any byte of application data moves.

Rule: this module never logs certificate private data (there is none here) nor any
secret; it logs what it trusts and what it refused.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import contextlib
import hashlib
import ipaddress
import logging
import re
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum, unique
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from escd.config import TrustConfig, state_dir
from escd.errors import InsecureUrlError, InvalidArgumentError, NetworkError, TlsUntrustedError
from escd.phonehome.parser import redact_userinfo, url_problem
from escd.statefile import (
    ensure_dir,
    read_json,
    remove_stale_temp_files,
    set_aside,
    write_bytes_atomic,
    write_json_atomic,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

logger = logging.getLogger(__name__)

#: Largest certificate file accepted (a Dogtag chain is a few KiB).
MAX_CERTIFICATE_FILE = 1 << 20

_PINS_FILE = "servers.json"
_AUTHORITIES = "authorities"
_SCHEMA_VERSION = 1
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL | re.ASCII
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NSS_DATABASES = ("cert9.db", "cert8.db")


@unique
class TrustKind(StrEnum):
    AUTHORITY = "authority"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class TrustEntry:
    """One trusted CA certificate or one server pin, as ``escctl trust list`` shows it."""

    id: str
    kind: TrustKind
    #: SHA-256, colon-separated upper-case hex (as browsers show it).
    fingerprint: str
    subject: str = ""
    host: str | None = None
    port: int | None = None
    not_after: datetime | None = None
    #: From ``trust.shared_dir``: read-only for escd.
    shared: bool = False


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What ``TrustStore.import_authorities`` did with each certificate."""

    added: tuple[TrustEntry, ...]
    already_trusted: tuple[TrustEntry, ...]
    #: (subject, reason) of certificates that were not imported.
    rejected: tuple[tuple[str, str], ...]


class PinMismatchError(ssl.SSLCertVerificationError):
    """A pinned server presented a certificate other than the pinned one."""

    def __init__(self, fingerprint: str, der: bytes = b"") -> None:
        super().__init__(f"the certificate (SHA-256 {fingerprint}) is not the pinned one")
        self.fingerprint = fingerprint
        #: The certificate that was presented (DER), b"" when there was none.
        self.der = der
        self.verify_message = "it is not the certificate pinned for this server"


# --- fingerprints and certificate files -------------------------------------------------


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate, ``AB:CD:…`` as browsers show it."""
    return format_fingerprint(fingerprint_plain(cert))


def fingerprint_plain(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate as 64 lower-case hex digits (how escd stores it)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def format_fingerprint(plain: str) -> str:
    """``abcd…`` → ``AB:CD:…``."""
    return ":".join(plain[i : i + 2] for i in range(0, len(plain), 2)).upper()


def normalize_fingerprint(text: str) -> str:
    """Accept ``AB:CD:…``, ``ab cd …`` or plain hex; the plain lower-case form."""
    plain = re.sub(r"[\s:]", "", text).lower()
    if plain.startswith("sha256"):
        plain = plain.removeprefix("sha256").lstrip("=/")
    if not _HEX64.fullmatch(plain):
        raise InvalidArgumentError("a SHA-256 fingerprint has 64 hex digits")
    return plain


def parse_certificates(data: bytes) -> builtins.list[x509.Certificate]:
    """Every certificate in a PEM, DER or PKCS#7 (DER or PEM, "certs-only") blob, in order.

    Covers what a Dogtag CA's "Import CA Certificate Chain" page hands out: the binary
    PKCS#7 chain, the same in base64 with or without ``-----BEGIN PKCS7-----`` lines, and
    single PEM or DER certificates. Raises ``InvalidArgumentError`` when nothing usable
    is found.
    """
    if len(data) > MAX_CERTIFICATE_FILE:
        raise InvalidArgumentError(f"the file is larger than {MAX_CERTIFICATE_FILE} bytes")
    found: builtins.list[x509.Certificate] = []
    if b"-----BEGIN" in data:
        for label, body in _PEM_BLOCK.findall(data):
            der = _b64decode(body)
            if der is None:
                raise InvalidArgumentError(f"the {label.decode()} block is not valid base64")
            found.extend(_parse_der(der, label.decode()))
        if not found:
            raise InvalidArgumentError("no certificate found in the PEM data")
    else:
        der = data
        if not data.lstrip().startswith(b"\x30"):
            # Dogtag's "display in base64" form has no BEGIN/END lines.
            decoded = _b64decode(data)
            if decoded is None:
                raise InvalidArgumentError("not a PEM, DER or PKCS#7 certificate file")
            der = decoded
        found.extend(_parse_der(der, ""))
    return _unique(found)


def _parse_der(der: bytes, label: str) -> builtins.list[x509.Certificate]:
    if label in ("", "CERTIFICATE", "X509 CERTIFICATE"):
        try:
            return [x509.load_der_x509_certificate(der)]
        except ValueError as exc:
            if label:
                raise InvalidArgumentError(
                    "a CERTIFICATE block does not hold a certificate"
                ) from exc
    if label in ("", "PKCS7", "CERTIFICATE CHAIN"):
        # Imported here: only a certificate file that is not plain X.509 needs the PKCS#7
        # code (11 modules, ~0.8 MB), and the daemon reads such files rarely, if ever.
        from cryptography.hazmat.primitives.serialization import pkcs7

        try:
            return builtins.list(pkcs7.load_der_pkcs7_certificates(der))
        except ValueError as exc:
            raise InvalidArgumentError("not a certificate or a PKCS#7 certificate chain") from exc
    # Keys, CSRs, CRLs and the like in the same file are not ours to judge.
    return []


def _b64decode(body: bytes) -> bytes | None:
    compact = re.sub(rb"\s+", b"", body)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def _unique(certs: Iterable[x509.Certificate]) -> builtins.list[x509.Certificate]:
    seen: set[str] = set()
    result = []
    for cert in certs:
        key = fingerprint_plain(cert)
        if key not in seen:
            seen.add(key)
            result.append(cert)
    return result


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


#: Why a certificate that is no CA is not imported as an authority.
NOT_A_CA = "not a CA certificate; pin a server's own certificate instead"


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """Whether ``import_authorities`` would accept ``cert`` (a CA, or an old v1 root)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        # Old (v1) roots have no extensions at all; a self-issued one is a CA by custom.
        return cert.issuer == cert.subject
    return constraints.value.ca


# --- the plain-http policy -------------------------------------------------------------


def check_url_allowed(url: str, allow_http: Iterable[str]) -> None:
    """Raise ``InsecureUrlError`` unless ``url`` is https, or http to an allowed origin.

    ``allow_http`` holds origins ``http://host[:port]`` (``tps.allow_http``); port 80
    is implied when absent, and host names compare case-insensitively.
    """
    why = url_problem(url)
    if why is not None:
        raise InsecureUrlError(redact_userinfo(url), why)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return
    origin = _origin(parts.hostname or "", parts.port or 80)
    allowed = set()
    for entry in allow_http:
        entry_parts = urlsplit(entry)
        if entry_parts.scheme.lower() == "http" and entry_parts.hostname:
            allowed.add(_origin(entry_parts.hostname, entry_parts.port or 80))
    if origin not in allowed:
        raise InsecureUrlError(
            url,
            f"plain http to {origin} is not allowed; use https, or list the origin in "
            "tps.allow_http",
        )


def _origin(host: str, port: int) -> str:
    host = normalize_host(host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def normalize_host(host: str) -> str:
    """Lower case, IPv6 brackets removed, IP addresses in canonical form."""
    host = host.strip().strip("[]").lower().rstrip(".")
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    return host


def _check_port(port: int) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise InvalidArgumentError("a port is a number from 1 to 65535")
    return port


# --- contexts that enforce pins --------------------------------------------------------


def _check_pin(context: ssl.SSLContext, der: bytes | None) -> None:
    pins = context.escd_pins if isinstance(context, _PinnedContext) else frozenset()
    if der is None:
        raise PinMismatchError("none")
    presented = hashlib.sha256(der).hexdigest()
    if presented not in pins:
        raise PinMismatchError(format_fingerprint(presented), der)


class _PinnedSSLObject(ssl.SSLObject):
    """TLS over memory BIOs (asyncio, anyio) that refuses any certificate but the pinned."""

    _escd_checked = False

    def do_handshake(self) -> None:
        super().do_handshake()
        if not self._escd_checked:
            _check_pin(self.context, self.getpeercert(binary_form=True))
            self._escd_checked = True

    def read(self, len: int = 1024, buffer: WriteableBuffer | None = None) -> bytes:
        # OpenSSL would finish a pending handshake inside SSL_read/SSL_write; do it here
        # instead so that the pin is checked before any data moves.
        if not self._escd_checked:
            self.do_handshake()
        return super().read(len, buffer)

    def write(self, data: ReadableBuffer) -> int:
        if not self._escd_checked:
            self.do_handshake()
        return super().write(data)


class _PinnedSSLSocket(ssl.SSLSocket):
    """The blocking-socket twin of ``_PinnedSSLObject`` (``wrap_socket`` users)."""

    _escd_checked = False

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        if not self._escd_checked:
            _check_pin(self.context, self.getpeercert(binary_form=True))
            self._escd_checked = True

    def _escd_ensure(self) -> None:
        if not self._escd_checked:
            self.do_handshake()

    def read(self, len: int = 1024, buffer: WriteableBuffer | None = None) -> bytes:
        self._escd_ensure()
        return super().read(len, buffer)

    def write(self, data: ReadableBuffer) -> int:
        self._escd_ensure()
        return super().write(data)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self._escd_ensure()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        self._escd_ensure()
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        self._escd_ensure()
        return super().send(data, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self._escd_ensure()
        super().sendall(data, flags)


class _PinnedContext(ssl.SSLContext):
    sslobject_class = _PinnedSSLObject
    sslsocket_class = _PinnedSSLSocket
    escd_pins: frozenset[str] = frozenset()


def _client_context(cls: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
    context = cls(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _unverified_context() -> ssl.SSLContext:
    # Only for looking at a certificate to show it to the user; never carries data.
    context = _client_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def find_cert_verification_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The ``ssl.SSLCertVerificationError`` behind a wrapped error (httpx, httpcore), if any."""
    seen: set[int] = set()
    pending: builtins.list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return None


async def fetch_server_certificate(host: str, port: int, timeout: float) -> x509.Certificate:
    """The leaf certificate ``host:port`` presents, not verified (for "Add Exception").

    Raises ``NetworkError`` when the server cannot be reached or does not speak TLS.
    """
    _check_port(port)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host, port, ssl=_unverified_context(), server_hostname=host
            )
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    except TimeoutError as exc:
        raise NetworkError(f"{host}:{port} did not answer within {timeout:g} s") from exc
    except ssl.SSLError as exc:
        raise NetworkError(f"TLS with {host}:{port} failed ({exc.reason or exc})") from exc
    except OSError as exc:
        raise NetworkError(f"cannot connect to {host}:{port} ({_os_reason(exc)})") from exc
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()
    if not der:
        raise NetworkError(f"{host}:{port} presented no certificate")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise NetworkError(f"{host}:{port} presented an unreadable certificate") from exc


async def describe_untrusted(
    host: str, port: int, error: BaseException, timeout: float
) -> TlsUntrustedError:
    """Turn a certificate verification failure into ``TlsUntrustedError`` with a fingerprint.

    OpenSSL does not hand out the certificate it rejected, so unless the failure was a
    pin mismatch (which carries it) the certificate is fetched again on a second,
    unverified connection. That certificate (``TlsUntrustedError.certificate``, whose
    fingerprint the error names) is only shown to the user; if they pin it, later
    connections accept exactly that certificate and no other.
    """
    found = find_cert_verification_error(error)
    if isinstance(found, PinMismatchError):
        return TlsUntrustedError(
            host, port, found.fingerprint, found.verify_message, certificate=found.der
        )
    reason = ""
    if found is not None:
        reason = found.verify_message or str(found)
    try:
        cert = await fetch_server_certificate(host, port, timeout)
    except NetworkError:
        return TlsUntrustedError(host, port, "unavailable", reason)
    der = cert.public_bytes(serialization.Encoding.DER)
    return TlsUntrustedError(host, port, fingerprint(cert), reason, certificate=der)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


# --- the store ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pin:
    host: str
    port: int
    sha256: str
    subject: str
    added: str


class TrustStore:
    """Imported CAs and server pins under one directory, and the contexts built from them.

    Not thread-safe: call it from the event loop thread (the blocking parts are small
    file writes).
    """

    def __init__(
        self, directory: Path, *, system_cas: bool = True, shared_dir: Path | None = None
    ) -> None:
        self.directory = directory
        self.system_cas = system_cas
        self.shared_dir = shared_dir
        self._pins: dict[tuple[str, int], dict[str, _Pin]] = {}
        self._base: ssl.SSLContext | None = None
        self._pinned: dict[tuple[str, int], ssl.SSLContext] = {}
        # At start-up only (escd.statefile): a writer running meanwhile would lose its file.
        for directory in (self._authorities, self.directory):
            if directory.is_dir():
                remove_stale_temp_files(directory)
        self.reload()

    @classmethod
    def from_config(cls, config: TrustConfig, state: Path | None = None) -> TrustStore:
        """The store in ``<state>/trust`` with the configured system CAs and shared dir."""
        shared = Path(config.shared_dir).expanduser() if config.shared_dir else None
        return cls(
            (state or state_dir()) / "trust", system_cas=config.system_cas, shared_dir=shared
        )

    @property
    def _authorities(self) -> Path:
        return self.directory / _AUTHORITIES

    def reload(self) -> None:
        """Re-read pins, imported and shared CAs (after a change by another process)."""
        self._pins = self._read_pins()
        self._base = None
        self._pinned = {}

    # ... authorities

    def import_authorities(self, certs: Iterable[x509.Certificate]) -> ImportResult:
        """Trust these CA certificates; idempotent. Non-CA certificates are rejected."""
        added: builtins.list[TrustEntry] = []
        present: builtins.list[TrustEntry] = []
        rejected: builtins.list[tuple[str, str]] = []
        ensure_dir(self._authorities)
        for cert in _unique(certs):
            if not is_ca_certificate(cert):
                rejected.append((_subject(cert), NOT_A_CA))
                continue
            entry = _authority_entry(cert, shared=False)
            path = self._authorities / f"{fingerprint_plain(cert)}.pem"
            if path.exists():
                present.append(entry)
                continue
            write_bytes_atomic(path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
            logger.info("now trusting CA %s (SHA-256 %s)", entry.subject, entry.fingerprint)
            added.append(entry)
        if added:
            self._base = None
        return ImportResult(tuple(added), tuple(present), tuple(rejected))

    def list(self) -> tuple[TrustEntry, ...]:
        """Every trusted CA (imported, then shared) and every pin; system CAs not included."""
        entries = [_authority_entry(cert, shared=False) for cert in self._imported()]
        entries.extend(_authority_entry(cert, shared=True) for cert in self._shared())
        for pins in self._pins.values():
            entries.extend(_pin_entry(pin) for pin in pins.values())
        return tuple(entries)

    def remove(self, entry_id: str) -> TrustEntry:
        """Stop trusting one CA or pin (by ``TrustEntry.id``); the removed entry."""
        for entry in self.list():
            if entry.id != entry_id:
                continue
            if entry.shared:
                raise InvalidArgumentError(
                    f"{entry.subject} comes from the shared directory {self.shared_dir}; "
                    "an administrator removes it there"
                )
            if entry.kind is TrustKind.AUTHORITY:
                path = self._authorities / f"{normalize_fingerprint(entry.fingerprint)}.pem"
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise InvalidArgumentError(f"cannot remove {path}: {_os_reason(exc)}") from exc
                self._base = None
            else:
                assert entry.host is not None and entry.port is not None
                key = (entry.host, entry.port)
                pins = dict(self._pins)
                kept = dict(pins[key])
                del kept[normalize_fingerprint(entry.fingerprint)]
                if kept:
                    pins[key] = kept
                else:
                    del pins[key]
                self._write_pins(pins)
                self._pinned.pop(key, None)
            logger.info("no longer trusting %s", entry.id)
            return entry
        raise InvalidArgumentError(f"no trust entry {entry_id!r}")

    # ... pins

    def pin_server(self, host: str, port: int, fingerprint: str, subject: str = "") -> TrustEntry:
        """Accept exactly the certificate with this SHA-256 at host:port; idempotent.

        From then on a certificate is accepted there only if it is pinned: CA-signed
        certificates included, so a pin is also a guard against a mis-issued one.
        """
        key = (normalize_host(host), _check_port(port))
        if not key[0]:
            raise InvalidArgumentError("a server pin needs a host name")
        plain = normalize_fingerprint(fingerprint)
        existing = self._pins.get(key, {})
        if plain in existing:
            return _pin_entry(existing[plain])
        pin = _Pin(key[0], key[1], plain, subject, datetime.now(UTC).isoformat(timespec="seconds"))
        pins = dict(self._pins)
        pins[key] = {**existing, plain: pin}
        self._write_pins(pins)
        logger.info("pinned %s:%d to SHA-256 %s", key[0], key[1], format_fingerprint(plain))
        self._pinned.pop(key, None)
        return _pin_entry(pin)

    def pins_for(self, host: str, port: int) -> frozenset[str]:
        """The pinned fingerprints (plain hex) for host:port; empty when not pinned."""
        return frozenset(self._pins.get((normalize_host(host), port), {}))

    def ssl_context_for(self, host: str, port: int) -> ssl.SSLContext:
        """The client context for connecting to host:port, pins and CAs applied."""
        key = (normalize_host(host), port)
        pins = self._pins.get(key)
        if pins:
            context = self._pinned.get(key)
            if context is None:
                context = _client_context(_PinnedContext)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                assert isinstance(context, _PinnedContext)
                context.escd_pins = frozenset(pins)
                self._pinned[key] = context
            return context
        if self._base is None:
            self._base = self._build_verifying_context()
        return self._base

    # ... internals

    def _build_verifying_context(self) -> ssl.SSLContext:
        context = _client_context()
        if self.system_cas:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        extra = [*self._imported(), *self._shared()]
        if extra:
            pem = "".join(
                cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in extra
            )
            context.load_verify_locations(cadata=pem)
        # A CA the user chose to trust is an anchor even if it is an intermediate whose
        # root they never imported (OpenSSL otherwise insists on a self-signed root).
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    def _imported(self) -> Iterator[x509.Certificate]:
        if not self._authorities.is_dir():
            return
        for path in sorted(self._authorities.glob("*.pem")):
            try:
                certs = parse_certificates(path.read_bytes())
            except (OSError, InvalidArgumentError) as exc:
                set_aside(path, f"not a certificate ({exc.__class__.__name__})")
                continue
            yield from certs

    def _shared(self) -> Iterator[x509.Certificate]:
        if self.shared_dir is None:
            return
        try:
            paths = sorted(p for p in self.shared_dir.iterdir() if p.is_file())
        except OSError as exc:
            logger.warning("cannot read trust.shared_dir %s: %s", self.shared_dir, _os_reason(exc))
            return
        for path in paths:
            if path.name in _NSS_DATABASES:
                logger.warning(
                    "%s is an NSS database, which escd cannot read; export its CA "
                    "certificates as PEM files into %s",
                    path,
                    self.shared_dir,
                )
                continue
            if path.suffix == ".db" or path.name.startswith("."):
                continue
            try:
                certs = parse_certificates(path.read_bytes())
            except (OSError, InvalidArgumentError) as exc:
                logger.warning("ignoring %s in trust.shared_dir: %s", path, exc)
                continue
            yield from certs

    def _read_pins(self) -> dict[tuple[str, int], dict[str, _Pin]]:
        path = self.directory / _PINS_FILE
        data = read_json(path)
        if data is None:
            return {}
        pins: dict[tuple[str, int], dict[str, _Pin]] = {}
        raw = data.get("pins")
        if data.get("version") != _SCHEMA_VERSION or not isinstance(raw, builtins.list):
            set_aside(path, "not an escd server-pin file")
            return {}
        for item in raw:
            pin = _pin_from_json(item)
            if pin is None:
                set_aside(path, "a pin entry is malformed")
                return {}
            pins.setdefault((pin.host, pin.port), {})[pin.sha256] = pin
        return pins

    def _write_pins(self, pins: dict[tuple[str, int], dict[str, _Pin]]) -> None:
        items = [
            {
                "host": p.host,
                "port": p.port,
                "sha256": p.sha256,
                "subject": p.subject,
                "added": p.added,
            }
            for key in sorted(pins)
            for p in pins[key].values()
        ]
        write_json_atomic(self.directory / _PINS_FILE, {"version": _SCHEMA_VERSION, "pins": items})
        self._pins = pins


def _pin_from_json(item: object) -> _Pin | None:
    if not isinstance(item, dict):
        return None
    host, port, sha, subject, added = (
        item.get("host"),
        item.get("port"),
        item.get("sha256"),
        item.get("subject", ""),
        item.get("added", ""),
    )
    if not (isinstance(host, str) and host and isinstance(port, int) and 0 < port < 65536):
        return None
    if not (isinstance(sha, str) and _HEX64.fullmatch(sha)):
        return None
    if not isinstance(subject, str) or not isinstance(added, str):
        return None
    return _Pin(normalize_host(host), port, sha, subject, added)


def _authority_entry(cert: x509.Certificate, *, shared: bool) -> TrustEntry:
    plain = fingerprint_plain(cert)
    return TrustEntry(
        id=f"{'shared' if shared else 'ca'}:{plain}",
        kind=TrustKind.AUTHORITY,
        fingerprint=format_fingerprint(plain),
        subject=_subject(cert),
        not_after=cert.not_valid_after_utc,
        shared=shared,
    )


def _pin_entry(pin: _Pin) -> TrustEntry:
    shown = f"[{pin.host}]" if ":" in pin.host else pin.host
    return TrustEntry(
        id=f"pin:{shown}:{pin.port}:{pin.sha256}",
        kind=TrustKind.SERVER,
        fingerprint=format_fingerprint(pin.sha256),
        subject=pin.subject,
        host=pin.host,
        port=pin.port,
    )
