# SPDX-License-Identifier: GPL-2.0-or-later
"""GlobalPlatform secure-channel crypto (SCP01, SCP02 i=15) for both ends of the channel.

Pure: bytes in, bytes out; no I/O, no logging, no card state. The simulated card
(``escd.sim.gp``) uses the card end, the simulated TPS (and its in-process TKS) the
host end. The formulas are those of GP Card Specification 2.1.1 (appendices D and E)
as Dogtag implements them (TKS SecureChannelProtocol.java, TPS SecureChannel.java,
``org.dogtagpki.tps.apdu.APDU.secureMessage``); tests/unit/test_scp.py checks them
against known-answer vectors.

Vocabulary
    ``StaticKeys``        the card's static ENC/MAC/KEK (Dogtag "auth", "mac", "kek");
                          ``StaticKeys.developer()`` is the GP test set ``40..4F``.
    ``diversify_visa2`` / ``diversify_emv`` / ``diversify_nist``
                          card keys from a TKS master key and the 10-byte KDD
                          (Dogtag TKS KDF.java, StandardKDF.java, NistSP800_108KDF.java).
    ``SessionKeys``       S-ENC, S-MAC and the key that wraps sensitive data
                          (SCP01: the static KEK; SCP02: S-DEK).
    ``InitUpdateResponse`` the 28-byte INITIALIZE UPDATE answer, ``decode``/``encode``.

Host end (what the TPS does)::

    host = SecureChannelHost(StaticKeys.developer(), host_challenge=os.urandom(8))
    apdu = host.initialize_update(key_version=0)           # 80 50 00 00 08 hc
    host.open(response_data)                                # checks the card cryptogram
    apdu = host.external_authenticate(SecurityLevel.C_DEC_C_MAC)
    wire = host.wrap(CommandApdu(0x84, 0x04, 0, 0, b"1234"))   # C-MAC (+ C-DEC)
    host.wrap_key(des_key)             # IMPORT KEY ENC: KEK (SCP01) / S-DEK (SCP02)
    host.put_key_data(new_version, new_keys)                # PUT KEY body (67 bytes)
    wrap_challenge(keys.kek, challenge)                     # GENERATE KEY challenge

Card end (what the simulated card does)::

    card = SecureChannelCard(keys, kdd=cuid, key_version=0x01, protocol=ScpProtocol.SCP01,
                             sequence_counter=0)
    data = card.initialize_update(host_challenge)            # the 28 bytes to answer
    level = card.external_authenticate(command)              # raises ScpAuthError / ScpMacError
    plain = card.unwrap(command)                             # verify MAC, decrypt C-DEC
    card.unwrap_key(wrapped)                                 # inverse of host.wrap_key

Errors are ``ScpError`` subclasses carrying the status word a card answers with
(``6300`` host cryptogram, ``6982`` MAC, ``6985`` security level); the host raises
``ScpError`` when the card cryptogram does not verify.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from enum import IntEnum, unique
from typing import ClassVar

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from escd.card.apdu import CommandApdu

#: GlobalPlatform "developer" key (the ``defKeySet`` of Dogtag's TKS CS.cfg), used for ENC,
#: MAC and KEK.
DEVELOPER_KEY = bytes(range(0x40, 0x50))
BLOCK = 8
KDD_LENGTH = 10
CHALLENGE_LENGTH = 8
INIT_UPDATE_RESPONSE_LENGTH = 28
PUT_KEY_DATA_LENGTH = 67
#: SCP02 "i" parameter: 3 static keys, explicit key version, C-MAC with ICV encryption,
#: the only variant Dogtag accepts (Dogtag SecureChannel.java, ``GP211_SCP02_IMPL_15``).
SCP02_I = 0x15


@unique
class ScpProtocol(IntEnum):
    """Secure channel protocol, as the card reports it in INITIALIZE UPDATE byte 11."""

    SCP01 = 0x01
    SCP02 = 0x02


@unique
class SecurityLevel(IntEnum):
    """EXTERNAL AUTHENTICATE P1 (GP 2.1.1 E.5.2.3); Dogtag always asks for C-DEC + C-MAC."""

    C_MAC = 0x01
    C_DEC_C_MAC = 0x03


class ScpError(Exception):
    """A secure-channel check failed; ``sw`` is what a card answers."""

    sw: ClassVar[int] = 0x6982


class ScpMacError(ScpError):
    """The C-MAC of a command did not verify (GP: security status not satisfied)."""

    sw = 0x6982


class ScpAuthError(ScpError):
    """The host cryptogram in EXTERNAL AUTHENTICATE did not verify."""

    sw = 0x6300


class ScpSecurityLevelError(ScpError):
    """EXTERNAL AUTHENTICATE asked for a security level the applet does not support."""

    sw = 0x6985


class ScpCryptogramError(ScpError):
    """Host side: the card cryptogram did not verify (the TPS ends with status 17)."""


# -- primitives -------------------------------------------------------------------------


def _key24(key: bytes) -> bytes:
    if len(key) == 16:
        return key + key[:8]
    if len(key) in (8, 24):
        return key if len(key) == 24 else key * 3
    raise ValueError(f"DES key must be 8, 16 or 24 bytes, not {len(key)}")


def des3_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """Two-key 3DES (EDE, K3 = K1) in ECB mode; ``data`` is a multiple of 8 bytes."""
    encryptor = Cipher(TripleDES(_key24(key)), modes.ECB()).encryptor()  # noqa: S305 - GP
    return encryptor.update(data) + encryptor.finalize()


def des3_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    decryptor = Cipher(TripleDES(_key24(key)), modes.ECB()).decryptor()  # noqa: S305 - GP
    return decryptor.update(data) + decryptor.finalize()


def des3_cbc_encrypt(key: bytes, data: bytes, iv: bytes = bytes(BLOCK)) -> bytes:
    encryptor = Cipher(TripleDES(_key24(key)), modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def des3_cbc_decrypt(key: bytes, data: bytes, iv: bytes = bytes(BLOCK)) -> bytes:
    decryptor = Cipher(TripleDES(_key24(key)), modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def des_ecb_encrypt(key8: bytes, block: bytes) -> bytes:
    """Single DES with the first 8 bytes of ``key8`` (K1 = K2 = K3 degenerates to DES)."""
    return des3_ecb_encrypt(key8[:8] * 3, block)


def pad80(data: bytes, block: int = BLOCK) -> bytes:
    """ISO 9797-1 method 2: always append 80, then 00 to a block boundary."""
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % block)


def unpad80(data: bytes) -> bytes:
    """Strip ISO 9797-1 method 2 padding; ``ValueError`` if there is none."""
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80") or len(data) - len(stripped) >= BLOCK:
        raise ValueError("no 80 00.. padding")
    return stripped[:-1]


def full_3des_mac(key: bytes, data: bytes, icv: bytes = bytes(BLOCK)) -> bytes:
    """ISO 9797-1 MAC algorithm 1 with 3DES: last block of E3cbc(K, pad80(x), icv)."""
    return des3_cbc_encrypt(key, pad80(data), icv)[-BLOCK:]


def retail_mac(key: bytes, data: bytes, icv: bytes = bytes(BLOCK)) -> bytes:
    """ISO 9797-1 MAC algorithm 3 (single-DES CBC, 3DES on the last block)."""
    padded = pad80(data)
    chain = icv
    for offset in range(0, len(padded) - BLOCK, BLOCK):
        chain = des_ecb_encrypt(key, _xor(chain, padded[offset : offset + BLOCK]))
    return des3_ecb_encrypt(key, _xor(chain, padded[-BLOCK:]))


def kcv(key: bytes) -> bytes:
    """Key check value: the first 3 bytes of E3ecb(key, 00 x 8)."""
    return des3_ecb_encrypt(key, bytes(BLOCK))[:3]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _odd_parity(key: bytes) -> bytes:
    return bytes((b & 0xFE) | ((bin(b >> 1).count("1") + 1) & 1) for b in key)


# -- static keys and diversification ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class StaticKeys:
    """A card's static key set: ENC (Dogtag's "auth" key), MAC and KEK (DEK), 16 bytes each."""

    enc: bytes
    mac: bytes
    kek: bytes

    def __post_init__(self) -> None:
        for name in ("enc", "mac", "kek"):
            if len(getattr(self, name)) != 16:
                raise ValueError(f"{name} key must be 16 bytes")

    @classmethod
    def developer(cls) -> StaticKeys:
        """The GP developer key set ``404142..4F`` for all three keys (TKS ``defKeySet``)."""
        return cls(DEVELOPER_KEY, DEVELOPER_KEY, DEVELOPER_KEY)

    def __repr__(self) -> str:
        # Key material stays out of reprs (and so out of logs and test output).
        return f"StaticKeys(kcv={kcv(self.enc).hex()}/{kcv(self.mac).hex()}/{kcv(self.kek).hex()})"


def diversify_visa2(master: bytes, kdd: bytes) -> StaticKeys:
    """VISA2 card keys: E3ecb(master, KDD[0:2]‖KDD[4:8]‖F0‖t‖KDD[0:2]‖KDD[4:8]‖0F‖t)."""
    _check_kdd(kdd)
    part = kdd[0:2] + kdd[4:8]

    def one(t: int) -> bytes:
        return des3_ecb_encrypt(master, part + bytes((0xF0, t)) + part + bytes((0x0F, t)))

    return StaticKeys(one(1), one(2), one(3))


def diversify_emv(master: bytes, kdd: bytes) -> StaticKeys:
    """EMV CPG 2.04 card keys: E3ecb(master, KDD[4:10]‖F0‖t‖KDD[4:10]‖0F‖t)."""
    _check_kdd(kdd)
    part = kdd[4:10]

    def one(t: int) -> bytes:
        return des3_ecb_encrypt(master, part + bytes((0xF0, t)) + part + bytes((0x0F, t)))

    return StaticKeys(one(1), one(2), one(3))


def diversify_nist(master: bytes, context: bytes) -> StaticKeys:
    """NIST SP800-108 counter-mode KDF with HMAC-SHA256, as Dogtag's TKS configures it.

    Which raw bytes NSS feeds HMAC for a DES3 master key is not known (the TKS does it
    in native JSS code): this uses ``master`` as given, so it interoperates with itself,
    not necessarily with a real TKS master key.
    """
    out = b"".join(
        hmac.new(master, bytes((i, 0x04, 0x00)) + context + b"\x01\x80", hashlib.sha256).digest()
        for i in (1, 2)
    )[:48]
    return StaticKeys(_odd_parity(out[0:16]), _odd_parity(out[16:32]), _odd_parity(out[32:48]))


def _check_kdd(kdd: bytes) -> None:
    if len(kdd) != KDD_LENGTH:
        raise ValueError(f"KDD must be {KDD_LENGTH} bytes")


# -- session keys and cryptograms ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """Keys of one open channel. ``dek`` wraps keys: static KEK (SCP01) or S-DEK (SCP02)."""

    enc: bytes
    mac: bytes
    dek: bytes

    def __repr__(self) -> str:
        return "SessionKeys(<redacted>)"


def scp01_session_keys(
    keys: StaticKeys, host_challenge: bytes, card_challenge: bytes
) -> SessionKeys:
    """SCP01: D = cc[4:8]‖hc[0:4]‖cc[0:4]‖hc[4:8]; S-ENC/S-MAC = E3ecb(ENC/MAC, D)."""
    hc, cc = host_challenge, card_challenge
    derivation = cc[4:8] + hc[0:4] + cc[0:4] + hc[4:8]
    return SessionKeys(
        des3_ecb_encrypt(keys.enc, derivation), des3_ecb_encrypt(keys.mac, derivation), keys.kek
    )


def scp02_session_keys(keys: StaticKeys, sequence: bytes) -> SessionKeys:
    """SCP02: Kx = E3cbc(static, const‖seq‖00 x 12) with 0182 ENC, 0101 C-MAC, 0181 DEK."""

    def derive(static: bytes, const: bytes) -> bytes:
        return des3_cbc_encrypt(static, const + sequence + bytes(12))

    return SessionKeys(
        derive(keys.enc, b"\x01\x82"), derive(keys.mac, b"\x01\x01"), derive(keys.kek, b"\x01\x81")
    )


def card_cryptogram(
    protocol: ScpProtocol,
    session: SessionKeys,
    host_challenge: bytes,
    card_challenge: bytes,
    sequence: bytes = b"",
) -> bytes:
    """SCP01: MAC(S-ENC, hc‖cc). SCP02: MAC(S-ENC, hc‖seq‖cc6). Full 3DES MAC, ICV 0."""
    if protocol is ScpProtocol.SCP01:
        return full_3des_mac(session.enc, host_challenge + card_challenge)
    return full_3des_mac(session.enc, host_challenge + sequence + card_challenge)


def host_cryptogram(
    protocol: ScpProtocol,
    session: SessionKeys,
    host_challenge: bytes,
    card_challenge: bytes,
    sequence: bytes = b"",
) -> bytes:
    """SCP01: MAC(S-ENC, cc‖hc). SCP02: MAC(S-ENC, seq‖cc6‖hc). Full 3DES MAC, ICV 0."""
    if protocol is ScpProtocol.SCP01:
        return full_3des_mac(session.enc, card_challenge + host_challenge)
    return full_3des_mac(session.enc, sequence + card_challenge + host_challenge)


def wrap_challenge(kek: bytes, challenge: bytes) -> bytes:
    """The GENERATE KEY challenge under the *static* KEK, for SCP01 and SCP02 alike.

    As the TKS wraps it (Dogtag TokenServlet.java, ``encryptData``).
    """
    return des3_ecb_encrypt(kek, challenge)


def unwrap_challenge(kek: bytes, wrapped: bytes) -> bytes:
    return des3_ecb_decrypt(kek, wrapped)


@dataclass(frozen=True, slots=True)
class InitUpdateResponse:
    """The INITIALIZE UPDATE answer (28 bytes).

    SCP01 carries an 8-byte card challenge and no sequence counter; SCP02 a 2-byte
    sequence counter and a 6-byte card challenge.
    """

    kdd: bytes
    key_version: int
    protocol: ScpProtocol
    card_challenge: bytes
    card_cryptogram: bytes
    sequence: bytes = b""

    @property
    def key_info(self) -> bytes:
        """Bytes 10..11 as the TPS stores them (SCP02: rewritten to ``ver 01``)."""
        second = 0x01 if self.protocol is ScpProtocol.SCP02 else int(self.protocol)
        return bytes((self.key_version, second))

    def encode(self) -> bytes:
        return (
            self.kdd
            + bytes((self.key_version, self.protocol))
            + self.sequence
            + self.card_challenge
            + self.card_cryptogram
        )

    @classmethod
    def decode(cls, data: bytes) -> InitUpdateResponse:
        if len(data) != INIT_UPDATE_RESPONSE_LENGTH:
            raise ValueError(f"INITIALIZE UPDATE answer must be 28 bytes, not {len(data)}")
        protocol = ScpProtocol(data[11])
        if protocol is ScpProtocol.SCP01:
            return cls(data[0:10], data[10], protocol, data[12:20], data[20:28])
        return cls(data[0:10], data[10], protocol, data[14:20], data[20:28], data[12:14])


def put_key_data(session: SessionKeys, new_version: int, new_keys: StaticKeys) -> bytes:
    """PUT KEY data: newVer ‖ {81 10 E3ecb(wrapKey, key) 03 KCV(key)} x (ENC, MAC, KEK).

    The wrapping key is the static KEK (SCP01) or S-DEK (SCP02), i.e. ``session.dek``.
    """
    body = bytes((new_version,))
    for key in (new_keys.enc, new_keys.mac, new_keys.kek):
        body += b"\x81\x10" + des3_ecb_encrypt(session.dek, key) + b"\x03" + kcv(key)
    return body


def parse_put_key_data(session: SessionKeys, data: bytes) -> tuple[int, StaticKeys]:
    """Card side of ``put_key_data``; ``ValueError`` on a bad layout or a KCV mismatch."""
    if len(data) != PUT_KEY_DATA_LENGTH:
        raise ValueError("PUT KEY data must be 67 bytes")
    keys: list[bytes] = []
    for offset in (1, 23, 45):
        if data[offset : offset + 2] != b"\x81\x10" or data[offset + 18] != 0x03:
            raise ValueError("PUT KEY key block is not 81 10 <key> 03 <kcv>")
        key = des3_ecb_decrypt(session.dek, data[offset + 2 : offset + 18])
        if kcv(key) != data[offset + 19 : offset + 22]:
            raise ValueError("PUT KEY check value does not match")
        keys.append(key)
    return data[0], StaticKeys(keys[0], keys[1], keys[2])


# -- secure messaging ---------------------------------------------------------------------


def _mac(protocol: ScpProtocol, session: SessionKeys, data: bytes, icv: bytes) -> bytes:
    if protocol is ScpProtocol.SCP01:
        return full_3des_mac(session.mac, data, icv)
    return retail_mac(session.mac, data, icv)


def _chained_icv(protocol: ScpProtocol, session: SessionKeys, icv: bytes) -> bytes:
    # SCP02 i=15 encrypts the ICV with the first half of C-MAC before every command but
    # the first (EXTERNAL AUTHENTICATE, whose ICV is zero); SCP01 chains it in the clear.
    if protocol is ScpProtocol.SCP02 and icv != bytes(BLOCK):
        return des_ecb_encrypt(session.mac, icv)
    return icv


def _encrypt_data(protocol: ScpProtocol, session: SessionKeys, plain: bytes) -> bytes:
    if protocol is ScpProtocol.SCP01:
        # Dogtag's SCP01 C-DEC: a length byte, then pad only when not block-aligned.
        body = bytes((len(plain),)) + plain
        if len(body) % BLOCK:
            body = pad80(body)
        return des3_cbc_encrypt(session.enc, body)
    return des3_cbc_encrypt(session.enc, pad80(plain))


def _decrypt_data(protocol: ScpProtocol, session: SessionKeys, enc: bytes) -> bytes:
    if not enc or len(enc) % BLOCK:
        raise ScpMacError("encrypted data is not a whole number of blocks")
    body = des3_cbc_decrypt(session.enc, enc)
    if protocol is ScpProtocol.SCP01:
        length = body[0]
        if 1 + length > len(body):
            raise ScpMacError("C-DEC length byte exceeds the data")
        return body[1 : 1 + length]
    try:
        return unpad80(body)
    except ValueError as err:
        raise ScpMacError("C-DEC padding is missing") from err


def _mac_input(command: CommandApdu, plain: bytes) -> bytes:
    # The MAC covers the modified header (CLA with the SM bit, Lc counting the MAC) and
    # the *unencrypted* data, for SCP01 and SCP02 alike (Dogtag APDU.java, secureMessage).
    header = (command.cla | 0x04, command.ins, command.p1, command.p2, len(plain) + BLOCK)
    return bytes(header) + plain


class SecureChannelHost:
    """The host (TPS/TKS) end of one SCP01/SCP02 channel; one instance per INITIALIZE UPDATE."""

    def __init__(self, keys: StaticKeys, host_challenge: bytes | None = None) -> None:
        self.keys = keys
        self.host_challenge = host_challenge if host_challenge is not None else os.urandom(8)
        if len(self.host_challenge) != CHALLENGE_LENGTH:
            raise ValueError("host challenge must be 8 bytes")
        self.response: InitUpdateResponse | None = None
        self.session: SessionKeys | None = None
        self.level: SecurityLevel | None = None
        self._icv = bytes(BLOCK)

    @property
    def protocol(self) -> ScpProtocol:
        return self._opened()[0].protocol

    def initialize_update(self, key_version: int = 0, key_index: int = 0) -> bytes:
        """The INITIALIZE UPDATE command (no Le, as Dogtag sends it)."""
        return CommandApdu(0x80, 0x50, key_version, key_index, self.host_challenge).encode()

    def open(self, response_data: bytes, *, check_cryptogram: bool = True) -> InitUpdateResponse:
        """Take the card's INITIALIZE UPDATE answer (without SW), derive the session keys."""
        response = InitUpdateResponse.decode(response_data)
        if response.protocol is ScpProtocol.SCP01:
            session = scp01_session_keys(self.keys, self.host_challenge, response.card_challenge)
        else:
            session = scp02_session_keys(self.keys, response.sequence)
        expected = card_cryptogram(
            response.protocol,
            session,
            self.host_challenge,
            response.card_challenge,
            response.sequence,
        )
        if check_cryptogram and not hmac.compare_digest(expected, response.card_cryptogram):
            raise ScpCryptogramError("card cryptogram does not verify (wrong static keys?)")
        self.response, self.session = response, session
        return response

    def external_authenticate(self, level: SecurityLevel = SecurityLevel.C_DEC_C_MAC) -> bytes:
        """EXTERNAL AUTHENTICATE ``84 82 level 00 10 hostCryptogram MAC`` (ICV = 0)."""
        response, session = self._opened()
        cryptogram = host_cryptogram(
            response.protocol,
            session,
            self.host_challenge,
            response.card_challenge,
            response.sequence,
        )
        header = bytes((0x84, 0x82, level, 0x00, 0x10))
        mac = _mac(response.protocol, session, header + cryptogram, bytes(BLOCK))
        self._icv = mac
        self.level = level
        return header + cryptogram + mac

    def wrap(self, command: CommandApdu, *, encrypt: bool | None = None) -> bytes:
        """Secure-message ``command``: C-MAC, then C-DEC if the level (or ``encrypt``) says so.

        Le, if any, is appended after the MAC and not covered by it.
        """
        response, session = self._opened()
        if self.level is None:
            raise ScpError("EXTERNAL AUTHENTICATE has not been sent")
        protocol = response.protocol
        icv = _chained_icv(protocol, session, self._icv)
        mac = _mac(protocol, session, _mac_input(command, command.data), icv)
        self._icv = mac
        if encrypt is None:
            encrypt = self.level is SecurityLevel.C_DEC_C_MAC
        body = _encrypt_data(protocol, session, command.data) if encrypt else command.data
        wire = bytes((command.cla | 0x04, command.ins, command.p1, command.p2, len(body) + BLOCK))
        wire += body + mac
        if command.le is not None:
            wire += bytes((command.le % 256,))
        return wire

    def wrap_key(self, key: bytes) -> bytes:
        """A 16-byte key for IMPORT KEY ENC: E3ecb(static KEK | S-DEK, key)."""
        return des3_ecb_encrypt(self._opened()[1].dek, key)

    def put_key_data(self, new_version: int, new_keys: StaticKeys) -> bytes:
        return put_key_data(self._opened()[1], new_version, new_keys)

    def _opened(self) -> tuple[InitUpdateResponse, SessionKeys]:
        if self.response is None or self.session is None:
            raise ScpError("INITIALIZE UPDATE answer not processed yet")
        return self.response, self.session


