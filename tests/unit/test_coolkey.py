# SPDX-License-Identifier: GPL-2.0-or-later
"""CoolKey and card-manager commands on the wire, their parsers, and CoolKeySession."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escd.card.apdu import CommandApdu
from escd.card.coolkey import (
    AppletStatus,
    CoolKeySession,
    Cplc,
    IssuerInfo,
    LifeCycleInfo,
    ListSequence,
    get_build_id,
    get_cplc,
    get_issuer_info,
    get_life_cycle,
    get_memory_probe,
    get_pin_tries,
    get_status,
    list_objects,
    list_pins,
    parse_build_id,
    parse_pin_list,
    parse_pin_tries,
    read_object,
    select_card_manager,
    select_coolkey,
    verify_pin,
)
from escd.card.objects import COMBINED_OBJECT_ID, ObjectEntry, object_id
from escd.errors import ApduError, CardError, InvalidPinError, MalformedResponseError
from escd.log import Secret
from tests.support.fake_card import FakeApplet, FakeCard, ScriptedCard

#: A CPLC with a distinct value in every field (the GP layout libckyapplet reads in
#: ``ckyAppletFill_GetCPLCData``), carrying the CUID 4090 7001 1234 00ABCDEF and MSN 55667788.
CPLC = bytes.fromhex(
    "9F7F2A"
    "4090 7001 1671 2345 0001 6123 00ABCDEF 1234 4091 6124 0002 6125 0003 6126"
    "11223344 0004 6127 55667788"
)


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        (select_coolkey(), "00A4040007627601FF000000"),
        (select_card_manager(), "00A4040000"),
        (select_card_manager(bytes.fromhex("A0000000030000")), "00A4040007A0000000030000"),
        (get_cplc(), "80CA9F7F2D"),
        (get_life_cycle(), "B0F2000004"),
        (get_life_cycle(long_form=False), "B0F2000001"),
        (get_status(), "B03C000010"),
        (get_memory_probe(), "B03C010000"),
        (get_build_id(), "B070000004"),
        (get_issuer_info(), "B0F60000E0"),
        (list_objects(ListSequence.RESET), "B05800000E"),
        (list_objects(ListSequence.NEXT), "B05801000E"),
        (list_pins(), "B048000002"),
        (get_pin_tries(), "B04A000001"),
        # OpenSC's 240-byte chunk (COOLKEY_MAX_CHUNK_SIZE), libcoolkeypk11's 255-byte
        # header read (CKY_MAX_READ_CHUNK_SIZE).
        (read_object(COMBINED_OBJECT_ID, 0, 0xF0), "B056000011 7A300000 00000000 F0" + "00" * 8),
        (read_object(COMBINED_OBJECT_ID, 0xFF, 0xFF),
         "B056000011 7A300000 000000FF FF" + "00" * 8),
        (verify_pin(Secret("1234")), "B042000004 31323334"),
    ],
)  # fmt: skip
def test_commands_on_the_wire(command: CommandApdu, wire: str) -> None:
    assert command.encode() == bytes.fromhex(wire)


@pytest.mark.parametrize(
    ("oid", "offset", "length", "nonce"),
    [(b"z0", 0, 1, bytes(8)), (COMBINED_OBJECT_ID, 0, 0, bytes(8)),
     (COMBINED_OBJECT_ID, 0, 256, bytes(8)), (COMBINED_OBJECT_ID, 0, 1, bytes(7))],
)  # fmt: skip
def test_read_object_refuses_what_the_applet_cannot_do(
    oid: bytes, offset: int, length: int, nonce: bytes
) -> None:
    with pytest.raises(ValueError):
        read_object(oid, offset, length, nonce)


# -- parsers ----------------------------------------------------------------------------


def test_cplc_yields_cuid_and_msn_from_the_spec_offsets() -> None:
    cplc = Cplc.decode(CPLC)
    assert cplc.cuid == bytes.fromhex("4090 7001 1234 00ABCDEF")
    assert cplc.cuid_hex == "40907001123400abcdef"
    assert cplc.msn == bytes.fromhex("55667788")
    assert (cplc.ic_fabricator, cplc.ic_type) == (0x4090, 0x7001)
    assert cplc.ic_serial == bytes.fromhex("00ABCDEF")
    assert cplc.ic_batch == bytes.fromhex("1234")
    assert cplc.encode() == CPLC


def test_cplc_from_cuid_puts_every_cuid_byte_where_all_three_stacks_read_it() -> None:
    cuid = bytes.fromhex("40907001123400abcdef")
    cplc = Cplc.from_cuid(cuid, bytes.fromhex("01020304"))
    assert cplc.cuid == cuid
    assert cplc.msn == bytes.fromhex("01020304")
    assert Cplc.decode(cplc.encode()) == cplc


@pytest.mark.parametrize(
    "raw", [CPLC[:-1], CPLC + b"\x00", b"\x9f\x7e" + CPLC[2:], CPLC[:2] + b"\x2b" + CPLC[3:]]
)
def test_cplc_of_wrong_shape_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        Cplc.decode(raw)


def test_life_cycle_from_the_opensc_trace() -> None:
    life = LifeCycleInfo.decode(bytes.fromhex("07010101"))
    assert (life.life_cycle, life.pin_count, life.protocol_version) == (7, 1, (1, 1))
    assert not life.personalized
    assert LifeCycleInfo.decode(bytes.fromhex("0F010101")).personalized
    assert life.encode() == bytes.fromhex("07010101")


def test_status_layout() -> None:
    raw = bytes.fromhex("0101 0104 00001388 00000FA0 01 02 8001")
    status = AppletStatus.decode(raw)
    assert status.protocol_version == (1, 1)
    assert status.applet_version == (1, 4)
    assert (status.total_memory, status.free_memory) == (5000, 4000)
    assert (status.pin_count, status.key_count, status.logged_in) == (1, 2, 0x8001)
    assert status.encode() == raw


def test_build_id_is_32_bits() -> None:
    assert parse_build_id(bytes.fromhex("58768072")) == 0x58768072


@pytest.mark.parametrize(
    ("content", "url"),
    [
        (b"http://tps.example.com:8080/tps/phoneHome", "http://tps.example.com:8080/tps/phoneHome"),
        (b"", ""),
        (b"  https://x.example/ph  ", "https://x.example/ph"),
        (b"\x01\x02binary junk\xff", ""),
        (b"http://a.example/\x00tail after the NUL", "http://a.example/"),
    ],
)
def test_phone_home_url_is_the_printable_text_before_the_first_nul(
    content: bytes, url: str
) -> None:
    info = IssuerInfo.decode(content.ljust(224, b"\x00"))
    assert info.phone_home_url == url


def test_issuer_info_from_url_is_what_a_tps_writes() -> None:
    info = IssuerInfo.from_url("http://tps.example/ph")
    assert len(info.raw) == 224
    assert info.phone_home_url == "http://tps.example/ph"
    with pytest.raises(ValueError):
        IssuerInfo.from_url("x" * 224)


def test_pin_answers() -> None:
    assert parse_pin_list(b"\x00\x01") == 1
    assert parse_pin_tries(b"\x05") == 5


PARSERS = [
    Cplc.decode,
    LifeCycleInfo.decode,
    AppletStatus.decode,
    parse_build_id,
    IssuerInfo.decode,
    parse_pin_tries,
    parse_pin_list,
    ObjectEntry.decode,
]


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("length", [0, 1, 3, 5, 17, 44, 46, 223, 225])
def test_parsers_refuse_wrong_lengths(parser: object, length: int) -> None:
    lengths = {Cplc.decode: 45, LifeCycleInfo.decode: 4, AppletStatus.decode: 16,
               parse_build_id: 4, IssuerInfo.decode: 224, parse_pin_tries: 1,
               parse_pin_list: 2, ObjectEntry.decode: 14}  # fmt: skip
    assert callable(parser)
    if lengths[parser] == length:
        return
    with pytest.raises(MalformedResponseError):
        parser(bytes(length))


@given(st.binary(max_size=300))
def test_parsers_on_random_bytes_raise_only_malformed(raw: bytes) -> None:
    for parser in PARSERS:
        try:
            parser(raw)
        except MalformedResponseError:
            pass


# -- the session over a behavioural card -----------------------------------------------


def test_session_reads_an_uninitialized_applet() -> None:
    card = FakeCard(applet=FakeApplet(life_cycle=0x07, pin_tries=None))
    session = CoolKeySession(card)
    session.select_applet()
    assert session.read_life_cycle() == LifeCycleInfo(0x07, 1, 1, 1)
    assert session.is_coolkey()
    assert session.read_status().applet_version == (1, 4)
    assert session.read_build_id() == 0x58768072
    assert session.read_issuer_info().phone_home_url == ""
    assert session.list_objects() == []
    assert session.read_combined_object() is None
    assert session.list_pins() == 1
    assert session.read_pin_tries() is None


def test_life_cycle_falls_back_to_the_short_form_and_get_status() -> None:
    card = FakeCard(applet=FakeApplet(life_cycle=0x0F, long_life_cycle=False, protocol=(1, 0)))
    session = CoolKeySession(card)
    session.select_applet()
    assert session.read_life_cycle() == LifeCycleInfo(0x0F, 1, 1, 0)
    sent = [apdu.hex().upper() for apdu in card.log]
    assert sent[1:] == ["B0F2000004", "B0F2000001", "B03C000010"]


def test_select_applet_on_a_blank_card_raises_the_status_word() -> None:
    session = CoolKeySession(FakeCard(applet=None))
    with pytest.raises(ApduError) as caught:
        session.select_applet()
    assert caught.value.sw == 0x6A82


def test_cplc_is_read_through_61xx_get_response() -> None:
    card = FakeCard(response_chunk=16)
    cplc = CoolKeySession(card).read_cplc()
    assert cplc.cuid_hex == "40907001123400abcdef"
    assert [apdu.hex().upper() for apdu in card.log] == ["00A4040000", "80CA9F7F2D", "00C000001D"]


@pytest.mark.parametrize("empty_select", ["refused", "other"])
def test_card_manager_is_selected_by_aid_when_the_empty_select_does_not_reach_it(
    empty_select: str,
) -> None:
    card = FakeCard(empty_select=empty_select)
    assert CoolKeySession(card).read_cplc().msn == bytes.fromhex("01020304")
    assert card.log[-2:] == [bytes.fromhex("00A4040007A0000000030000"), bytes.fromhex("80CA9F7F2D")]


def test_objects_are_listed_until_9c12_and_read_in_255_byte_chunks() -> None:
    applet = FakeApplet(life_cycle=0x0F)
    content = bytes(range(256)) * 2 + bytes(88)
    applet.add_object(object_id("c0"), b"abc")
    applet.add_object(COMBINED_OBJECT_ID, content)
    card = FakeCard(applet=applet)
    session = CoolKeySession(card)
    session.select_applet()
    entries = session.list_objects()
    assert [(entry.name, entry.size) for entry in entries] == [("c0", 3), ("z0", 600)]
    del card.log[:]
    assert session.read_combined_object(entries) == content
    assert [(apdu[9:13].hex(), apdu[13]) for apdu in card.log] == [
        ("00000000", 255), ("000000ff", 255), ("000001fe", 90),
    ]  # fmt: skip


def test_read_object_with_opensc_chunks() -> None:
    applet = FakeApplet()
    applet.add_object(COMBINED_OBJECT_ID, bytes(500))
    card = FakeCard(applet=applet)
    session = CoolKeySession(card)
    session.select_applet()
    assert session.read_object(COMBINED_OBJECT_ID, 500, chunk=240) == bytes(500)
    assert [apdu[13] for apdu in card.log[1:]] == [240, 240, 20]


def test_reading_a_missing_object_raises_9c07() -> None:
    session = CoolKeySession(FakeCard())
    session.select_applet()
    with pytest.raises(ApduError) as caught:
        session.read_object(COMBINED_OBJECT_ID, 10)
    assert caught.value.sw == 0x9C07


def test_verify_pin_returns_the_nonce_or_names_the_failure() -> None:
    card = FakeCard(applet=FakeApplet(pin=b"1234", pin_tries=3))
    session = CoolKeySession(card)
    session.select_applet()
    assert session.verify_pin(Secret("1234")) == bytes.fromhex("0102030405060708")
    with pytest.raises(InvalidPinError) as wrong:
        session.verify_pin(Secret("9999"))
    assert wrong.value.attempts_left is None
    assert session.read_pin_tries() == 3
    assert card.applet is not None
    card.applet.pin_tries = 0
    with pytest.raises(InvalidPinError) as blocked:
        session.verify_pin(Secret("1234"))
    assert blocked.value.attempts_left == 0


def test_a_muscle_applet_is_not_coolkey() -> None:
    session = CoolKeySession(FakeCard(applet=FakeApplet(probe_sw=0x9C10)))
    session.select_applet()
    assert not session.is_coolkey()


class EndlessLister:
    """A card whose LIST OBJECTS never answers 9C12."""

    atr = b"\x3b\x00"

    def transmit(self, apdu: bytes) -> bytes:
        return ObjectEntry(object_id("c0"), 1).encode() + b"\x90\x00"


def test_a_listing_that_never_ends_is_malformed() -> None:
    with pytest.raises(MalformedResponseError, match="never ended"):
        CoolKeySession(EndlessLister()).list_objects()


@given(st.lists(st.binary(max_size=260), max_size=12))
def test_session_verbs_on_garbage_raise_only_card_errors(answers: list[bytes]) -> None:
    verbs = ["select_applet", "read_life_cycle", "read_status", "is_coolkey", "read_build_id",
             "read_issuer_info", "list_objects", "read_combined_object", "list_pins",
             "read_pin_tries", "read_cplc"]  # fmt: skip
    session = CoolKeySession(ScriptedCard(answers))
    for verb in verbs:
        try:
            getattr(session, verb)()
        except CardError:
            pass
