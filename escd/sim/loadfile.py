# SPDX-License-Identifier: GPL-2.0-or-later
"""The synthetic CoolKey load file the simulated TPS serves and the simulated card installs.

Pure: encode/decode only. A real TPS loads a Java Card ``.ijc`` file and the card learns
nothing about its version except by running it; the simulated card instead reads the
version from the file, so that GET STATUS / GET BUILD ID report what was loaded and
the TPS does not re-upgrade on every enroll (it compares them with its required
version: Dogtag TPSProcessor.java, ``checkAndUpgradeApplet``). Nothing here depends on
Dogtag's binaries.

Format (all integers big-endian; a valid CAP-style component stream)::

    01 0010                       Header component, tag 1, 16 bytes, as in a real .ijc:
       DECAFFED 01 02 04          magic, CAP format 2.1, flags
       00 01                      package version 1.0 (what the 1.2-1.4 .ijc files carry)
       06 627601FF0000            package AID
    80 000A                       custom component (CAP tags 128-255 are custom):
       45534344                   "ESCD"
       MM mm                      applet version major, minor (GET STATUS bytes 2-3)
       BBBBBBBB                   build ID (GET BUILD ID, 4 bytes)
    81 LLLL <LLLL filler bytes>   optional padding component, only to give the file a
                                  realistic size (the shipped 1.4 applet is 15409 bytes)

The TPS's version string is ``"<major>.<minor>.<build id as 8 hex digits>"``, e.g.
``1.4.58768072`` (``TPSProcessor.getAppletVersion``); ``LoadFile.version_string`` and
``LoadFile.from_version_string`` convert. The LOAD data a TPS sends is
``C4 <BER length> <file>`` (``frame_load_file``), split into blocks by the TPS.
"""

from __future__ import annotations

from dataclasses import dataclass

COOLKEY_PACKAGE_AID = bytes.fromhex("627601FF0000")
COOLKEY_INSTANCE_AID = bytes.fromhex("627601FF000000")
#: The build Dogtag ships (``1.4.58768072.ijc``), which the default TPS config requires.
SHIPPED_BUILD_ID = 0x58768072
SHIPPED_APPLET_VERSION = (1, 4)
#: Size of the shipped ``1.4.58768072.ijc``: 75 LOAD blocks with SCP01, 72 with SCP02.
SHIPPED_FILE_SIZE = 15409

_MAGIC = bytes.fromhex("DECAFFED")
_TAG_HEADER = 0x01
_TAG_ESCD = 0x80
_TAG_FILLER = 0x81
_ESCD_MARKER = b"ESCD"


@dataclass(frozen=True, slots=True)
class LoadFile:
    """A synthetic CoolKey applet load file."""

    applet_major: int = SHIPPED_APPLET_VERSION[0]
    applet_minor: int = SHIPPED_APPLET_VERSION[1]
    build_id: int = SHIPPED_BUILD_ID
    package_aid: bytes = COOLKEY_PACKAGE_AID
    #: Total encoded size; 0 = as small as possible (no filler component).
    size: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.applet_major <= 0xFF and 0 <= self.applet_minor <= 0xFF):
            raise ValueError("applet version bytes out of range")
        if not 0 <= self.build_id <= 0xFFFFFFFF:
            raise ValueError("build ID must fit in 4 bytes")
        if not 5 <= len(self.package_aid) <= 16:
            raise ValueError("package AID must be 5..16 bytes")

    @property
    def version_string(self) -> str:
        return f"{self.applet_major}.{self.applet_minor}.{self.build_id:08x}"

    @classmethod
    def from_version_string(cls, version: str, *, size: int = 0) -> LoadFile:
        """``"1.4.58768072"`` -> a load file carrying that version."""
        major, minor, build = version.split(".")
        return cls(int(major), int(minor), int(build, 16), size=size)

    def encode(self) -> bytes:
        header = _MAGIC + b"\x01\x02\x04" + b"\x00\x01"
        header += bytes((len(self.package_aid),)) + self.package_aid
        escd = _ESCD_MARKER + bytes((self.applet_major, self.applet_minor))
        escd += self.build_id.to_bytes(4, "big")
        body = _component(_TAG_HEADER, header) + _component(_TAG_ESCD, escd)
        missing = self.size - len(body)
        if missing > 0:
            if missing < 3:
                raise ValueError(f"size {self.size} leaves no room for a filler component")
            filler_length = missing - 3
            body += _component(_TAG_FILLER, bytes(i & 0xFF for i in range(filler_length)))
        elif self.size:
            raise ValueError(f"size {self.size} is smaller than the minimal file")
        return body

    @classmethod
    def decode(cls, data: bytes) -> LoadFile:
        """Parse a synthetic load file; ``ValueError`` for anything else (e.g. a real .ijc)."""
        components: dict[int, bytes] = {}
        offset = 0
        while offset < len(data):
            if offset + 3 > len(data):
                raise ValueError("truncated component header")
            tag = data[offset]
            length = int.from_bytes(data[offset + 1 : offset + 3], "big")
            end = offset + 3 + length
            if end > len(data):
                raise ValueError(f"component {tag:#04x} runs past the end of the file")
            components.setdefault(tag, data[offset + 3 : end])
            offset = end
        header = components.get(_TAG_HEADER)
        escd = components.get(_TAG_ESCD)
        if header is None or header[:4] != _MAGIC or len(header) < 10:
            raise ValueError("no CAP header component")
        if escd is None or len(escd) != 10 or escd[:4] != _ESCD_MARKER:
            raise ValueError("not a synthetic escd load file (no ESCD component)")
        aid = header[10 : 10 + header[9]]
        return cls(escd[4], escd[5], int.from_bytes(escd[6:10], "big"), aid, size=len(data))

    def load_data(self) -> bytes:
        """What LOAD carries: ``C4 <BER length> <file>`` (GP 2.1.1 Load File Data Block)."""
        return frame_load_file(self.encode())


def _component(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + len(body).to_bytes(2, "big") + body


def ber_length(length: int) -> bytes:
    """A BER definite length (short form below 128, else 81 xx / 82 xxxx)."""
    if length < 0x80:
        return bytes((length,))
    if length <= 0xFF:
        return bytes((0x81, length))
    if length <= 0xFFFF:
        return b"\x82" + length.to_bytes(2, "big")
    raise ValueError("load file too large")


def frame_load_file(file: bytes) -> bytes:
    """``C4 <BER length> <file>``: the load data a TPS splits into LOAD blocks."""
    return b"\xc4" + ber_length(len(file)) + file


def split_load_data(data: bytes) -> bytes:
    """The file inside ``C4 <BER length> <file>``; ``ValueError`` if the framing is wrong."""
    if not data or data[0] != 0xC4 or len(data) < 2:
        raise ValueError("load data does not start with tag C4")
    first = data[1]
    if first < 0x80:
        length, start = first, 2
    elif first in (0x81, 0x82):
        count = first & 0x7F
        length, start = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    else:
        raise ValueError("unsupported BER length in load data")
    if start + length != len(data):
        raise ValueError("load data length does not match its C4 header")
    return data[start:]
