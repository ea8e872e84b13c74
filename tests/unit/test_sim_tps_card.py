# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated TPS's card-side building blocks (``CardLink``, ``SecureChannel``, ``Tks``)
against a simulated card: getAppletInfo, protocol discovery, the secure channel checks,
the LOAD loop, and the TKS's key sets.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from escd.card.apdu import CommandApdu
from escd.sim.card import SimulatedCard, blank_card, formatted_card
from escd.sim.scp import (
    DEVELOPER_KEY,
    ScpProtocol,
    SecureChannelCard,
    SecureChannelHost,
    SecurityLevel,
    StaticKeys,
    diversify_visa2,
    unwrap_challenge,
    wrap_challenge,
)
from escd.sim.state import DEFAULT_APPLET_MEMORY
from escd.sim.tps_card import CardLink
from escd.sim.tps_channel import Conversation, SessionBroken, Tks, TpsFailure, float32
from escd.sim.tps_config import CLEAN, TpsConfig
from escd.tps.messages import Message, TokenPduRequest, TokenPduResponse, TpsMessage
from tests.unit.test_sim_tps_flows import LoopbackClient

H = bytes.fromhex


def make_link(
    card: SimulatedCard,
    config: TpsConfig | None = None,
    override: Callable[[TpsMessage], Message | None] | None = None,
) -> tuple[CardLink, Conversation]:
    conversation = Conversation(LoopbackClient(card, override=override), status_updates=True)
    return CardLink(conversation, config or TpsConfig(tls=False), Tks()), conversation


def card_of(factory: Callable[..., object] = formatted_card, **kwargs: object) -> SimulatedCard:
    card = SimulatedCard(factory(**kwargs))  # type: ignore[arg-type]
    card.power_on()
    return card


def answer(prefix: str, response: str) -> Callable[[TpsMessage], Message | None]:
    """Answer APDUs starting with ``prefix`` with ``response`` instead of the card."""

    def override(message: TpsMessage) -> Message | None:
        if isinstance(message, TokenPduRequest) and message.apdu.hex().upper().startswith(prefix):
            return TokenPduResponse(H(response))
        return None

    return override


async def test_applet_info_reads_identity_versions_and_signed_memory() -> None:
    card = card_of()
    link, conversation = make_link(card)
    info = await link.applet_info()
    assert info.cuid == card.state.cuid and info.msn == card.state.msn
    assert (info.protocol_major, info.protocol_minor) == (1, 1)
    assert info.version == "1.4.58768072"
    assert info.card_manager == H("A0000000030000")
    # CardEdge reports 5000 = 0x1388; Java reads signed bytes: 4864 - 120 = 4744
    # (Dogtag TPSProcessor.java:3456-3466).
    assert DEFAULT_APPLET_MEMORY == 0x1388 and info.total_memory == 4744
    clean_link, _ = make_link(card, TpsConfig(tls=False, quirks=CLEAN))
    assert (await clean_link.applet_info()).total_memory == 5000
    assert len(conversation.transcript.apdus) == 7


async def test_applet_info_of_blank_card_has_no_version_and_no_memory() -> None:
    link, _ = make_link(card_of(blank_card))
    info = await link.applet_info()
    assert info.version is None and info.total_memory == 0 and info.applet_major == 0


async def test_fci_names_the_card_manager_to_select() -> None:
    card = card_of()
    card.state.select_fci = True
    link, conversation = make_link(card)
    info = await link.applet_info()
    assert info.card_manager == H("A000000003000000")
    assert conversation.transcript.apdus[1] == H("00A4040008A00000000300000000")


async def test_default_select_is_retried_with_the_le_of_6cxx() -> None:
    seen: list[bytes] = []

    def override(message: TpsMessage) -> Message | None:
        if isinstance(message, TokenPduRequest) and message.apdu == H("00A4040000"):
            seen.append(message.apdu)
            return TokenPduResponse(H("6C12"))
        return None

    link, conversation = make_link(card_of(), override=override)
    await link.applet_info()
    assert conversation.transcript.apdus[:2] == [H("00A4040000"), H("00A4040012")]
    assert seen == [H("00A4040000")]  # the retry is not the default SELECT again


async def test_no_card_manager_is_status_45() -> None:
    link, _ = make_link(card_of(), override=answer("00A4040000", "6A82"))
    with pytest.raises(TpsFailure) as failure:
        await link.applet_info()
    assert failure.value.status == 45


async def test_short_cplc_is_status_17() -> None:
    link, _ = make_link(card_of(), override=answer("80CA9F7F", "9F7F01009000"))
    with pytest.raises(TpsFailure) as failure:
        await link.applet_info()
    assert failure.value.status == 17


async def test_get_version_of_wrong_length_is_status_8() -> None:
    link, _ = make_link(card_of(), override=answer("B0700000", "01029000"))
    with pytest.raises(TpsFailure) as failure:
        await link.applet_info()
    assert failure.value.status == 8


async def test_bare_9000_to_get_lifecycle_kills_the_session() -> None:
    link, _ = make_link(card_of(blank_card), override=answer("B0F20000", "9000"))
    with pytest.raises(SessionBroken):
        await link.lifecycle_state()
    link, _ = make_link(card_of(blank_card))
    assert await link.lifecycle_state() == 0xF0


