# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated CoolKey applet (CardEdge 1.4 behaviour) once it is selected.

Owns the applet's command dispatch and rules: CLA ``B0`` status and object commands
(nonce-checked where CardEdge requires it), CLA ``84`` RA commands behind the secure
channel, CLA ``80 50`` forwarded to the card manager, and the CardEdge quirks that
clients rely on (ISO CLA ``00`` answered 9000, ``B0 3C 01 00`` -> 6D00, LIST OBJECTS
ending in 9C12, LIST KEYS ending in a bare 9000, wrong-length PINs not counted).

Must not: do I/O or log (PINs and keys pass through here), or handle selection and
secure-channel crypto (``escd.sim.gp``). Status words come from coolkey-card §2 and
tps-server-flows §1.2/§7.1; behaviour follows ``CardEdge.java`` (dogtagpki/coolkey).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from escd.card.apdu import CommandApdu, StatusWord
from escd.sim.gp import CardManager, SwError, p3
from escd.sim.scp import des3_cbc_decrypt, kcv, unwrap_challenge
from escd.sim.state import (
    ANYONE_ACL,
    DEFAULT_ACL,
    ISSUER_INFO_SIZE,
    MAX_KEYS,
    MAX_PINS,
    NOBODY_ACL,
    RA_ACL,
    AppletState,
    CardContext,
    CardObject,
    KeySlot,
    KeyType,
    Pin,
)

NONCE_SIZE = 8
PIN_MIN, PIN_MAX = 4, 16
PROTOCOL_VERSION = (1, 1)
IO_BUFFER_IDS = (b"\xff\xff\xff\xff", b"\xff\xff\xff\xfe")
#: CardEdge commands that need the 8-byte nonce appended when sent with CLA B0.
NONCE_INS = frozenset({0x32, 0x36, 0x40, 0x5A, 0x52, 0x56, 0x54})
RSA_SIZES = frozenset({512, 1024, 2048})
#: Key blob type of IMPORT KEY ENCRYPTED: a PKCS#8 RSA key pair.
KEY_RSA_PKCS8_PAIR = 9
#: A Java exception escaping ``process()`` (NullPointer, ArrayIndexOutOfBounds).
SW_UNCAUGHT = StatusWord.NO_PRECISE_DIAGNOSIS


@dataclass(frozen=True, slots=True)
class _Request:
    """One applet command after secure messaging and nonce checks."""

    ins: int
    p1: int
    p2: int
    data: bytes
    p3: int
    #: Identities authenticated for this command (CardEdge ``authenticated_id``).
    ids: int


def _sw(code: int) -> SwError:
    return SwError(code)


