# SPDX-License-Identifier: GPL-2.0-or-later
"""The CoolKey object model: object IDs, v1 object records, the combined object ``z0``.

Owns the byte formats of the objects on a CoolKey token, as libcoolkeypk11 (CoolKey
object.cpp, slot.cpp), OpenSC (card-coolkey.c) and Dogtag (PKCS11Obj.java) read and
write them: 4-byte object IDs (``c0``, ``k1``, ``z0`` …),
the v1 object record (ID, fixed-attribute word, typed attributes), the combined object
``z0`` (20-byte header, optional zlib, token name, records) in both directions, the
14-byte LIST OBJECTS entry, a builder for the ``c<n>``/``k<2n+1>``/``k<2n>`` triples a
Dogtag TPS writes, and ``certificate_info`` for the certificates found in them.

Pure: no I/O and no logging. Decoders take untrusted card data and raise only
``MalformedResponseError``; encoders take our own values and raise ``ValueError`` for a
value the format cannot carry.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, IntFlag, unique

from cryptography import x509

from escd.errors import MalformedResponseError
from escd.model import CertificateInfo

OBJECT_ID_LENGTH = 4
#: Object records are written by index character: libcoolkeypk11 reads '0'..'9' only,
#: OpenSC also 'A'..'Z' (10..35) and 'a'..'z' (36..61) for key numbers
#: (CoolKey slot.h ``Slot::getObjectIndex``; OpenSC card-coolkey.c ``coolkey_get_key_id``).
_INDEX_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

COMBINED_HEADER_LENGTH = 20
COMBINED_FORMAT_VERSION = 0x0100
CUID_LENGTH = 10
#: libcoolkeypk11 reads the first 255 bytes of z0 in one READ OBJECT; a shorter z0 fails
#: that read and the token falls back to separate objects, ignoring z0
#: (CoolKey slot.cpp, ``Slot::loadObjects``).
MIN_COMBINED_OBJECT_SIZE = 255
#: An inflated z0 larger than this is refused (no card holds that much; zip-bomb guard).
MAX_INFLATED_SIZE = 1 << 20

LIST_OBJECTS_ENTRY_LENGTH = 14
#: ACLs the TPS writes on its objects: read by anyone, write/delete by the RA
#: (Dogtag TPSEnrollProcessor.java:1024-1028).
ACL_ANYONE = 0xFFFF
ACL_RA = 0x4000


def object_id(name: str) -> bytes:
    """The 4-byte object ID for a name like ``"c0"`` or ``"z0"`` (ASCII, NUL-padded)."""
    raw = name.encode("ascii")
    if not 1 <= len(raw) <= OBJECT_ID_LENGTH or 0 in raw:
        raise ValueError(f"not an object name: {name!r}")
    return raw.ljust(OBJECT_ID_LENGTH, b"\x00")


def object_name(oid: bytes) -> str:
    """``"c0"`` for ``63 30 00 00``; other IDs (e.g. the I/O buffers) as 8 hex digits."""
    stripped = oid.rstrip(b"\x00")
    if len(oid) == OBJECT_ID_LENGTH and stripped and all(0x21 <= b <= 0x7E for b in stripped):
        return stripped.decode("ascii")
    return oid.hex()


def indexed_object_id(letter: str, index: int) -> bytes:
    """``indexed_object_id("k", 3)`` → ``k3``; the index is one character."""
    if len(letter) != 1 or not 0 <= index < len(_INDEX_CHARS):
        raise ValueError(f"no object ID for {letter!r} index {index}")
    return object_id(letter + _INDEX_CHARS[index])


def object_index(oid: bytes) -> int | None:
    """The index of ``c3``/``k12``-style IDs (the second byte), or None."""
    if len(oid) != OBJECT_ID_LENGTH:
        return None
    position = _INDEX_CHARS.find(chr(oid[1]))
    return position if position >= 0 else None


COMBINED_OBJECT_ID = object_id("z0")


@unique
class ObjectClass(IntEnum):
    """CKA_CLASS values as carried in bits 4–6 of the fixed-attribute word."""

    DATA = 0
    CERTIFICATE = 1
    PUBLIC_KEY = 2
    PRIVATE_KEY = 3
    SECRET_KEY = 4


class FixedFlag(IntFlag):
    """The boolean attributes in bits 7–23 of the fixed-attribute word.

    As CoolKey object.cpp (``expandAttributes``) and OpenSC card-coolkey.c
    (``coolkey_get_attribute_data_fixed``) expand it.
    """

    TOKEN = 0x80
    PRIVATE = 0x100
    MODIFIABLE = 0x200
    DERIVE = 0x400
    LOCAL = 0x800
    ENCRYPT = 0x1000
    DECRYPT = 0x2000
    WRAP = 0x4000
    UNWRAP = 0x8000
    SIGN = 0x10000
    SIGN_RECOVER = 0x20000
    VERIFY = 0x40000
    VERIFY_RECOVER = 0x80000
    SENSITIVE = 0x100000
    ALWAYS_SENSITIVE = 0x200000
    EXTRACTABLE = 0x400000
    NEVER_EXTRACTABLE = 0x800000


@unique
class AttributeType(IntEnum):
    """The PKCS#11 attribute types that matter on a CoolKey token."""

    CLASS = 0x000
    TOKEN = 0x001
    PRIVATE = 0x002
    LABEL = 0x003
    VALUE = 0x011
    CERTIFICATE_TYPE = 0x080
    ISSUER = 0x081
    SERIAL_NUMBER = 0x082
    KEY_TYPE = 0x100
    SUBJECT = 0x101
    ID = 0x102
    MODULUS = 0x120
    MODULUS_BITS = 0x121
    PUBLIC_EXPONENT = 0x122
    EC_PARAMS = 0x180
    EC_POINT = 0x181