class SecureChannelCard:
    """The card end of one channel: created by INITIALIZE UPDATE, authenticated by EXT AUTH.

    ``authenticated`` turns true after a good EXTERNAL AUTHENTICATE. Any failure makes
    the owner drop the instance (GP: a failed check closes the session).
    """

    def __init__(
        self,
        keys: StaticKeys,
        *,
        kdd: bytes,
        key_version: int,
        protocol: ScpProtocol,
        sequence_counter: int = 0,
        card_challenge: bytes | None = None,
    ) -> None:
        _check_kdd(kdd)
        self.keys = keys
        self.kdd = kdd
        self.key_version = key_version
        self.protocol = protocol
        self.sequence = (
            sequence_counter.to_bytes(2, "big") if protocol is ScpProtocol.SCP02 else b""
        )
        size = CHALLENGE_LENGTH if protocol is ScpProtocol.SCP01 else 6
        self.card_challenge = card_challenge if card_challenge is not None else os.urandom(size)
        if len(self.card_challenge) != size:
            raise ValueError(f"card challenge must be {size} bytes")
        self.host_challenge = b""
        self.session: SessionKeys | None = None
        self.level: SecurityLevel | None = None
        self._icv = bytes(BLOCK)

    @property
    def authenticated(self) -> bool:
        return self.level is not None

    def initialize_update(self, host_challenge: bytes) -> bytes:
        """The 28 response bytes for INITIALIZE UPDATE with ``host_challenge``."""
        if len(host_challenge) != CHALLENGE_LENGTH:
            raise ValueError("host challenge must be 8 bytes")
        self.host_challenge = host_challenge
        if self.protocol is ScpProtocol.SCP01:
            self.session = scp01_session_keys(self.keys, host_challenge, self.card_challenge)
        else:
            self.session = scp02_session_keys(self.keys, self.sequence)
        cryptogram = card_cryptogram(
            self.protocol, self.session, host_challenge, self.card_challenge, self.sequence
        )
        return InitUpdateResponse(
            self.kdd,
            self.key_version,
            self.protocol,
            self.card_challenge,
            cryptogram,
            self.sequence,
        ).encode()

    def external_authenticate(self, command: CommandApdu) -> SecurityLevel:
        """Check EXTERNAL AUTHENTICATE: host cryptogram (6300), MAC (6982), level (6985)."""
        session = self._session()
        if len(command.data) != 2 * BLOCK:
            raise ScpMacError("EXTERNAL AUTHENTICATE data must be 16 bytes")
        cryptogram, mac = command.data[:BLOCK], command.data[BLOCK:]
        header = bytes((command.cla, command.ins, command.p1, command.p2, len(command.data)))
        expected_mac = _mac(self.protocol, session, header + cryptogram, bytes(BLOCK))
        if not hmac.compare_digest(expected_mac, mac):
            raise ScpMacError("EXTERNAL AUTHENTICATE MAC does not verify")
        expected = host_cryptogram(
            self.protocol, session, self.host_challenge, self.card_challenge, self.sequence
        )
        if not hmac.compare_digest(expected, cryptogram):
            raise ScpAuthError("host cryptogram does not verify")
        try:
            level = SecurityLevel(command.p1)
        except ValueError as err:
            raise ScpSecurityLevelError(f"security level {command.p1:02X}") from err
        self._icv = mac
        self.level = level
        return level

    def unwrap(self, command: CommandApdu) -> CommandApdu:
        """Verify and strip secure messaging; the plain command keeps CLA, INS, P1, P2, Le."""
        session = self._session()
        if self.level is None:
            raise ScpMacError("no authenticated secure channel")
        if len(command.data) < BLOCK:
            raise ScpMacError("secure-messaged command without a MAC")
        body, mac = command.data[:-BLOCK], command.data[-BLOCK:]
        if self.level is SecurityLevel.C_DEC_C_MAC and body:
            plain = _decrypt_data(self.protocol, session, body)
        else:
            # Lc = 8 (MAC only) is how a data-less command looks without C-DEC; accept it
            # at either level: GP readings differ on whether empty data is encrypted, so
            # the card accepts what Dogtag sends.
            plain = body
        icv = _chained_icv(self.protocol, session, self._icv)
        expected = _mac(self.protocol, session, _mac_input(command, plain), icv)
        if not hmac.compare_digest(expected, mac):
            raise ScpMacError("C-MAC does not verify")
        self._icv = mac
        return CommandApdu(command.cla, command.ins, command.p1, command.p2, plain, command.le)

    def unwrap_key(self, wrapped: bytes) -> bytes:
        """Inverse of ``SecureChannelHost.wrap_key``: static KEK (SCP01) or S-DEK (SCP02)."""
        return des3_ecb_decrypt(self._session().dek, wrapped)

    def parse_put_key(self, data: bytes) -> tuple[int, StaticKeys]:
        return parse_put_key_data(self._session(), data)

    def _session(self) -> SessionKeys:
        if self.session is None:
            raise ScpMacError("no INITIALIZE UPDATE in this session")
        return self.session
