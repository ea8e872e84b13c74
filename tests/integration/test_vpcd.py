# SPDX-License-Identifier: GPL-2.0-or-later
"""Simulated cards in a real pcscd through vpcd, seen with pyscard's PC/SC calls."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from smartcard import scard

from escd.sim.card import SimulatedCard, blank_card, enrolled_card, formatted_card
from escd.sim.pcscd import PrivatePcscd
from escd.sim.vpcd import VpcdCard
from tests.support.pcsc import wait_for_reader_state

H = bytes.fromhex
SELECT_COOLKEY = H("00A4040007627601FF000000")


@pytest.fixture
def context(pcscd: PrivatePcscd) -> Iterator[int]:
    hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hresult == scard.SCARD_S_SUCCESS
    yield ctx
    scard.SCardReleaseContext(ctx)


def _connect(ctx: int, reader: str) -> int:
    hresult, card, protocol = scard.SCardConnect(
        ctx, reader, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
    )
    assert hresult == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hresult)
    assert protocol == scard.SCARD_PROTOCOL_T0
    return int(card)


def _transmit(card: int, apdu: bytes) -> bytes:
    hresult, response = scard.SCardTransmit(card, scard.SCARD_PCI_T0, list(apdu))
    assert hresult == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hresult)
    return bytes(response)


@pytest.fixture
def plugged(pcscd: PrivatePcscd, context: int) -> Iterator[list[VpcdCard]]:
    """Cards the test inserts; each is pulled afterwards and the slot seen empty again."""
    cards: list[VpcdCard] = []
    yield cards
    for vpcd in cards:
        if vpcd.inserted:
            vpcd.remove()
    for reader in pcscd.readers:
        wait_for_reader_state(context, reader, scard.SCARD_STATE_EMPTY)


def test_inserted_card_is_seen_answers_and_its_removal_is_seen(
    pcscd: PrivatePcscd, context: int, plugged: list[VpcdCard]
) -> None:
    reader = pcscd.readers[0]
    wait_for_reader_state(context, reader, scard.SCARD_STATE_EMPTY)
    vpcd = VpcdCard(SimulatedCard(formatted_card()), pcscd.port_for(0))
    plugged.append(vpcd)
    vpcd.insert()
    assert wait_for_reader_state(context, reader, scard.SCARD_STATE_PRESENT) == vpcd.card.atr
    card = _connect(context, reader)
    assert _transmit(card, SELECT_COOLKEY) == H("9000")
    assert _transmit(card, H("B0F2000004")) == H("070001019000")
    assert _transmit(card, H("B03C010000")) == H("6D00")
    vpcd.remove()
    wait_for_reader_state(context, reader, scard.SCARD_STATE_EMPTY)
    hresult, _ = scard.SCardTransmit(card, scard.SCARD_PCI_T0, list(SELECT_COOLKEY))
    assert hresult != scard.SCARD_S_SUCCESS
    scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)


def test_two_cards_in_the_two_readers_at_once(
    pcscd: PrivatePcscd, context: int, plugged: list[VpcdCard]
) -> None:
    cuids = [H("40907001AAAA00000001"), H("40907001BBBB00000002")]
    states = [blank_card(cuid=cuids[0]), enrolled_card(cuid=cuids[1], key_bits=1024)]
    for slot, state in enumerate(states):
        vpcd = VpcdCard(SimulatedCard(state), pcscd.port_for(slot))
        plugged.append(vpcd)
        vpcd.insert()
    cards = []
    for reader in pcscd.readers:
        wait_for_reader_state(context, reader, scard.SCARD_STATE_PRESENT)
        cards.append(_connect(context, reader))
    for card, cuid, select in zip(cards, cuids, (H("6A82"), H("9000")), strict=True):
        assert _transmit(card, SELECT_COOLKEY) == select
        assert _transmit(card, H("00A4040000")) == H("9000")
        cplc = _transmit(card, H("80CA9F7F2D"))
        assert cplc[-2:] == H("9000")
        assert cplc[3:7] + cplc[19:21] + cplc[15:19] == cuid
    for card in cards:
        scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)


def test_reset_and_power_cycle_through_pcscd_clear_the_login(
    pcscd: PrivatePcscd, context: int, plugged: list[VpcdCard]
) -> None:
    reader = pcscd.readers[1]
    vpcd = VpcdCard(SimulatedCard(enrolled_card(key_bits=1024, pin="1234")), pcscd.port_for(1))
    plugged.append(vpcd)
    vpcd.insert()
    wait_for_reader_state(context, reader, scard.SCARD_STATE_PRESENT)
    card = _connect(context, reader)
    assert _transmit(card, SELECT_COOLKEY) == H("9000")
    assert len(_transmit(card, H("B04200000431323334"))) == 10
    assert _transmit(card, H("B03C000010"))[14:16] == H("0001")
    hresult, _ = scard.SCardReconnect(
        card, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0, scard.SCARD_RESET_CARD
    )
    assert hresult == scard.SCARD_S_SUCCESS
    # After the reset the card manager is selected again and nobody is logged in.
    assert _transmit(card, H("B0F2000001")) == H("6E00")
    assert _transmit(card, SELECT_COOLKEY) == H("9000")
    assert _transmit(card, H("B03C000010"))[14:16] == H("0000")
    assert _transmit(card, H("B04200000439393939")) == H("9C02")
    scard.SCardDisconnect(card, scard.SCARD_UNPOWER_CARD)
    card = _connect(context, reader)
    assert _transmit(card, H("B0F2000001")) == H("6E00")
    assert _transmit(card, SELECT_COOLKEY) == H("9000")
    assert _transmit(card, H("B04A000001")) == H("7E9000")
    scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)


def test_a_hundred_apdus_take_well_under_a_second(
    pcscd: PrivatePcscd, context: int, plugged: list[VpcdCard]
) -> None:
    reader = pcscd.readers[0]
    vpcd = VpcdCard(SimulatedCard(formatted_card()), pcscd.port_for(0))
    plugged.append(vpcd)
    vpcd.insert()
    wait_for_reader_state(context, reader, scard.SCARD_STATE_PRESENT)
    card = _connect(context, reader)
    assert _transmit(card, SELECT_COOLKEY) == H("9000")
    started = time.perf_counter()
    for _ in range(100):
        assert _transmit(card, H("B0F2000004")) == H("070001019000")
    elapsed = time.perf_counter() - started
    print(f"100 APDUs through pcscd + vpcd: {elapsed * 1000:.1f} ms")
    # Without TCP_QUICKACK every APDU costs ~44 ms (4.4 s here); the bound only catches that.
    assert elapsed < 2.0
    scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
