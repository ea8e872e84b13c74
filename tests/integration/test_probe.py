# SPDX-License-Identifier: GPL-2.0-or-later
"""Simulated cards in a real pcscd (vpcd): identify over PcscCardSession, and ``escd probe``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from escd.card.identify import identify
from escd.errors import CardError, CardRemovedError, PcscAccessDeniedError, PcscUnavailableError
from escd.model import AppletKind, TokenInfo, TokenState
from escd.pcsc.connection import PcscCallError, PcscCardSession, error_for
from escd.sim.card import SimulatedCard, blank_card, enrolled_card, formatted_card
from escd.sim.pcscd import PrivatePcscd
from escd.sim.state import CardState
from escd.sim.vpcd import VpcdCard

PHONE_HOME = "http://tps.example.com:8080/tps/phoneHome"
#: pcscd polls vpcd slots every 400 ms; this is plenty for it to notice a card.
PRESENCE_TIMEOUT = 5.0

Plug = Callable[[CardState, int], VpcdCard]


@pytest.fixture
def plug(pcscd: PrivatePcscd) -> Iterator[Plug]:
    """Insert a simulated card into a slot of the private pcscd; pulled after the test."""
    inserted: list[tuple[VpcdCard, str]] = []

    def insert(state: CardState, slot: int) -> VpcdCard:
        card = VpcdCard(SimulatedCard(state), port=pcscd.port_for(slot))
        card.insert()
        inserted.append((card, pcscd.readers[slot]))
        assert card.seen.wait(PRESENCE_TIMEOUT), "pcscd never asked the card for its ATR"
        _open_when_present(pcscd.readers[slot]).close()
        return card

    yield insert
    for card, reader in inserted:
        card.remove()
        _wait_absent(reader)


def _open_when_present(reader: str) -> PcscCardSession:
    # pcscd marks the slot present a moment after it read the ATR: retry until it has.
    deadline = time.monotonic() + PRESENCE_TIMEOUT
    while True:
        try:
            return PcscCardSession.open(reader)
        except CardRemovedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _wait_absent(reader: str) -> None:
    # Leave the slot empty for the next test: until pcscd has noticed, a connect succeeds.
    deadline = time.monotonic() + PRESENCE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            PcscCardSession.open(reader).close()
        except CardRemovedError:
            return
        except CardError:
            pass  # the card is half gone: pcscd will say "removed" on its next poll
        time.sleep(0.02)
    raise AssertionError(f"pcscd still sees a card in {reader}")


def _identify(reader: str) -> TokenInfo:
    with PcscCardSession.open(reader) as session:
        session.begin_transaction()
        try:
            return identify(session, reader)
        finally:
            session.end_transaction()


def _probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "escd", "probe", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _env(pcscd: PrivatePcscd) -> dict[str, str]:
    return {**os.environ, **pcscd.env}


def test_blank_card_is_no_applet_through_pcscd(pcscd: PrivatePcscd, plug: Plug) -> None:
    state = blank_card()
    plug(state, 0)
    info = _identify(pcscd.readers[0])
    assert info.state is TokenState.NO_APPLET
    assert info.cuid == state.cuid.hex()
    assert info.atr == state.atr
    assert info.problem == ""


def test_formatted_card_is_uninitialized_through_pcscd(pcscd: PrivatePcscd, plug: Plug) -> None:
    state = formatted_card(phone_home_url=PHONE_HOME)
    plug(state, 1)
    info = _identify(pcscd.readers[1])
    assert info.state is TokenState.UNINITIALIZED
    assert info.applet is AppletKind.COOLKEY
    assert info.applet_version == (1, 1)
    assert info.cuid == state.cuid.hex()
    assert info.phone_home_url == PHONE_HOME
    assert info.problem == ""


def test_enrolled_card_is_enrolled_with_its_certificate(pcscd: PrivatePcscd, plug: Plug) -> None:
    state = enrolled_card(subject="CN=Alice Example,O=Example Org")
    plug(state, 0)
    info = _identify(pcscd.readers[0])
    assert info.state is TokenState.ENROLLED
    assert info.cuid == state.cuid.hex()
    assert info.token_name == "Alice Example"
    assert [c.subject for c in info.certificates] == ["CN=Alice Example,O=Example Org"]
    assert info.certificates[0].label == "signing key for Alice Example"
    assert info.problem == ""


def test_probe_json_reads_every_card(pcscd: PrivatePcscd, plug: Plug) -> None:
    blank, enrolled = blank_card(), enrolled_card(subject="CN=Bob Example")
    plug(blank, 0)
    plug(enrolled, 1)
    result = _probe(_env(pcscd), "--json")
    assert result.returncode == 0, result.stderr
    entries = {entry["reader"]: entry for entry in json.loads(result.stdout)}
    first, second = (entries[reader] for reader in pcscd.readers)
    assert (first["state"], first["cuid"]) == ("no-applet", blank.cuid.hex())
    assert (second["state"], second["cuid"]) == ("enrolled", enrolled.cuid.hex())
    assert second["applet_version"] == "1.1"
    assert [c["subject"] for c in second["certificates"]] == ["CN=Bob Example"]
    assert set(second) >= {
        "reader", "atr", "cuid", "msn", "state", "applet", "applet_version", "applet_release",
        "build_id", "life_cycle", "pin_tries_left", "phone_home_url", "token_name",
        "certificates", "problem",
    }  # fmt: skip


def test_probe_table_of_one_reader(pcscd: PrivatePcscd, plug: Plug) -> None:
    state = formatted_card(phone_home_url=PHONE_HOME)
    plug(state, 1)
    result = _probe(_env(pcscd), "--reader", pcscd.readers[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{pcscd.readers[1]}:\n")
    assert "uninitialized" in result.stdout
    assert state.cuid.hex() in result.stdout
    assert PHONE_HOME in result.stdout
    assert pcscd.readers[0] not in result.stdout


def test_probe_with_empty_readers_says_so(pcscd: PrivatePcscd) -> None:
    result = _probe(_env(pcscd))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{reader}: no card" for reader in pcscd.readers]
    as_json = _probe(_env(pcscd), "--json")
    assert (as_json.returncode, json.loads(as_json.stdout)) == (0, [])


def test_probe_of_an_unknown_reader_exits_1(pcscd: PrivatePcscd) -> None:
    result = _probe(_env(pcscd), "--reader", "no such reader")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no reader named 'no such reader'" in result.stderr


def test_probe_without_pcscd_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd.comm")}
    result = _probe(env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("escd probe: pcscd is not available")


# -- the PC/SC session itself -----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (0x80100069, CardRemovedError),  # SCARD_W_REMOVED_CARD
        (0x80100068, CardRemovedError),  # SCARD_W_RESET_CARD
        (0x8010000C, CardRemovedError),  # SCARD_E_NO_SMARTCARD
        (0x80100069 - (1 << 32), CardRemovedError),  # as pyscard may hand it out: negative
        (0x8010001D, PcscUnavailableError),  # SCARD_E_NO_SERVICE
        (0x80100013, PcscUnavailableError),  # SCARD_F_COMM_ERROR
        (0x8010001E, PcscUnavailableError),  # SCARD_E_SERVICE_STOPPED
        (0x80100027, PcscAccessDeniedError),  # SCARD_E_NO_ACCESS
        (0x8010006A, PcscAccessDeniedError),  # SCARD_W_SECURITY_VIOLATION
        (0x8010000B, CardError),  # SCARD_E_SHARING_VIOLATION
        (0x80100066, CardError),  # SCARD_W_UNRESPONSIVE_CARD
    ],
)
def test_pcsc_codes_map_to_our_errors(code: int, error: type[Exception]) -> None:
    mapped = error_for(code, "doing something")
    assert type(mapped) is error
    assert str(mapped).startswith("doing something: ")


def test_connecting_to_an_empty_reader_is_card_removed(pcscd: PrivatePcscd) -> None:
    with pytest.raises(CardRemovedError):
        PcscCardSession.open(pcscd.readers[0])


def test_connecting_to_an_unknown_reader_is_a_card_error(pcscd: PrivatePcscd) -> None:
    with pytest.raises(CardError) as caught:
        PcscCardSession.open("no such reader")
    assert not isinstance(caught.value, CardRemovedError)
    assert isinstance(caught.value.__cause__, PcscCallError)


def test_session_transacts_resets_and_closes(pcscd: PrivatePcscd, plug: Plug) -> None:
    state = formatted_card()
    plug(state, 0)
    reader = pcscd.readers[0]
    session = PcscCardSession.open(reader)
    assert session.reader == reader
    assert session.atr == state.atr
    session.begin_transaction()
    assert session.transmit(bytes.fromhex("00A4040007627601FF000000")) == b"\x90\x00"
    assert session.transmit(bytes.fromhex("B0F2000001")) == b"\x07\x90\x00"
    session.end_transaction()
    # After a warm reset the card manager is selected again: CoolKey commands get 6E00.
    session.reset()
    assert session.atr == state.atr
    assert session.transmit(bytes.fromhex("B0F2000001")) == b"\x6e\x00"
    session.close()
    session.close()
    with pytest.raises(CardError, match="closed"):
        session.transmit(bytes.fromhex("B0F2000001"))
