# SPDX-License-Identifier: GPL-2.0-or-later
"""SCP01/SCP02 crypto: known-answer vectors and round trips.

Vector A is Dogtag's TKS self-test (TKSKnownSessionKey, TKS CS.cfg), C a public SCP02
card trace with the developer key, D pySim's GlobalPlatform tests
(tests/unittests/test_globalplatform.py); B, B' and F were computed with the formulas
of GP 2.1.1 appendices D and E as Dogtag implements them.
"""

from __future__ import annotations

import pytest

from escd.card.apdu import CommandApdu
from escd.sim.scp import (
    DEVELOPER_KEY,
    InitUpdateResponse,
    ScpAuthError,
    ScpCryptogramError,
    ScpMacError,
    ScpProtocol,
    ScpSecurityLevelError,
    SecureChannelCard,
    SecureChannelHost,
    SecurityLevel,
    StaticKeys,
    diversify_emv,
    diversify_nist,
    diversify_visa2,
    kcv,
    pad80,
    scp01_session_keys,
    scp02_session_keys,
    unpad80,
    unwrap_challenge,
    wrap_challenge,
)

H = bytes.fromhex
DEV = StaticKeys.developer()
KDD_B = H("A00192030405060708C9")
HC_A = H("775762E45E23667D")
CC_A = H("BD6D19856E540FCD")


def _apdu(hexstr: str) -> CommandApdu:
    return CommandApdu.decode(H(hexstr))


# -- A: SCP01 session key (Dogtag TKS self-test) ----------------------------------------


def test_scp01_session_key_matches_tks_self_test_vector_a() -> None:
    session = scp01_session_keys(DEV, HC_A, CC_A)
    assert session.enc == H("D1BEB826DC5620258C93E7DEF0AB4F5B")
    assert session.dek == DEVELOPER_KEY


# -- B and B': SCP01 full handshake -------------------------------------------------------


def _scp01_pair(keys: StaticKeys) -> tuple[SecureChannelHost, SecureChannelCard, bytes]:
    card = SecureChannelCard(
        keys, kdd=KDD_B, key_version=0x01, protocol=ScpProtocol.SCP01, card_challenge=CC_A
    )
    host = SecureChannelHost(keys, host_challenge=HC_A)
    assert host.initialize_update() == H("8050000008775762E45E23667D")
    response = card.initialize_update(HC_A)
    host.open(response)
    return host, card, response


def test_scp01_handshake_matches_vector_b() -> None:
    host, card, response = _scp01_pair(DEV)
    assert response == H("A00192030405060708C90101BD6D19856E540FCDA3BA811B31D3337D")
    ext_auth = host.external_authenticate()
    assert ext_auth == H("848203001040A14AD953A5B545E7C1A51FDDAAC75E")
    assert card.external_authenticate(_apdu(ext_auth.hex())) is SecurityLevel.C_DEC_C_MAC
    set_pin = host.wrap(CommandApdu(0x84, 0x04, 0x00, 0x00, b"1234"))
    assert set_pin == H("84040000105B84415CC384C950284CD1AE29E73DF9")
    assert card.unwrap(_apdu(set_pin.hex())).data == b"1234"
    lifecycle = host.wrap(CommandApdu(0x84, 0xF0, 0x0F, 0x00))
    assert lifecycle == H("84F00F0010ECFAB2BA0D087BB13BFD3AD1BFBC116A")
    assert card.unwrap(_apdu(lifecycle.hex())) == CommandApdu(0x84, 0xF0, 0x0F, 0x00)