@unique
class DataType(IntEnum):
    """How a v1 attribute value is encoded."""

    STRING = 0  # 2-byte length, then the bytes
    INTEGER = 1  # 4 bytes
    BOOL_FALSE = 2  # no value bytes
    BOOL_TRUE = 3  # no value bytes


@unique
class KeyType(IntEnum):
    """CKA_KEY_TYPE values; libcoolkeypk11 treats 3 as EC and anything else as RSA."""

    RSA = 0
    EC = 3


@dataclass(frozen=True, slots=True)
class Attribute:
    """One typed attribute of a v1 record; ``bool`` before ``int`` decides the encoding."""

    type: int
    value: bytes | int | bool

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 0xFFFFFFFF:
            raise ValueError(f"attribute type out of range: {self.type}")
        if isinstance(self.value, bytes):
            if len(self.value) > 0xFFFF:
                raise ValueError("attribute value longer than 65535 bytes")
        elif not isinstance(self.value, bool) and not 0 <= self.value <= 0xFFFFFFFF:
            raise ValueError(f"integer attribute out of range: {self.value}")

    def encode(self) -> bytes:
        head = self.type.to_bytes(4, "big")
        if isinstance(self.value, bool):
            return head + bytes((DataType.BOOL_TRUE if self.value else DataType.BOOL_FALSE,))
        if isinstance(self.value, int):
            return head + bytes((DataType.INTEGER,)) + self.value.to_bytes(4, "big")
        return head + bytes((DataType.STRING,)) + len(self.value).to_bytes(2, "big") + self.value


@dataclass(frozen=True, slots=True)
class FixedAttributes:
    """The fixed-attribute word: CKA_ID (bits 0–3), CKA_CLASS (bits 4–6), boolean flags."""

    cka_id: int
    object_class: int
    flags: FixedFlag = FixedFlag(0)

    def __post_init__(self) -> None:
        if not 0 <= self.cka_id <= 0x0F:
            raise ValueError(f"CKA_ID does not fit in 4 bits: {self.cka_id}")
        if not 0 <= self.object_class <= 0x07:
            raise ValueError(f"class does not fit in 3 bits: {self.object_class}")
        if self.flags & 0x7F or not 0 <= self.flags <= 0xFFFFFFFF:
            raise ValueError("flags overlap CKA_ID/class or exceed 32 bits")

    @property
    def word(self) -> int:
        return int(self.flags) | self.object_class << 4 | self.cka_id

    @classmethod
    def from_word(cls, word: int) -> FixedAttributes:
        # Bits 24–31 have no meaning in either consumer; IntFlag keeps them for round trips.
        return cls(word & 0x0F, (word >> 4) & 0x07, FixedFlag(word & ~0x7F & 0xFFFFFFFF))


