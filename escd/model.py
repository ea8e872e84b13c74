# SPDX-License-Identifier: GPL-2.0-or-later
"""The domain vocabulary: token states, operations, and what escd knows about a token.

Pure data: frozen dataclasses and enums, no I/O. Enum values that cross D-Bus are the
contract's integers (docs/dbus-api.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, IntEnum, StrEnum, unique


@unique
class TokenState(IntEnum):
    """ESC's classification of a token (D-Bus ``Token.State``)."""

    UNKNOWN = 0
    NO_APPLET = 1
    UNINITIALIZED = 2
    ENROLLED = 3


@unique
class AppletKind(IntEnum):
    """Which applet answered (D-Bus ``Token.Applet``)."""

    UNKNOWN = 0
    COOLKEY = 1
    OTHER = 2


@unique
class PhoneHomeState(IntEnum):
    """How a token's phone-home values were obtained (D-Bus ``Token.PhoneHomeState``).

    ``FETCHED`` covers an answer fetched now and one fetched within
    ``phone_home.max_age`` (not fetched again); ``FROM_CACHE`` means a stored answer is
    shown because fetching a new one failed.
    """

    NOT_ATTEMPTED = 0
    RUNNING = 1
    FROM_CACHE = 2
    FETCHED = 3
    FAILED = 4
    NO_URL = 5


@unique
class OperationType(IntEnum):
    """TPS operation codes (BEGIN_OP ``operation``; Dogtag TPSMessage.java, ESC
    CoolKeyHandler.h)."""

    ENROLL = 1
    UNBLOCK = 2
    RESET_PIN = 3
    RENEW = 4
    FORMAT = 5


@unique
class JobKind(StrEnum):
    """The operations a job can run (D-Bus ``Job.Operation``)."""

    PHONE_HOME = "phone-home"
    ENROLL = "enroll"
    FORMAT = "format"
    RESET_PIN = "reset-pin"
    UNBLOCK = "unblock"
    RENEW = "renew"

    @property
    def tps_operation(self) -> OperationType | None:
        return _TPS_OPERATIONS.get(self)


_TPS_OPERATIONS = {
    JobKind.ENROLL: OperationType.ENROLL,
    JobKind.FORMAT: OperationType.FORMAT,
    JobKind.RESET_PIN: OperationType.RESET_PIN,
    JobKind.UNBLOCK: OperationType.UNBLOCK,
    JobKind.RENEW: OperationType.RENEW,
}


def enum_word(value: Enum) -> str:
    """An enum member as people and scripts read it: ``TokenState.NO_APPLET`` is
    ``no-applet``. ``escd probe``, escctl's JSON, diagnostics and the event ring all
    spell states this way, so that they speak one vocabulary."""
    return value.name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """One certificate found on a token, as shown to users."""

    subject: str
    issuer: str
    serial: str  # hex, lower case, no separators
    not_before: datetime
    not_after: datetime
    sha256: str  # hex fingerprint of the DER, lower case
    label: str
    der: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Everything escd read from one card in one reader."""

    reader: str
    atr: bytes
    state: TokenState
    applet: AppletKind = AppletKind.UNKNOWN
    cuid: str | None = None  # 20 lower-case hex digits when the card has a CPLC
    msn: str | None = None  # 8 hex digits, CPLC personalization equipment ID
    life_cycle: int | None = None
    applet_version: tuple[int, int] = (0, 0)  # protocol version, as ESC displays it
    applet_release: tuple[int, int] | None = None  # GET STATUS bytes 2-3
    build_id: int | None = None  # GET BUILD ID, 32 bits
    pin_tries_left: int = -1
    phone_home_url: str = ""
    token_name: str = ""
    total_memory: int | None = None
    free_memory: int | None = None
    certificates: tuple[CertificateInfo, ...] = ()
    #: Why the card could not be read fully, when it could not (never a secret).
    problem: str = ""

    @property
    def token_id(self) -> str:
        """The CUID, or for cards without one an id derived from ATR and reader."""
        return self.cuid if self.cuid else fallback_token_id(self.atr, self.reader)


def fallback_token_id(atr: bytes, reader: str) -> str:
    """Path-safe id for a card without a CUID: ``atr_<hash>_<reader hash>``."""
    atr_hash = hashlib.sha256(atr).hexdigest()[:12]
    reader_hash = hashlib.sha256(reader.encode()).hexdigest()[:6]
    return f"atr_{atr_hash}_{reader_hash}"
