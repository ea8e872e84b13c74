# SPDX-License-Identifier: GPL-2.0-or-later
"""The CoolKey object model: IDs, v1 records, z0 in both directions, LIST OBJECTS entries."""

from __future__ import annotations

import hashlib
import zlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escd.card.objects import (
    COMBINED_OBJECT_ID,
    MIN_COMBINED_OBJECT_SIZE,
    Attribute,
    AttributeType,
    CombinedHeader,
    CombinedObject,
    FixedAttributes,
    FixedFlag,
    ObjectClass,
    ObjectEntry,
    ObjectRecord,
    TokenCertificate,
    build_token_objects,
    certificate_info,
    decode_combined_object,
    decode_separate_object,
    encode_combined_object,
    indexed_object_id,
    object_id,
    object_index,
    object_name,
)
from escd.errors import MalformedResponseError
from tests.support.fake_card import make_certificate

CUID = bytes.fromhex("40907001123400abcdef")
#: The header of the real token embedded in Dogtag's PKCS11Obj.java (``main``).
REAL_TOKEN_HEADER = bytes.fromhex("0100 384C 534E0650000100000108 0001 0403 0014")


# -- object IDs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw"),
    [("z0", "7a300000"), ("c0", "63300000"), ("k1", "6b310000"), ("C3", "43330000")],
)
def test_object_id_is_ascii_name_padded_with_nul(name: str, raw: str) -> None:
    assert object_id(name) == bytes.fromhex(raw)
    assert object_name(bytes.fromhex(raw)) == name


def test_object_name_shows_io_buffers_and_odd_ids_as_hex() -> None:
    assert object_name(b"\xff\xff\xff\xff") == "ffffffff"
    assert object_name(b"c\x000\x00") == "63003000"
    assert object_name(b"c0") == "6330"


def test_indexed_object_ids_follow_opensc_index_characters() -> None:
    assert indexed_object_id("k", 3) == object_id("k3")
    assert indexed_object_id("k", 11) == object_id("kB")
    assert object_index(object_id("kB")) == 11
    assert object_index(object_id("z0")) == 0
    assert object_index(b"k\x01\x00\x00") is None
    with pytest.raises(ValueError):
        indexed_object_id("k", 62)


@pytest.mark.parametrize("name", ["", "abcde", "é0", "c\x000"])
def test_object_id_refuses_names_the_card_cannot_carry(name: str) -> None:
    with pytest.raises(ValueError):
        object_id(name)


# -- fixed attributes and records -------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "cka_id", "object_class", "flags"),
    [
        # The real token's c1 / k3 / k2 words (Dogtag PKCS11Obj.java).
        (0x91, 1, ObjectClass.CERTIFICATE, FixedFlag.TOKEN),
        (0x0C00A1, 1, ObjectClass.PUBLIC_KEY,
         FixedFlag.TOKEN | FixedFlag.VERIFY | FixedFlag.VERIFY_RECOVER),
        (0x1301B1, 1, ObjectClass.PRIVATE_KEY,
         FixedFlag.TOKEN | FixedFlag.PRIVATE | FixedFlag.SIGN | FixedFlag.SIGN_RECOVER
         | FixedFlag.SENSITIVE),
        # Its c2's keys.
        (0x50A2, 2, ObjectClass.PUBLIC_KEY, FixedFlag.TOKEN | FixedFlag.ENCRYPT | FixedFlag.WRAP),
        (0x10A1B2, 2, ObjectClass.PRIVATE_KEY,
         FixedFlag.TOKEN | FixedFlag.PRIVATE | FixedFlag.DECRYPT | FixedFlag.UNWRAP
         | FixedFlag.SENSITIVE),
    ],
)  # fmt: skip
def test_fixed_attribute_words_of_the_real_token(
    word: int, cka_id: int, object_class: int, flags: FixedFlag
) -> None:
    fixed = FixedAttributes.from_word(word)
    assert (fixed.cka_id, fixed.object_class, fixed.flags) == (cka_id, object_class, flags)
    assert fixed.word == word


def test_fixed_attributes_keep_unassigned_high_bits() -> None:
    assert FixedAttributes.from_word(0xFF000091).word == 0xFF000091


def test_fixed_attributes_refuse_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        FixedAttributes(16, 1)
    with pytest.raises(ValueError):
        FixedAttributes(0, 8)
    with pytest.raises(ValueError):
        FixedAttributes(0, 1, FixedFlag(0x10))