class _Reader:
    """Bounds-checked big-endian reads over card data: overruns are malformed data."""

    __slots__ = ("data", "offset", "what")

    def __init__(self, data: bytes, offset: int, what: str) -> None:
        self.data = data
        self.offset = offset
        self.what = what

    def take(self, length: int) -> bytes:
        end = self.offset + length
        if end > len(self.data):
            raise MalformedResponseError(f"{self.what} is truncated")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def uint(self, length: int) -> int:
        return int.from_bytes(self.take(length), "big")


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """A v1 object record: object ID, fixed-attribute word, attributes.

    CoolKey object.cpp ``PKCS11Object::parseNewObject``; OpenSC card-coolkey.c
    ``coolkey_combined_object_header_t``.
    """

    object_id: bytes
    fixed: FixedAttributes
    attributes: tuple[Attribute, ...] = ()

    def __post_init__(self) -> None:
        if len(self.object_id) != OBJECT_ID_LENGTH:
            raise ValueError("object IDs are 4 bytes")
        if len(self.attributes) > 0xFFFF:
            raise ValueError("too many attributes")

    @property
    def name(self) -> str:
        return object_name(self.object_id)

    def attribute(self, attribute_type: int) -> Attribute | None:
        """The first attribute of that type; explicit attributes override the fixed word."""
        for attribute in self.attributes:
            if attribute.type == attribute_type:
                return attribute
        return None

    def bytes_attribute(self, attribute_type: int) -> bytes | None:
        found = self.attribute(attribute_type)
        return found.value if found is not None and isinstance(found.value, bytes) else None

    def encode(self) -> bytes:
        return (
            self.object_id
            + self.fixed.word.to_bytes(4, "big")
            + len(self.attributes).to_bytes(2, "big")
            + b"".join(attribute.encode() for attribute in self.attributes)
        )

    @classmethod
    def decode(cls, data: bytes) -> ObjectRecord:
        """Decode exactly one record; trailing bytes are malformed."""
        record, end = cls.decode_from(data, 0)
        if end != len(data):
            raise MalformedResponseError("object record has trailing bytes")
        return record

    @classmethod
    def decode_from(cls, data: bytes, offset: int) -> tuple[ObjectRecord, int]:
        """Decode the record starting at ``offset``; returns it and the offset after it."""
        reader = _Reader(data, offset, "object record")
        oid = reader.take(OBJECT_ID_LENGTH)
        fixed = FixedAttributes.from_word(reader.uint(4))
        attributes = []
        for _ in range(reader.uint(2)):
            attribute_type = reader.uint(4)
            data_type = reader.uint(1)
            value: bytes | int | bool
            if data_type == DataType.STRING:
                value = reader.take(reader.uint(2))
            elif data_type == DataType.INTEGER:
                value = reader.uint(4)
            elif data_type in (DataType.BOOL_FALSE, DataType.BOOL_TRUE):
                value = data_type == DataType.BOOL_TRUE
            else:
                raise MalformedResponseError(f"attribute data type {data_type} is not defined")
            attributes.append(Attribute(attribute_type, value))
        return cls(oid, fixed, tuple(attributes)), reader.offset


@dataclass(frozen=True, slots=True)
class CertificateObject:
    """A certificate record of a token: where it is, its CKA_ID, label and DER."""

    object_id: bytes
    cka_id: int
    label: str
    der: bytes


@dataclass(frozen=True, slots=True)
class CombinedObject:
    """The decoded combined object ``z0``: header fields, token name and records."""

    object_version: int
    cuid: bytes
    token_name: str
    records: tuple[ObjectRecord, ...] = ()
    compressed: bool = False
    format_version: int = COMBINED_FORMAT_VERSION

    @property
    def certificates(self) -> tuple[CertificateObject, ...]:
        """Certificate records (``c<n>``, class certificate) that carry their DER."""
        found = []
        for record in self.records:
            if record.object_id[:1] != b"c":
                continue
            if record.fixed.object_class != ObjectClass.CERTIFICATE:
                continue
            der = record.bytes_attribute(AttributeType.VALUE)
            if der is None:
                continue
            label = record.bytes_attribute(AttributeType.LABEL) or b""
            found.append(
                CertificateObject(
                    record.object_id,
                    record.fixed.cka_id,
                    label.decode("utf-8", errors="replace"),
                    der,
                )
            )
        return tuple(found)

    def encode(self) -> bytes:
        return encode_combined_object(
            object_version=self.object_version,
            cuid=self.cuid,
            token_name=self.token_name,
            records=self.records,
            compress=self.compressed,
            format_version=self.format_version,
        )


