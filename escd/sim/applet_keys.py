# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated CoolKey applet's key slots: LIST KEYS, GENERATE KEY (on-card RSA with the
enrollment proof), IMPORT KEY ENCRYPTED (a PKCS#8 pair wrapped by the TKS/KRA) and CLEAR
KEY SLOTS.

Part of ``escd.sim.applet``, split out for size; same rules: no I/O, no logging (private
keys pass through here), status words as CoolKey's ``CardEdge.java`` throws them
(``startEnrollment``, ``importKeyEncrypted``, ``clearKeySlots``).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from escd.card.apdu import StatusWord
from escd.sim.command import Request, SwError
from escd.sim.gp import CardManager
from escd.sim.scp import des3_cbc_decrypt, kcv, unwrap_challenge
from escd.sim.state import (
    ANYONE_ACL,
    MAX_KEYS,
    MAX_PINS,
    NOBODY_ACL,
    RA_ACL,
    AppletState,
    CardContext,
    CardObject,
    KeySlot,
    KeyType,
)

IO_BUFFER_IDS = (b"\xff\xff\xff\xff", b"\xff\xff\xff\xfe")
RSA_SIZES = frozenset({512, 1024, 2048})
#: Key blob type of IMPORT KEY ENCRYPTED: a PKCS#8 RSA key pair.
KEY_RSA_PKCS8_PAIR = 9
SW_KEY_TYPE_UNSUPPORTED = 0x9C17
SW_KEY_SIZE = 0x9C1A
SW_BAD_ALGORITHM_FOR_KEY = 0x9C21


class KeyCommands:
    """The key-slot commands of one applet instance."""

    def __init__(self, context: CardContext, manager: CardManager) -> None:
        self._context = context
        self._manager = manager

    @property
    def _applet(self) -> AppletState:
        applet = self._context.state.applet
        if applet is None:
            raise SwError(StatusWord.NO_PRECISE_DIAGNOSIS)
        return applet

    def _find_object(self, object_id: bytes) -> CardObject:
        obj = self._applet.find_object(object_id)
        if obj is None:
            raise SwError(StatusWord.COOLKEY_OBJECT_NOT_FOUND)
        return obj

    def list_keys(self, request: Request) -> bytes:
        applet, runtime = self._applet, self._context.runtime
        if request.p2 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 != 11:
            raise SwError(StatusWord.WRONG_LENGTH)
        if request.p1 == 0:
            runtime.key_cursor = 0
        elif request.p1 != 1:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        while runtime.key_cursor < MAX_KEYS and runtime.key_cursor not in applet.keys:
            runtime.key_cursor += 1
        if runtime.key_cursor >= MAX_KEYS:
            # CardEdge quirk: an exhausted list answers 9000 with no data, not 9C12.
            return b""
        number = runtime.key_cursor
        key = applet.keys[number]
        runtime.key_cursor += 1
        return (
            bytes((number, key.key_type, key.mate & 0xFF))
            + key.size.to_bytes(2, "big")
            + key.read_acl.to_bytes(2, "big")
            + key.write_acl.to_bytes(2, "big")
            + key.use_acl.to_bytes(2, "big")
        )

    def _key_owner_acl(self, p1: int, p2: int) -> tuple[int, int, int]:
        """Private slot, public slot and the private key's use ACL from P1/P2."""
        private, public, owner = p1 & 0x0F, p2 & 0x0F, p1 >> 4
        if owner == 0x0F:
            acl = ANYONE_ACL
        elif owner > MAX_PINS:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        else:
            acl = 1 << owner
        return private, public, acl

    def _check_key_writable(self, slot: int, ids: int, p_sw: int) -> None:
        if slot >= MAX_KEYS:
            raise SwError(p_sw)
        key = self._applet.keys.get(slot)
        if key is not None and not key.write_acl & ids:
            raise SwError(StatusWord.COOLKEY_UNAUTHORIZED)

    def _check_mates(self, private: int, public: int) -> None:
        applet = self._applet
        if applet.mate_of(public) not in (-1, private) or applet.mate_of(private) not in (
            -1,
            public,
        ):
            raise SwError(StatusWord.COOLKEY_KEY_SLOT_MATED)

    def _install_pair(
        self, private: int, public: int, key: rsa.RSAPrivateKey, use_acl: int, ids: int
    ) -> None:
        applet = self._applet
        for slot in (private, public):
            if slot not in applet.keys and not ids & applet.create_key_acl:
                raise SwError(StatusWord.COOLKEY_UNAUTHORIZED)
        applet.keys[private], applet.keys[public] = rsa_key_slots(key, private, public, use_acl)

    def generate_key(self, request: Request) -> bytes:
        runtime = self._context.runtime
        p1, p2 = request.p1, request.p2
        if p1 == 0 and p2 == 0:
            # Old-style call: slots 0/1, usable by anyone.
            p1, p2 = 0xF0, 0x11
        private, public, use_acl = self._key_owner_acl(p1, p2)
        self._check_key_writable(private, request.ids, StatusWord.COOLKEY_INCORRECT_P1)
        self._check_key_writable(public, request.ids, StatusWord.COOLKEY_INCORRECT_P2)
        data = request.data
        if len(data) != 23:
            raise SwError(StatusWord.WRONG_LENGTH)
        if data[5] != 0x10:
            raise SwError(StatusWord.COOLKEY_BAD_CHALLENGE)
        # The TKS wraps the challenge with the *static* KEK for SCP01 and SCP02 alike
        # (Dogtag TokenServlet.java, encryptData); the GP 2.1.1 applet's source is not
        # public and the TPS never checks the proof, so the card does what the TKS does.
        challenge = unwrap_challenge(self._manager.static_kek(), data[6:22])
        size = int.from_bytes(data[1:3], "big")
        if size not in RSA_SIZES:
            raise SwError(SW_KEY_SIZE)
        self._check_mates(private, public)
        key = rsa.generate_private_key(public_exponent=65537, key_size=size)
        self._install_pair(private, public, key, use_acl, request.ids)
        numbers = key.public_key().public_numbers()
        modulus = numbers.n.to_bytes(size // 8, "big")
        exponent = numbers.e.to_bytes(3, "big")
        blob = b"\x00\x01" + size.to_bytes(2, "big")
        blob += len(modulus).to_bytes(2, "big") + modulus
        blob += len(exponent).to_bytes(2, "big") + exponent
        proof = key.sign(blob + challenge, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
        iobuf = len(blob).to_bytes(2, "big") + blob + len(proof).to_bytes(2, "big") + proof
        runtime.iobuf[: len(iobuf)] = iobuf
        runtime.iobuf_size = len(iobuf)
        return len(iobuf).to_bytes(2, "big")

    def import_key_encrypted(self, request: Request) -> bytes:
        runtime = self._context.runtime
        private, public, use_acl = self._key_owner_acl(request.p1, request.p2)
        self._check_key_writable(private, request.ids, StatusWord.COOLKEY_INCORRECT_P1)
        self._check_key_writable(public, request.ids, StatusWord.COOLKEY_INCORRECT_P2)
        data = request.data
        if len(data) <= 6:
            raise SwError(StatusWord.WRONG_LENGTH)
        if data[5] != 16:
            raise SwError(SW_KEY_SIZE)
        check_at = 6 + 16
        if len(data) <= check_at:
            raise SwError(StatusWord.WRONG_LENGTH)
        iv_at = check_at + 1 + data[check_at]
        if len(data) <= iv_at or len(data) < iv_at + 1 + data[iv_at] or data[iv_at] != 8:
            raise SwError(StatusWord.WRONG_LENGTH)
        check = data[check_at + 1 : iv_at]
        iv = data[iv_at + 1 : iv_at + 9]
        des_key = self._manager.unwrap_key(data[6:22])
        if check and kcv(des_key)[: len(check)] != check:
            raise SwError(StatusWord.COOLKEY_BAD_CHALLENGE)
        object_id = data[0:4]
        if object_id in IO_BUFFER_IDS:
            buffer, end = runtime.iobuf, runtime.iobuf_size
        else:
            obj = self._find_object(object_id)
            if not obj.read_acl & request.ids or not obj.write_acl & request.ids:
                raise SwError(StatusWord.COOLKEY_UNAUTHORIZED)
            buffer, end = obj.data, len(obj.data)
        try:
            key = self._decode_key_blob(bytes(buffer[:end]), des_key, iv, private, public)
        finally:
            # The key was in the clear in this buffer: CardEdge always wipes it.
            buffer[:end] = bytes(end)
        self._install_pair(private, public, key, use_acl, request.ids)
        return b""

    def _decode_key_blob(
        self, blob: bytes, des_key: bytes, iv: bytes, private: int, public: int
    ) -> rsa.RSAPrivateKey:
        if len(blob) < 5:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        key_type, body = blob[1], blob[4:]
        if blob[0] == 0x01:
            if len(body) % 8:
                raise SwError(StatusWord.COOLKEY_BAD_KEY_BLOB)
            body = des3_cbc_decrypt(des_key, body, iv)
        elif blob[0] != 0x00:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        if key_type != KEY_RSA_PKCS8_PAIR:
            raise SwError(SW_KEY_TYPE_UNSUPPORTED)
        self._check_mates(private, public)
        if body[:1] != b"\x30":
            raise SwError(StatusWord.COOLKEY_BAD_KEY_BLOB)
        try:
            key = serialization.load_der_private_key(_der_prefix(body), password=None)
        except ValueError as err:
            raise SwError(StatusWord.COOLKEY_BAD_KEY_BLOB) from err
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SwError(SW_BAD_ALGORITHM_FOR_KEY)
        return key

    def clear_key_slots(self, request: Request) -> bytes:
        applet = self._applet
        if request.p1 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P2)
        pairs = request.data
        if not pairs or len(pairs) % 2:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        keep: set[int] = set()
        for private, public in zip(pairs[0::2], pairs[1::2], strict=True):
            if private > MAX_KEYS or public > MAX_KEYS:
                raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
            self._check_mates(private, public)
            keep.update((private, public))
        for number in sorted(set(applet.keys) - keep):
            if not applet.keys[number].write_acl & request.ids:
                raise SwError(StatusWord.COOLKEY_UNAUTHORIZED)
            del applet.keys[number]
        return b""


def rsa_key_slots(
    key: rsa.RSAPrivateKey, private: int, public: int, use_acl: int
) -> tuple[KeySlot, KeySlot]:
    """The two mated slots of an RSA pair: the private key read by nobody and used by
    ``use_acl``, the public key read and used by anyone; both written by the RA."""
    private_slot = KeySlot(
        KeyType.RSA_PRIVATE_CRT,
        key.key_size,
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        public,
        NOBODY_ACL,
        RA_ACL,
        use_acl,
    )
    public_slot = KeySlot(
        KeyType.RSA_PUBLIC,
        key.key_size,
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        private,
        ANYONE_ACL,
        RA_ACL,
        ANYONE_ACL,
    )
    return private_slot, public_slot


def _der_prefix(data: bytes) -> bytes:
    """The first DER element of ``data`` (the decrypted PKCS#8 carries CBC padding after it)."""
    if len(data) < 2:
        raise SwError(StatusWord.COOLKEY_BAD_KEY_BLOB)
    first = data[1]
    if first < 0x80:
        return data[: 2 + first]
    count = first & 0x7F
    if count == 0 or count > 3 or len(data) < 2 + count:
        raise SwError(StatusWord.COOLKEY_BAD_KEY_BLOB)
    return data[: 2 + count + int.from_bytes(data[2 : 2 + count], "big")]