@pytest.mark.parametrize(
    ("attribute", "encoded"),
    [
        (Attribute(AttributeType.LABEL, b"ab"), "00000003 00 0002 6162"),
        (Attribute(AttributeType.MODULUS_BITS, 2048), "00000121 01 00000800"),
        (Attribute(AttributeType.TOKEN, False), "00000001 02"),
        (Attribute(AttributeType.PRIVATE, True), "00000002 03"),
    ],
)
def test_attribute_encoding(attribute: Attribute, encoded: str) -> None:
    assert attribute.encode() == bytes.fromhex(encoded)


def test_record_vector_round_trips() -> None:
    raw = bytes.fromhex("63300000 00000090 0001 00000003 00 0003 616263")
    record = ObjectRecord.decode(raw)
    assert record.name == "c0"
    assert record.fixed == FixedAttributes(0, ObjectClass.CERTIFICATE, FixedFlag.TOKEN)
    assert record.bytes_attribute(AttributeType.LABEL) == b"abc"
    assert record.attribute(AttributeType.VALUE) is None
    assert record.encode() == raw


@pytest.mark.parametrize(
    "raw",
    [
        "633000",  # truncated ID
        "63300000 00000090 0001 00000003",  # attribute without data type
        "63300000 00000090 0001 00000003 00 0004 616263",  # string shorter than its length
        "63300000 00000090 0001 00000003 01 0000",  # short integer
        "63300000 00000090 0001 00000003 04",  # undefined data type
        "63300000 00000090 0000 00",  # trailing byte
    ],
)
def test_malformed_records_raise_malformed_response(raw: str) -> None:
    with pytest.raises(MalformedResponseError):
        ObjectRecord.decode(bytes.fromhex(raw))


# -- the combined object ---------------------------------------------------------------


def test_real_token_header_decodes_as_the_spec_says() -> None:
    header = CombinedHeader.decode(REAL_TOKEN_HEADER)
    assert header.format_version == 0x0100
    assert header.object_version == 0x384C
    assert header.cuid == bytes.fromhex("534E0650000100000108")
    assert (header.compression, header.data_length, header.data_offset) == (1, 1027, 20)


def test_real_token_header_without_its_data_is_malformed() -> None:
    with pytest.raises(MalformedResponseError, match="shorter than its header"):
        decode_combined_object(REAL_TOKEN_HEADER + bytes(100))


def _recipe_token(*, compress: bool = False) -> tuple[CombinedObject, bytes]:
    der = make_certificate("Test User")
    token = build_token_objects(
        "Test User", CUID, 7, [(0, "Test User signing cert", der, 2048)], compress=compress
    )
    return token, der


@pytest.mark.parametrize("compress", [False, True])
def test_builder_writes_the_verified_recipe(compress: bool) -> None:
    token, der = _recipe_token(compress=compress)
    raw = token.encode()
    assert raw[:4] == bytes.fromhex("0100 0007")
    assert raw[4:14] == CUID
    assert raw[14:16] == (b"\x00\x01" if compress else b"\x00\x00")
    assert raw[18:20] == b"\x00\x14"
    decoded = decode_combined_object(raw)
    assert decoded == token
    # c0 (0x90) with LABEL and VALUE, then k1 (0x0C50A0) and k0 (0x13A1B0) with
    # KEY_TYPE=0 and MODULUS_BITS=2048; keys carry no label.
    assert [record.name for record in decoded.records] == ["c0", "k1", "k0"]
    assert [record.fixed.word for record in decoded.records] == [0x90, 0x0C50A0, 0x13A1B0]
    c0, k1, k0 = decoded.records
    assert c0.bytes_attribute(AttributeType.LABEL) == b"Test User signing cert"
    assert c0.bytes_attribute(AttributeType.VALUE) == der
    for key in (k1, k0):
        assert key.attributes == (
            Attribute(AttributeType.KEY_TYPE, 0),
            Attribute(AttributeType.MODULUS_BITS, 2048),
        )
    assert decoded.certificates[0].label == "Test User signing cert"
    assert decoded.certificates[0].der == der


def test_builder_puts_each_certificate_before_its_keys_with_its_id_in_the_low_nibble() -> None:
    der = make_certificate("Someone")
    token = build_token_objects(
        "someone",
        CUID,
        1,
        [TokenCertificate(1, "signing", der, 2048), (2, "encryption", der, 1024)],
    )
    assert [record.name for record in token.records] == ["c1", "k3", "k2", "c2", "k5", "k4"]
    assert [record.fixed.cka_id for record in token.records] == [1, 1, 1, 2, 2, 2]
    assert [c.label for c in token.certificates] == ["signing", "encryption"]