def encode_combined_object(
    *,
    object_version: int,
    cuid: bytes,
    token_name: str,
    records: Iterable[ObjectRecord],
    compress: bool = False,
    format_version: int = COMBINED_FORMAT_VERSION,
) -> bytes:
    """The bytes of ``z0`` as a TPS writes them, at least 255 bytes long.

    Padding rule: when the object would be shorter than 255 bytes, zero bytes are added
    *after the last record inside the data area* (so the header's data length covers
    them, and ``header + data`` reaches 255 bytes). Both consumers walk exactly
    ``object count`` records and ignore what follows (libcoolkeypk11
    ``fetchCombinedObjects``, OpenSC ``coolkey_process_combined_object``), and
    libcoolkeypk11 computes ``data length - (255 - data offset)`` for its second read, so
    the padding must be inside the data length, not after it. The token name stays as
    given. With compression, a padded data area is stored with zlib level 0 (stored
    blocks), which keeps the zlib stream itself at least that long.
    """
    if not 0 <= object_version <= 0xFFFF or not 0 <= format_version <= 0xFFFF:
        raise ValueError("object and format versions are 16-bit")
    if len(cuid) != CUID_LENGTH:
        raise ValueError(f"a CUID is {CUID_LENGTH} bytes")
    name = token_name.encode("utf-8")
    if len(name) > 0xFF:
        raise ValueError("token name longer than 255 bytes")
    records = tuple(records)
    if len(records) > 0xFFFF:
        raise ValueError("too many object records")
    data = (
        (5 + len(name)).to_bytes(2, "big")
        + len(records).to_bytes(2, "big")
        + bytes((len(name),))
        + name
        + b"".join(record.encode() for record in records)
    )
    minimum = MIN_COMBINED_OBJECT_SIZE - COMBINED_HEADER_LENGTH
    if compress:
        payload = zlib.compress(data, 9)
        if len(payload) < minimum:
            payload = zlib.compress(data.ljust(minimum, b"\x00"), 0)
    else:
        payload = data.ljust(minimum, b"\x00")
    if len(payload) > 0xFFFF:
        raise ValueError("combined object data longer than 65535 bytes")
    header = (
        format_version.to_bytes(2, "big")
        + object_version.to_bytes(2, "big")
        + cuid
        + (1 if compress else 0).to_bytes(2, "big")
        + len(payload).to_bytes(2, "big")
        + COMBINED_HEADER_LENGTH.to_bytes(2, "big")
    )
    return header + payload


@dataclass(frozen=True, slots=True)
class CombinedHeader:
    """The 20-byte header of ``z0`` alone (enough for the CUID and the cache version)."""

    format_version: int
    object_version: int
    cuid: bytes
    compression: int
    data_length: int
    data_offset: int

    @classmethod
    def decode(cls, data: bytes) -> CombinedHeader:
        reader = _Reader(data, 0, "combined object header")
        header = cls(
            format_version=reader.uint(2),
            object_version=reader.uint(2),
            cuid=reader.take(CUID_LENGTH),
            compression=reader.uint(2),
            data_length=reader.uint(2),
            data_offset=reader.uint(2),
        )
        if header.compression not in (0, 1):
            raise MalformedResponseError(f"unknown z0 compression type {header.compression}")
        if header.data_offset < COMBINED_HEADER_LENGTH:
            raise MalformedResponseError("z0 data overlaps its header")
        return header


