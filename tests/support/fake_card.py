# SPDX-License-Identifier: GPL-2.0-or-later
"""A small behavioural CoolKey card for unit tests: it answers APDUs from its state.

A GlobalPlatform card manager (SELECT, CPLC) and a CoolKey applet (life cycle, status,
build ID, issuer info, LIST/READ OBJECT, LIST PINS, PIN tries, VERIFY PIN) as CoolKey's
CardEdge.java answers them, with switches for the quirks identify must survive (no
4-byte life cycle, 61xx answers, no B0 4A, removal mid-read).
It implements ``CardConnection`` and is not the product simulator (``escd.sim.card``).
``ScriptedCard`` is the opposite: no state, it answers from a script (garbage included).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from escd.card.apdu import CommandApdu
from escd.card.atr import COOLKEY_ATR
from escd.card.coolkey import Aid, Cplc
from escd.card.objects import COMBINED_OBJECT_ID, ObjectEntry, build_token_objects
from escd.errors import CardRemovedError

OK = b"\x90\x00"
CUID = bytes.fromhex("40907001123400abcdef")
MSN = bytes.fromhex("01020304")
CARD_MANAGER_AIDS = (b"", Aid.CARD_MANAGER.value, bytes.fromhex("A000000003000000"))


def sw(value: int) -> bytes:
    return value.to_bytes(2, "big")


class ScriptedCard:
    """Answers each command with the next scripted answer, then 6A82; records the commands."""

    atr = b"\x3b\x00"

    def __init__(self, answers: Iterable[bytes]) -> None:
        self.answers = list(answers)
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return self.answers.pop(0) if self.answers else b"\x6a\x82"


@dataclass
class FakeApplet:
    """The CoolKey applet's state."""

    life_cycle: int = 0x07
    pin_byte: int = 1
    protocol: tuple[int, int] = (1, 1)
    release: tuple[int, int] = (1, 4)
    build_id: int = 0x58768072
    total_memory: int = 5000
    free_memory: int = 4000
    pins: int = 0x0001
    keys: int = 0
    issuer_info: bytes = bytes(224)
    #: object ID → (content, read ACL)
    objects: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    pin: bytes = b"1234"
    pin_tries: int | None = None
    #: Older applets refuse the 4-byte GET LIFE CYCLE (libckyapplet falls back:
    #: CKYApplet_GetLifeCycleV2 in CoolKey cky_applet.c).
    long_life_cycle: bool = True
    #: What ``B0 3C 01 00`` answers: 6D00 for CoolKey, 9C10 for a MUSCLE applet.
    probe_sw: int = 0x6D00

    def add_object(self, oid: bytes, content: bytes, read_acl: int = 0xFFFF) -> None:
        self.objects[oid] = (content, read_acl)