def test_scp01_handshake_with_distinct_keys_matches_vector_b_prime() -> None:
    keys = StaticKeys(
        enc=DEVELOPER_KEY,
        mac=H("505152535455565758595A5B5C5D5E5F"),
        kek=H("606162636465666768696A6B6C6D6E6F"),
    )
    host, card, response = _scp01_pair(keys)
    assert host.session is not None
    assert host.session.enc == H("D1BEB826DC5620258C93E7DEF0AB4F5B")
    assert host.session.mac == H("E8311B567A5AC8DF7D58938A6F73214B")
    assert response[-8:] == H("A3BA811B31D3337D")
    ext_auth = host.external_authenticate()
    assert ext_auth == H("848203001040A14AD953A5B545D722DF90F9821549")
    card.external_authenticate(_apdu(ext_auth.hex()))
    set_pin = host.wrap(CommandApdu(0x84, 0x04, 0x00, 0x00, b"1234"))
    assert set_pin == H("84040000105B84415CC384C9503D3A5C79645C92A6")
    assert card.unwrap(_apdu(set_pin.hex())).data == b"1234"
    lifecycle = host.wrap(CommandApdu(0x84, 0xF0, 0x0F, 0x00))
    assert lifecycle == H("84F00F0010ECFAB2BA0D087BB166DC3427F1B981B6")
    card.unwrap(_apdu(lifecycle.hex()))
    challenge = bytes(range(16))
    assert wrap_challenge(keys.kek, challenge) == H("CC94902B695ACBF85CDF492684577A23")


# -- C: SCP02 with the developer key (real card trace) -----------------------------------


def test_scp02_real_card_trace_matches_vector_c() -> None:
    hc = H("0102030405060708")
    response_bytes = H("00007295713236006868FF0200088B320EC60E9BF5A6DBF1B3FEB875")
    response = InitUpdateResponse.decode(response_bytes)
    assert response.protocol is ScpProtocol.SCP02
    assert response.sequence == H("0008")
    assert response.key_info == H("FF01")
    session = scp02_session_keys(DEV, response.sequence)
    assert session.enc == H("640D58CA61AD53BABBE548368D81DA20")
    assert session.mac == H("015A6C2117AAAE9457614E5DAF0429B9")
    host = SecureChannelHost(DEV, host_challenge=hc)
    host.open(response_bytes)
    assert host.external_authenticate() == H("8482030010B98DE287B77F7D303175FBEFF5D16CCA")
    card = SecureChannelCard(
        DEV,
        kdd=response.kdd,
        key_version=0xFF,
        protocol=ScpProtocol.SCP02,
        sequence_counter=8,
        card_challenge=response.card_challenge,
    )
    assert card.initialize_update(hc) == response_bytes


# -- D: SCP02 C-MAC with ICV encryption (pySim) --------------------------------------------


def test_scp02_secure_messaging_matches_vector_d() -> None:
    keys = StaticKeys(
        enc=H("100102030405060708090A0B0C0D0E0F"),
        mac=H("101102030405060708090A0B0C0D0E0F"),
        kek=H("102102030405060708090A0B0C0D0E0F"),
    )
    hc = H("40A62C37FA6304F8")
    response_bytes = H("00000000000000000000700200016B4524ABEE7CF32EA3838BC148F3")
    host = SecureChannelHost(keys, host_challenge=hc)
    host.open(response_bytes)
    assert host.session is not None
    assert host.session.enc == H("1BA074B31F72A6C44FE8F5D9AFE4DA2F")
    assert host.session.mac == H("29A69328E60494982632039DDD47A2F1")
    assert host.session.dek == H("511DB767812597722109C867F9D7257A")
    card = SecureChannelCard(
        keys,
        kdd=bytes(10),
        key_version=0x70,
        protocol=ScpProtocol.SCP02,
        sequence_counter=1,
        card_challenge=H("6B4524ABEE7C"),
    )
    assert card.initialize_update(hc) == response_bytes
    ext_auth = host.external_authenticate(SecurityLevel.C_MAC)
    assert ext_auth == H("8482010010BA6961667737C5BCEBECE14C7D6A4376")
    assert card.external_authenticate(_apdu(ext_auth.hex())) is SecurityLevel.C_MAC
    for plain, wire in [
        ("80F22002", "84F220020814DB34FA4341DCA8"),
        ("80CA006600", "84CA00660855ED7C5FF069512B00"),
        ("80F220020A4F0212345C054F9F70C5", "84F22002124F0212345C054F9F70C58FC1B380C4228AF8"),
        ("80F28002024F0000", "84F280020A4F003B95F09317DE6A4E00"),
    ]:
        wrapped = host.wrap(_apdu(plain))
        assert wrapped == H(wire)
        unwrapped = card.unwrap(_apdu(wire))
        assert unwrapped.data == _apdu(plain).data
        assert unwrapped.le == _apdu(plain).le
    set_pin = host.wrap(CommandApdu(0x84, 0x04, 0x00, 0x00, b"1234"), encrypt=True)
    assert set_pin == H("84040000105AEF43C7F00D4AFABDB3A0A4177AB025")


