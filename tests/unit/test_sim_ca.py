# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated TPS's CA: token and server certificates, key blobs, subject patterns."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from escd.sim.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CertificateAuthority,
    parse_key_blob,
    split_keygen_buffer,
    subject_name,
    verify_proof,
)
from escd.sim.tps_config import KeyUse


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def key_blob(key: rsa.RSAPrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    modulus, exponent = numbers.n.to_bytes(128, "big"), numbers.e.to_bytes(3, "big")
    return b"\x00\x01\x04\x00" + b"\x00\x80" + modulus + b"\x00\x03" + exponent


def test_key_blob_and_proof(key: rsa.RSAPrivateKey) -> None:
    blob = key_blob(key)
    challenge = bytes(range(16))
    proof = key.sign(blob + challenge, padding.PKCS1v15(), hashes.SHA1())
    buffer = len(blob).to_bytes(2, "big") + blob + len(proof).to_bytes(2, "big") + proof
    assert len(buffer) == 271  # 1024-bit: 208 + 63 bytes read
    parsed_blob, parsed_proof = split_keygen_buffer(buffer)
    public = parse_key_blob(parsed_blob)
    assert public.public_numbers() == key.public_key().public_numbers()
    assert verify_proof(public, parsed_blob, parsed_proof, challenge)
    assert not verify_proof(public, parsed_blob, parsed_proof, bytes(16))
    for bad in (b"", blob[:-1], b"\x00\x02" + blob[2:]):
        with pytest.raises(ValueError):
            parse_key_blob(bad)
    with pytest.raises(ValueError):
        split_keygen_buffer(buffer[:-1])


def test_subject_patterns_escape_values() -> None:
    assert subject_name("UID=$uid$, O=Token Key User", uid="jdoe").rfc4514_string() == (
        "UID=jdoe,O=Token Key User"
    )
    tricky = subject_name("CN=$cn$, UID=$uid$", uid="a,b", cn="Doe, John+")
    assert tricky.rfc4514_string() == "CN=Doe\\, John\\+,UID=a\\,b"


@pytest.mark.parametrize(("use", "signing"), [(KeyUse.SIGNING, True), (KeyUse.ENCRYPTION, False)])
def test_token_certificates_chain_to_the_ca(
    ca: CertificateAuthority, key: rsa.RSAPrivateKey, use: KeyUse, signing: bool
) -> None:
    subject = subject_name("UID=$uid$, O=Token Key User", uid="demo")
    certificate = ca.issue(key.public_key(), subject, use, mail="demo@example.test")
    certificate.verify_directly_issued_by(ca.certificate)
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature is signing and usage.key_encipherment is not signing
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["demo@example.test"]
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    ca.revoke([certificate.serial_number])
    assert ca.is_revoked(certificate.serial_number)


def test_server_credentials(ca: CertificateAuthority) -> None:
    credentials = ca.server_credentials(["127.0.0.1", "localhost", "::1"])
    chain = x509.load_pem_x509_certificates(credentials.certificate_pem)
    assert chain[1] == ca.certificate
    assert chain[0] == credentials.certificate
    chain[0].verify_directly_issued_by(ca.certificate)
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert len(san.get_values_for_type(x509.IPAddress)) == 2


def test_a_subordinate_ca_is_signed_by_its_root_and_issues_servers(
    ca: CertificateAuthority,
) -> None:
    sub = ca.subordinate("CN=Sub CA, O=Example Corp", key_size=1024)
    sub.certificate.verify_directly_issued_by(ca.certificate)
    assert sub.certificate.subject.rfc4514_string() == "CN=Sub CA,O=Example Corp"
    constraints = sub.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca
    root_constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert root_constraints.value.path_length is None  # room for the subordinate
    sub.server_credentials(["localhost"]).certificate.verify_directly_issued_by(sub.certificate)


def test_ca_is_kept_in_the_state_directory(tmp_path: Path) -> None:
    first = CertificateAuthority.load_or_create(tmp_path)
    assert stat.S_IMODE((tmp_path / CA_KEY_FILE).stat().st_mode) == 0o600
    assert (tmp_path / CA_CERT_FILE).read_bytes() == first.certificate_pem
    again = CertificateAuthority.load_or_create(tmp_path)
    assert again.certificate == first.certificate
