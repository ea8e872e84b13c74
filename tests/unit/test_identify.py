# SPDX-License-Identifier: GPL-2.0-or-later
"""Token identification against a behavioural fake card."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escd.card.coolkey import IssuerInfo
from escd.card.identify import identify
from escd.card.objects import (
    COMBINED_OBJECT_ID,
    Attribute,
    AttributeType,
    FixedAttributes,
    FixedFlag,
    ObjectClass,
    ObjectRecord,
    build_token_objects,
    object_id,
)
from escd.errors import CardError, CardRemovedError, PcscUnavailableError
from escd.model import AppletKind, TokenState
from tests.support.fake_card import (
    CUID,
    FakeApplet,
    FakeCard,
    ScriptedCard,
    enrolled_applet,
    make_certificate,
)

READER = "Test Reader 00 00"
ALICE = make_certificate("Alice Example", serial=0xA11CE)
BOB = make_certificate("Bob Example", serial=0xB0B)


def _enrolled_card(**card_options: object) -> FakeCard:
    applet = enrolled_applet(
        "alice",
        ((0, "Alice signing", ALICE, 2048), (1, "Alice encryption", BOB, 2048)),
    )
    return FakeCard(applet=applet, **card_options)  # type: ignore[arg-type]


def test_blank_gp_card_is_no_applet_with_its_cuid() -> None:
    card = FakeCard(applet=None)
    info = identify(card, READER)
    assert info.state is TokenState.NO_APPLET
    assert info.applet is AppletKind.UNKNOWN
    assert info.cuid == "40907001123400abcdef"
    assert info.msn == "01020304"
    assert info.applet_version == (0, 0)
    assert info.problem == ""
    assert info.reader == READER and info.atr == card.atr


def test_card_without_applet_or_cplc_is_unknown_with_a_reason() -> None:
    info = identify(FakeCard(applet=None, cplc=None), READER)
    assert info.state is TokenState.UNKNOWN
    assert info.applet is AppletKind.UNKNOWN
    assert info.cuid is None
    assert "not a CoolKey token" in info.problem
    assert info.token_id.startswith("atr_")


def test_formatted_token_is_uninitialized_with_every_detail() -> None:
    applet = FakeApplet(
        life_cycle=0x07,
        issuer_info=IssuerInfo.from_url("http://tps.example.com/ph").raw,
    )
    card = FakeCard(applet=applet)
    info = identify(card, READER)
    assert info.state is TokenState.UNINITIALIZED
    assert info.applet is AppletKind.COOLKEY
    assert info.life_cycle == 0x07
    assert info.applet_version == (1, 1)
    assert info.applet_release == (1, 4)
    assert info.build_id == 0x58768072
    assert (info.total_memory, info.free_memory) == (5000, 4000)
    assert info.phone_home_url == "http://tps.example.com/ph"
    assert info.cuid == "40907001123400abcdef"
    assert info.pin_tries_left == -1
    assert info.certificates == ()
    assert info.problem == ""
    # Left as libckyapplet leaves it: the applet selected again after the CPLC read.
    assert card.selected == "applet"


@pytest.mark.parametrize("compress", [False, True])
def test_enrolled_token_lists_its_certificates_from_z0(compress: bool) -> None:
    applet = enrolled_applet("alice", ((0, "Alice signing", ALICE, 2048),), compress=compress)
    info = identify(FakeCard(applet=applet), READER)
    assert info.state is TokenState.ENROLLED
    assert info.life_cycle == 0x0F
    assert info.token_name == "alice"
    assert [(c.subject, c.label) for c in info.certificates] == [
        ("CN=Alice Example,O=Example Org", "Alice signing")
    ]
    assert info.certificates[0].serial == "a11ce"
    assert info.problem == ""


def test_identify_sends_no_pin_and_reads_z0_anonymously() -> None:
    card = _enrolled_card()
    identify(card, READER)
    assert not any(apdu[:2] == b"\xb0\x42" for apdu in card.log)
    reads = [apdu for apdu in card.log if apdu[:2] == b"\xb0\x56"]
    assert reads and all(apdu[-8:] == bytes(8) for apdu in reads)


def test_enrolled_token_without_cplc_takes_the_cuid_from_z0() -> None:
    info = identify(_enrolled_card(cplc=None), READER)
    assert info.state is TokenState.ENROLLED
    assert info.cuid == CUID.hex()
    assert info.msn is None
    assert info.problem == ""


def test_cplc_wins_over_a_different_z0_cuid_and_the_mismatch_is_reported() -> None:
    applet = enrolled_applet("alice", cuid=bytes(10))
    info = identify(FakeCard(applet=applet), READER)
    assert info.cuid == CUID.hex()
    assert "z0 names CUID 00000000000000000000" in info.problem


@pytest.mark.parametrize("life_cycle", [0x00, 0x03, 0x07, 0x7F, 0x83, 0x87, 0x8F, 0xFF])
def test_every_life_cycle_but_0f_is_uninitialized(life_cycle: int) -> None:
    info = identify(FakeCard(applet=FakeApplet(life_cycle=life_cycle)), READER)
    assert info.state is TokenState.UNINITIALIZED
    assert info.life_cycle == life_cycle


def test_pre_1_0_applet_is_what_esc_calls_applet_not_found() -> None:
    info = identify(FakeCard(applet=FakeApplet(protocol=(0, 9))), READER)
    assert info.state is TokenState.NO_APPLET
    assert info.applet is AppletKind.OTHER
    assert info.applet_version == (0, 9)
    assert "older than 1.0" in info.problem
    assert info.cuid == CUID.hex()


def test_applet_without_the_long_life_cycle_falls_back() -> None:
    info = identify(FakeCard(applet=FakeApplet(long_life_cycle=False)), READER)
    assert info.state is TokenState.UNINITIALIZED
    assert info.applet_version == (1, 1)
    assert info.problem == ""


def test_pin_tries_are_reported_when_the_applet_answers_b04a() -> None:
    info = identify(FakeCard(applet=FakeApplet(pin_tries=0)), READER)
    assert info.pin_tries_left == 0


def test_a_muscle_applet_keeps_the_esc_state_but_is_not_coolkey() -> None:
    info = identify(FakeCard(applet=FakeApplet(probe_sw=0x9C10)), READER)
    assert info.state is TokenState.UNINITIALIZED
    assert info.applet is AppletKind.OTHER


class SelectOnlyCard:
    """Answers every SELECT with 9000 and everything else with 6D00."""

    atr = b"\x3b\x00"

    def transmit(self, apdu: bytes) -> bytes:
        return b"\x90\x00" if apdu[1] == 0xA4 else b"\x6d\x00"


def test_applet_that_selects_but_speaks_no_coolkey_is_unknown() -> None:
    info = identify(SelectOnlyCard(), READER)
    assert info.state is TokenState.UNKNOWN
    assert info.applet is AppletKind.OTHER
    assert "GET LIFE CYCLE" in info.problem


def test_malformed_z0_leaves_the_token_enrolled_with_a_problem() -> None:
    applet = FakeApplet(life_cycle=0x0F)
    applet.add_object(COMBINED_OBJECT_ID, bytes.fromhex("0100 0001") + CUID + bytes(300))
    info = identify(FakeCard(applet=applet), READER)
    assert info.state is TokenState.ENROLLED
    assert info.certificates == ()
    assert "z0 is malformed" in info.problem


def test_a_certificate_that_does_not_parse_is_reported_and_the_rest_listed() -> None:
    token = build_token_objects(
        "alice", CUID, 1, [(0, "broken", b"\x30\x00", 2048), (1, "good", ALICE, 2048)]
    )
    applet = FakeApplet(life_cycle=0x0F)
    applet.add_object(COMBINED_OBJECT_ID, token.encode())
    info = identify(FakeCard(applet=applet), READER)
    assert [c.label for c in info.certificates] == ["good"]
    assert "certificate c0 could not be parsed" in info.problem


def test_z0_that_needs_a_login_is_reported() -> None:
    applet = enrolled_applet("alice")
    content, _ = applet.objects[COMBINED_OBJECT_ID]
    applet.add_object(COMBINED_OBJECT_ID, content, read_acl=0x0001)
    info = identify(FakeCard(applet=applet), READER)
    assert info.state is TokenState.ENROLLED
    assert "reading z0 failed" in info.problem and "9C06" in info.problem


def test_older_tokens_with_separate_certificate_objects() -> None:
    applet = FakeApplet(life_cycle=0x0F)
    label = ObjectRecord(
        object_id("c0"),
        FixedAttributes(0, ObjectClass.CERTIFICATE, FixedFlag.TOKEN),
        (Attribute(AttributeType.LABEL, b"old style"),),
    )
    applet.add_object(object_id("c0"), b"\x01" + label.encode())
    applet.add_object(object_id("C0"), ALICE)
    info = identify(FakeCard(applet=applet), READER)
    assert info.state is TokenState.ENROLLED
    assert [(c.subject, c.label) for c in info.certificates] == [
        ("CN=Alice Example,O=Example Org", "old style")
    ]


def test_answers_chained_with_61xx_read_the_same() -> None:
    assert identify(_enrolled_card(response_chunk=20), READER) == identify(_enrolled_card(), READER)


def test_removal_at_any_step_propagates() -> None:
    steps = len(_identify_log(_enrolled_card()))
    assert steps > 10
    for step in range(1, steps + 1):
        with pytest.raises(CardRemovedError):
            identify(_enrolled_card(remove_at=step), READER)


def _identify_log(card: FakeCard) -> list[bytes]:
    identify(card, READER)
    return card.log


class FailingConnection:
    """A connection whose transmit always fails with the given error."""

    atr = b"\x3b\x00"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def transmit(self, apdu: bytes) -> bytes:
        raise self.error


def test_pcscd_going_away_propagates() -> None:
    with pytest.raises(PcscUnavailableError):
        identify(FailingConnection(PcscUnavailableError()), READER)


def test_a_failing_transmit_makes_an_unknown_card() -> None:
    info = identify(FailingConnection(CardError("transmit failed")), READER)
    assert info.state is TokenState.UNKNOWN
    assert "transmit failed" in info.problem


answers = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [b"\x90\x00", b"\x6d\x00", b"\x9c\x12", b"\x61\x05", b"\x0f\x01\x01\x01\x90\x00"]
    ),
)


@settings(max_examples=300)
@given(st.lists(answers, max_size=30))
def test_garbage_answers_never_raise(script: list[bytes]) -> None:
    info = identify(ScriptedCard(script), READER)
    assert info.reader == READER
    if info.state is TokenState.UNKNOWN:
        assert info.problem


@given(st.integers(1, 40), st.binary(max_size=20))
def test_an_enrolled_card_with_one_corrupted_answer_never_raises(
    position: int, junk: bytes
) -> None:
    info = identify(_enrolled_card(corrupt={position: junk}), READER)
    assert info.reader == READER