# -- F: diversification, KCV, challenge wrapping ------------------------------------------


def test_visa2_diversification_matches_vector_f() -> None:
    keys = diversify_visa2(DEVELOPER_KEY, KDD_B)
    assert keys.enc == H("AFC3CF5A5076D51098B5962ED7DDF32A")
    assert keys.mac == H("A6E4450EF97BE24B1A37E655F1663AD3")
    assert keys.kek == H("3B9B7DFC593EF39F335E9E69049CB741")


def test_emv_diversification_matches_vector_f() -> None:
    assert diversify_emv(DEVELOPER_KEY, KDD_B).enc == H("DEDC3D2E73A5680D903C2042160798E5")


def test_kcv_and_challenge_wrapping_match_vector_f() -> None:
    assert kcv(DEVELOPER_KEY) == H("8BAF47")
    challenge = bytes(range(16))
    wrapped = wrap_challenge(DEVELOPER_KEY, challenge)
    assert wrapped == H("F1D75E4F0D37C22CB8D54E6253BB40B1")
    assert unwrap_challenge(DEVELOPER_KEY, wrapped) == challenge


def test_nist_diversification_gives_distinct_odd_parity_keys_per_context() -> None:
    first = diversify_nist(DEVELOPER_KEY, KDD_B)
    second = diversify_nist(DEVELOPER_KEY, bytes(10))
    assert first != second
    assert len({first.enc, first.mac, first.kek}) == 3
    for byte in first.enc + first.mac + first.kek:
        assert bin(byte).count("1") % 2 == 1


# -- round trips and failures -------------------------------------------------------------


def _open_pair(
    protocol: ScpProtocol, level: SecurityLevel, keys: StaticKeys = DEV
) -> tuple[SecureChannelHost, SecureChannelCard]:
    card = SecureChannelCard(
        keys, kdd=KDD_B, key_version=0x01, protocol=protocol, sequence_counter=5
    )
    host = SecureChannelHost(keys)
    host.open(card.initialize_update(host.host_challenge))
    card.external_authenticate(_apdu(host.external_authenticate(level).hex()))
    return host, card


@pytest.mark.parametrize("protocol", list(ScpProtocol))
@pytest.mark.parametrize("level", list(SecurityLevel))
def test_wrapped_commands_of_every_length_unwrap_to_the_plain_command(
    protocol: ScpProtocol, level: SecurityLevel
) -> None:
    host, card = _open_pair(protocol, level)
    for length in range(0, 40):
        plain = CommandApdu(0x84, 0x54, 0x00, 0x00, bytes(range(length)), le=None)
        assert card.unwrap(_apdu(host.wrap(plain).hex())) == plain
    with_le = CommandApdu(0x84, 0x56, 0x00, 0x00, b"\xff\xff\xff\xff\x00\x00\x00\x00\xd0", le=256)
    assert card.unwrap(_apdu(host.wrap(with_le).hex())) == with_le


@pytest.mark.parametrize("protocol", list(ScpProtocol))
def test_tampered_mac_is_refused_with_6982(protocol: ScpProtocol) -> None:
    host, card = _open_pair(protocol, SecurityLevel.C_DEC_C_MAC)
    wire = bytearray(host.wrap(CommandApdu(0x84, 0x04, 0, 0, b"1234")))
    wire[-1] ^= 0x01
    with pytest.raises(ScpMacError) as info:
        card.unwrap(_apdu(bytes(wire).hex()))
    assert info.value.sw == 0x6982