def test_builder_refuses_ids_libcoolkeypk11_cannot_read_or_use_twice() -> None:
    der = make_certificate("x")
    with pytest.raises(ValueError):
        build_token_objects("x", CUID, 1, [(10, "x", der, 2048)])
    with pytest.raises(ValueError):
        build_token_objects("x", CUID, 1, [(1, "a", der, 2048), (1, "b", der, 2048)])


@pytest.mark.parametrize("compress", [False, True])
def test_small_z0_is_padded_inside_its_data_area_to_255_bytes(compress: bool) -> None:
    token = CombinedObject(object_version=1, cuid=CUID, token_name="T", compressed=compress)
    raw = token.encode()
    header = CombinedHeader.decode(raw)
    assert len(raw) >= MIN_COMBINED_OBJECT_SIZE
    # libcoolkeypk11 reads 255 bytes, then data_length - (255 - offset) more: never negative.
    assert header.data_offset + header.data_length == len(raw)
    assert header.data_length >= MIN_COMBINED_OBJECT_SIZE - header.data_offset
    # The token name is not stretched; the count of records stays true.
    assert decode_combined_object(raw) == token
    area = raw[20:]
    data = zlib.decompress(area) if compress else area
    assert data[:6] == bytes.fromhex("0006 0000 01") + b"T"
    assert set(data[6:]) <= {0}


def test_z0_ignores_bytes_after_its_data_area() -> None:
    token, _ = _recipe_token()
    assert decode_combined_object(token.encode() + b"\xff" * 40) == token


def test_every_truncation_of_z0_is_malformed() -> None:
    token, _ = _recipe_token()
    raw = token.encode()
    for length in range(len(raw)):
        with pytest.raises(MalformedResponseError):
            decode_combined_object(raw[:length])


def test_corrupt_or_truncated_zlib_is_malformed() -> None:
    token, _ = _recipe_token(compress=True)
    raw = bytearray(token.encode())
    stream_end = 20 + CombinedHeader.decode(bytes(raw)).data_length
    with pytest.raises(MalformedResponseError):
        decode_combined_object(bytes(raw[:18]) + (100).to_bytes(2, "big") + bytes(raw[20:]))
    raw[22] ^= 0xFF
    with pytest.raises(MalformedResponseError):
        decode_combined_object(bytes(raw[:stream_end]))


def test_z0_that_inflates_beyond_a_mebibyte_is_refused() -> None:
    bomb = zlib.compress(bytes(2 << 20), 9)
    header = bytes.fromhex("0100 0001") + CUID + bytes.fromhex("0001")
    raw = header + len(bomb).to_bytes(2, "big") + b"\x00\x14" + bomb
    with pytest.raises(MalformedResponseError, match="more than 1 MiB"):
        decode_combined_object(raw)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("0005 0000 03 616263", "overlaps"),  # name of 3 bytes, records announced at 5
        ("0005 0001 00", "truncated"),  # one record announced, none there
        ("0005 00", "truncated"),
    ],
)
def test_inconsistent_z0_data_is_malformed(data: str, message: str) -> None:
    payload = bytes.fromhex(data)
    header = bytes.fromhex("0100 0001") + CUID + b"\x00\x00"
    raw = header + len(payload).to_bytes(2, "big") + b"\x00\x14" + payload
    with pytest.raises(MalformedResponseError, match=message):
        decode_combined_object(raw)


@pytest.mark.parametrize(
    "header",
    [
        "0100 0001 40907001123400abcdef 0002 0000 0014",  # compression type 2
        "0100 0001 40907001123400abcdef 0000 0000 0010",  # data inside the header
    ],
)
def test_bad_z0_headers_are_malformed(header: str) -> None:
    with pytest.raises(MalformedResponseError):
        decode_combined_object(bytes.fromhex(header) + bytes(300))


def test_encoder_refuses_values_the_header_cannot_carry() -> None:
    with pytest.raises(ValueError):
        encode_combined_object(object_version=1, cuid=b"short", token_name="x", records=())
    with pytest.raises(ValueError):
        encode_combined_object(object_version=0x10000, cuid=CUID, token_name="x", records=())
    with pytest.raises(ValueError):
        encode_combined_object(object_version=1, cuid=CUID, token_name="x" * 256, records=())


# -- property tests ---------------------------------------------------------------------

