# SPDX-License-Identifier: GPL-2.0-or-later
"""ISO 7816-4 command and response APDUs, and the names of status words.

Pure: no I/O, no pyscard. ``CommandApdu``/``ResponseApdu`` encode and decode short and
extended forms; ``StatusWord`` names every status word escd knows (ISO 7816-4,
GlobalPlatform, ESC's table and the CoolKey applet's ``9Cxx`` codes) and
``describe_sw`` gives a human description for any status word, families included.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, unique

from escd.errors import MalformedApduError, MalformedResponseError

SHORT_MAX = 256
EXTENDED_MAX = 65536


@unique
class StatusWord(IntEnum):
    """Status words with a fixed meaning. Families (61xx, 6Cxx, 63Cx) are in ``describe_sw``."""

    SUCCESS = 0x9000
    # ESC's table (ESC administrator's manual, "Diagnosing Problems").
    NO_SPECIFIC_DIAGNOSIS = 0x6400
    WRONG_LENGTH = 0x6700
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    CONDITIONS_OF_USE_NOT_SATISFIED = 0x6985
    INCORRECT_P1_P2 = 0x6A86
    INVALID_INSTRUCTION = 0x6D00
    INVALID_CLASS = 0x6E00
    MEMORY_FAILURE = 0x6581
    INCORRECT_DATA = 0x6A80
    NOT_ENOUGH_MEMORY = 0x6A84
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    APPLICATION_DELETED = 0x6200
    APPLICATION_NOT_FOUND = 0x6A82
    MORE_DATA_AVAILABLE = 0x6310
    # ISO 7816-4 and GlobalPlatform.
    SELECTED_FILE_INVALIDATED = 0x6283
    AUTHENTICATION_FAILED = 0x6300
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    LAST_COMMAND_OF_CHAIN_EXPECTED = 0x6883
    COMMAND_INCOMPATIBLE = 0x6981
    AUTHENTICATION_METHOD_BLOCKED = 0x6983
    REFERENCED_DATA_INVALIDATED = 0x6984
    COMMAND_NOT_ALLOWED = 0x6986
    FUNCTION_NOT_SUPPORTED = 0x6A81
    RECORD_NOT_FOUND = 0x6A83
    LC_INCONSISTENT_WITH_P1_P2 = 0x6A87
    WRONG_PARAMETERS_P1_P2 = 0x6B00
    NO_PRECISE_DIAGNOSIS = 0x6F00
    # CoolKey applet (CardEdge.java, cky_applet.h).
    COOLKEY_NO_MEMORY_LEFT = 0x9C01
    COOLKEY_AUTH_FAILED = 0x9C02
    COOLKEY_OPERATION_NOT_ALLOWED = 0x9C03
    COOLKEY_UNSUPPORTED_FEATURE = 0x9C05
    COOLKEY_UNAUTHORIZED = 0x9C06
    COOLKEY_OBJECT_NOT_FOUND = 0x9C07
    COOLKEY_OBJECT_EXISTS = 0x9C08
    COOLKEY_INCORRECT_ALG = 0x9C09
    COOLKEY_SIGNATURE_INVALID = 0x9C0B
    COOLKEY_IDENTITY_BLOCKED = 0x9C0C
    COOLKEY_UNSPECIFIED_ERROR = 0x9C0D
    COOLKEY_TRANSPORT_ERROR = 0x9C0E
    COOLKEY_INVALID_PARAMETER = 0x9C0F
    COOLKEY_INCORRECT_P1 = 0x9C10
    COOLKEY_INCORRECT_P2 = 0x9C11
    COOLKEY_SEQUENCE_END = 0x9C12
    COOLKEY_KEY_SLOT_MATED = 0x9C1E
    COOLKEY_BAD_CHALLENGE = 0x9C20
    COOLKEY_BAD_KEY_BLOB = 0x9C22
    COOLKEY_INTERNAL_ERROR = 0x9CFF

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: dict[StatusWord, str] = {
    StatusWord.SUCCESS: "Success",
    StatusWord.NO_SPECIFIC_DIAGNOSIS: "No specific diagnosis",
    StatusWord.WRONG_LENGTH: "Wrong length in Lc",
    StatusWord.SECURITY_STATUS_NOT_SATISFIED: "Security status not satisfied",
    StatusWord.CONDITIONS_OF_USE_NOT_SATISFIED: "Conditions of use not satisfied",
    StatusWord.INCORRECT_P1_P2: "Incorrect P1 P2",
    StatusWord.INVALID_INSTRUCTION: "Invalid instruction",
    StatusWord.INVALID_CLASS: "Invalid class",
    StatusWord.MEMORY_FAILURE: "Memory failure",
    StatusWord.INCORRECT_DATA: "Incorrect parameters in data field",
    StatusWord.NOT_ENOUGH_MEMORY: "Not enough memory space",
    StatusWord.REFERENCED_DATA_NOT_FOUND: "Referenced data not found",
    StatusWord.APPLICATION_DELETED: "Application has been logically deleted",
    StatusWord.APPLICATION_NOT_FOUND: "Application not found",
    StatusWord.MORE_DATA_AVAILABLE: "More data available",
    StatusWord.SELECTED_FILE_INVALIDATED: "Selected file or application invalidated",
    StatusWord.AUTHENTICATION_FAILED: "Authentication failed (cryptogram did not verify)",
    StatusWord.SECURE_MESSAGING_NOT_SUPPORTED: "Secure messaging not supported",
    StatusWord.LAST_COMMAND_OF_CHAIN_EXPECTED: "Last command of the chain expected",
    StatusWord.COMMAND_INCOMPATIBLE: "Command incompatible with file structure",
    StatusWord.AUTHENTICATION_METHOD_BLOCKED: "Authentication method blocked",
    StatusWord.REFERENCED_DATA_INVALIDATED: "Referenced data invalidated",
    StatusWord.COMMAND_NOT_ALLOWED: "Command not allowed (no current application)",
    StatusWord.FUNCTION_NOT_SUPPORTED: "Function not supported",
    StatusWord.RECORD_NOT_FOUND: "Record not found",
    StatusWord.LC_INCONSISTENT_WITH_P1_P2: "Lc inconsistent with P1 P2",
    StatusWord.WRONG_PARAMETERS_P1_P2: "Wrong parameters P1 P2",
    StatusWord.NO_PRECISE_DIAGNOSIS: "No precise diagnosis",
    StatusWord.COOLKEY_NO_MEMORY_LEFT: "CoolKey: no memory left on the token",
    StatusWord.COOLKEY_AUTH_FAILED: "CoolKey: authentication failed (wrong PIN)",
    StatusWord.COOLKEY_OPERATION_NOT_ALLOWED: "CoolKey: operation not allowed",
    StatusWord.COOLKEY_UNSUPPORTED_FEATURE: "CoolKey: unsupported feature",
    StatusWord.COOLKEY_UNAUTHORIZED: "CoolKey: not authorized (access control or nonce)",
    StatusWord.COOLKEY_OBJECT_NOT_FOUND: "CoolKey: object not found",
    StatusWord.COOLKEY_OBJECT_EXISTS: "CoolKey: object already exists",
    StatusWord.COOLKEY_INCORRECT_ALG: "CoolKey: incorrect algorithm",
    StatusWord.COOLKEY_SIGNATURE_INVALID: "CoolKey: signature invalid",
    StatusWord.COOLKEY_IDENTITY_BLOCKED: "CoolKey: PIN blocked (no tries left)",
    StatusWord.COOLKEY_UNSPECIFIED_ERROR: "CoolKey: unspecified error",
    StatusWord.COOLKEY_TRANSPORT_ERROR: "CoolKey: transport error",
    StatusWord.COOLKEY_INVALID_PARAMETER: "CoolKey: invalid parameter",
    StatusWord.COOLKEY_INCORRECT_P1: "CoolKey: incorrect P1",
    StatusWord.COOLKEY_INCORRECT_P2: "CoolKey: incorrect P2",
    StatusWord.COOLKEY_SEQUENCE_END: "CoolKey: end of list",
    StatusWord.COOLKEY_KEY_SLOT_MATED: "CoolKey: key slot already paired with another key",
    StatusWord.COOLKEY_BAD_CHALLENGE: "CoolKey: wrapped challenge did not verify",
    StatusWord.COOLKEY_BAD_KEY_BLOB: "CoolKey: key blob is not a PKCS#8 structure",
    StatusWord.COOLKEY_INTERNAL_ERROR: "CoolKey: internal error",
}


def describe_sw(sw: int) -> str:
    """A human description of any status word, including the 61xx/6Cxx/63Cx families."""
    try:
        return StatusWord(sw).description
    except ValueError:
        pass
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x61:
        return f"{sw2 or 256} more bytes available (GET RESPONSE)"
    if sw1 == 0x6C:
        return f"Wrong Le; the card expects {sw2 or 256}"
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return f"Verification failed, {sw2 & 0x0F} tries left"
    if sw1 == 0x9C:
        return f"CoolKey applet error {sw2:02X}"
    if sw1 in (0x62, 0x63):
        return "Warning (state of non-volatile memory may have changed)"
    if 0x64 <= sw1 <= 0x6F:
        return "Error"
    return "Unknown status word"


def sw_name(sw: int) -> str:
    """The symbolic name of a status word, or its hex form."""
    try:
        return StatusWord(sw).name
    except ValueError:
        return f"SW_{sw:04X}"


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A command APDU. ``le`` is None when absent; 256 (short) / 65536 (extended) mean 'all'."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise ValueError(f"{name} out of range: {value}")
        if len(self.data) > EXTENDED_MAX - 1:
            raise ValueError("command data longer than 65535 bytes")
        if self.le is not None and not 1 <= self.le <= EXTENDED_MAX:
            raise ValueError(f"le out of range: {self.le}")

    @property
    def is_extended(self) -> bool:
        return len(self.data) > 255 or (self.le is not None and self.le > SHORT_MAX)

    def encode(self) -> bytes:
        """ISO 7816-4 §5.1 encoding; extended length only when the data or Le need it."""
        head = bytes((self.cla, self.ins, self.p1, self.p2))
        if not self.is_extended:
            body = b""
            if self.data:
                body += bytes((len(self.data),)) + self.data
            if self.le is not None:
                body += bytes((self.le % SHORT_MAX,))
            return head + body
        body = b"\x00"
        if self.data:
            body += len(self.data).to_bytes(2, "big") + self.data
        if self.le is not None:
            body += (self.le % EXTENDED_MAX).to_bytes(2, "big")
        return head + body

    __bytes__ = encode

    @classmethod
    def decode(cls, raw: bytes) -> CommandApdu:
        """Parse any of the seven ISO cases; raises ``MalformedApduError`` when invalid."""
        if len(raw) < 4:
            raise MalformedApduError(f"command APDU too short ({len(raw)} bytes)")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, le=body[0] or SHORT_MAX)
        if body[0] != 0:
            lc = body[0]
            if len(body) == 1 + lc:
                return cls(cla, ins, p1, p2, body[1:])
            if len(body) == 2 + lc:
                return cls(cla, ins, p1, p2, body[1:-1], body[-1] or SHORT_MAX)
            raise MalformedApduError("command APDU length does not match Lc")
        # Extended forms: a zero byte, then 2-byte Lc or Le.
        if len(body) < 3:
            raise MalformedApduError("truncated extended command APDU")
        if len(body) == 3:
            return cls(cla, ins, p1, p2, le=int.from_bytes(body[1:3], "big") or EXTENDED_MAX)
        lc = int.from_bytes(body[1:3], "big")
        if lc == 0:
            raise MalformedApduError("extended command APDU with Lc of zero")
        if len(body) == 3 + lc:
            return cls(cla, ins, p1, p2, body[3:])
        if len(body) == 5 + lc:
            le = int.from_bytes(body[-2:], "big") or EXTENDED_MAX
            return cls(cla, ins, p1, p2, body[3:-2], le)
        raise MalformedApduError("extended command APDU length does not match Lc")


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    """A response APDU: data and the status word."""

    data: bytes
    sw: int

    def __post_init__(self) -> None:
        if not 0 <= self.sw <= 0xFFFF:
            raise ValueError(f"status word out of range: {self.sw}")

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == StatusWord.SUCCESS

    def encode(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    __bytes__ = encode

    @classmethod
    def decode(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise MalformedResponseError(f"response APDU too short ({len(raw)} bytes)")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))
