# SPDX-License-Identifier: GPL-2.0-or-later
"""ISO 7816-4 APDUs: the seven command cases, responses, status words, 61xx chaining."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escd.card.apdu import CommandApdu, ResponseApdu, StatusWord, describe_sw, sw_name
from escd.card.transport import MAX_GET_RESPONSE_ROUNDS, exchange, send
from escd.errors import MalformedApduError, MalformedResponseError
from tests.support.fake_card import ScriptedCard

LONG = bytes(range(256)) + b"\x01"  # 257 bytes: needs the extended form


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        # case 1
        (CommandApdu(0xB0, 0x71, 0x00, 0x00), "B0710000"),
        # case 2 short, incl. Le=256 written as 00
        (CommandApdu(0x80, 0xCA, 0x9F, 0x7F, le=0x2D), "80CA9F7F2D"),
        (CommandApdu(0x00, 0xA4, 0x04, 0x00, le=256), "00A4040000"),
        # case 3 short
        (CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("627601FF000000")),
         "00A4040007627601FF000000"),
        # case 4 short
        (CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\xa0\x00", le=256), "00A4040002A00000"),
        # case 2 extended: Le 257 and Le 65536 (written as 0000)
        (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=257), "00B00000000101"),
        (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=65536), "00B00000000000"),
    ],
)  # fmt: skip
def test_command_vectors(command: CommandApdu, wire: str) -> None:
    raw = bytes.fromhex(wire)
    assert command.encode() == raw
    assert bytes(command) == raw
    assert CommandApdu.decode(raw) == command


def test_extended_case_3_and_4_vectors() -> None:
    case3 = CommandApdu(0x84, 0xE8, 0x00, 0x00, LONG)
    assert case3.is_extended
    assert case3.encode() == bytes.fromhex("84E80000 00 0101") + LONG
    case4 = CommandApdu(0x84, 0xE8, 0x00, 0x00, LONG, le=65536)
    assert case4.encode() == bytes.fromhex("84E80000 00 0101") + LONG + b"\x00\x00"
    for command in (case3, case4):
        assert CommandApdu.decode(command.encode()) == command


@pytest.mark.parametrize(
    "wire",
    [
        "",
        "00A404",  # shorter than a header
        "00A4040003AABB",  # Lc 3, two data bytes
        "00A4040002AABBCCDD",  # Lc 2 with two extra bytes
        "00A4040000AA",  # extended marker without a full length
        "00A404000000",  # extended, one length byte short... a 2-byte body
        "00A40400 00 0000 AA",  # extended Lc of zero with data
        "00A40400 00 0003 AABB",  # extended Lc 3, two data bytes
    ],
)
def test_malformed_commands_raise_malformed_apdu(wire: str) -> None:
    with pytest.raises(MalformedApduError):
        CommandApdu.decode(bytes.fromhex(wire))


@pytest.mark.parametrize(
    "kwargs",
    [{"cla": 256}, {"ins": -1}, {"data": bytes(65536)}, {"le": 0}, {"le": 65537}],
)
def test_command_fields_out_of_range_are_refused(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"cla": 0, "ins": 0xA4, "p1": 0, "p2": 0, **kwargs}
    with pytest.raises(ValueError):
        CommandApdu(**fields)  # type: ignore[arg-type]


commands = st.builds(
    CommandApdu,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.one_of(st.binary(max_size=260), st.binary(min_size=250, max_size=600)),
    st.one_of(st.none(), st.integers(1, 256), st.integers(1, 65536)),
)


@given(commands)
def test_command_round_trips(command: CommandApdu) -> None:
    raw = command.encode()
    assert CommandApdu.decode(raw) == command
    if command.is_extended:
        assert raw[4] == 0 and len(raw) >= 7
    else:
        assert len(raw) <= 4 + 1 + 255 + 1


@given(st.binary(max_size=300))
def test_random_commands_decode_or_raise_malformed_apdu(raw: bytes) -> None:
    try:
        command = CommandApdu.decode(raw)
    except MalformedApduError:
        return
    # Extended encodings of short values re-encode in the short form, to the same command.
    assert CommandApdu.decode(command.encode()) == command


def test_response_vectors() -> None:
    response = ResponseApdu.decode(bytes.fromhex("07010101 9000"))
    assert response == ResponseApdu(bytes.fromhex("07010101"), 0x9000)
    assert (response.sw1, response.sw2, response.ok) == (0x90, 0x00, True)
    assert response.encode() == bytes.fromhex("070101019000")
    assert not ResponseApdu.decode(b"\x9c\x12").ok


@pytest.mark.parametrize("raw", [b"", b"\x90"])
def test_responses_without_a_status_word_are_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        ResponseApdu.decode(raw)


@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_response_round_trips(data: bytes, sw: int) -> None:
    response = ResponseApdu(data, sw)
    assert ResponseApdu.decode(response.encode()) == response


@pytest.mark.parametrize(
    ("sw", "text"),
    [
        (0x9000, "Success"),
        (0x6A82, "Application not found"),
        (0x9C12, "CoolKey: end of list"),
        (0x6110, "16 more bytes available (GET RESPONSE)"),
        (0x6100, "256 more bytes available (GET RESPONSE)"),
        (0x6C2D, "Wrong Le; the card expects 45"),
        (0x63C2, "Verification failed, 2 tries left"),
        (0x9C99, "CoolKey applet error 99"),
        (0x6281, "Warning (state of non-volatile memory may have changed)"),
        (0x6999, "Error"),
        (0x1234, "Unknown status word"),
    ],
)
def test_status_word_descriptions(sw: int, text: str) -> None:
    assert describe_sw(sw) == text


def test_status_word_names() -> None:
    assert sw_name(0x9C0C) == "COOLKEY_IDENTITY_BLOCKED"
    assert sw_name(0x6112) == "SW_6112"
    assert all(describe_sw(member) == member.description for member in StatusWord)


def scripted(*answers: str) -> ScriptedCard:
    """A card answering these hex strings in turn."""
    return ScriptedCard(bytes.fromhex(answer) for answer in answers)


def test_exchange_collects_61xx_with_get_response() -> None:
    card = scripted("6F0A 6108", "84 07 A0000000030000 9000")
    response = send(card, CommandApdu(0x00, 0xA4, 0x04, 0x00, le=256))
    assert response == ResponseApdu(bytes.fromhex("6F0A 84 07 A0000000030000"), 0x9000)
    assert card.sent[1] == bytes.fromhex("00C0000008")


def test_exchange_passes_6cxx_through_unchanged() -> None:
    assert exchange(scripted("6C2D"), bytes.fromhex("80CA9F7F00")) == b"\x6c\x2d"


def test_exchange_refuses_answers_without_status_word_and_endless_61xx() -> None:
    with pytest.raises(MalformedResponseError):
        exchange(scripted("90"), b"\x00\xa4\x04\x00")
    endless = scripted(*["6101"] * (MAX_GET_RESPONSE_ROUNDS + 1))
    with pytest.raises(MalformedResponseError, match="61xx"):
        exchange(endless, b"\x00\xa4\x04\x00")
