# SPDX-License-Identifier: GPL-2.0-or-later
"""Real middleware reads simulated tokens: OpenSC and CoolKey through the private pcscd.

``pkcs11-tool`` with ``opensc-pkcs11.so`` and with ``libcoolkeypk11.so`` must see an
enrolled simulated token like a real one (certificate and keys with the subject we put
there, login with the right PIN, a wrong PIN refused and counted on the card) and a
formatted one as a token without objects. libcoolkeypk11 caches ``z0`` by reader name,
CUID and object version (CoolKey slot.cpp, ``SlotMemSegment``): every card here gets a
random CUID.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest
from smartcard import scard

from escd.sim.ca import CertificateAuthority
from escd.sim.card import SimulatedCard, enrolled_card, formatted_card
from escd.sim.pcscd import PrivatePcscd
from escd.sim.state import CardState
from escd.sim.vpcd import VpcdCard
from tests.support.pcsc import wait_for_reader_state

SUBJECT = "CN=Cross Check User,O=Example Org"
PIN = "2468"
OPENSC_DEFAULT = Path("/usr/lib/x86_64-linux-gnu/pkcs11/opensc-pkcs11.so")
COOLKEY_DEFAULT = Path("/usr/lib/pkcs11/libcoolkeypk11.so")


@cache
def _module(package: str, name: str, default: Path) -> Path | None:
    """Where ``package`` installed ``name`` (``dpkg -L``), else the usual Debian path."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", package], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        listing = ""
    for line in listing.splitlines():
        path = Path(line.strip())
        if path.name == name and path.is_file():
            return path
    return default if default.is_file() else None


def _opensc() -> Path:
    module = _module("opensc-pkcs11", "opensc-pkcs11.so", OPENSC_DEFAULT)
    if module is None:
        pytest.skip("opensc-pkcs11.so is not installed")
    return module


def _coolkey() -> Path:
    module = _module("coolkey", "libcoolkeypk11.so", COOLKEY_DEFAULT)
    if module is None:
        pytest.skip("libcoolkeypk11.so is not installed")
    return module


MODULES = {"opensc": _opensc, "coolkey": _coolkey}


def _wait_for(reader: str, wanted: int) -> None:
    """Block in SCardGetStatusChange until pcscd reports ``wanted`` for ``reader``."""
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hresult == scard.SCARD_S_SUCCESS
    try:
        wait_for_reader_state(context, reader, wanted)
    finally:
        scard.SCardReleaseContext(context)


Plug = Callable[[CardState], SimulatedCard]


@pytest.fixture
def plug(pcscd: PrivatePcscd) -> Iterator[Plug]:
    """Insert one simulated card into the first reader; it is pulled after the test."""
    inserted: list[VpcdCard] = []

    def insert(state: CardState) -> SimulatedCard:
        card = SimulatedCard(state)
        vpcd = VpcdCard(card, pcscd.port_for(0))
        vpcd.insert()
        inserted.append(vpcd)
        _wait_for(pcscd.readers[0], scard.SCARD_STATE_PRESENT)
        return card

    yield insert
    for vpcd in inserted:
        vpcd.remove()
    _wait_for(pcscd.readers[0], scard.SCARD_STATE_EMPTY)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


def pkcs11_tool(pcscd: PrivatePcscd, module: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pkcs11-tool", "--module", str(module), *args],
        env={**os.environ, **pcscd.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _enrolled(ca: CertificateAuthority) -> CardState:
    return enrolled_card(cuid=os.urandom(10), subject=SUBJECT, pin=PIN, pin_tries=5, ca=ca)


def _tries(card: SimulatedCard) -> int:
    assert card.state.applet is not None
    return card.state.applet.pins[0].tries_left


@pytest.mark.parametrize("middleware", list(MODULES))
def test_enrolled_token_lists_certificate_and_keys_with_our_subject(
    pcscd: PrivatePcscd, plug: Plug, ca: CertificateAuthority, middleware: str
) -> None:
    module = MODULES[middleware]()
    plug(_enrolled(ca))
    result = pkcs11_tool(pcscd, module, "-O")
    assert result.returncode == 0, result.stderr
    assert "Certificate Object; type = X.509 cert" in result.stdout
    assert "Public Key Object; RSA 2048 bits" in result.stdout
    assert "label:      signing key for Cross Check User" in result.stdout
    assert "CN=Cross Check User" in result.stdout and "O=Example Org" in result.stdout
    assert "ID:         00" in result.stdout
    listing = pkcs11_tool(pcscd, module, "-L")
    assert "Cross Check User" in listing.stdout
    if middleware == "opensc":
        # OpenSC's PKCS#15 emulation marks private keys CKA_PRIVATE: visible after login.
        assert "Private Key Object" not in result.stdout
    else:
        assert "token initialized" in pkcs11_tool(pcscd, module, "-T").stdout


@pytest.mark.parametrize("middleware", list(MODULES))
def test_login_with_the_right_pin_shows_the_private_key(
    pcscd: PrivatePcscd, plug: Plug, ca: CertificateAuthority, middleware: str
) -> None:
    module = MODULES[middleware]()
    card = plug(_enrolled(ca))
    result = pkcs11_tool(pcscd, module, "-O", "--login", "--pin", PIN)
    assert result.returncode == 0, result.stderr
    assert "Private Key Object; RSA" in result.stdout
    assert "Certificate Object" in result.stdout
    assert _tries(card) == 5


@pytest.mark.parametrize("middleware", list(MODULES))
def test_wrong_pin_is_refused_and_counted_on_the_card(
    pcscd: PrivatePcscd, plug: Plug, ca: CertificateAuthority, middleware: str
) -> None:
    module = MODULES[middleware]()
    card = plug(_enrolled(ca))
    first = pkcs11_tool(pcscd, module, "-O", "--login", "--pin", "9999")
    assert first.returncode != 0
    assert "CKR_PIN_INCORRECT" in first.stderr
    assert _tries(card) == 4
    second = pkcs11_tool(pcscd, module, "-O", "--login", "--pin", "0000")
    assert second.returncode != 0
    assert _tries(card) == 3
    good = pkcs11_tool(pcscd, module, "-O", "--login", "--pin", PIN)
    assert good.returncode == 0, good.stderr
    assert _tries(card) == 5


@pytest.mark.parametrize("middleware", list(MODULES))
def test_formatted_token_is_not_enrolled_and_has_no_objects(
    pcscd: PrivatePcscd, plug: Plug, middleware: str
) -> None:
    module = MODULES[middleware]()
    state = formatted_card(cuid=os.urandom(10), phone_home_url="http://tps.example/phoneHome")
    plug(state)
    result = pkcs11_tool(pcscd, module, "-O")
    assert result.returncode == 0, result.stderr
    assert "Object" not in result.stdout
    listing = pkcs11_tool(pcscd, module, "-L").stdout
    if middleware == "coolkey":
        assert "token state:   uninitialized" in listing
    else:
        # No z0: OpenSC falls back to the CPLC for the serial and calls the token COOLKEY.
        assert "token label        : COOLKEY" in listing
        assert f"serial num         : {state.cuid.hex()[-16:]}" in listing