@dataclass
class FakeCard:
    """A card in a reader: card manager (when ``cplc`` is set) and optional applet."""

    applet: FakeApplet | None = field(default_factory=FakeApplet)
    cplc: Cplc | None = field(default_factory=lambda: Cplc.from_cuid(CUID, MSN))
    atr_bytes: bytes = COOLKEY_ATR
    #: Answer data as 61xx in chunks of this size (real card managers on T=0 answer
    #: SELECT with an FCI this way).
    response_chunk: int | None = None
    #: What libckyapplet's empty SELECT does: selects the card manager ("cm", Cyberflex),
    #: is refused ("refused"), or selects another default application ("other").
    empty_select: str = "cm"
    #: Raise CardRemovedError on this APDU (1-based) and every later one.
    remove_at: int | None = None
    #: Replace the answer to APDU n (1-based) with these bytes (a line glitch).
    corrupt: dict[int, bytes] = field(default_factory=dict)
    log: list[bytes] = field(default_factory=list)
    selected: str = "cm"
    _list_position: int = 0
    _pending: bytes = b""
    _nonce: bytes = bytes.fromhex("0102030405060708")

    @property
    def atr(self) -> bytes:
        return self.atr_bytes

    def power_on(self) -> None:
        """After power-on/reset the card manager is selected."""
        self.selected = "cm"

    def transmit(self, apdu: bytes) -> bytes:
        self.log.append(apdu)
        if self.remove_at is not None and len(self.log) >= self.remove_at:
            raise CardRemovedError()
        answer = self._transmit(apdu)
        return self.corrupt.get(len(self.log), answer)

    def _transmit(self, apdu: bytes) -> bytes:
        if apdu[:2] == b"\x00\xc0" and self._pending:
            wanted = apdu[4] or 256
            return self._answer(self._pending[:wanted], self._pending[wanted:])
        response = self._process(CommandApdu.decode(apdu))
        data, status = response[:-2], response[-2:]
        if self.response_chunk is not None and data and status == OK:
            return self._answer(data[: self.response_chunk], data[self.response_chunk :])
        return response

    def _answer(self, head: bytes, rest: bytes) -> bytes:
        self._pending = rest
        if rest:
            return head + bytes((0x61, min(len(rest), 256) % 256))
        return head + OK

    def _process(self, command: CommandApdu) -> bytes:
        if command.cla == 0x00 and command.ins == 0xA4:
            return self._select(command)
        if self.selected == "applet" and self.applet is not None:
            return self._applet(self.applet, command)
        if self.selected == "cm" and self.cplc is not None:
            if command.cla == 0x80 and command.ins == 0xCA and command.p1 == 0x9F:
                if command.p2 != 0x7F:
                    return sw(0x6A88)
                return self.cplc.raw + OK
            return sw(0x6E00) if command.cla == 0xB0 else sw(0x6D00)
        return sw(0x6E00)

    def _select(self, command: CommandApdu) -> bytes:
        if command.data == Aid.COOLKEY.value and self.applet is not None:
            self.selected = "applet"
            return OK
        if not command.data and self.empty_select == "refused":
            return sw(0x6A82)
        if not command.data and self.empty_select == "other":
            self.selected = "other"
            return OK
        if command.data in CARD_MANAGER_AIDS and self.cplc is not None:
            self.selected = "cm"
            return OK
        return sw(0x6A82)

    def _applet(self, applet: FakeApplet, command: CommandApdu) -> bytes:
        if command.cla == 0x00:
            return OK  # CardEdge.process(): CLA 00 non-SELECT commands succeed silently
        if command.cla != 0xB0:
            return sw(0x6D00) if command.cla == 0x80 else sw(0x6E00)
        p3 = (command.le or 0) % 256
        match command.ins:
            case 0xF2:
                if p3 == 1:
                    return bytes((applet.life_cycle,)) + OK
                if not applet.long_life_cycle:
                    return sw(0x6700)
                return bytes((applet.life_cycle, applet.pin_byte, *applet.protocol)) + OK
            case 0x3C:
                if command.p1 == 1:
                    return sw(applet.probe_sw)
                if command.p1 != 0:
                    return sw(0x9C10)
                return self._status(applet) + OK
            case 0x70:
                return applet.build_id.to_bytes(4, "big") + OK
            case 0xF6:
                return applet.issuer_info + OK if p3 == 0xE0 else sw(0x6700)
            case 0x58:
                return self._list(applet, command.p1)
            case 0x56:
                return self._read(applet, command.data)
            case 0x48:
                return applet.pins.to_bytes(2, "big") + OK
            case 0x4A:
                if applet.pin_tries is None:
                    return sw(0x6D00)
                return bytes((applet.pin_tries,)) + OK
            case 0x42:
                if applet.pin_tries == 0:
                    return sw(0x9C0C)
                if command.data != applet.pin:
                    return sw(0x9C02)
                return self._nonce + OK
        return sw(0x6D00)

    def _status(self, applet: FakeApplet) -> bytes:
        return (
            bytes((*applet.protocol, *applet.release))
            + applet.total_memory.to_bytes(4, "big")
            + applet.free_memory.to_bytes(4, "big")
            + bytes((bin(applet.pins).count("1"), applet.keys))
            + b"\x00\x00"
        )

    def _list(self, applet: FakeApplet, p1: int) -> bytes:
        if p1 not in (0, 1):
            return sw(0x9C10)
        if p1 == 0:
            self._list_position = 0
        items = list(applet.objects.items())
        if self._list_position >= len(items):
            return sw(0x9C12)
        oid, (content, read_acl) = items[self._list_position]
        self._list_position += 1
        return ObjectEntry(oid, len(content), read_acl, 0x4000, 0x4000).encode() + OK

    def _read(self, applet: FakeApplet, data: bytes) -> bytes:
        if len(data) != 17:
            return sw(0x9C0F)
        oid, offset, length, nonce = data[:4], int.from_bytes(data[4:8]), data[8], data[9:]
        if oid not in applet.objects:
            return sw(0x9C07)
        content, read_acl = applet.objects[oid]
        anonymous = nonce == bytes(8) and read_acl & 0x8000
        if not anonymous and nonce != self._nonce:
            return sw(0x9C06)
        if offset + length > len(content):
            return sw(0x9C0F)
        return content[offset : offset + length] + OK


def make_certificate(common_name: str, *, serial: int = 0x1234ABCD) -> bytes:
    """A self-signed certificate's DER (EC P-256: fast to make, the key type is irrelevant)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


def enrolled_applet(
    token_name: str = "Test User",
    certificates: tuple[tuple[int, str, bytes, int], ...] = (),
    *,
    cuid: bytes = CUID,
    compress: bool = False,
) -> FakeApplet:
    """An applet as a TPS leaves it after enrollment: life cycle 0F and a z0 object."""
    applet = FakeApplet(life_cycle=0x0F)
    z0 = build_token_objects(token_name, cuid, 1, certificates, compress=compress).encode()
    applet.add_object(COMBINED_OBJECT_ID, z0)
    return applet
