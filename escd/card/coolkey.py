# SPDX-License-Identifier: GPL-2.0-or-later
"""The CoolKey applet and the GlobalPlatform card manager, as far as escd reads them.

Owns the command builders and response parsers (SELECT, CPLC, GET LIFE CYCLE, GET
STATUS, GET BUILD ID, GET ISSUER INFO, LIST OBJECTS, READ OBJECT, LIST PINS, GET PIN
REMAINING TRIES, VERIFY PIN) and ``CoolKeySession``, which speaks them over any
``CardConnection``. The commands are those of the CoolKey applet (CoolKey
CardEdge.java) as libckyapplet sends them (CoolKey cky_applet.c, cky_factory.c).

Pure: no I/O of its own and no logging; the connection it is given does the exchange.
Parsers check lengths exactly (as libckyapplet's ``CKYApplet_VerifyResponse`` does) and
raise only ``MalformedResponseError``; a status word other than 9000 is an ``ApduError``.
The secure-channel (CLA 84) commands belong to the TPS and the simulator, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum, unique

from escd.card.apdu import CommandApdu, ResponseApdu, StatusWord
from escd.card.objects import (
    COMBINED_OBJECT_ID,
    CUID_LENGTH,
    OBJECT_ID_LENGTH,
    ObjectEntry,
)
from escd.card.transport import CardConnection, send
from escd.errors import ApduError, InvalidPinError, MalformedResponseError
from escd.log import Secret


class Aid(bytes, Enum):
    """Application identifiers escd selects."""

    COOLKEY = bytes.fromhex("627601FF000000")
    CARD_MANAGER = bytes.fromhex("A0000000030000")


@unique
class Cla(IntEnum):
    ISO = 0x00
    GLOBAL_PLATFORM = 0x80
    COOLKEY = 0xB0


@unique
class Ins(IntEnum):
    """Instruction codes (ISO 7816-4, GlobalPlatform, CardEdge.java)."""

    SELECT = 0xA4
    GET_DATA = 0xCA
    VERIFY_PIN = 0x42
    LIST_PINS = 0x48
    GET_PIN_TRIES = 0x4A
    READ_OBJECT = 0x56
    LIST_OBJECTS = 0x58
    LOGOUT = 0x61
    GET_BUILD_ID = 0x70
    GET_STATUS = 0x3C
    GET_LIFE_CYCLE = 0xF2
    GET_ISSUER_INFO = 0xF6


@unique
class LifeCycle(IntEnum):
    """GlobalPlatform applet life cycle, byte 0 of GET LIFE CYCLE (cky_factory.h)."""

    LOGICALLY_DELETED = 0x00
    INSTALLED = 0x03
    SELECTABLE = 0x07
    PERSONALIZED = 0x0F
    BLOCKED = 0x7F
    LOCKED = 0xFF


@unique
class ListSequence(IntEnum):
    """P1 of LIST OBJECTS."""

    RESET = 0x00
    NEXT = 0x01


CPLC_TAG = b"\x9f\x7f"
CPLC_LENGTH = 45
LIFE_CYCLE_LENGTH = 4
STATUS_LENGTH = 16
BUILD_ID_LENGTH = 4
ISSUER_INFO_LENGTH = 224
NONCE_LENGTH = 8
#: Eight zero bytes authenticate the anonymous identity (CoolKey CardEdge.java,
#: ``verifySecureNonce``).
ZERO_NONCE = bytes(NONCE_LENGTH)
#: One READ OBJECT answers at most 255 bytes (``sendData``); libcoolkeypk11 reads 255.
MAX_READ_CHUNK = 255
#: More LIST OBJECTS rounds than this means the card never sends 9C12.
MAX_LISTED_OBJECTS = 1024
USER_PIN = 0


# -- builders ---------------------------------------------------------------------------


def select_coolkey() -> CommandApdu:
    """``00 A4 04 00 07 627601FF000000``: case 3, as libckyapplet and OpenSC send it."""
    return CommandApdu(Cla.ISO, Ins.SELECT, 0x04, 0x00, Aid.COOLKEY.value)


def select_card_manager(aid: bytes | None = None) -> CommandApdu:
    """Select the card manager by AID, or with libckyapplet's empty select ``00 A4 04 00 00``.

    The empty form's fifth byte is read by ISO as Le=256; on the wire it is what
    libckyapplet sends and what selects the default application on Cyberflex cards.
    """
    if aid is None:
        return CommandApdu(Cla.ISO, Ins.SELECT, 0x04, 0x00, le=256)
    return CommandApdu(Cla.ISO, Ins.SELECT, 0x04, 0x00, aid)


def get_cplc() -> CommandApdu:
    """``80 CA 9F 7F 2D``: GET DATA CPLC (needs the card manager selected)."""
    return CommandApdu(Cla.GLOBAL_PLATFORM, Ins.GET_DATA, 0x9F, 0x7F, le=CPLC_LENGTH)


def get_life_cycle(long_form: bool = True) -> CommandApdu:
    """``B0 F2 00 00 04`` (life cycle, PIN byte, protocol version) or ``… 01``."""
    return CommandApdu(
        Cla.COOLKEY, Ins.GET_LIFE_CYCLE, 0, 0, le=LIFE_CYCLE_LENGTH if long_form else 1
    )


def get_status() -> CommandApdu:
    """``B0 3C 00 00 10``."""
    return CommandApdu(Cla.COOLKEY, Ins.GET_STATUS, 0, 0, le=STATUS_LENGTH)


def get_memory_probe() -> CommandApdu:
    """``B0 3C 01 00 00``: CoolKey answers 6D00, a MUSCLE applet 9C10 (OpenSC's match)."""
    return CommandApdu(Cla.COOLKEY, Ins.GET_STATUS, 0x01, 0x00, le=256)


def get_build_id() -> CommandApdu:
    """``B0 70 00 00 04``."""
    return CommandApdu(Cla.COOLKEY, Ins.GET_BUILD_ID, 0, 0, le=BUILD_ID_LENGTH)


def get_issuer_info() -> CommandApdu:
    """``B0 F6 00 00 E0`` (the applet answers 67 00 for any other length)."""
    return CommandApdu(Cla.COOLKEY, Ins.GET_ISSUER_INFO, 0, 0, le=ISSUER_INFO_LENGTH)


def list_objects(sequence: ListSequence) -> CommandApdu:
    """``B0 58 P1 00 0E``."""
    return CommandApdu(Cla.COOLKEY, Ins.LIST_OBJECTS, sequence, 0, le=14)


def read_object(
    object_id: bytes, offset: int, length: int, nonce: bytes = ZERO_NONCE
) -> CommandApdu:
    """``B0 56 00 00 11 <id 4> <offset 4> <length 1> <nonce 8>``, case 3 as libckyapplet."""
    if len(object_id) != OBJECT_ID_LENGTH or len(nonce) != NONCE_LENGTH:
        raise ValueError("object IDs are 4 bytes and nonces 8")
    if not 1 <= length <= MAX_READ_CHUNK or not 0 <= offset <= 0xFFFFFFFF:
        raise ValueError(f"cannot read {length} bytes at {offset}")
    data = object_id + offset.to_bytes(4, "big") + bytes((length,)) + nonce
    return CommandApdu(Cla.COOLKEY, Ins.READ_OBJECT, 0, 0, data)


def list_pins() -> CommandApdu:
    """``B0 48 00 00 02``."""
    return CommandApdu(Cla.COOLKEY, Ins.LIST_PINS, 0, 0, le=2)


def get_pin_tries(pin_number: int = USER_PIN) -> CommandApdu:
    """``B0 4A <pin> 00 01``; only some applets have it.

    It is in CoolKey's CardEdge.java; libckyapplet, ESC and OpenSC never send it.
    """
    return CommandApdu(Cla.COOLKEY, Ins.GET_PIN_TRIES, pin_number, 0, le=1)


def verify_pin(pin: Secret, pin_number: int = USER_PIN) -> CommandApdu:
    """``B0 42 <pin> 00 Lc <PIN>``. The result carries the PIN: never log or keep it."""
    return CommandApdu(Cla.COOLKEY, Ins.VERIFY_PIN, pin_number, 0, pin.reveal().encode())


# -- parsed answers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cplc:
    """The 45-byte CPLC answer: tag, length, 42 bytes of data.

    Layout as libckyapplet reads it (CoolKey cky_applet.c, ``ckyAppletFill_GetCPLCData``).
    """

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != CPLC_LENGTH:
            raise MalformedResponseError(f"CPLC is {len(self.raw)} bytes, expected 45")
        if self.raw[:2] != CPLC_TAG or self.raw[2] != CPLC_LENGTH - 3:
            raise MalformedResponseError("CPLC does not start with tag 9F7F, length 2A")

    @classmethod
    def decode(cls, data: bytes) -> Cplc:
        return cls(bytes(data))

    def encode(self) -> bytes:
        return self.raw

    @classmethod
    def from_cuid(cls, cuid: bytes, msn: bytes = bytes(4)) -> Cplc:
        """A CPLC carrying this CUID and MSN, other fields zero (for simulated cards)."""
        if len(cuid) != CUID_LENGTH or len(msn) != 4:
            raise ValueError("a CUID is 10 bytes and an MSN 4")
        raw = bytearray(CPLC_LENGTH)
        raw[0:3] = CPLC_TAG + bytes((CPLC_LENGTH - 3,))
        raw[3:7] = cuid[0:4]
        raw[19:21] = cuid[4:6]
        raw[15:19] = cuid[6:10]
        raw[41:45] = msn
        return cls(bytes(raw))

    @property
    def ic_fabricator(self) -> int:
        return int.from_bytes(self.raw[3:5], "big")

    @property
    def ic_type(self) -> int:
        return int.from_bytes(self.raw[5:7], "big")

    @property
    def ic_serial(self) -> bytes:
        return self.raw[15:19]

    @property
    def ic_batch(self) -> bytes:
        return self.raw[19:21]

    @property
    def cuid(self) -> bytes:
        """Fabricator, IC type, batch, serial: bytes 3–6, 19–20, 15–18 (all three stacks)."""
        return self.raw[3:7] + self.raw[19:21] + self.raw[15:19]

    @property
    def cuid_hex(self) -> str:
        """The ESC keyID: 20 lower-case hex digits."""
        return self.cuid.hex()

    @property
    def msn(self) -> bytes:
        """IC personalization equipment ID, bytes 41–44 (``CKYApplet_GetMSN``)."""
        return self.raw[41:45]


@dataclass(frozen=True, slots=True)
class LifeCycleInfo:
    """GET LIFE CYCLE: life cycle, PIN byte, applet protocol version.

    The 4-byte answer of CoolKey CardEdge.java, ``getLifeCycle``.
    """

    life_cycle: int
    pin_count: int
    protocol_major: int
    protocol_minor: int

    @classmethod
    def decode(cls, data: bytes) -> LifeCycleInfo:
        if len(data) != LIFE_CYCLE_LENGTH:
            raise MalformedResponseError(f"GET LIFE CYCLE answered {len(data)} bytes, not 4")
        return cls(data[0], data[1], data[2], data[3])

    def encode(self) -> bytes:
        return bytes((self.life_cycle, self.pin_count, self.protocol_major, self.protocol_minor))

    @property
    def personalized(self) -> bool:
        """ESC's only test: life cycle exactly 0x0F is CKF_TOKEN_INITIALIZED.

        libcoolkeypk11 sets the flag on that value alone (CoolKey slot.cpp,
        ``connectToToken``); ESC looks at nothing else (ESC CoolKeyHandler.cpp, MapGetFlags).
        """
        return self.life_cycle == LifeCycle.PERSONALIZED

    @property
    def protocol_version(self) -> tuple[int, int]:
        return (self.protocol_major, self.protocol_minor)


@dataclass(frozen=True, slots=True)
class AppletStatus:
    """GET STATUS, 16 bytes (CoolKey CardEdge.java, ``GetStatus``)."""

    protocol_major: int
    protocol_minor: int
    applet_major: int
    applet_minor: int
    total_memory: int
    free_memory: int
    pin_count: int
    key_count: int
    logged_in: int

    @classmethod
    def decode(cls, data: bytes) -> AppletStatus:
        if len(data) != STATUS_LENGTH:
            raise MalformedResponseError(f"GET STATUS answered {len(data)} bytes, not 16")
        return cls(
            protocol_major=data[0],
            protocol_minor=data[1],
            applet_major=data[2],
            applet_minor=data[3],
            total_memory=int.from_bytes(data[4:8], "big"),
            free_memory=int.from_bytes(data[8:12], "big"),
            pin_count=data[12],
            key_count=data[13],
            logged_in=int.from_bytes(data[14:16], "big"),
        )

    def encode(self) -> bytes:
        return (
            bytes((self.protocol_major, self.protocol_minor, self.applet_major, self.applet_minor))
            + self.total_memory.to_bytes(4, "big")
            + self.free_memory.to_bytes(4, "big")
            + bytes((self.pin_count, self.key_count))
            + self.logged_in.to_bytes(2, "big")
        )

    @property
    def protocol_version(self) -> tuple[int, int]:
        return (self.protocol_major, self.protocol_minor)

    @property
    def applet_version(self) -> tuple[int, int]:
        """The applet release (e.g. 1.4), which the TPS puts in front of the build ID."""
        return (self.applet_major, self.applet_minor)


def parse_build_id(data: bytes) -> int:
    """GET BUILD ID: a 32-bit number, shown as 8 hex digits (e.g. ``58768072``)."""
    if len(data) != BUILD_ID_LENGTH:
        raise MalformedResponseError(f"GET BUILD ID answered {len(data)} bytes, not 4")
    return int.from_bytes(data, "big")


@dataclass(frozen=True, slots=True)
class IssuerInfo:
    """The 224-byte issuer info blob and the Phone Home URL in it.

    ESC reads the URL from it (ESC CoolKey.cpp, ``CoolKeyGetIssuerInfo``).
    """

    raw: bytes

    @classmethod
    def decode(cls, data: bytes) -> IssuerInfo:
        if len(data) != ISSUER_INFO_LENGTH:
            raise MalformedResponseError(f"GET ISSUER INFO answered {len(data)} bytes, not 224")
        return cls(bytes(data))

    @classmethod
    def from_url(cls, url: str) -> IssuerInfo:
        """The blob a TPS writes: the string, zero-filled to 224 bytes."""
        encoded = url.encode("ascii")
        if len(encoded) >= ISSUER_INFO_LENGTH:
            raise ValueError("issuer info holds at most 223 characters and a NUL")
        return cls(encoded.ljust(ISSUER_INFO_LENGTH, b"\x00"))

    @property
    def phone_home_url(self) -> str:
        """The text up to the first NUL, as ESC's ``strcpy`` reads it; "" when none.

        Decision: only printable ASCII (0x20–0x7E) is taken for a URL. Factory applets
        may hold install-time bytes here (the CardEdge constructor takes them from its
        install parameters); anything that is not printable ASCII is not a URL, and ESC
        would only have failed to phone home with it.
        Surrounding spaces are dropped.
        """
        text = self.raw.split(b"\x00", 1)[0]
        if not all(0x20 <= byte <= 0x7E for byte in text):
            return ""
        return text.decode("ascii").strip()


def parse_pin_tries(data: bytes) -> int:
    if len(data) != 1:
        raise MalformedResponseError(f"GET PIN REMAINING TRIES answered {len(data)} bytes")
    return data[0]


def parse_pin_list(data: bytes) -> int:
    """LIST PINS: a 16-bit mask, bit n set when PIN n exists."""
    if len(data) != 2:
        raise MalformedResponseError(f"LIST PINS answered {len(data)} bytes, not 2")
    return int.from_bytes(data, "big")


# -- session ----------------------------------------------------------------------------


class CoolKeySession:
    """The CoolKey applet and card manager of one card, over a ``CardConnection``.

    Every verb sends its APDUs, raises ``ApduError`` for a status word other than 9000
    and ``MalformedResponseError`` for an answer of the wrong shape. Applet verbs
    assume the applet is selected; ``read_cplc`` leaves the card manager selected.
    Call it inside one PC/SC transaction: the applet selection is card state.
    """

    def __init__(self, connection: CardConnection) -> None:
        self._connection = connection

    def _send(self, command: CommandApdu, name: str) -> bytes:
        response = send(self._connection, command)
        if response.sw != StatusWord.SUCCESS:
            raise ApduError(response.sw, name)
        return response.data

    def _send_raw(self, command: CommandApdu) -> ResponseApdu:
        return send(self._connection, command)

    def select_applet(self) -> None:
        """Select the CoolKey applet; ``ApduError`` (usually 6A82) when it is not there.

        A 9000 with a body is accepted: libckyapplet refuses it, but the applet is there.
        """
        self._send(select_coolkey(), "SELECT CoolKey")

    def read_cplc(self) -> Cplc:
        """Select the card manager and read the CPLC (the applet is deselected).

        The empty SELECT picks the *default* application, which is the card manager on
        CoolKey cards but need not be elsewhere; when GET DATA fails after it, the card
        manager is selected by AID and asked again, as OpenSC does.
        """
        try:
            self._send(select_card_manager(), "SELECT card manager")
            return Cplc.decode(self._send(get_cplc(), "GET DATA CPLC"))
        except (ApduError, MalformedResponseError):
            pass
        self._send(select_card_manager(Aid.CARD_MANAGER.value), "SELECT card manager")
        return Cplc.decode(self._send(get_cplc(), "GET DATA CPLC"))

    def read_life_cycle(self) -> LifeCycleInfo:
        """The 4-byte form; if refused, the 1-byte form plus GET STATUS (libckyapplet)."""
        try:
            return LifeCycleInfo.decode(self._send(get_life_cycle(), "GET LIFE CYCLE"))
        except (ApduError, MalformedResponseError):
            pass
        short = self._send(get_life_cycle(long_form=False), "GET LIFE CYCLE")
        if len(short) != 1:
            raise MalformedResponseError(f"GET LIFE CYCLE answered {len(short)} bytes, not 1")
        status = self.read_status()
        return LifeCycleInfo(short[0], status.pin_count, *status.protocol_version)

    def read_status(self) -> AppletStatus:
        return AppletStatus.decode(self._send(get_status(), "GET STATUS"))

    def is_coolkey(self) -> bool:
        """OpenSC's probe: GET STATUS with P1=01 is answered exactly 6D00 by CoolKey."""
        return self._send_raw(get_memory_probe()).sw == StatusWord.INVALID_INSTRUCTION

    def read_build_id(self) -> int:
        return parse_build_id(self._send(get_build_id(), "GET BUILD ID"))

    def read_issuer_info(self) -> IssuerInfo:
        return IssuerInfo.decode(self._send(get_issuer_info(), "GET ISSUER INFO"))

    def list_objects(self) -> list[ObjectEntry]:
        """Every object, until the applet answers 9C12 (also at once, for none)."""
        entries: list[ObjectEntry] = []
        sequence = ListSequence.RESET
        for _ in range(MAX_LISTED_OBJECTS):
            response = self._send_raw(list_objects(sequence))
            if response.sw == StatusWord.COOLKEY_SEQUENCE_END:
                return entries
            if response.sw != StatusWord.SUCCESS:
                raise ApduError(response.sw, "LIST OBJECTS")
            entries.append(ObjectEntry.decode(response.data))
            sequence = ListSequence.NEXT
        raise MalformedResponseError("LIST OBJECTS never ended")

    def read_object(
        self, object_id: bytes, size: int, *, nonce: bytes = ZERO_NONCE,
        chunk: int = MAX_READ_CHUNK,
    ) -> bytes:  # fmt: skip
        """Read ``size`` bytes of an object in chunks of at most 255 bytes."""
        if not 1 <= chunk <= MAX_READ_CHUNK:
            raise ValueError("chunks are 1..255 bytes")
        data = bytearray()
        while len(data) < size:
            length = min(chunk, size - len(data))
            part = self._send(read_object(object_id, len(data), length, nonce), "READ OBJECT")
            if len(part) != length:
                raise MalformedResponseError(
                    f"READ OBJECT answered {len(part)} bytes, asked for {length}"
                )
            data += part
        return bytes(data)

    def read_combined_object(self, entries: list[ObjectEntry] | None = None) -> bytes | None:
        """The bytes of ``z0``, or None when the token has none."""
        listed = self.list_objects() if entries is None else entries
        for entry in listed:
            if entry.object_id == COMBINED_OBJECT_ID:
                return self.read_object(entry.object_id, entry.size)
        return None

    def list_pins(self) -> int:
        return parse_pin_list(self._send(list_pins(), "LIST PINS"))

    def read_pin_tries(self, pin_number: int = USER_PIN) -> int | None:
        """Tries left, or None when the applet has no GET PIN REMAINING TRIES (normal)."""
        response = self._send_raw(get_pin_tries(pin_number))
        if response.sw != StatusWord.SUCCESS:
            return None
        return parse_pin_tries(response.data)

    def verify_pin(self, pin: Secret, pin_number: int = USER_PIN) -> bytes:
        """Log in; returns the nonce for later commands. ``InvalidPinError`` when refused."""
        response = self._send_raw(verify_pin(pin, pin_number))
        if response.sw == StatusWord.COOLKEY_AUTH_FAILED:
            raise InvalidPinError()
        if response.sw == StatusWord.COOLKEY_IDENTITY_BLOCKED:
            raise InvalidPinError(attempts_left=0)
        if response.sw != StatusWord.SUCCESS:
            raise ApduError(response.sw, "VERIFY PIN")
        if len(response.data) != NONCE_LENGTH:
            raise MalformedResponseError("VERIFY PIN did not answer an 8-byte nonce")
        return response.data
