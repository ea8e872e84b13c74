# SPDX-License-Identifier: GPL-2.0-or-later
"""Answer-to-reset parsing (ISO 7816-3 §8) and the ATRs known to carry CoolKey tokens.

Owns the ATR layout (TS, T0, interface bytes, historical bytes, TCK) and the table of
ATRs known on CoolKey tokens (CoolKey slot.cpp, ATR..ATR3). The ATR is informational for
escd: the state of a token comes from its APDU answers (``escd.card.identify``), never
from its ATR, so nothing here decides a state.

Pure: no I/O, no logging. A structurally broken ATR raises ``MalformedResponseError``;
a wrong TCK does not (``tck_valid`` says so), as pcscd has already accepted the card.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, unique

from escd.errors import MalformedResponseError

#: ISO 7816-3: TS + T0 + at most 32 further bytes.
MAX_ATR_LENGTH = 33


@unique
class Convention(IntEnum):
    """TS, the initial character."""

    DIRECT = 0x3B
    INVERSE = 0x3F


@dataclass(frozen=True, slots=True)
class InterfaceGroup:
    """TAi, TBi, TCi, TDi of one group; None when absent."""

    ta: int | None = None
    tb: int | None = None
    tc: int | None = None
    td: int | None = None


@dataclass(frozen=True, slots=True)
class Atr:
    """A parsed ATR."""

    raw: bytes
    convention: Convention
    interface: tuple[InterfaceGroup, ...]
    historical_bytes: bytes
    tck: int | None

    @property
    def indicated_protocols(self) -> tuple[int, ...]:
        """The T values in the TD bytes, in order, with repeats (T=15 included)."""
        return tuple(group.td & 0x0F for group in self.interface if group.td is not None)

    @property
    def protocols(self) -> tuple[int, ...]:
        """Protocols the card offers: T=0 when no TD1 (ISO 7816-3 §8.2.3); never T=15."""
        offered: list[int] = []
        for protocol in self.indicated_protocols:
            if protocol != 15 and protocol not in offered:
                offered.append(protocol)
        return tuple(offered) if offered else (0,)

    @property
    def tck_valid(self) -> bool | None:
        """XOR of T0..TCK is zero; None when the ATR has no TCK (only T=0 indicated)."""
        if self.tck is None:
            return None
        check = 0
        for byte in self.raw[1:]:
            check ^= byte
        return check == 0

    @property
    def hex(self) -> str:
        """Upper-case hex without separators, as ESC sends ``tokenATR`` (ESC CoolKeyHandler.cpp)."""
        return self.raw.hex().upper()

    @classmethod
    def parse(cls, raw: bytes) -> Atr:
        if len(raw) < 2:
            raise MalformedResponseError(f"ATR of {len(raw)} bytes is too short")
        if len(raw) > MAX_ATR_LENGTH:
            raise MalformedResponseError(f"ATR of {len(raw)} bytes is longer than 33")
        try:
            convention = Convention(raw[0])
        except ValueError as err:
            raise MalformedResponseError(f"ATR starts with {raw[0]:02X}, not 3B/3F") from err
        position = 2
        indicator = raw[1] >> 4
        historical_length = raw[1] & 0x0F
        groups: list[InterfaceGroup] = []
        while True:
            values: list[int | None] = []
            for bit in (0x1, 0x2, 0x4, 0x8):
                if indicator & bit:
                    if position >= len(raw):
                        raise MalformedResponseError("ATR ends inside its interface bytes")
                    values.append(raw[position])
                    position += 1
                else:
                    values.append(None)
            group = InterfaceGroup(*values)
            groups.append(group)
            if group.td is None:
                break
            indicator = group.td >> 4
        end = position + historical_length
        if end > len(raw):
            raise MalformedResponseError("ATR ends inside its historical bytes")
        historical = raw[position:end]
        has_tck = any(group.td is not None and group.td & 0x0F != 0 for group in groups)
        tck: int | None = None
        if has_tck:
            if end >= len(raw):
                raise MalformedResponseError("ATR lacks its TCK")
            tck = raw[end]
            end += 1
        if end != len(raw):
            raise MalformedResponseError("ATR has bytes after its end")
        # An empty first group (T0 announced nothing) is still group 1; keep it so that
        # interface[i] is always group i+1.
        return cls(bytes(raw), convention, tuple(groups), historical, tck)


@dataclass(frozen=True, slots=True)
class KnownAtr:
    """An ATR seen on CoolKey tokens, with what it is and who keys off it."""

    atr: bytes
    description: str
    #: libcoolkeypk11 shows a token for this ATR even without the applet (ATR3).
    coolkey_forced: bool = False


#: The production CoolKey ATR (ATR3 in CoolKey slot.cpp); the simulator uses it.
COOLKEY_ATR = bytes.fromhex("3B76940000FF6276010000")

KNOWN_ATRS: tuple[KnownAtr, ...] = (
    KnownAtr(COOLKEY_ATR, "CoolKey token", coolkey_forced=True),
    KnownAtr(
        bytes.fromhex("3B759400006202020201"),
        "Axalto Cyberflex Access 32K e-gate (Gemalto TOP US)",
    ),
    KnownAtr(
        bytes.fromhex("3B759400006202020301"),
        "Axalto Cyberflex Access 32K e-gate (Gemalto TOP US)",
    ),
    KnownAtr(
        bytes.fromhex("3B959540FFAE01030000"),
        "Axalto Cyberflex Access 64K v2 (Gemalto TOP IM FIPS CY2)",
    ),
    KnownAtr(
        bytes.fromhex("3B6F00FF525341536563757249442852293130"),
        "RSA SecurID (RSASecurID(R)10)",
    ),
)


def known_atr(raw: bytes) -> KnownAtr | None:
    """The table entry for this ATR, if any (exact match)."""
    for entry in KNOWN_ATRS:
        if entry.atr == raw:
            return entry
    return None


def describe_atr(raw: bytes) -> str:
    """A one-line description: the known card, or the protocols and historical bytes."""
    entry = known_atr(raw)
    if entry is not None:
        return entry.description
    try:
        atr = Atr.parse(raw)
    except MalformedResponseError:
        return "unparsable ATR"
    protocols = ", ".join(f"T={protocol}" for protocol in atr.protocols)
    text = f"unknown card ({protocols}"
    if atr.historical_bytes:
        text += f"; historical bytes {atr.historical_bytes.hex().upper()}"
    if atr.tck_valid is False:
        text += "; wrong TCK"
    return text + ")"
