# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulator's certificate authority: a generated root that issues real X.509
certificates for the keys on simulated tokens (enrolled by the simulated TPS or built
ready-made by ``escd.sim.card.enrolled_card``) and TLS certificates for servers. Tests
build their throw-away PKIs from it too.

Owns:

* ``CertificateAuthority``: a self-signed root (RSA), kept as PEM files in the state
  directory when there is one; ``issue`` signs a user certificate for a token key with
  the key usage Dogtag's ``caTokenUserSigningKeyEnrollment`` /
  ``caTokenUserEncryptionKeyEnrollment`` profiles give it; ``server_credentials`` a TLS
  certificate for a listener; ``subordinate`` a CA it signs (Dogtag's sub-CA layout);
  ``revoke`` marks serials revoked (no CRL is served).
* ``parse_key_blob``: the public key in GENERATE KEY's I/O buffer
  (``00 01 size(2) modLen(2) mod expLen(2) exp``, CoolKey CardEdge.java
  ``startEnrollment``), and
  ``verify_proof`` for the legacy TPS's optional proof check.
* ``subject_name``: the profile's ``dnpattern`` with ``$uid$``, ``$cn$``, ``$mail$``.

Must not: log keys, or know about tokens, users or the protocol.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from escd.sim.tps_config import KeyUse
from escd.statefile import ensure_dir, write_bytes_atomic

CA_KEY_FILE = "ca-key.pem"
CA_CERT_FILE = "ca-cert.pem"
DEFAULT_CA_NAME = "CN=escd simulated TPS CA, O=escd"
USER_CERT_DAYS = 365
CA_DAYS = 3650
_RFC4514_SPECIAL = ',+"\\<>;='


def _rfc4514_escape(value: str) -> str:
    escaped = "".join(f"\\{char}" if char in _RFC4514_SPECIAL else char for char in value)
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped


def parse_dn(text: str) -> x509.Name:
    """An LDAP-style DN; spaces after the separating commas are allowed, as Dogtag writes them."""
    parts, current, escaped = [], "", False
    for char in text:
        if char == "," and not escaped:
            parts.append(current.strip())
            current = ""
            continue
        escaped = char == "\\" and not escaped
        current += char
    parts.append(current.strip())
    return x509.Name.from_rfc4514_string(",".join(parts))


def subject_name(pattern: str, *, uid: str, cn: str = "", mail: str = "") -> x509.Name:
    """The subject of a profile ``dnpattern`` such as ``UID=$uid$, O=Token Key User``."""
    text = pattern
    for name, value in (("uid", uid), ("cn", cn or uid), ("mail", mail)):
        text = text.replace(f"${name}$", _rfc4514_escape(value))
    return parse_dn(text)


def parse_key_blob(blob: bytes) -> rsa.RSAPublicKey:
    """The RSA public key of a CoolKey key blob; ``ValueError`` if it is not one."""
    if len(blob) < 8 or blob[0:2] != b"\x00\x01":
        raise ValueError("key blob does not start with 00 01 (RSA public key)")
    offset = 4
    mod_length = int.from_bytes(blob[offset : offset + 2], "big")
    modulus = blob[offset + 2 : offset + 2 + mod_length]
    offset += 2 + mod_length
    exp_length = int.from_bytes(blob[offset : offset + 2], "big")
    exponent = blob[offset + 2 : offset + 2 + exp_length]
    if len(modulus) != mod_length or len(exponent) != exp_length or not exp_length:
        raise ValueError("key blob is truncated")
    numbers = rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big"))
    return numbers.public_key()


def split_keygen_buffer(data: bytes) -> tuple[bytes, bytes]:
    """The I/O buffer after GENERATE KEY: ``len(2) blob len(2) proof`` → (blob, proof)."""
    if len(data) < 4:
        raise ValueError("key generation buffer too short")
    blob_length = int.from_bytes(data[0:2], "big")
    blob = data[2 : 2 + blob_length]
    rest = data[2 + blob_length :]
    if len(blob) != blob_length or len(rest) < 2:
        raise ValueError("key generation buffer is truncated")
    proof_length = int.from_bytes(rest[0:2], "big")
    proof = rest[2 : 2 + proof_length]
    if len(proof) != proof_length:
        raise ValueError("key generation proof is truncated")
    return blob, proof


def verify_proof(public_key: rsa.RSAPublicKey, blob: bytes, proof: bytes, challenge: bytes) -> bool:
    """SHA1withRSA over ``blob ‖ challenge`` (legacy ``CertEnroll.cpp:470-540``)."""
    try:
        public_key.verify(proof, blob + challenge, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    except InvalidSignature:
        return False
    return True


def _ca_builder(
    subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey
) -> x509.CertificateBuilder:
    # No path length limit, as Dogtag's caCACert profile: a root may sign sub-CAs.
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


@dataclass(frozen=True, slots=True)
class ServerCredentials:
    """A TLS key and certificate chain for the listener, as PEM."""

    key_pem: bytes
    certificate_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        """The server's own certificate, the first of the chain."""
        return x509.load_pem_x509_certificates(self.certificate_pem)[0]


class CertificateAuthority:
    """A CA that issues token, server and sub-CA certificates; ``revoke`` is bookkeeping only."""

    def __init__(self, key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate
        self._revoked: set[int] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.certificate.subject.rfc4514_string()!r})"

    @classmethod
    def generate(cls, name: str = DEFAULT_CA_NAME, *, key_size: int = 2048) -> CertificateAuthority:
        """A new self-signed root."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        subject = parse_dn(name)
        certificate = _ca_builder(subject, subject, key).sign(key, hashes.SHA256())
        return cls(key, certificate)

    def subordinate(self, name: str, *, key_size: int = 2048) -> CertificateAuthority:
        """A new CA whose certificate this one signs."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        certificate = (
            _ca_builder(parse_dn(name), self.certificate.subject, key)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return type(self)(key, certificate)

    @classmethod
    def load_or_create(cls, directory: Path, *, key_size: int = 2048) -> CertificateAuthority:
        """The CA kept in ``directory`` (created there, mode 0600, if absent)."""
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"{key_path} is not an RSA key")
            return cls(key, certificate)
        ca = cls.generate(key_size=key_size)
        ca.save(directory)
        return ca

    def save(self, directory: Path) -> None:
        ensure_dir(directory)
        write_bytes_atomic(
            directory / CA_KEY_FILE,
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        write_bytes_atomic(directory / CA_CERT_FILE, self.certificate_pem, mode=0o644)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def _builder(
        self,
        subject: x509.Name,
        public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        days: int,
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    def issue(
        self, public_key: rsa.RSAPublicKey, subject: x509.Name, use: KeyUse, *, mail: str = ""
    ) -> x509.Certificate:
        """A token certificate: signing (digitalSignature, nonRepudiation) or encryption
        (keyEncipherment), as the Dogtag token profiles set them, with the mail in the SAN."""
        signing = use is KeyUse.SIGNING
        builder = self._builder(subject, public_key, USER_CERT_DAYS).add_extension(
            x509.KeyUsage(
                digital_signature=signing,
                content_commitment=signing,
                key_encipherment=not signing,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]
            ),
            critical=False,
        )
        if mail:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(mail)]), critical=False
            )
        return builder.sign(self.key, hashes.SHA256())

    def server_credentials(self, hosts: list[str]) -> ServerCredentials:
        """A fresh P-256 key and a serverAuth certificate for ``hosts`` (names or IPs)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in dict.fromkeys(hosts):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        common_name = hosts[0] if hosts else "localhost"
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "escd"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        certificate = (
            self._builder(subject, key.public_key(), USER_CERT_DAYS)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return ServerCredentials(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            certificate.public_bytes(serialization.Encoding.PEM) + self.certificate_pem,
        )

    def revoke(self, serials: list[int]) -> None:
        with self._lock:
            self._revoked.update(serials)

    def is_revoked(self, serial: int) -> bool:
        with self._lock:
            return serial in self._revoked
