# SPDX-License-Identifier: GPL-2.0-or-later
"""ATR parsing (ISO 7816-3) and the table of CoolKey ATRs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escd.card.atr import (
    COOLKEY_ATR,
    KNOWN_ATRS,
    Atr,
    Convention,
    InterfaceGroup,
    describe_atr,
    known_atr,
)
from escd.errors import MalformedResponseError

#: The test environment's vpcd card: T=0 and T=1 offered, ten historical bytes, a TCK.
TEST_ATR = bytes.fromhex("3B8A8001") + b"ESCDTEST01" + b"\x0d"


@pytest.mark.parametrize(
    ("raw", "groups", "historical"),
    [
        # The CoolKey ATRs of escd.card.atr; all are T=0 only, so none has a TCK.
        ("3B76940000FF6276010000", [InterfaceGroup(0x94, 0x00, 0x00)], "FF6276010000"),
        ("3B759400006202020201", [InterfaceGroup(0x94, 0x00, 0x00)], "6202020201"),
        ("3B959540FFAE01030000",
         [InterfaceGroup(ta=0x95, td=0x40), InterfaceGroup(tc=0xFF)], "AE01030000"),
        ("3B6F00FF525341536563757249442852293130",
         [InterfaceGroup(tb=0x00, tc=0xFF)], "525341536563757249442852293130"),
    ],
)  # fmt: skip
def test_coolkey_atrs_parse(raw: str, groups: list[InterfaceGroup], historical: str) -> None:
    atr = Atr.parse(bytes.fromhex(raw))
    assert atr.convention is Convention.DIRECT
    assert list(atr.interface) == groups
    assert atr.historical_bytes == bytes.fromhex(historical)
    assert atr.protocols == (0,)
    assert atr.tck is None and atr.tck_valid is None
    assert atr.hex == raw


def test_t1_atr_carries_a_valid_tck() -> None:
    atr = Atr.parse(TEST_ATR)
    assert atr.indicated_protocols == (0, 1)
    assert atr.protocols == (0, 1)
    assert atr.historical_bytes == b"ESCDTEST01"
    assert atr.tck == 0x0D
    assert atr.tck_valid is True
    assert Atr.parse(TEST_ATR[:-1] + b"\x0e").tck_valid is False


def test_t15_is_a_global_indicator_not_a_protocol() -> None:
    # TD1 = 0x1F: T=15 with TA2; TCK required; no protocol TD → T=0.
    body = bytes.fromhex("3B 80 1F 80")
    tck = 0
    for byte in body[1:]:
        tck ^= byte
    atr = Atr.parse(body + bytes((tck,)))
    assert atr.indicated_protocols == (15,)
    assert atr.protocols == (0,)
    assert atr.tck_valid is True


def test_inverse_convention() -> None:
    assert Atr.parse(bytes.fromhex("3F00")).convention is Convention.INVERSE


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "too short"),
        ("3B", "too short"),
        ("3A00", "not 3B/3F"),
        ("3B70", "interface bytes"),  # TA1, TB1, TC1 announced, none there
        ("3B05AABB", "historical bytes"),
        ("3B8001", "TCK"),  # TD1 announces T=1, no TCK follows
        ("3B00AA", "after its end"),
        ("3B0F" + "00" * 32, "longer than 33"),
    ],
)
def test_broken_atrs_are_malformed(raw: str, message: str) -> None:
    with pytest.raises(MalformedResponseError, match=message):
        Atr.parse(bytes.fromhex(raw))


@given(st.binary(max_size=40))
def test_random_atrs_parse_or_raise_malformed(raw: bytes) -> None:
    try:
        atr = Atr.parse(raw)
    except MalformedResponseError:
        return
    assert atr.raw == raw
    assert atr.protocols


def _presence(group: InterfaceGroup) -> int:
    """The Y nibble that announces this group's bytes."""
    values = (group.ta, group.tb, group.tc, group.td)
    return sum(bit for bit, value in zip((1, 2, 4, 8), values, strict=True) if value is not None)


@st.composite
def atr_layouts(draw: st.DrawFn) -> tuple[bytes, list[InterfaceGroup], bytes]:
    """A well-formed ATR built from random groups, historical bytes and (if due) a TCK."""
    count = draw(st.integers(1, 3))
    groups: list[InterfaceGroup] = []
    for index in range(count):
        ta, tb, tc = (draw(st.one_of(st.none(), st.integers(0, 255))) for _ in range(3))
        td = None if index == count - 1 else draw(st.integers(0, 15))
        groups.append(InterfaceGroup(ta, tb, tc, td))
    # Link the groups: each TD's high nibble announces the bytes of the next group.
    for index in range(count - 2, -1, -1):
        group = groups[index]
        assert group.td is not None
        td = _presence(groups[index + 1]) << 4 | group.td
        groups[index] = InterfaceGroup(group.ta, group.tb, group.tc, td)
    historical = draw(st.binary(max_size=8))
    body = bytes((_presence(groups[0]) << 4 | len(historical),))
    for group in groups:
        body += bytes(v for v in (group.ta, group.tb, group.tc, group.td) if v is not None)
    body += historical
    if any(group.td is not None and group.td & 0x0F for group in groups):
        tck = 0
        for byte in body:
            tck ^= byte
        body += bytes((tck,))
    return b"\x3b" + body, groups, historical


@given(atr_layouts())
def test_well_formed_atrs_parse_into_their_parts(
    layout: tuple[bytes, list[InterfaceGroup], bytes],
) -> None:
    raw, groups, historical = layout
    atr = Atr.parse(raw)
    assert list(atr.interface) == groups
    assert atr.historical_bytes == historical
    assert atr.tck_valid in (None, True)


def test_known_atr_table() -> None:
    entry = known_atr(COOLKEY_ATR)
    assert entry is not None and entry.coolkey_forced
    assert [item.coolkey_forced for item in KNOWN_ATRS].count(True) == 1
    assert known_atr(TEST_ATR) is None
    for item in KNOWN_ATRS:
        Atr.parse(item.atr)


def test_describe_atr() -> None:
    assert describe_atr(COOLKEY_ATR) == "CoolKey token"
    assert describe_atr(TEST_ATR) == (
        "unknown card (T=0, T=1; historical bytes 45534344544553543031)"
    )
    assert describe_atr(TEST_ATR[:-1] + b"\x00").endswith("; wrong TCK)")
    assert describe_atr(b"\x00") == "unparsable ATR"