def decode_combined_object(data: bytes) -> CombinedObject:
    """Decode ``z0`` as read from the card; bytes after the data area are ignored."""
    header = CombinedHeader.decode(data)
    end = header.data_offset + header.data_length
    if end > len(data):
        raise MalformedResponseError("z0 is shorter than its header says")
    area = data[header.data_offset : end]
    if header.compression == 1:
        area = _inflate(area)
    reader = _Reader(area, 0, "z0 data")
    first_record = reader.uint(2)
    count = reader.uint(2)
    name_length = reader.uint(1)
    name = reader.take(name_length)
    # Both consumers refuse a token name that runs into the object area.
    if first_record < 5 + name_length:
        raise MalformedResponseError("z0 token name overlaps the object records")
    records = []
    offset = first_record
    for _ in range(count):
        record, offset = ObjectRecord.decode_from(area, offset)
        records.append(record)
    return CombinedObject(
        object_version=header.object_version,
        cuid=header.cuid,
        token_name=name.decode("utf-8", errors="replace"),
        records=tuple(records),
        compressed=header.compression == 1,
        format_version=header.format_version,
    )


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_INFLATED_SIZE)
    except zlib.error as err:
        raise MalformedResponseError("z0 data is not a valid zlib stream") from err
    if inflater.unconsumed_tail:
        raise MalformedResponseError("z0 inflates to more than 1 MiB")
    if not inflater.eof:
        raise MalformedResponseError("z0 zlib stream is truncated")
    return out


def decode_separate_object(data: bytes) -> ObjectRecord:
    """Decode an object stored on its own (older tokens): v1 or v0 record.

    A v0 record's attributes are kept as byte strings: its integer encoding is
    ambiguous (libcoolkeypk11 and OpenSC disagree on byte order), so it is not guessed.
    """
    reader = _Reader(data, 0, "object")
    kind = reader.uint(1)
    if kind == 1:
        record, end = ObjectRecord.decode_from(data, 1)
        if end != len(data):
            raise MalformedResponseError("object record has trailing bytes")
        return record
    if kind != 0:
        raise MalformedResponseError(f"unknown object record type {kind}")
    oid = reader.take(OBJECT_ID_LENGTH)
    body = _Reader(reader.take(reader.uint(2)), 0, "v0 object attributes")
    attributes = []
    while body.offset < len(body.data):
        attribute_type = body.uint(4)
        attributes.append(Attribute(attribute_type, body.take(body.uint(2))))
    return ObjectRecord(oid, FixedAttributes(0, 0), tuple(attributes))


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    """One LIST OBJECTS answer: ID, size and the read/write/delete ACLs."""

    object_id: bytes
    size: int
    read_acl: int = ACL_ANYONE
    write_acl: int = ACL_RA
    delete_acl: int = ACL_RA

    def __post_init__(self) -> None:
        if len(self.object_id) != OBJECT_ID_LENGTH:
            raise ValueError("object IDs are 4 bytes")
        if not 0 <= self.size <= 0xFFFFFFFF:
            raise ValueError("object size out of range")
        for acl in (self.read_acl, self.write_acl, self.delete_acl):
            if not 0 <= acl <= 0xFFFF:
                raise ValueError("ACLs are 16-bit")

    @property
    def name(self) -> str:
        return object_name(self.object_id)

    def encode(self) -> bytes:
        return (
            self.object_id
            + self.size.to_bytes(4, "big")
            + self.read_acl.to_bytes(2, "big")
            + self.write_acl.to_bytes(2, "big")
            + self.delete_acl.to_bytes(2, "big")
        )

    @classmethod
    def decode(cls, data: bytes) -> ObjectEntry:
        if len(data) != LIST_OBJECTS_ENTRY_LENGTH:
            raise MalformedResponseError(
                f"LIST OBJECTS entry is {len(data)} bytes, expected {LIST_OBJECTS_ENTRY_LENGTH}"
            )
        return cls(
            data[:4],
            int.from_bytes(data[4:8], "big"),
            int.from_bytes(data[8:10], "big"),
            int.from_bytes(data[10:12], "big"),
            int.from_bytes(data[12:14], "big"),
        )


@dataclass(frozen=True, slots=True)
class TokenCertificate:
    """A certificate to put on a token, with its RSA key pair's size (for the builder)."""

    cert_id: int
    label: str
    der: bytes
    key_bits: int = 2048