attributes = st.builds(
    Attribute,
    st.integers(0, 0xFFFFFFFF),
    st.one_of(st.binary(max_size=300), st.integers(0, 0xFFFFFFFF), st.booleans()),
)
records = st.builds(
    ObjectRecord,
    st.binary(min_size=4, max_size=4),
    st.builds(
        FixedAttributes,
        st.integers(0, 15),
        st.integers(0, 7),
        st.integers(0, 0xFFFFFFFF).map(lambda word: FixedFlag(word & ~0x7F)),
    ),
    st.lists(attributes, max_size=4).map(tuple),
)
combined_objects = st.builds(
    CombinedObject,
    object_version=st.integers(0, 0xFFFF),
    cuid=st.binary(min_size=10, max_size=10),
    token_name=st.text(max_size=60),
    records=st.lists(records, max_size=5).map(tuple),
    compressed=st.booleans(),
    format_version=st.integers(0, 0xFFFF),
)


@given(combined_objects)
def test_combined_object_round_trips(token: CombinedObject) -> None:
    raw = token.encode()
    assert len(raw) >= MIN_COMBINED_OBJECT_SIZE
    assert decode_combined_object(raw) == token


@given(records)
def test_record_round_trips(record: ObjectRecord) -> None:
    assert ObjectRecord.decode(record.encode()) == record


@given(st.binary(max_size=400))
def test_random_bytes_never_raise_anything_but_malformed(raw: bytes) -> None:
    for decoder in (decode_combined_object, ObjectRecord.decode, ObjectEntry.decode,
                    decode_separate_object, CombinedHeader.decode):  # fmt: skip
        try:
            decoder(raw)
        except MalformedResponseError:
            pass


@given(st.binary(min_size=20, max_size=300), st.booleans())
def test_random_z0_data_areas_never_raise_anything_but_malformed(
    payload: bytes, compress: bool
) -> None:
    area = zlib.compress(payload) if compress else payload
    header = bytes.fromhex("0100 0001") + CUID + (b"\x00\x01" if compress else b"\x00\x00")
    raw = header + len(area).to_bytes(2, "big") + b"\x00\x14" + area
    try:
        decode_combined_object(raw)
    except MalformedResponseError:
        pass


# -- LIST OBJECTS entries and separate objects -----------------------------------------


def test_list_objects_entry_from_the_opensc_trace() -> None:
    raw = bytes.fromhex("7A300000 00000306 FFFF 4000 4000")  # an enrolled card's z0
    entry = ObjectEntry.decode(raw)
    assert entry.object_id == COMBINED_OBJECT_ID
    assert entry.name == "z0"
    assert (entry.size, entry.read_acl, entry.write_acl, entry.delete_acl) == (
        0x306, 0xFFFF, 0x4000, 0x4000,
    )  # fmt: skip
    assert entry.encode() == raw


@pytest.mark.parametrize("length", [0, 13, 15])
def test_list_objects_entry_of_wrong_length_is_malformed(length: int) -> None:
    with pytest.raises(MalformedResponseError):
        ObjectEntry.decode(bytes(length))


def test_separate_v1_object_is_a_record_behind_a_type_byte() -> None:
    record = ObjectRecord(
        object_id("c0"),
        FixedAttributes(0, ObjectClass.CERTIFICATE, FixedFlag.TOKEN),
        (Attribute(AttributeType.LABEL, b"old"),),
    )
    assert decode_separate_object(b"\x01" + record.encode()) == record


def test_separate_v0_object_keeps_attributes_as_bytes() -> None:
    raw = bytes.fromhex("00 63300000 000B 00000003 0005 68656c6c6f")
    record = decode_separate_object(raw)
    assert record.name == "c0"
    assert record.bytes_attribute(AttributeType.LABEL) == b"hello"


@pytest.mark.parametrize("raw", ["02", "00 633000", "00 63300000 0008 00000003 0005 68"])
def test_malformed_separate_objects(raw: str) -> None:
    with pytest.raises(MalformedResponseError):
        decode_separate_object(bytes.fromhex(raw))


# -- certificates -----------------------------------------------------------------------


def test_certificate_info_reads_what_users_see() -> None:
    der = make_certificate("Alice Example", serial=0x0ABC)
    info = certificate_info(der, "Alice's signing cert")
    assert info.subject == "CN=Alice Example,O=Example Org"
    assert info.issuer == info.subject
    assert info.serial == "abc"
    assert info.not_before == datetime(2025, 1, 1, tzinfo=UTC)
    assert info.not_after.tzinfo is not None
    assert info.sha256 == hashlib.sha256(der).hexdigest()
    assert info.label == "Alice's signing cert"
    assert info.der == der


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x01", b"not a certificate"])
def test_certificate_info_on_garbage_is_malformed(der: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        certificate_info(der, "x")