class CoolKeyApplet:
    """The CardEdge applet of one simulated card."""

    def __init__(self, context: CardContext, manager: CardManager) -> None:
        self._context = context
        self._manager = manager
        self._plain = {
            0x3C: self._get_status,
            0x42: self._verify_pin,
            0x48: self._list_pins,
            0x4A: self._pin_tries,
            0x3A: self._list_keys,
            0x58: self._list_objects,
            0x61: self._logout,
            0x70: self._get_build_id,
            0x71: self._nop,
            0x72: self._get_random,
            0x73: self._nop,
            0xF2: self._get_life_cycle,
            0xF6: self._get_issuer_info,
            0xFA: self._get_builtin_acl,
        }
        self._shared = {
            0x40: self._create_pin,
            0x5A: self._create_object,
            0x52: self._delete_object,
            0x56: self._read_object,
            0x54: self._write_object,
        }
        self._secure_only = {
            0x04: self._set_pin,
            0x0A: self._import_key_encrypted,
            0x0C: self._generate_key,
            0x55: self._clear_key_slots,
            0xF0: self._set_life_cycle,
            0xF4: self._set_issuer_info,
            0xF8: self._set_builtin_acl,
        }

    @property
    def _applet(self) -> AppletState:
        applet = self._context.state.applet
        if applet is None:
            # Selection guarantees an instance; deleting it reselects the ISD.
            raise _sw(SW_UNCAUGHT)
        return applet

    def process(self, command: CommandApdu) -> bytes:
        """A command while the applet is selected (SELECT by AID never reaches here)."""
        cla = command.cla
        if cla in (0x00, 0xA4):
            # CardEdge.process() returns at once for the ISO class (and, by a case-label
            # slip, for CLA A4): every such command answers a bare 9000.
            return b""
        if cla == 0xB0:
            return self._card_edge(command)
        if cla == 0x80:
            if command.ins == 0x50:
                return self._manager.initialize_update(command)
            raise _sw(StatusWord.INVALID_INSTRUCTION)
        if cla == 0x84:
            return self._secure(command)
        raise _sw(StatusWord.INVALID_CLASS)

    def _card_edge(self, command: CommandApdu) -> bytes:
        data, ids = command.data, 0
        if command.ins in NONCE_INS:
            data, ids = self._verify_nonce(command.data)
        handler = self._plain.get(command.ins) or self._shared.get(command.ins)
        if handler is None:
            raise _sw(StatusWord.INVALID_INSTRUCTION)
        length = len(data) if command.ins in NONCE_INS else p3(command)
        return handler(_Request(command.ins, command.p1, command.p2, data, length, ids))

    def _secure(self, command: CommandApdu) -> bytes:
        if command.ins == 0x82:
            return self._manager.external_authenticate(command)
        plain = self._manager.unwrap(command)
        handler = self._secure_only.get(plain.ins) or self._shared.get(plain.ins)
        if handler is None:
            raise _sw(StatusWord.INVALID_INSTRUCTION)
        return handler(_Request(plain.ins, plain.p1, plain.p2, plain.data, p3(plain), RA_ACL))

    def _verify_nonce(self, data: bytes) -> tuple[bytes, int]:
        runtime = self._context.runtime
        if len(data) < NONCE_SIZE:
            raise _sw(StatusWord.COOLKEY_UNAUTHORIZED)
        nonce = data[-NONCE_SIZE:]
        if nonce == bytes(NONCE_SIZE):
            return data[:-NONCE_SIZE], DEFAULT_ACL
        if runtime.nonce_ids and nonce == runtime.nonce:
            # CardEdge: one nonce for every logged-in identity.
            return data[:-NONCE_SIZE], runtime.nonce_ids
        raise _sw(StatusWord.COOLKEY_UNAUTHORIZED)

    # -- status and identification ----------------------------------------------------------

    def _get_life_cycle(self, request: _Request) -> bytes:
        applet = self._applet
        if request.p3 == 1:
            return bytes((applet.life_cycle,))
        pin_byte = int(applet.pin_enabled) + (2 if applet.is_writable else 0)
        return bytes((applet.life_cycle, pin_byte, *PROTOCOL_VERSION))

    def _get_status(self, request: _Request) -> bytes:
        applet, runtime = self._applet, self._context.runtime
        if request.p2 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p1 == 1:
            # GetMemory is disabled; OpenSC tells CoolKey from MUSCLE by this 6D00.
            raise _sw(StatusWord.INVALID_INSTRUCTION)
        if request.p1 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        return (
            bytes((*PROTOCOL_VERSION, applet.applet_major, applet.applet_minor))
            + applet.memory_size.to_bytes(4, "big")
            + max(applet.free_memory, 0).to_bytes(4, "big")
            + bytes((len(applet.pins), len(applet.keys)))
            + runtime.nonce_ids.to_bytes(2, "big")
        )

    def _get_build_id(self, request: _Request) -> bytes:
        if request.p3 < 4:
            raise _sw(StatusWord.WRONG_LENGTH)
        return self._applet.build_id.to_bytes(4, "big")

    def _get_issuer_info(self, request: _Request) -> bytes:
        if request.p3 != ISSUER_INFO_SIZE:
            raise _sw(StatusWord.WRONG_LENGTH)
        return self._applet.issuer_info

    def _get_builtin_acl(self, request: _Request) -> bytes:
        applet = self._applet
        if request.p3 < 7:
            raise _sw(StatusWord.WRONG_LENGTH)
        return (
            applet.create_object_acl.to_bytes(2, "big")
            + applet.create_key_acl.to_bytes(2, "big")
            + applet.create_pin_acl.to_bytes(2, "big")
            + bytes((applet.enable_acl_change,))
        )

    def _get_random(self, request: _Request) -> bytes:
        return os.urandom(request.p3)

    def _nop(self, request: _Request) -> bytes:
        return b""

    # -- PINs ------------------------------------------------------------------------------

    def _pin(self, number: int) -> Pin:
        pin = self._applet.pins.get(number) if number < MAX_PINS else None
        if pin is None:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        return pin

    def _verify_pin(self, request: _Request) -> bytes:
        runtime = self._context.runtime
        pin = self._pin(request.p1)
        if request.p2 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P2)
        if pin.tries_left == 0:
            raise _sw(StatusWord.COOLKEY_IDENTITY_BLOCKED)
        # CardEdge checks the length policy first and short-circuits: a PIN of the wrong
        # length is refused without costing a try.
        policy_ok = PIN_MIN <= len(request.data) <= PIN_MAX
        if not policy_ok or not _check_pin(pin, request.data):
            self._logout_all(request.p1)
            raise _sw(StatusWord.COOLKEY_AUTH_FAILED)
        if runtime.nonce == bytes(NONCE_SIZE):
            runtime.new_nonce()
        runtime.nonce_ids |= 1 << request.p1
        runtime.login_counts[request.p1] = runtime.login_counts.get(request.p1, 0) + 1
        return runtime.nonce

    def _logout(self, request: _Request) -> bytes:
        self._logout_one(request.p1)
        return b""

    def _logout_one(self, number: int) -> None:
        runtime, applet = self._context.runtime, self._applet
        if number >= MAX_PINS:
            raise _sw(SW_UNCAUGHT)
        count = max(runtime.login_counts.get(number, 0) - 1, 0)
        runtime.login_counts[number] = count
        if count:
            return
        runtime.nonce_ids &= ~(1 << number)
        if number not in applet.pins:
            # CardEdge calls pins[n].reset() on a missing PIN: NullPointerException.
            raise _sw(SW_UNCAUGHT)
        if runtime.nonce_ids == 0:
            runtime.nonce = bytes(NONCE_SIZE)

    def _logout_all(self, number: int) -> None:
        self._context.runtime.login_counts[number] = 0
        self._logout_one(number)

    def _list_pins(self, request: _Request) -> bytes:
        if request.p1 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 != 2:
            raise _sw(StatusWord.WRONG_LENGTH)
        mask = sum(1 << number for number in self._applet.pins)
        return mask.to_bytes(2, "big")

    def _pin_tries(self, request: _Request) -> bytes:
        pin = self._pin(request.p1)
        if request.p2 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 != 1:
            raise _sw(StatusWord.WRONG_LENGTH)
        return bytes((pin.tries_left,))

    def _create_pin(self, request: _Request) -> bytes:
        applet = self._applet
        if not request.ids & applet.create_pin_acl:
            raise _sw(StatusWord.COOLKEY_UNAUTHORIZED)
        if request.p1 >= MAX_PINS or request.p1 in applet.pins:
            # The TPS sends CREATE PIN on every enroll and ignores this 9C10.
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        if not PIN_MIN <= len(request.data) <= PIN_MAX:
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        applet.pins[request.p1] = Pin(request.data, request.p2, request.p2)
        applet.pin_enabled = True
        return b""

    def _set_pin(self, request: _Request) -> bytes:
        if request.p1 >= MAX_PINS:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P2)
        pin = self._pin(request.p1)
        if not PIN_MIN <= len(request.data) <= PIN_MAX:
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        pin.value = request.data
        pin.tries_left = pin.max_tries
        self._logout_all(request.p1)
        return b""

    # -- objects ---------------------------------------------------------------------------

    def _list_objects(self, request: _Request) -> bytes:
        applet, runtime = self._applet, self._context.runtime
        if request.p2 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 < 14:
            raise _sw(StatusWord.WRONG_LENGTH)
        if request.p1 == 0:
            runtime.object_cursor = 0
        elif request.p1 != 1:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        if runtime.object_cursor >= len(applet.objects):
            raise _sw(StatusWord.COOLKEY_SEQUENCE_END)
        obj = applet.objects[runtime.object_cursor]
        runtime.object_cursor += 1
        return (
            obj.object_id
            + len(obj.data).to_bytes(4, "big")
            + obj.read_acl.to_bytes(2, "big")
            + obj.write_acl.to_bytes(2, "big")
            + obj.delete_acl.to_bytes(2, "big")
        )

    def _object(self, object_id: bytes) -> CardObject:
        obj = self._applet.find_object(object_id)
        if obj is None:
            raise _sw(StatusWord.COOLKEY_OBJECT_NOT_FOUND)
        return obj

    def _read_object(self, request: _Request) -> bytes:
        runtime = self._context.runtime
        if request.p1 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 != 9:
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        object_id, offset, size = _object_range(request.data)
        if object_id in IO_BUFFER_IDS:
            if offset + size > runtime.iobuf_size:
                raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
            return bytes(runtime.iobuf[offset : offset + size])
        obj = self._object(object_id)
        if not obj.read_acl & request.ids:
            raise _sw(StatusWord.COOLKEY_UNAUTHORIZED)
        if offset + size > len(obj.data):
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        return bytes(obj.data[offset : offset + size])

    def _write_object(self, request: _Request) -> bytes:
        runtime = self._context.runtime
        if request.p1 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P2)
        if len(request.data) < 9:
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        object_id, offset, size = _object_range(request.data[:9])
        chunk = request.data[9 : 9 + size]
        if len(chunk) != size:
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        if object_id in IO_BUFFER_IDS:
            if offset + size > len(runtime.iobuf):
                raise _sw(SW_UNCAUGHT)
            # CardEdge: writing the I/O buffer sets its size to the end of this write.
            runtime.iobuf_size = offset + size
            runtime.iobuf[offset : offset + size] = chunk
            return b""
        obj = self._object(object_id)
        if not obj.write_acl & request.ids:
            raise _sw(StatusWord.COOLKEY_UNAUTHORIZED)
        if offset + size > len(obj.data):
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        obj.data[offset : offset + size] = chunk
        return b""

    def _create_object(self, request: _Request) -> bytes:
        applet, runtime = self._applet, self._context.runtime
        if not request.ids & applet.create_object_acl:
            raise _sw(StatusWord.COOLKEY_UNAUTHORIZED)
        if request.p3 != 14:
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        if request.p1 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        object_id, size_field, acls = request.data[0:4], request.data[4:8], request.data[8:14]
        if size_field[0:2] != b"\x00\x00" or size_field[2] & 0x80:
            raise _sw(StatusWord.COOLKEY_NO_MEMORY_LEFT)
        size = int.from_bytes(size_field, "big")
        if size == 0:
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        if object_id in IO_BUFFER_IDS:
            if size > len(runtime.iobuf):
                raise _sw(StatusWord.COOLKEY_NO_MEMORY_LEFT)
            runtime.iobuf_size = size
            return b""
        existing = applet.find_object(object_id)
        if existing is not None:
            if not request.ids & RA_ACL:
                raise _sw(StatusWord.COOLKEY_OBJECT_EXISTS)
            # The RA may re-create an object in place (how the TPS rewrites z0).
            applet.objects.remove(existing)
        obj = CardObject(
            object_id,
            bytearray(size),
            int.from_bytes(acls[0:2], "big"),
            int.from_bytes(acls[2:4], "big"),
            int.from_bytes(acls[4:6], "big"),
        )
        if self._context.knobs.out_of_memory or obj.cost > applet.free_memory:
            if existing is not None:
                applet.objects.insert(0, existing)
            raise _sw(StatusWord.COOLKEY_NO_MEMORY_LEFT)
        applet.objects.insert(0, obj)
        return b""

    def _delete_object(self, request: _Request) -> bytes:
        applet, runtime = self._applet, self._context.runtime
        if request.p1 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 not in (0, 1):
            raise _sw(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 != 4:
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        if request.data in IO_BUFFER_IDS:
            runtime.iobuf_size = 0
            return b""
        obj = self._object(request.data)
        if not obj.delete_acl & request.ids:
            raise _sw(StatusWord.COOLKEY_UNAUTHORIZED)
        applet.objects.remove(obj)
        return b""

    # -- keys ------------------------------------------------------------------------------

    def _list_keys(self, request: _Request) -> bytes:
        applet, runtime = self._applet, self._context.runtime
        if request.p2 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 != 11:
            raise _sw(StatusWord.WRONG_LENGTH)
        if request.p1 == 0:
            runtime.key_cursor = 0
        elif request.p1 != 1:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
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
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        else:
            acl = 1 << owner
        return private, public, acl

    def _check_key_writable(self, slot: int, ids: int, p_sw: int) -> None:
        if slot >= MAX_KEYS:
            raise _sw(p_sw)
        key = self._applet.keys.get(slot)
        if key is not None and not key.write_acl & ids:
            raise _sw(StatusWord.COOLKEY_UNAUTHORIZED)

    def _check_mates(self, private: int, public: int) -> None:
        applet = self._applet
        if applet.mate_of(public) not in (-1, private) or applet.mate_of(private) not in (
            -1,
            public,
        ):
            raise _sw(StatusWord.COOLKEY_KEY_SLOT_MATED)

    def _install_pair(
        self, private: int, public: int, key: rsa.RSAPrivateKey, use_acl: int, ids: int
    ) -> None:
        applet = self._applet
        for slot in (private, public):
            if slot not in applet.keys and not ids & applet.create_key_acl:
                raise _sw(StatusWord.COOLKEY_UNAUTHORIZED)
        size = key.key_size
        applet.keys[private] = KeySlot(
            KeyType.RSA_PRIVATE_CRT,
            size,
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
        applet.keys[public] = KeySlot(
            KeyType.RSA_PUBLIC,
            size,
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            private,
            ANYONE_ACL,
            RA_ACL,
            ANYONE_ACL,
        )

    def _generate_key(self, request: _Request) -> bytes:
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
            raise _sw(StatusWord.WRONG_LENGTH)
        if data[5] != 0x10:
            raise _sw(StatusWord.COOLKEY_BAD_CHALLENGE)
        # The TKS wraps the challenge with the *static* KEK for SCP01 and SCP02 alike
        # (tps-server-flows §8 item 1).
        challenge = unwrap_challenge(self._manager.static_kek(), data[6:22])
        size = int.from_bytes(data[1:3], "big")
        if size not in RSA_SIZES:
            raise _sw(0x9C1A)
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

    def _import_key_encrypted(self, request: _Request) -> bytes:
        runtime = self._context.runtime
        private, public, use_acl = self._key_owner_acl(request.p1, request.p2)
        self._check_key_writable(private, request.ids, StatusWord.COOLKEY_INCORRECT_P1)
        self._check_key_writable(public, request.ids, StatusWord.COOLKEY_INCORRECT_P2)
        data = request.data
        if len(data) <= 6:
            raise _sw(StatusWord.WRONG_LENGTH)
        if data[5] != 16:
            raise _sw(0x9C1A)
        check_at = 6 + 16
        if len(data) <= check_at:
            raise _sw(StatusWord.WRONG_LENGTH)
        iv_at = check_at + 1 + data[check_at]
        if len(data) <= iv_at or len(data) < iv_at + 1 + data[iv_at] or data[iv_at] != 8:
            raise _sw(StatusWord.WRONG_LENGTH)
        check = data[check_at + 1 : iv_at]
        iv = data[iv_at + 1 : iv_at + 9]
        des_key = self._manager.unwrap_key(data[6:22])
        if check and kcv(des_key)[: len(check)] != check:
            raise _sw(StatusWord.COOLKEY_BAD_CHALLENGE)
        object_id = data[0:4]
        if object_id in IO_BUFFER_IDS:
            buffer, end = runtime.iobuf, runtime.iobuf_size
        else:
            obj = self._object(object_id)
            if not obj.read_acl & request.ids or not obj.write_acl & request.ids:
                raise _sw(StatusWord.COOLKEY_UNAUTHORIZED)
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
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        key_type, body = blob[1], blob[4:]
        if blob[0] == 0x01:
            if len(body) % 8:
                raise _sw(StatusWord.COOLKEY_BAD_KEY_BLOB)
            body = des3_cbc_decrypt(des_key, body, iv)
        elif blob[0] != 0x00:
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        if key_type != KEY_RSA_PKCS8_PAIR:
            raise _sw(0x9C17)
        self._check_mates(private, public)
        if body[:1] != b"\x30":
            raise _sw(StatusWord.COOLKEY_BAD_KEY_BLOB)
        try:
            key = serialization.load_der_private_key(_der_prefix(body), password=None)
        except ValueError as err:
            raise _sw(StatusWord.COOLKEY_BAD_KEY_BLOB) from err
        if not isinstance(key, rsa.RSAPrivateKey):
            raise _sw(0x9C21)
        return key

    def _clear_key_slots(self, request: _Request) -> bytes:
        applet = self._applet
        if request.p1 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 != 0:
            raise _sw(StatusWord.COOLKEY_INCORRECT_P2)
        pairs = request.data
        if not pairs or len(pairs) % 2:
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        keep: set[int] = set()
        for private, public in zip(pairs[0::2], pairs[1::2], strict=True):
            if private > MAX_KEYS or public > MAX_KEYS:
                raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
            self._check_mates(private, public)
            keep.update((private, public))
        for number in sorted(set(applet.keys) - keep):
            if not applet.keys[number].write_acl & request.ids:
                raise _sw(StatusWord.COOLKEY_UNAUTHORIZED)
            del applet.keys[number]
        return b""

    # -- RA settings -----------------------------------------------------------------------

    def _set_life_cycle(self, request: _Request) -> bytes:
        if request.p3 != 0:
            raise _sw(StatusWord.WRONG_LENGTH)
        # An applet may only move itself between application-specific states
        # (GP: low three bits 111, not locked).
        if request.p1 & 0x87 != 0x07:
            raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
        self._applet.life_cycle = request.p1
        return b""

    def _set_issuer_info(self, request: _Request) -> bytes:
        if request.p3 != ISSUER_INFO_SIZE:
            raise _sw(StatusWord.WRONG_LENGTH)
        self._applet.issuer_info = request.data
        return b""

    def _set_builtin_acl(self, request: _Request) -> bytes:
        applet = self._applet
        if request.p3 != 7:
            raise _sw(StatusWord.WRONG_LENGTH)
        if not applet.enable_acl_change:
            raise _sw(StatusWord.COOLKEY_OPERATION_NOT_ALLOWED)
        data = request.data
        applet.create_object_acl = int.from_bytes(data[0:2], "big")
        applet.create_key_acl = int.from_bytes(data[2:4], "big")
        applet.create_pin_acl = int.from_bytes(data[4:6], "big")
        applet.enable_acl_change = data[6]
        return b""


def _check_pin(pin: Pin, candidate: bytes) -> bool:
    """Java Card OwnerPIN.check: a try is spent first and given back on success."""
    pin.tries_left -= 1
    if candidate != pin.value:
        return False
    pin.tries_left = pin.max_tries
    return True


def _object_range(data: bytes) -> tuple[bytes, int, int]:
    """Object ID, offset, length of READ/WRITE OBJECT; only the offset's low short counts."""
    if data[6] & 0x80:
        raise _sw(StatusWord.COOLKEY_INVALID_PARAMETER)
    return data[0:4], int.from_bytes(data[6:8], "big"), data[8]


def _der_prefix(data: bytes) -> bytes:
    """The first DER element of ``data`` (the decrypted PKCS#8 carries CBC padding after it)."""
    if len(data) < 2:
        raise _sw(StatusWord.COOLKEY_BAD_KEY_BLOB)
    first = data[1]
    if first < 0x80:
        return data[: 2 + first]
    count = first & 0x7F
    if count == 0 or count > 3 or len(data) < 2 + count:
        raise _sw(StatusWord.COOLKEY_BAD_KEY_BLOB)
    return data[: 2 + count + int.from_bytes(data[2 : 2 + count], "big")]
