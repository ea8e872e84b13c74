# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``tls-trust`` prompt: its shape on the bus, and escctl's answers at the terminal."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from escd.ctl.agent import PromptRequest
from escd.ctl.prompts import Presets, TerminalAgent, parse_fingerprint
from escd.dbus_service.agent import prompt_vardict
from escd.errors import TlsUntrustedError
from escd.sim.ca import CertificateAuthority
from escd.tps.session import FieldType, PromptKind
from escd.trust import fingerprint
from escd.trustprompt import TPS_SERVER, presented_certificate, trust_prompt

REASON = "self-signed certificate in certificate chain"


@pytest.fixture(scope="module")
def cert() -> x509.Certificate:
    authority = CertificateAuthority.generate(key_size=1024)
    return authority.server_credentials(["tps.example.com"]).certificate


def untrusted(cert: x509.Certificate, shown: str | None = None) -> TlsUntrustedError:
    der = cert.public_bytes(Encoding.DER)
    return TlsUntrustedError(
        "tps.example.com", 8443, shown or fingerprint(cert), REASON, certificate=der
    )


def request_for(cert: x509.Certificate) -> PromptRequest:
    """The prompt as an agent receives it (through the D-Bus dictionary)."""
    prompt = trust_prompt(untrusted(cert), cert, TPS_SERVER)
    return PromptRequest.from_call("/io/github/escd/Escd1/job/1", "7", prompt_vardict(prompt))


def test_the_prompt_names_the_server_the_reason_and_exactly_the_certificate(
    cert: x509.Certificate,
) -> None:
    prompt = trust_prompt(untrusted(cert), cert, TPS_SERVER)
    assert prompt.kind is PromptKind.TLS_TRUST
    assert prompt.title == "Untrusted certificate from the TPS tps.example.com:8443"
    assert REASON in prompt.description and "tps.example.com:8443" in prompt.description
    [field] = prompt.fields
    assert (field.id, field.type) == ("trust", FieldType.BOOL)
    details = prompt.certificate
    assert details is not None
    assert details.fingerprint == fingerprint(cert) and details.fingerprint.count(":") == 31
    assert details.subject == cert.subject.rfc4514_string()
    assert details.issuer == cert.issuer.rfc4514_string()
    assert details.not_before == int(cert.not_valid_before_utc.timestamp())
    assert details.not_after == int(cert.not_valid_after_utc.timestamp())
    assert details.der == cert.public_bytes(Encoding.DER) and details.reason == REASON
    values = prompt_vardict(prompt)["certificate"]
    assert values.signature == "a{sv}"
    assert {key: v.signature for key, v in values.value.items()} == {
        "host": "s",
        "port": "u",
        "subject": "s",
        "issuer": "s",
        "fingerprint": "s",
        "not_before": "t",
        "not_after": "t",
        "reason": "s",
        "der": "ay",
    }


def test_only_the_certificate_the_error_names_is_shown(cert: x509.Certificate) -> None:
    assert presented_certificate(untrusted(cert)) == cert
    other = "AB:" * 31 + "AB"
    assert presented_certificate(untrusted(cert, shown=other)) is None
    assert presented_certificate(TlsUntrustedError("h", 443, "unavailable")) is None


def test_other_prompts_carry_no_certificate() -> None:
    from escd.operation import CONFIRM_FORMAT_PROMPT

    assert "certificate" not in prompt_vardict(CONFIRM_FORMAT_PROMPT)


@pytest.fixture
def stdin() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        try:
            os.close(fd)
        except OSError:
            pass


async def answer(
    cert: x509.Certificate, stdin: tuple[int, int], typed: bytes | None, presets: Presets
) -> tuple[dict[str, object], str]:
    read, write = stdin
    if typed is not None:
        os.write(write, typed)
    os.close(write)
    err = io.StringIO()
    agent = TerminalAgent(presets, interactive=True, stdin_fd=read, err=err)
    values = await agent.answer(request_for(cert))
    return dict(values), err.getvalue()


@pytest.mark.parametrize(
    ("typed", "trusted"), [(b"y\n", True), (b"yes\n", True), (b"n\n", False), (b"\n", False)]
)
async def test_escctl_shows_the_certificate_and_asks(
    cert: x509.Certificate, stdin: tuple[int, int], typed: bytes, trusted: bool
) -> None:
    values, shown = await answer(cert, stdin, typed, Presets())
    assert values == {"trust": trusted}
    assert "Untrusted certificate from the TPS tps.example.com:8443" in shown
    assert "  server:  tps.example.com:8443" in shown
    assert f"  subject: {cert.subject.rfc4514_string()}" in shown
    assert f"  issuer:  {cert.issuer.rfc4514_string()}" in shown
    assert f"  SHA-256: {fingerprint(cert)}" in shown
    assert "  valid:   " in shown and " UTC to " in shown
    assert "Trust this server? [y/N] " in shown


async def test_without_input_escctl_declines_rather_than_cancels(
    cert: x509.Certificate, stdin: tuple[int, int]
) -> None:
    values, shown = await answer(cert, stdin, None, Presets())
    assert values == {"trust": False}
    assert "not trusting it" in shown


async def test_trust_server_pins_only_the_fingerprint_given(
    cert: x509.Certificate, stdin: tuple[int, int]
) -> None:
    given = parse_fingerprint(fingerprint(cert).lower().replace(":", " "))
    values, shown = await answer(cert, stdin, b"n\n", Presets(trust_server=given))
    assert values == {"trust": True}  # nothing was read from stdin
    assert "Trust this server?" not in shown


async def test_trust_server_with_another_fingerprint_declines(
    cert: x509.Certificate, stdin: tuple[int, int]
) -> None:
    values, shown = await answer(cert, stdin, b"y\n", Presets(trust_server="ab" * 32))
    assert values == {"trust": False}
    assert "not the one given with --trust-server" in shown
    assert "Trust this server?" not in shown


@pytest.mark.parametrize("text", ["AB:CD", "zz" * 32, ""])
def test_a_fingerprint_has_64_hex_digits(text: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_fingerprint(text)
    assert parse_fingerprint("SHA256:" + "AB:" * 31 + "AB") == "ab" * 32
