# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated CoolKey card, driven with raw APDU bytes as clients and the TPS send them.

Covers the card manager (selection, GET DATA, secure channel, content management), the
applet (every command the daemon, OpenSC, libcoolkeypk11 and the TPS send), the failure
knobs, persistence, the synthetic load file, and the in-process reader backend that
hosts cards.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from escd.card.apdu import CommandApdu
from escd.card.coolkey import IssuerInfo
from escd.card.objects import COMBINED_OBJECT_ID, decode_combined_object
from escd.errors import CardError, CardRemovedError
from escd.readers import CardInserted, CardRemoved, ReaderAdded, ReaderEvent
from escd.sim.ca import CertificateAuthority, parse_dn
from escd.sim.card import (
    SimulatedCard,
    blank_card,
    enrolled_card,
    formatted_card,
)
from escd.sim.loadfile import (
    SHIPPED_FILE_SIZE,
    LoadFile,
    split_load_data,
)
from escd.sim.reader import SimReaderBackend
from escd.sim.scp import (
    ScpCryptogramError,
    ScpProtocol,
    SecureChannelHost,
    SecurityLevel,
    StaticKeys,
    des3_cbc_encrypt,
    kcv,
    pad80,
    wrap_challenge,
)
from escd.sim.state import CardState
from escd.sim.tps_config import KeyUse

H = bytes.fromhex
COOLKEY_AID = "627601FF000000"
SELECT_COOLKEY = "00A4040007" + COOLKEY_AID
SELECT_ISD = "00A4040007A0000000030000"
ZERO_NONCE = "0000000000000000"
URL = "http://tps.example.test:8080/tps/phoneHome"
DEV = StaticKeys.developer()


def issuer_info(url: str) -> bytes:
    """The 224-byte block SET ISSUER INFO writes."""
    return IssuerInfo.from_url(url).raw


# -- helpers ------------------------------------------------------------------------------


def tx(card: SimulatedCard, apdu: str | bytes) -> tuple[bytes, int]:
    raw = H(apdu.replace(" ", "")) if isinstance(apdu, str) else apdu
    response = card.transmit(raw)
    return response[:-2], int.from_bytes(response[-2:], "big")


def ok(card: SimulatedCard, apdu: str | bytes) -> bytes:
    data, sw = tx(card, apdu)
    assert sw == 0x9000, f"{apdu!r} answered {sw:04X}"
    return data


class Tps:
    """The host end of a secure channel, as the TPS drives it."""

    def __init__(self, card: SimulatedCard, keys: StaticKeys = DEV) -> None:
        self.card = card
        self.keys = keys
        self.host: SecureChannelHost | None = None

    def open(self, level: SecurityLevel = SecurityLevel.C_DEC_C_MAC, key_version: int = 0) -> None:
        host = SecureChannelHost(self.keys)
        data = ok(self.card, host.initialize_update(key_version))
        host.open(data)
        ok(self.card, host.external_authenticate(level))
        self.host = host

    def sm(self, header: str, data: bytes = b"", le: int | None = None) -> tuple[bytes, int]:
        assert self.host is not None
        cla, ins, p1, p2 = H(header)
        return tx(self.card, self.host.wrap(CommandApdu(cla, ins, p1, p2, data, le)))

    def sm_ok(self, header: str, data: bytes = b"", le: int | None = None) -> bytes:
        response, sw = self.sm(header, data, le)
        assert sw == 0x9000, f"{header} answered {sw:04X}"
        return response


def read_object(card: SimulatedCard, object_id: bytes, nonce: str = ZERO_NONCE) -> bytes:
    size = len(card.state.applet.find_object(object_id).data)  # type: ignore[union-attr]
    out = b""
    while len(out) < size:
        chunk = min(0xFF, size - len(out))
        request = object_id + len(out).to_bytes(4, "big") + bytes((chunk,)) + H(nonce)
        out += ok(card, b"\xb0\x56\x00\x00" + bytes((len(request),)) + request)
    return out


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture(scope="module")
def enrolled_template(ca: CertificateAuthority) -> CardState:
    return enrolled_card(
        cuid=H("40907001123400ABCDEF"),
        subject="CN=Test User,O=Example",
        key_bits=1024,
        ca=ca,
        pin="1234",
        pin_tries=3,
        phone_home_url=URL,
    )


def _fresh(state: CardState) -> SimulatedCard:
    # A JSON round trip gives every test its own copy and exercises the persistence format.
    card = SimulatedCard(CardState.from_json(json.loads(json.dumps(state.to_json()))))
    card.power_on()
    return card


@pytest.fixture
def enrolled(enrolled_template: CardState) -> SimulatedCard:
    return _fresh(enrolled_template)


@pytest.fixture
def formatted() -> SimulatedCard:
    card = SimulatedCard(formatted_card(cuid=H("40907001000100000001"), phone_home_url=URL))
    card.power_on()
    return card


@pytest.fixture
def blank() -> SimulatedCard:
    card = SimulatedCard(blank_card(cuid=H("40907001000200000002")))
    card.power_on()
    return card


# -- selection and the card manager ---------------------------------------------------------


@pytest.mark.parametrize(
    "apdu",
    ["B0F2000001", "B0F2000004", "B03C000010", "B0700000 04", "B05800000E", "B0F60000E0"],
)
def test_blank_card_answers_coolkey_commands_with_6e00_never_bare_9000(
    blank: SimulatedCard, apdu: str
) -> None:
    assert tx(blank, SELECT_COOLKEY) == (b"", 0x6A82)
    assert tx(blank, apdu) == (b"", 0x6E00)