@pytest.mark.parametrize("protocol", list(ScpProtocol))
def test_replayed_command_fails_because_the_icv_chains(protocol: ScpProtocol) -> None:
    host, card = _open_pair(protocol, SecurityLevel.C_DEC_C_MAC)
    wire = host.wrap(CommandApdu(0x84, 0x04, 0, 0, b"1234"))
    card.unwrap(_apdu(wire.hex()))
    with pytest.raises(ScpMacError):
        card.unwrap(_apdu(wire.hex()))


@pytest.mark.parametrize("protocol", list(ScpProtocol))
def test_wrong_static_keys_fail_the_card_cryptogram_on_the_host(protocol: ScpProtocol) -> None:
    wrong = StaticKeys(bytes(16), bytes(16), bytes(16))
    card = SecureChannelCard(wrong, kdd=KDD_B, key_version=1, protocol=protocol)
    host = SecureChannelHost(DEV)
    with pytest.raises(ScpCryptogramError):
        host.open(card.initialize_update(host.host_challenge))


def test_wrong_host_cryptogram_is_refused_with_6300() -> None:
    card = SecureChannelCard(DEV, kdd=KDD_B, key_version=1, protocol=ScpProtocol.SCP02)
    host = SecureChannelHost(DEV)
    host.open(card.initialize_update(host.host_challenge))
    # A host that uses another challenge than the one the card saw computes a good MAC
    # over a wrong cryptogram: the card must answer 6300, not 6982.
    host.host_challenge = bytes(8)
    with pytest.raises(ScpAuthError) as info:
        card.external_authenticate(_apdu(host.external_authenticate().hex()))
    assert info.value.sw == 0x6300


def test_unsupported_security_level_is_refused_with_6985() -> None:
    card = SecureChannelCard(DEV, kdd=KDD_B, key_version=1, protocol=ScpProtocol.SCP01)
    host = SecureChannelHost(DEV)
    host.open(card.initialize_update(host.host_challenge))
    wire = host.external_authenticate()
    assert card.session is not None and host.response is not None and host.session is not None
    # Re-MAC the same cryptogram with P1 = 00: the checks pass, only the level is wrong.
    from escd.sim.scp import full_3des_mac

    header = H("8482000010")
    forged = header + wire[5:13] + full_3des_mac(host.session.mac, header + wire[5:13])
    with pytest.raises(ScpSecurityLevelError) as info:
        card.external_authenticate(_apdu(forged.hex()))
    assert info.value.sw == 0x6985


@pytest.mark.parametrize("protocol", list(ScpProtocol))
def test_key_wrapping_and_put_key_round_trip(protocol: ScpProtocol) -> None:
    host, card = _open_pair(protocol, SecurityLevel.C_DEC_C_MAC)
    des_key = bytes(range(0x20, 0x30))
    assert card.unwrap_key(host.wrap_key(des_key)) == des_key
    new_keys = StaticKeys(b"\x11" * 16, b"\x22" * 16, b"\x33" * 16)
    data = host.put_key_data(0x02, new_keys)
    assert len(data) == 67
    assert card.parse_put_key(data) == (0x02, new_keys)
    broken = bytearray(data)
    broken[-1] ^= 0xFF
    with pytest.raises(ValueError, match="check value"):
        card.parse_put_key(bytes(broken))


def test_padding_is_always_added_and_stripped() -> None:
    assert pad80(b"") == H("8000000000000000")
    assert pad80(bytes(8)) == bytes(8) + H("8000000000000000")
    assert unpad80(pad80(b"abc")) == b"abc"
    with pytest.raises(ValueError):
        unpad80(bytes(8))


def test_static_keys_repr_shows_no_key_material() -> None:
    assert DEVELOPER_KEY.hex() not in repr(DEV).lower()
    assert "8baf47" in repr(DEV)