#: Fixed words of the RSA triple that both OpenSC and libcoolkeypk11 accept
#: (tests/system/test_middleware_cross_check.py checks it with both).
CERTIFICATE_FLAGS = FixedFlag.TOKEN
PUBLIC_KEY_FLAGS = (
    FixedFlag.TOKEN | FixedFlag.ENCRYPT | FixedFlag.WRAP | FixedFlag.VERIFY
    | FixedFlag.VERIFY_RECOVER
)  # fmt: skip
PRIVATE_KEY_FLAGS = (
    FixedFlag.TOKEN | FixedFlag.PRIVATE | FixedFlag.DECRYPT | FixedFlag.UNWRAP | FixedFlag.SIGN
    | FixedFlag.SIGN_RECOVER | FixedFlag.SENSITIVE
)  # fmt: skip
#: Certificate n's keys are k<2n> and k<2n+1>, and its CKA_ID is a nibble; libcoolkeypk11
#: refuses certificate indexes above 9.
MAX_CERT_ID = 9


def certificate_records(certificate: TokenCertificate) -> tuple[ObjectRecord, ...]:
    """``c<n>``, ``k<2n+1>`` (public), ``k<2n>`` (private), in the order a TPS writes them.

    The certificate comes first: libcoolkeypk11 matches each key's CKA_ID against a
    certificate parsed earlier in the list and drops the whole token otherwise
    (CoolKey slot.cpp, ``Slot::addKeyObject``).
    The label lives on the certificate only; the keys carry CKA_KEY_TYPE and
    CKA_MODULUS_BITS, which neither consumer derives.
    """
    n = certificate.cert_id
    if not 0 <= n <= MAX_CERT_ID:
        raise ValueError(f"certificate ids are 0..{MAX_CERT_ID}, not {n}")
    key_attributes = (
        Attribute(AttributeType.KEY_TYPE, int(KeyType.RSA)),
        Attribute(AttributeType.MODULUS_BITS, certificate.key_bits),
    )
    return (
        ObjectRecord(
            indexed_object_id("c", n),
            FixedAttributes(n, ObjectClass.CERTIFICATE, CERTIFICATE_FLAGS),
            (
                Attribute(AttributeType.LABEL, certificate.label.encode("utf-8")),
                Attribute(AttributeType.VALUE, certificate.der),
            ),
        ),
        ObjectRecord(
            indexed_object_id("k", 2 * n + 1),
            FixedAttributes(n, ObjectClass.PUBLIC_KEY, PUBLIC_KEY_FLAGS),
            key_attributes,
        ),
        ObjectRecord(
            indexed_object_id("k", 2 * n),
            FixedAttributes(n, ObjectClass.PRIVATE_KEY, PRIVATE_KEY_FLAGS),
            key_attributes,
        ),
    )


def build_token_objects(
    token_name: str,
    cuid: bytes,
    object_version: int,
    certificates: Iterable[TokenCertificate | tuple[int, str, bytes, int]],
    *,
    compress: bool = False,
) -> CombinedObject:
    """The ``z0`` content of an enrolled token; ``.encode()`` gives the bytes to store.

    ``certificates`` holds ``TokenCertificate``s or ``(cert_id, label, der, key_bits)``
    tuples. Bump ``object_version`` whenever the content changes: libcoolkeypk11 caches
    z0 by (CUID, object version) (CoolKey slot.cpp, ``SlotMemSegment``).
    """
    records: list[ObjectRecord] = []
    seen: set[int] = set()
    for item in certificates:
        if isinstance(item, TokenCertificate):
            certificate = item
        else:
            certificate = TokenCertificate(item[0], item[1], item[2], item[3])
        if certificate.cert_id in seen:
            raise ValueError(f"certificate id {certificate.cert_id} used twice")
        seen.add(certificate.cert_id)
        records.extend(certificate_records(certificate))
    return CombinedObject(
        object_version=object_version,
        cuid=cuid,
        token_name=token_name,
        records=tuple(records),
        compressed=compress,
    )


def certificate_info(der: bytes, label: str) -> CertificateInfo:
    """What users see of a certificate; malformed DER raises ``MalformedResponseError``."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        subject = certificate.subject.rfc4514_string()
        issuer = certificate.issuer.rfc4514_string()
        serial = certificate.serial_number
        not_before = certificate.not_valid_before_utc
        not_after = certificate.not_valid_after_utc
    except (ValueError, x509.InvalidVersion) as err:
        raise MalformedResponseError("certificate on the token is not valid DER X.509") from err
    return CertificateInfo(
        subject=subject,
        issuer=issuer,
        serial=format(serial, "x"),
        not_before=not_before,
        not_after=not_after,
        sha256=hashlib.sha256(der).hexdigest(),
        label=label,
        der=der,
    )