async def test_discovery_falls_back_to_scp01_when_get_data_fails() -> None:
    link, conversation = make_link(card_of(), override=answer("80CA0066", "6D00"))
    platform = await link.discover()
    assert platform.protocol == 1 and not platform.gp211
    await link.discover()  # once per session
    assert [a[:4].hex().upper() for a in conversation.transcript.apdus].count("80CA0066") == 1


async def test_scp02_other_than_i15_is_refused() -> None:
    card = card_of(protocol=ScpProtocol.SCP02)
    data = "66 31 73 2F 06 07 2A864886FC6B01 60 0C 06 0A 2A864886FC6B02020101"
    data += " 63 09 06 07 2A864886FC6B03 64 0B 06 09 2A864886FC6B04 02 55 9000"
    link, _ = make_link(card, override=answer("80CA0066", data.replace(" ", "")))
    with pytest.raises(TpsFailure) as failure:
        await link.discover()
    assert failure.value.status == 1


async def test_channel_to_a_card_with_other_static_keys_fails_before_ext_auth() -> None:
    card = card_of()
    card.knobs.wrong_static_keys = True
    link, conversation = make_link(card)
    with pytest.raises(TpsFailure) as failure:
        await link.open_channel()
    assert failure.value.status == 17
    assert conversation.transcript.apdus[-1][:2] == H("8050")


async def test_key_version_zero_is_out_of_range() -> None:
    card = card_of()
    keys = card.state.key_sets.pop(0x01)
    card.state.key_sets[0x00] = keys
    card.state.key_version = 0x00
    link, _ = make_link(card)
    with pytest.raises(TpsFailure) as failure:
        await link.open_channel()
    assert failure.value.status == 17


async def test_tks_diversifies_master_keys_with_visa2() -> None:
    master = bytes(range(0x20, 0x30))
    card = SimulatedCard(formatted_card(cuid=H("A00192030405060708C9"), key_version=0x02))
    card.state.key_sets = {0x02: diversify_visa2(master, card.state.cuid)}
    card.power_on()
    conversation = Conversation(LoopbackClient(card), status_updates=False)
    link = CardLink(conversation, TpsConfig(tls=False), Tks(master))
    channel = await link.open_channel()
    assert link.key_info == "0201"
    assert channel.static_kek == diversify_visa2(master, card.state.cuid).kek
    assert Tks().card_keys(H("0101"), bytes(10)) == StaticKeys.developer()
    assert Tks().card_keys(H("FF01"), bytes(10)).kek == DEVELOPER_KEY


def test_challenge_wrapping_matches_vector_f() -> None:
    wrapped = wrap_challenge(DEVELOPER_KEY, bytes(range(16)))
    assert wrapped == H("F1D75E4F0D37C22CB8D54E6253BB40B1")
    assert unwrap_challenge(DEVELOPER_KEY, wrapped) == bytes(range(16))


@pytest.mark.parametrize(
    ("size", "java_loop", "blocks", "last_p1"),
    [
        (15409, True, 75, 0x80),
        (208 * 10 - 4, True, 10, 0x00),  # exact multiple: Java never sends P1=80
        (208 * 10 - 4, False, 10, 0x80),
    ],
)
async def test_load_loop_blocks_and_last_block_marker(
    size: int, java_loop: bool, blocks: int, last_p1: int
) -> None:
    card = card_of(blank_card)
    link, conversation = make_link(card)
    await link.applet_info()
    await link.discover()
    channel = await link.open_channel()
    data = b"\xc4\x82" + (size).to_bytes(2, "big") + bytes(size)
    await channel.install_load(H("627601FF0000"), H("A0000000030000"), size)
    await channel.load_file(data, 224, 10, 90, java_loop=java_loop)
    loads = [a for a in conversation.transcript.apdus if a[:2] == H("84E8")]
    assert len(loads) == blocks and loads[-1][2] == last_p1
    assert [a[3] for a in loads] == list(range(blocks))
    progress = [p for p, _ in conversation.transcript.progress]
    assert progress[0] == 10 and progress == sorted(progress)


def test_java_float_progress() -> None:
    step = float32(80 / 68)
    assert [10 + int(float32(n * step)) for n in (0, 17, 68, 74)] == [10, 30, 90, 97]


def test_card_side_helper_is_the_same_channel_code() -> None:
    # The TPS and the simulated card share escd.sim.scp; one real handshake end to end.
    card = SecureChannelCard(
        StaticKeys.developer(), kdd=bytes(10), key_version=1, protocol=ScpProtocol.SCP01
    )
    answer = card.initialize_update(bytes(8))
    assert len(answer) == 28
    host = SecureChannelHost(StaticKeys.developer(), host_challenge=bytes(8))
    host.open(answer)
    ext_auth = CommandApdu.decode(host.external_authenticate())
    assert card.external_authenticate(ext_auth) is SecurityLevel.C_DEC_C_MAC
    wire = host.wrap(CommandApdu(0x84, 0xF0, 0x0F, 0x00))
    assert card.unwrap(CommandApdu.decode(wire)) == CommandApdu(0x84, 0xF0, 0x0F, 0x00)