def test_applet_select_answers_exactly_9000_without_data(formatted: SimulatedCard) -> None:
    assert formatted.transmit(H(SELECT_COOLKEY)) == H("9000")
    assert formatted.transmit(H("00A4040007627601FF00000000")) == H("9000")


def test_default_select_answers_bare_9000_unless_the_fci_switch_is_on(
    blank: SimulatedCard,
) -> None:
    assert blank.transmit(H("00A4040000")) == H("9000")
    blank.state.select_fci = True
    assert blank.transmit(H("00A4040000")) == H("6F108408A000000003000000A5049F6501FF9000")


@pytest.mark.parametrize(
    "apdu",
    [
        SELECT_ISD,
        "00A4040C07A0000000030000",
        "00A4040008A000000003000000",
        "00A4040007A0000001510000",
    ],
)
def test_every_card_manager_aid_selects_the_isd(formatted: SimulatedCard, apdu: str) -> None:
    ok(formatted, SELECT_COOLKEY)
    assert tx(formatted, apdu) == (b"", 0x9000)
    assert len(ok(formatted, "80CA9F7F2D")) == 45


def test_unknown_aid_is_6a82_and_keeps_the_applet_selected(formatted: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    assert tx(formatted, "00A4040009A00000030800001000")[1] == 0x6A82
    assert ok(formatted, "B0F2000001") == b"\x07"


def test_cplc_carries_cuid_and_msn_where_libckyapplet_and_the_tps_read_them(
    formatted: SimulatedCard,
) -> None:
    response = ok(formatted, "80CA9F7F2D")
    assert len(response) == 45 and response[:3] == H("9F7F2A")
    cuid = response[3:7] + response[19:21] + response[15:19]
    assert cuid == H("40907001000100000001")
    assert response[41:45] == formatted.state.msn
    assert tx(formatted, "80CA9F7F10") == (b"", 0x6C2D)


def test_get_data_card_recognition_and_key_info_parse_as_the_tps_does() -> None:
    for protocol, expected in ((ScpProtocol.SCP01, H("0105")), (ScpProtocol.SCP02, H("0215"))):
        card = SimulatedCard(blank_card(protocol=protocol))
        card.power_on()
        assert tx(card, "80CA00662D") == (b"", 0x6C33)
        recognition = ok(card, "80CA006633")
        assert recognition[0] == 0x66 and recognition[1] == len(recognition) - 2
        assert recognition[-2:] == expected
        key_info = ok(card, "80CA00E02D")
        version = 0x01 if protocol is ScpProtocol.SCP01 else 0xFF
        assert key_info == H("E012") + b"".join(
            bytes((0xC0, 4, key_id, version, 0x80, 0x10)) for key_id in (1, 2, 3)
        )
        assert len(key_info[2:]) % 6 == 0 and key_info[7] * 8 == 128
    assert tx(card, "80CADF3005")[1] == 0x6A88


def test_isd_refuses_unknown_instructions_and_unauthenticated_content_management(
    blank: SimulatedCard,
) -> None:
    assert tx(blank, "80E40000094F07627601FF000000")[1] == 0x6982
    assert tx(blank, "00CB3FFF035C017E")[1] == 0x6D00
    assert tx(blank, "00A4000C023F00")[1] == 0x6A82


def test_applet_quirks_iso_class_answers_9000_and_get_data_is_6d00(
    formatted: SimulatedCard,
) -> None:
    ok(formatted, SELECT_COOLKEY)
    assert tx(formatted, "00CA9F7F2D") == (b"", 0x9000)
    assert tx(formatted, "00A4000C023F00") == (b"", 0x9000)
    assert tx(formatted, "80CA9F7F2D") == (b"", 0x6D00)
    assert tx(formatted, "C0F2000004") == (b"", 0x6E00)
    assert tx(formatted, "B0AA000000") == (b"", 0x6D00)


def test_power_on_resets_selection_login_and_secure_channel(enrolled: SimulatedCard) -> None:
    ok(enrolled, SELECT_COOLKEY)
    nonce = ok(enrolled, "B04200000431323334")
    tps = Tps(enrolled)
    tps.open()
    enrolled.power_on()
    assert tx(enrolled, "B0F2000001")[1] == 0x6E00
    ok(enrolled, SELECT_COOLKEY)
    status = ok(enrolled, "B03C000010")
    assert status[14:16] == b"\x00\x00"
    request = COMBINED_OBJECT_ID.hex() + "00000000" + "10" + nonce.hex()
    assert tx(enrolled, "B056000011" + request)[1] == 0x9C06
    assert tps.sm("84F00F00")[1] == 0x6982


# -- applet: status and identification -------------------------------------------------------


def test_life_cycle_short_and_long_forms(formatted: SimulatedCard, enrolled: SimulatedCard) -> None:
    for card, life_cycle, pins in ((formatted, 0x07, 0), (enrolled, 0x0F, 1)):
        ok(card, SELECT_COOLKEY)
        assert ok(card, "B0F2000001") == bytes((life_cycle,))
        assert ok(card, "B0F2000004") == bytes((life_cycle, pins, 1, 1))


def test_get_status_reports_versions_memory_pins_keys_and_logins(
    enrolled: SimulatedCard,
) -> None:
    ok(enrolled, SELECT_COOLKEY)
    status = ok(enrolled, "B03C000010")
    z0_size = len(enrolled.state.applet.find_object(COMBINED_OBJECT_ID).data)  # type: ignore[union-attr]
    assert status[:4] == H("01010104")
    assert int.from_bytes(status[4:8], "big") == 5000
    assert int.from_bytes(status[8:12], "big") == 5000 - z0_size - 16
    assert status[12:14] == H("0102")
    assert status[14:16] == H("0000")
    ok(enrolled, "B04200000431323334")
    assert ok(enrolled, "B03C000010")[14:16] == H("0001")
    assert tx(enrolled, "B03C010000") == (b"", 0x6D00)
    assert tx(enrolled, "B03C01 00") == (b"", 0x6D00)
    assert tx(enrolled, "B03C020010")[1] == 0x9C10
    assert tx(enrolled, "B03C000110")[1] == 0x9C11


def test_build_id_issuer_info_builtin_acl_random_and_nop(formatted: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    assert ok(formatted, "B070000004") == H("58768072")
    assert tx(formatted, "B070000002")[1] == 0x6700
    info = ok(formatted, "B0F60000E0")
    assert len(info) == 224 and info.split(b"\x00")[0].decode() == URL
    assert tx(formatted, "B0F6000010")[1] == 0x6700
    assert ok(formatted, "B0FA000007") == H("40004000400000")
    assert len(ok(formatted, "B072000010")) == 16
    assert ok(formatted, "B0710000") == b""
    assert ok(formatted, "B0480000 02") == H("0000")


def test_list_objects_of_a_formatted_card_ends_at_once(formatted: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    assert tx(formatted, "B05800000E") == (b"", 0x9C12)
    assert tx(formatted, "B05801000E") == (b"", 0x9C12)
    assert tx(formatted, "B05800000A")[1] == 0x6700
    request = COMBINED_OBJECT_ID.hex() + "00000000" + "10" + ZERO_NONCE
    assert tx(formatted, "B056000011" + request)[1] == 0x9C07


def test_enrolled_card_lists_and_reads_z0_with_the_zero_nonce(enrolled: SimulatedCard) -> None:
    ok(enrolled, SELECT_COOLKEY)
    entry = ok(enrolled, "B05800000E")
    z0 = enrolled.state.applet.find_object(COMBINED_OBJECT_ID)  # type: ignore[union-attr]
    assert z0 is not None
    assert entry == COMBINED_OBJECT_ID + len(z0.data).to_bytes(4, "big") + H("FFFF40004000")
    assert tx(enrolled, "B05801000E") == (b"", 0x9C12)
    content = read_object(enrolled, COMBINED_OBJECT_ID)
    assert content == bytes(z0.data) and len(content) >= 255
    combined = decode_combined_object(content)
    assert combined.cuid == enrolled.state.cuid
    assert combined.token_name == "Test User"
    [certificate] = combined.certificates
    assert certificate.label == "signing key for Test User"
    assert [record.name for record in combined.records] == ["c0", "k1", "k0"]


def test_read_object_checks_nonce_length_and_range(enrolled: SimulatedCard) -> None:
    ok(enrolled, SELECT_COOLKEY)
    z0 = COMBINED_OBJECT_ID.hex()
    assert tx(enrolled, "B056000011" + z0 + "00000000" + "10" + "0102030405060708")[1] == 0x9C06
    assert tx(enrolled, "B056000004" + z0)[1] == 0x9C06
    assert tx(enrolled, "B05600000A" + z0 + "00000000" + "10" + "00")[1] == 0x9C06
    assert tx(enrolled, "B056000011" + z0 + "0000FFF0" + "10" + ZERO_NONCE)[1] == 0x9C0F
    assert tx(enrolled, "B056000011" + z0 + "00008000" + "01" + ZERO_NONCE)[1] == 0x9C0F
    assert tx(enrolled, "B056010011" + z0 + "00000000" + "10" + ZERO_NONCE)[1] == 0x9C10
    # Only the low 16 bits of the offset count (CardEdge ReadObject).
    high = ok(enrolled, "B056000011" + z0 + "00010000" + "10" + ZERO_NONCE)
    assert high == ok(enrolled, "B056000011" + z0 + "00000000" + "10" + ZERO_NONCE)


def test_list_keys_returns_each_key_then_a_bare_9000(enrolled: SimulatedCard) -> None:
    ok(enrolled, SELECT_COOLKEY)
    assert ok(enrolled, "B03A00000B") == H("00 03 01 0400 0000 4000 0001")
    assert ok(enrolled, "B03A01000B") == H("01 01 00 0400 FFFF 4000 FFFF")
    assert tx(enrolled, "B03A01000B") == (b"", 0x9000)
    assert tx(enrolled, "B03A000008")[1] == 0x6700


# -- applet: PINs ----------------------------------------------------------------------------


def test_verify_pin_returns_a_nonce_that_then_authenticates_reads(
    enrolled: SimulatedCard,
) -> None:
    ok(enrolled, SELECT_COOLKEY)
    nonce = ok(enrolled, "B04200000431323334")
    assert len(nonce) == 8 and nonce != bytes(8)
    assert read_object(enrolled, COMBINED_OBJECT_ID, nonce.hex())
    assert ok(enrolled, "B04200000431323334") == nonce
    ok(enrolled, "B061000008" + nonce.hex())
    # Two logins need two logouts before the nonce is gone.
    assert read_object(enrolled, COMBINED_OBJECT_ID, nonce.hex())
    ok(enrolled, "B0610000")
    request = COMBINED_OBJECT_ID.hex() + "00000000" + "10" + nonce.hex()
    assert tx(enrolled, "B056000011" + request)[1] == 0x9C06


def test_wrong_pin_counts_down_and_blocks(enrolled: SimulatedCard) -> None:
    ok(enrolled, SELECT_COOLKEY)
    assert ok(enrolled, "B04A000001") == b"\x03"
    assert tx(enrolled, "B04200000439393939") == (b"", 0x9C02)
    assert ok(enrolled, "B04A000001") == b"\x02"
    # A PIN outside 4..16 bytes is refused before the try counter is touched.
    assert tx(enrolled, "B042000003393939") == (b"", 0x9C02)
    assert ok(enrolled, "B04A000001") == b"\x02"
    ok(enrolled, "B04200000431323334")
    assert ok(enrolled, "B04A000001") == b"\x03"
    for left in (2, 1, 0):
        assert tx(enrolled, "B04200000439393939")[1] == 0x9C02
        assert ok(enrolled, "B04A000001") == bytes((left,))
    assert tx(enrolled, "B04200000431323334") == (b"", 0x9C0C)
    assert enrolled.state.applet.pins[0].tries_left == 0  # type: ignore[union-attr]


def test_pin_commands_on_a_card_without_pins(formatted: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    assert tx(formatted, "B04200000431323334")[1] == 0x9C10
    assert tx(formatted, "B04A000001")[1] == 0x9C10
    assert tx(formatted, "B04201000431323334")[1] == 0x9C10


# -- secure channel rules ----------------------------------------------------------------------


def test_secure_commands_need_an_authenticated_channel(formatted: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    assert tx(formatted, "84F00F0000")[1] == 0x6982
    assert tx(formatted, "8482030010" + "00" * 16)[1] == 0x6985
    host = SecureChannelHost(DEV)
    ok(formatted, host.initialize_update())
    assert tx(formatted, "84F00F0000")[1] == 0x6982


@pytest.mark.parametrize("protocol", list(ScpProtocol))
def test_set_pin_through_the_secure_channel_resets_tries(
    enrolled_template: CardState, protocol: ScpProtocol
) -> None:
    state = CardState.from_json(enrolled_template.to_json())
    state.protocol = protocol
    card = SimulatedCard(state)
    card.power_on()
    ok(card, SELECT_COOLKEY)
    tx(card, "B04200000439393939")
    tps = Tps(card)
    tps.open()
    tps.sm_ok("84040000", b"5678")
    assert ok(card, "B04A000001") == b"\x03"
    assert tx(card, "B04200000431323334")[1] == 0x9C02
    ok(card, "B04200000435363738")
    assert tps.sm("84040000", b"123")[1] == 0x9C0F
    assert tps.sm("84040100", b"12345")[1] == 0x9C10


def test_bad_mac_answers_6982_and_ends_the_session(formatted: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    tps = Tps(formatted)
    tps.open()
    assert tps.host is not None
    wire = bytearray(tps.host.wrap(CommandApdu(0x84, 0xF0, 0x0F, 0x00)))
    wire[-1] ^= 0xFF
    assert tx(formatted, bytes(wire))[1] == 0x6982
    assert tps.sm("84F00F00")[1] == 0x6982
    assert ok(formatted, "B0F2000001") == b"\x07"


def test_session_survives_b0_commands_and_ends_on_select_or_new_init_update(
    formatted: SimulatedCard,
) -> None:
    ok(formatted, SELECT_COOLKEY)
    tps = Tps(formatted)
    tps.open()
    ok(formatted, "B03C000010")
    ok(formatted, "B0F2000004")
    tps.sm_ok("84F40000", issuer_info("http://a.example/"))
    ok(formatted, SELECT_COOLKEY)
    assert tps.sm("84F40000", issuer_info("http://b.example/"))[1] == 0x6982
    tps.open()
    ok(formatted, SecureChannelHost(DEV).initialize_update())
    assert tps.sm("84F40000", issuer_info("http://c.example/"))[1] == 0x6982
    assert ok(formatted, "B0F60000E0").startswith(b"http://a.example/\x00")


def test_host_cryptogram_key_version_and_security_level_checks(
    formatted: SimulatedCard,
) -> None:
    host = SecureChannelHost(DEV)
    assert tx(formatted, host.initialize_update(key_version=0x20))[1] == 0x6A88
    host.open(ok(formatted, host.initialize_update(key_version=0x01)))
    host.host_challenge = bytes(8)
    assert tx(formatted, host.external_authenticate())[1] == 0x6300
    assert formatted.runtime.channel is None
    host = SecureChannelHost(DEV)
    host.open(ok(formatted, host.initialize_update()))
    assert tx(formatted, host.external_authenticate(SecurityLevel.C_MAC))[1] == 0x9000


def test_scp02_sequence_counter_advances_per_opened_session() -> None:
    card = SimulatedCard(formatted_card(protocol=ScpProtocol.SCP02))
    card.power_on()
    ok(card, SELECT_COOLKEY)
    counters = []
    for _ in range(3):
        host = SecureChannelHost(DEV)
        response = host.open(ok(card, host.initialize_update()))
        assert response.key_info == H("FF01") and response.kdd == card.state.cuid
        ok(card, host.external_authenticate())
        counters.append(int.from_bytes(response.sequence, "big"))
    assert counters == [counters[0], counters[0] + 1, counters[0] + 2]


# -- failure knobs ---------------------------------------------------------------------------


def test_wrong_static_keys_knob_fails_the_card_cryptogram(formatted: SimulatedCard) -> None:
    formatted.knobs.wrong_static_keys = True
    host = SecureChannelHost(DEV)
    with pytest.raises(ScpCryptogramError):
        host.open(ok(formatted, host.initialize_update()))


def test_mac_failure_knob_hits_only_the_chosen_instruction(formatted: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    formatted.knobs.mac_failure_ins = {0xF0}
    tps = Tps(formatted)
    tps.open()
    tps.sm_ok("84F40000", issuer_info(URL))
    assert tps.sm("84F00F00")[1] == 0x6982
    formatted.knobs.mac_failure_ins = {0x82}
    host = SecureChannelHost(DEV)
    host.open(ok(formatted, host.initialize_update()))
    assert tx(formatted, host.external_authenticate())[1] == 0x6982


def test_out_of_memory_knob(formatted: SimulatedCard, blank: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    formatted.knobs.out_of_memory = True
    tps = Tps(formatted)
    tps.open()
    assert tps.sm("845A0000", COMBINED_OBJECT_ID + H("00000100FFFF40004000"))[1] == 0x9C01
    blank.knobs.out_of_memory = True
    tps = Tps(blank)
    tps.open()
    assert tps.sm("84E60200", _install_for_load_data(100))[1] == 0x6A84


def test_slow_card_knob_delays_each_answer(formatted: SimulatedCard) -> None:
    formatted.knobs.apdu_delay = 0.05
    started = time.monotonic()
    ok(formatted, SELECT_COOLKEY)
    ok(formatted, "B0F2000001")
    assert time.monotonic() - started >= 0.1


def test_real_object_memory_runs_out_with_9c01(formatted: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    tps = Tps(formatted)
    tps.open()
    tps.sm_ok("845A0000", H("6430000000000F00FFFF40004000"))
    assert tps.sm("845A0000", H("6431000000000F00FFFF40004000"))[1] == 0x9C01
    assert tps.sm("845A0000", H("6432000000010000FFFF40004000"))[1] == 0x9C01


# -- TPS flows: format (card content management) ------------------------------------------------


def _install_for_load_data(size: int) -> bytes:
    return (
        H("06627601FF0000")
        + H("00")
        + H("00")
        + H("06EF04C602")
        + size.to_bytes(2, "big")
        + H("00")
    )


INSTALL_FOR_INSTALL = H(
    "06627601FF0000 07627601FF000000 07627601FF000000 0100 0CEF04C8024650C90400021388 00"
)


def _load(tps: Tps, load_data: bytes, block: int) -> None:
    blocks = [load_data[i : i + block] for i in range(0, len(load_data), block)]
    for number, chunk in enumerate(blocks):
        last = number == len(blocks) - 1
        tps.sm_ok(f"84E8{'80' if last else '00'}{number:02X}", chunk)


@pytest.mark.parametrize("protocol", list(ScpProtocol))
def test_format_of_a_blank_card_installs_the_loaded_version(protocol: ScpProtocol) -> None:
    card = SimulatedCard(blank_card(protocol=protocol))
    card.power_on()
    assert ok(card, "00A4040000") == b""
    ok(card, "00A4040007A000000003000000")
    ok(card, "80CA9F7F2D")
    assert tx(card, SELECT_COOLKEY)[1] == 0x6A82
    assert tx(card, "B03C000010")[1] == 0x6E00
    tps = Tps(card)
    tps.open()
    assert tps.sm("84E40000", H("4F07627601FF000000"))[1] == 0x6A88
    assert tps.sm("84E40000", H("4F06627601FF0000"))[1] == 0x6A88
    load_file = LoadFile(1, 4, 0x12345678, size=SHIPPED_FILE_SIZE)
    tps.sm_ok("84E60200", _install_for_load_data(len(load_file.encode()) + 24))
    block = 208 if protocol is ScpProtocol.SCP01 else 216
    _load(tps, load_file.load_data(), block)
    tps.sm_ok("84E60C00", INSTALL_FOR_INSTALL)
    ok(card, SELECT_COOLKEY)
    assert ok(card, "B03C000010")[:4] == H("01010104")
    assert ok(card, "B070000004") == H("12345678")
    assert ok(card, "B0F2000004") == H("07000101")
    assert ok(card, "B0F60000E0") == bytes(224)
    tps.open()
    tps.sm_ok("84F40000", issuer_info(URL))
    assert ok(card, "B0F60000E0") == issuer_info(URL)
    assert card.state.applet is not None and card.state.applet.memory_size == 5000
    assert card.state.applet.instance_size == 18000


def test_reformat_deletes_instance_then_package(formatted: SimulatedCard) -> None:
    tps = Tps(formatted)
    tps.open()
    assert tps.sm("84E40000", H("4F06627601FF0000"))[1] == 0x6985
    tps.sm_ok("84E40080", H("4F07627601FF000000"), le=256)
    assert formatted.state.applet is None
    tps.sm_ok("84E40000", H("4F06627601FF0000"))
    assert formatted.state.packages == []
    assert tx(formatted, SELECT_COOLKEY)[1] == 0x6A82


def test_load_rules_sequence_install_first_and_unknown_files(blank: SimulatedCard) -> None:
    tps = Tps(blank)
    tps.open()
    assert tps.sm("84E88000", H("C40100"))[1] == 0x6985
    tps.sm_ok("84E60200", _install_for_load_data(0))
    assert tps.sm("84E80001", H("C40100"))[1] == 0x6A86
    tps.sm_ok("84E60200", _install_for_load_data(0))
    # Not a synthetic load file (a real .ijc header): the card reports the source build.
    ijc = H("010010DECAFFED0102040001 06627601FF0000") + bytes(40)
    tps.sm_ok("84E88000", b"\xc4" + bytes((len(ijc),)) + ijc)
    tps.sm_ok("84E60C00", INSTALL_FOR_INSTALL)
    ok(blank, SELECT_COOLKEY)
    assert ok(blank, "B070000004") == H("58755637")


def test_put_key_replaces_the_key_set_and_its_version(formatted: SimulatedCard) -> None:
    tps = Tps(formatted)
    tps.open()
    assert tps.host is not None
    new_keys = StaticKeys(b"\x11" * 16, b"\x22" * 16, b"\x33" * 16)
    answer = tps.sm_ok("84D80181", tps.host.put_key_data(0x02, new_keys))
    assert answer == H("02") + kcv(new_keys.enc) + kcv(new_keys.mac) + kcv(new_keys.kek)
    host = SecureChannelHost(DEV)
    response = host.open(ok(formatted, host.initialize_update()), check_cryptogram=False)
    assert response.key_version == 0x02
    with pytest.raises(ScpCryptogramError):
        SecureChannelHost(DEV).open(ok(formatted, SecureChannelHost(DEV).initialize_update()))
    Tps(formatted, new_keys).open(key_version=0x02)
    assert tx(formatted, SecureChannelHost(DEV).initialize_update(0x01))[1] == 0x6A88


# -- TPS flows: enrollment ---------------------------------------------------------------------


def _generate_key(tps: Tps, challenge: bytes, bits: int = 1024) -> bytes:
    data = H("80") + bits.to_bytes(2, "big") + H("0000") + H("10")
    data += wrap_challenge(DEV.kek, challenge) + H("00")
    size = int.from_bytes(tps.sm_ok("840C0203", data, le=256), "big")
    iobuf = b""
    while len(iobuf) < size:
        chunk = min(0xD0, size - len(iobuf))
        request = H("FFFFFFFF") + len(iobuf).to_bytes(4, "big") + bytes((chunk,))
        iobuf += tps.sm_ok("84560000", request, le=256)
    return iobuf


@pytest.mark.parametrize("protocol", list(ScpProtocol))
def test_enrollment_generates_a_key_whose_proof_verifies(
    protocol: ScpProtocol, ca: CertificateAuthority
) -> None:
    card = SimulatedCard(formatted_card(protocol=protocol))
    card.power_on()
    ok(card, SELECT_COOLKEY)
    ok(card, "B0F2000001")
    tps = Tps(card)
    tps.open()
    tps.sm_ok("8440007F", b"password")
    assert tps.sm("8440007F", b"password")[1] == 0x9C10
    tps.sm_ok("84040000", b"4321")
    assert tx(card, "B05800000E")[1] == 0x9C12
    challenge = os.urandom(16)
    iobuf = _generate_key(tps, challenge)
    assert len(iobuf) == 271
    blob_length = int.from_bytes(iobuf[0:2], "big")
    blob = iobuf[2 : 2 + blob_length]
    proof = iobuf[4 + blob_length :]
    assert blob[:4] == H("00010400")
    modulus = blob[6 : 6 + 128]
    exponent = blob[6 + 128 + 2 :]
    public = rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big"))
    public.public_key().verify(proof, blob + challenge, padding.PKCS1v15(), hashes.SHA1())
    # The TPS writes z0 as the RA, chunk by chunk, then personalizes.
    certificate = ca.issue(public.public_key(), parse_dn("CN=Enrolled User"), KeyUse.SIGNING)
    from escd.card.objects import TokenCertificate, build_token_objects

    der = certificate.public_bytes(serialization.Encoding.DER)
    z0 = build_token_objects(
        "Enrolled User", card.state.cuid, 7, [TokenCertificate(1, "signing", der, 1024)]
    ).encode()
    tps.sm_ok("845A0000", COMBINED_OBJECT_ID + len(z0).to_bytes(4, "big") + H("FFFF40004000"))
    for offset in range(0, len(z0), 0xD0):
        chunk = z0[offset : offset + 0xD0]
        request = COMBINED_OBJECT_ID + offset.to_bytes(4, "big") + bytes((len(chunk),)) + chunk
        tps.sm_ok("84540000", request)
    tps.sm_ok("84F00F00")
    tps.sm_ok("84550000", H("0203"))
    assert read_object(card, COMBINED_OBJECT_ID) == z0
    assert ok(card, "B0F2000004") == H("0F010101")
    assert ok(card, "B03A00000B")[:5] == H("0203030400")
    assert ok(card, "B03A01000B")[:3] == H("030102")
    ok(card, "B04200000434333231")


def test_generate_key_checks_length_slots_and_mates(formatted: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    tps = Tps(formatted)
    tps.open()
    assert tps.sm("840C0203", bytes(22), le=256)[1] == 0x6700
    _generate_key(tps, bytes(16))
    challenge_data = H("80 0400 0000 10") + wrap_challenge(DEV.kek, bytes(16)) + H("00")
    assert tps.sm("840C0204", challenge_data, le=256)[1] == 0x9C1E
    assert tps.sm("840C9203", challenge_data, le=256)[1] == 0x9C10
    bad = H("80 0300 0000 10") + wrap_challenge(DEV.kek, bytes(16)) + H("00")
    assert tps.sm("840C0607", bad, le=256)[1] == 0x9C1A


def test_clear_key_slots_keeps_only_the_listed_pairs(formatted: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    tps = Tps(formatted)
    tps.open()
    _generate_key(tps, bytes(16))
    assert formatted.state.applet is not None and set(formatted.state.applet.keys) == {2, 3}
    tps.sm_ok("84550000", H("0405"))
    assert formatted.state.applet.keys == {}
    assert tps.sm("84550000", H("04"))[1] == 0x9C0F


def _wrapped_pkcs8(key: rsa.RSAPrivateKey, des_key: bytes, iv: bytes) -> bytes:
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return H("0109") + key.key_size.to_bytes(2, "big") + des3_cbc_encrypt(des_key, pad80(pkcs8), iv)


@pytest.mark.parametrize("protocol", list(ScpProtocol))
def test_import_key_encrypted_installs_the_pair_and_wipes_the_object(
    protocol: ScpProtocol,
) -> None:
    card = SimulatedCard(formatted_card(protocol=protocol))
    card.power_on()
    ok(card, SELECT_COOLKEY)
    tps = Tps(card)
    tps.open()
    assert tps.host is not None
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    des_key, iv = os.urandom(16), os.urandom(8)
    blob = _wrapped_pkcs8(key, des_key, iv)
    temp = H("FF00FFF3")
    tps.sm_ok("845A0000", temp + len(blob).to_bytes(4, "big") + H("400040004000"))
    for offset in range(0, len(blob), 0xD0):
        chunk = blob[offset : offset + 0xD0]
        tps.sm_ok("84540000", temp + offset.to_bytes(4, "big") + bytes((len(chunk),)) + chunk)
    wrapped = tps.host.wrap_key(des_key)
    bad_kcv = temp + H("8110") + wrapped + H("03") + H("000000") + H("08") + iv
    assert tps.sm("840A0405", bad_kcv)[1] == 0x9C20
    tps.sm_ok("840A0405", temp + H("8110") + wrapped + H("03") + kcv(des_key) + H("08") + iv)
    applet = card.state.applet
    assert applet is not None
    assert set(applet.keys) == {4, 5} and applet.keys[4].mate == 5
    public = serialization.load_der_public_key(applet.keys[5].der)
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == key.public_key().public_numbers()
    obj = applet.find_object(temp)
    assert obj is not None and bytes(obj.data) == bytes(len(blob))
    # The wiped object no longer decodes as a key.
    good = temp + H("8110") + wrapped + H("03") + kcv(des_key) + H("08") + iv
    assert tps.sm("840A0607", good)[1] == 0x9C17


def test_object_acls_create_replace_write_and_delete(enrolled: SimulatedCard) -> None:
    ok(enrolled, SELECT_COOLKEY)
    z0 = COMBINED_OBJECT_ID.hex()
    create = "B05A000016" + z0 + "00000100" + "FFFF40004000" + ZERO_NONCE
    assert tx(enrolled, create)[1] == 0x9C06
    assert tx(enrolled, "B054000011" + z0 + "00000000" + "00" + ZERO_NONCE)[1] == 0x9C06
    assert tx(enrolled, "B05200000C" + z0 + ZERO_NONCE)[1] == 0x9C06
    tps = Tps(enrolled)
    tps.open()
    tps.sm_ok("845A0000", COMBINED_OBJECT_ID + H("00000100 FFFF40004000"))
    assert read_object(enrolled, COMBINED_OBJECT_ID) == bytes(256)
    tps.sm_ok("84540000", COMBINED_OBJECT_ID + H("00000010 03 414243"))
    assert read_object(enrolled, COMBINED_OBJECT_ID)[16:19] == b"ABC"
    assert tps.sm("84540000", COMBINED_OBJECT_ID + H("000000FF 03 414243"))[1] == 0x9C0F
    assert tps.sm("84520000", H("63300000"))[1] == 0x9C07
    tps.sm_ok("84520000", COMBINED_OBJECT_ID)
    assert tx(enrolled, "B05800000E")[1] == 0x9C12


def test_set_life_cycle_accepts_only_application_states(formatted: SimulatedCard) -> None:
    ok(formatted, SELECT_COOLKEY)
    tps = Tps(formatted)
    tps.open()
    assert tps.sm("84F08300")[1] == 0x9C0F
    assert tps.sm("84F00300")[1] == 0x9C0F
    assert tps.sm("84F00F00", b"\x00")[1] == 0x6700
    tps.sm_ok("84F00F00")
    assert ok(formatted, "B0F2000001") == b"\x0f"
    assert tps.sm("84F80000", bytes(7))[1] == 0x9C03
    assert tps.sm("84080000", bytes(2))[1] == 0x6D00
    assert tps.sm("84F40000", bytes(10))[1] == 0x6700


# -- persistence and factories -------------------------------------------------------------


def test_card_file_round_trip_keeps_pin_tries_objects_and_keys(
    enrolled_template: CardState, tmp_path: Path
) -> None:
    path = tmp_path / "card.json"
    card = SimulatedCard(CardState.from_json(enrolled_template.to_json()), path=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    card.power_on()
    ok(card, SELECT_COOLKEY)
    written = path.stat().st_ino  # every atomic write is a new file
    ok(card, "B03C000010")
    assert path.stat().st_ino == written  # nothing changed, nothing written
    tx(card, "B04200000439393939")
    assert path.stat().st_ino != written
    written = path.stat().st_ino
    again = SimulatedCard.load(path)
    assert path.stat().st_ino == written  # loading does not write the file back
    assert again.state.to_json() == card.state.to_json()
    assert again.state.applet is not None and again.state.applet.pins[0].tries_left == 2
    again.power_on()
    ok(again, SELECT_COOLKEY)
    assert read_object(again, COMBINED_OBJECT_ID) == read_object(card, COMBINED_OBJECT_ID)
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_open_creates_the_file_once_and_then_loads_it(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "card.json"
    first = SimulatedCard.open(path, blank_card())
    second = SimulatedCard.open(path, blank_card())
    assert second.state.cuid == first.state.cuid
    path.write_text("{}")
    with pytest.raises(ValueError, match="format"):
        SimulatedCard.load(path)


def test_z0_version_follows_content_and_its_cuid_matches_the_cplc(ca: CertificateAuthority) -> None:
    cuid = H("40907001123400ABCDE0")
    versions = set()
    for subject in ("CN=Alice", "CN=Bob"):
        state = enrolled_card(cuid=cuid, subject=subject, key_bits=1024, ca=ca)
        z0 = state.applet.find_object(COMBINED_OBJECT_ID)  # type: ignore[union-attr]
        assert z0 is not None
        combined = decode_combined_object(bytes(z0.data))
        assert combined.cuid == cuid == state.cplc[3:7] + state.cplc[19:21] + state.cplc[15:19]
        assert combined.compressed
        versions.add(combined.object_version)
    assert len(versions) == 2


def test_secrets_stay_out_of_reprs(enrolled_template: CardState) -> None:
    applet = enrolled_template.applet
    assert applet is not None
    assert "1234" not in repr(applet.pins[0])
    assert "MII" not in repr(applet.keys[0])


def test_load_file_round_trip_version_string_and_c4_framing() -> None:
    file = LoadFile.from_version_string("1.4.58768072", size=SHIPPED_FILE_SIZE)
    encoded = file.encode()
    assert len(encoded) == SHIPPED_FILE_SIZE
    assert encoded[:19] == H("010010DECAFFED0102040001 06627601FF0000")
    assert LoadFile.decode(encoded) == file
    assert file.version_string == "1.4.58768072"
    data = file.load_data()
    assert data[:4] == H("C4823C31") and len(data) == 15413
    assert split_load_data(data) == encoded
    small = LoadFile(1, 5, 0x65CBF5A6)
    assert LoadFile.decode(small.encode()) == LoadFile(1, 5, 0x65CBF5A6, size=len(small.encode()))
    with pytest.raises(ValueError):
        LoadFile.decode(H("010010DECAFFED0102040001 06627601FF0000"))


# -- the in-process reader backend ------------------------------------------------------------


@pytest.fixture
def sim_card(formatted: SimulatedCard) -> Iterator[SimulatedCard]:
    formatted.power_off()
    yield formatted


async def _next(queue: asyncio.Queue[ReaderEvent]) -> ReaderEvent:
    async with asyncio.timeout(2):
        return await queue.get()


async def test_reader_backend_reports_readers_and_cards_on_the_loop(
    sim_card: SimulatedCard,
) -> None:
    loop = asyncio.get_running_loop()
    backend = SimReaderBackend(loop, 32)
    queue: asyncio.Queue[ReaderEvent] = asyncio.Queue()
    threads: set[int] = set()

    def on_event(event: ReaderEvent) -> None:
        threads.add(threading.get_ident())
        queue.put_nowait(event)

    backend.insert("Simulated Reader 05", sim_card)
    backend.start(on_event)
    names = [f"Simulated Reader {i:02d}" for i in range(32)]
    expected: list[ReaderEvent] = [ReaderAdded(name) for name in names]
    expected.insert(6, CardInserted("Simulated Reader 05", sim_card.atr))
    assert [await _next(queue) for _ in expected] == expected
    worker = threading.Thread(target=backend.remove, args=("Simulated Reader 05",))
    worker.start()
    worker.join()
    assert await _next(queue) == CardRemoved("Simulated Reader 05")
    assert threads == {threading.get_ident()}
    backend.insert("Simulated Reader 07", sim_card)
    backend.stop()
    # The insert was queued before stop(): it must not be delivered after it.
    await asyncio.sleep(0.05)
    assert queue.empty()


async def test_reader_session_transmits_and_fails_once_the_card_is_gone(
    sim_card: SimulatedCard,
) -> None:
    backend = SimReaderBackend(asyncio.get_running_loop(), ["A", "B"])
    with pytest.raises(CardRemovedError):
        await asyncio.to_thread(backend.connect, "A")
    with pytest.raises(CardError):
        await asyncio.to_thread(backend.connect, "nope")
    backend.insert("A", sim_card)
    session = await asyncio.to_thread(backend.connect, "A")
    assert session.reader == "A" and session.atr == sim_card.atr
    assert await asyncio.to_thread(session.transmit, H(SELECT_COOLKEY)) == H("9000")
    assert await asyncio.to_thread(session.transmit, H("B0F2000001")) == H("079000")
    session.reset()
    assert await asyncio.to_thread(session.transmit, H("B0F2000001")) == H("6E00")
    backend.remove("A")
    with pytest.raises(CardRemovedError):
        await asyncio.to_thread(session.transmit, H(SELECT_COOLKEY))
    backend.insert("A", SimulatedCard(blank_card()))
    with pytest.raises(CardRemovedError):
        session.transmit(H(SELECT_COOLKEY))
    fresh = backend.connect("A")
    assert fresh.transmit(H(SELECT_COOLKEY)) == H("6A82")
    fresh.close()
    with pytest.raises(CardError):
        fresh.transmit(H(SELECT_COOLKEY))


def test_reader_transactions_hold_other_sessions_off(sim_card: SimulatedCard) -> None:
    loop = asyncio.new_event_loop()
    try:
        backend = SimReaderBackend(loop, ["R"])
        backend.insert("R", sim_card)
        first, second = backend.connect("R"), backend.connect("R")
        first.begin_transaction()
        first.transmit(H(SELECT_COOLKEY))
        done = threading.Event()
        answers: list[bytes] = []

        def other() -> None:
            answers.append(second.transmit(H("B0F2000001")))
            done.set()

        worker = threading.Thread(target=other)
        worker.start()
        assert not done.wait(0.2)
        first.transmit(H("B0F2000001"))
        first.end_transaction()
        assert done.wait(2)
        worker.join()
        assert answers == [H("079000")]
        # Pulling the card wakes a waiting session with CardRemovedError.
        first.begin_transaction()
        errors: list[BaseException] = []

        def blocked() -> None:
            try:
                second.begin_transaction()
            except CardRemovedError as err:
                errors.append(err)

        waiter = threading.Thread(target=blocked)
        waiter.start()
        backend.remove("R")
        waiter.join(2)
        assert len(errors) == 1
    finally:
        loop.close()
