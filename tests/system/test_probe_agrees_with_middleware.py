# SPDX-License-Identifier: GPL-2.0-or-later
"""``escd probe --json`` and real middleware read the same certificate off a simulated token.

OpenSC and CoolKey each export the certificate object through PKCS#11
(``pkcs11-tool --read-object``); its SHA-256, serial and subject must be exactly what
``escd probe`` reports, read by escd's own card layer through the same private pcscd.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from escd.sim.card import enrolled_card
from escd.sim.pcscd import PrivatePcscd
from tests.system.test_middleware_cross_check import MODULES, Plug, pkcs11_tool, plug  # noqa: F401

SUBJECT = "CN=Probe Agreement,O=Example Org"


def probe_json(pcscd: PrivatePcscd) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "escd", "probe", "--json", "--reader", pcscd.readers[0]],
        env={**os.environ, **pcscd.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    tokens = json.loads(result.stdout)
    assert isinstance(tokens, list)
    return tokens


@pytest.mark.parametrize("middleware", list(MODULES))
def test_probe_reports_the_certificate_the_middleware_reads(
    pcscd: PrivatePcscd,
    plug: Plug,  # noqa: F811 - the fixture imported above
    middleware: str,
    tmp_path: Path,
) -> None:
    module = MODULES[middleware]()
    plug(enrolled_card(cuid=os.urandom(10), subject=SUBJECT, key_bits=1024))
    exported = tmp_path / "cert.der"
    result = pkcs11_tool(
        pcscd, module, "--read-object", "--type", "cert", "--id", "00",
        "--output-file", str(exported),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    der = exported.read_bytes()
    certificate = x509.load_der_x509_certificate(der)

    (token,) = probe_json(pcscd)
    assert token["state"] == "enrolled"
    (reported,) = token["certificates"]  # type: ignore[misc]
    assert reported["sha256"] == hashlib.sha256(der).hexdigest()
    assert reported["serial"] == format(certificate.serial_number, "x")
    assert reported["subject"] == certificate.subject.rfc4514_string()
    assert "CN=Probe Agreement" in reported["subject"]
