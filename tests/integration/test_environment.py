# SPDX-License-Identifier: GPL-2.0-or-later
"""The private pcscd and session bus the other integration tests stand on."""

from __future__ import annotations

import subprocess

from smartcard import scard

from escd.sim.bus import PrivateBus
from escd.sim.pcscd import PrivatePcscd


def test_private_pcscd_offers_two_vpcd_readers(pcscd: PrivatePcscd) -> None:
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hresult == scard.SCARD_S_SUCCESS
    try:
        hresult, readers = scard.SCardListReaders(context, [])
        assert hresult == scard.SCARD_S_SUCCESS
        assert readers == pcscd.readers
    finally:
        scard.SCardReleaseContext(context)


def test_private_bus_answers_get_id(session_bus: PrivateBus) -> None:
    result = subprocess.run(
        ["dbus-send", f"--bus={session_bus.address}", "--print-reply",
         "--dest=org.freedesktop.DBus", "/", "org.freedesktop.DBus.GetId"],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    assert "string" in result.stdout
