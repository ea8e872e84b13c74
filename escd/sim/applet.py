# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated CoolKey applet (CardEdge 1.4 behaviour) once it is selected.

Owns the applet's command dispatch and rules: CLA ``B0`` status and object commands
(nonce-checked where CardEdge requires it), CLA ``84`` RA commands behind the secure
channel, CLA ``80 50`` forwarded to the card manager, and the CardEdge quirks that
clients rely on (ISO CLA ``00`` answered 9000, ``B0 3C 01 00`` -> 6D00, LIST OBJECTS
ending in 9C12, LIST KEYS ending in a bare 9000, wrong-length PINs not counted).

Must not: do I/O or log (PINs and keys pass through here), or handle selection and
secure-channel crypto (``escd.sim.gp``); the key-slot commands live in
``escd.sim.applet_keys``. Status words and behaviour follow CoolKey's ``CardEdge.java``
(dogtagpki/coolkey, ``applet/src/com/redhat/ckey/applet/``).
"""

from __future__ import annotations

import os

from escd.card.apdu import CommandApdu, StatusWord
from escd.card.coolkey import ISSUER_INFO_LENGTH, AppletStatus, LifeCycleInfo
from escd.card.objects import ObjectEntry
from escd.sim.applet_keys import IO_BUFFER_IDS, KeyCommands
from escd.sim.command import Request, SwError, p3
from escd.sim.gp import CardManager
from escd.sim.state import (
    DEFAULT_ACL,
    MAX_PINS,
    RA_ACL,
    AppletState,
    CardContext,
    CardObject,
    Pin,
)

NONCE_SIZE = 8
PIN_MIN, PIN_MAX = 4, 16
PROTOCOL_VERSION = (1, 1)
#: CardEdge commands that need the 8-byte nonce appended when sent with CLA B0.
NONCE_INS = frozenset({0x32, 0x36, 0x40, 0x5A, 0x52, 0x56, 0x54})
#: A Java exception escaping ``process()`` (NullPointer, ArrayIndexOutOfBounds).
SW_UNCAUGHT = StatusWord.NO_PRECISE_DIAGNOSIS


class CoolKeyApplet:
    """The CardEdge applet of one simulated card."""

    def __init__(self, context: CardContext, manager: CardManager) -> None:
        self._context = context
        self._manager = manager
        self._keys = KeyCommands(context, manager)
        self._plain = {
            0x3C: self._get_status,
            0x42: self._verify_pin,
            0x48: self._list_pins,
            0x4A: self._pin_tries,
            0x3A: self._keys.list_keys,
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
            0x0A: self._keys.import_key_encrypted,
            0x0C: self._keys.generate_key,
            0x55: self._keys.clear_key_slots,
            0xF0: self._set_life_cycle,
            0xF4: self._set_issuer_info,
            0xF8: self._set_builtin_acl,
        }

    @property
    def _applet(self) -> AppletState:
        applet = self._context.state.applet
        if applet is None:
            # Selection guarantees an instance; deleting it reselects the ISD.
            raise SwError(SW_UNCAUGHT)
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
            raise SwError(StatusWord.INVALID_INSTRUCTION)
        if cla == 0x84:
            return self._secure(command)
        raise SwError(StatusWord.INVALID_CLASS)

    def _card_edge(self, command: CommandApdu) -> bytes:
        data, ids = command.data, 0
        if command.ins in NONCE_INS:
            data, ids = self._verify_nonce(command.data)
        handler = self._plain.get(command.ins) or self._shared.get(command.ins)
        if handler is None:
            raise SwError(StatusWord.INVALID_INSTRUCTION)
        length = len(data) if command.ins in NONCE_INS else p3(command)
        return handler(Request(command.ins, command.p1, command.p2, data, length, ids))

    def _secure(self, command: CommandApdu) -> bytes:
        if command.ins == 0x82:
            return self._manager.external_authenticate(command)
        plain = self._manager.unwrap(command)
        handler = self._secure_only.get(plain.ins) or self._shared.get(plain.ins)
        if handler is None:
            raise SwError(StatusWord.INVALID_INSTRUCTION)
        return handler(Request(plain.ins, plain.p1, plain.p2, plain.data, p3(plain), RA_ACL))

    def _verify_nonce(self, data: bytes) -> tuple[bytes, int]:
        runtime = self._context.runtime
        if len(data) < NONCE_SIZE:
            raise SwError(StatusWord.COOLKEY_UNAUTHORIZED)
        nonce = data[-NONCE_SIZE:]
        if nonce == bytes(NONCE_SIZE):
            return data[:-NONCE_SIZE], DEFAULT_ACL
        if runtime.nonce_ids and nonce == runtime.nonce:
            # CardEdge: one nonce for every logged-in identity.
            return data[:-NONCE_SIZE], runtime.nonce_ids
        raise SwError(StatusWord.COOLKEY_UNAUTHORIZED)

    # -- status and identification ----------------------------------------------------------

    def _get_life_cycle(self, request: Request) -> bytes:
        applet = self._applet
        if request.p3 == 1:
            return bytes((applet.life_cycle,))
        pin_byte = int(applet.pin_enabled) + (2 if applet.is_writable else 0)
        return LifeCycleInfo(applet.life_cycle, pin_byte, *PROTOCOL_VERSION).encode()

    def _get_status(self, request: Request) -> bytes:
        applet, runtime = self._applet, self._context.runtime
        if request.p2 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p1 == 1:
            # GetMemory is disabled; OpenSC tells CoolKey from MUSCLE by this 6D00.
            raise SwError(StatusWord.INVALID_INSTRUCTION)
        if request.p1 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        return AppletStatus(
            *PROTOCOL_VERSION,
            applet_major=applet.applet_major,
            applet_minor=applet.applet_minor,
            total_memory=applet.memory_size,
            free_memory=max(applet.free_memory, 0),
            pin_count=len(applet.pins),
            key_count=len(applet.keys),
            logged_in=runtime.nonce_ids,
        ).encode()

    def _get_build_id(self, request: Request) -> bytes:
        if request.p3 < 4:
            raise SwError(StatusWord.WRONG_LENGTH)
        return self._applet.build_id.to_bytes(4, "big")

    def _get_issuer_info(self, request: Request) -> bytes:
        if request.p3 != ISSUER_INFO_LENGTH:
            raise SwError(StatusWord.WRONG_LENGTH)
        return self._applet.issuer_info

    def _get_builtin_acl(self, request: Request) -> bytes:
        applet = self._applet
        if request.p3 < 7:
            raise SwError(StatusWord.WRONG_LENGTH)
        return (
            applet.create_object_acl.to_bytes(2, "big")
            + applet.create_key_acl.to_bytes(2, "big")
            + applet.create_pin_acl.to_bytes(2, "big")
            + bytes((applet.enable_acl_change,))
        )

    def _get_random(self, request: Request) -> bytes:
        return os.urandom(request.p3)

    def _nop(self, request: Request) -> bytes:
        return b""

    # -- PINs ------------------------------------------------------------------------------

    def _pin(self, number: int) -> Pin:
        pin = self._applet.pins.get(number) if number < MAX_PINS else None
        if pin is None:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        return pin

    def _verify_pin(self, request: Request) -> bytes:
        runtime = self._context.runtime
        pin = self._pin(request.p1)
        if request.p2 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P2)
        if pin.tries_left == 0:
            raise SwError(StatusWord.COOLKEY_IDENTITY_BLOCKED)
        # CardEdge checks the length policy first and short-circuits: a PIN of the wrong
        # length is refused without costing a try.
        policy_ok = PIN_MIN <= len(request.data) <= PIN_MAX
        if not policy_ok or not _check_pin(pin, request.data):
            self._logout_all(request.p1)
            raise SwError(StatusWord.COOLKEY_AUTH_FAILED)
        if runtime.nonce == bytes(NONCE_SIZE):
            runtime.new_nonce()
        runtime.nonce_ids |= 1 << request.p1
        runtime.login_counts[request.p1] = runtime.login_counts.get(request.p1, 0) + 1
        return runtime.nonce

    def _logout(self, request: Request) -> bytes:
        self._logout_one(request.p1)
        return b""

    def _logout_one(self, number: int) -> None:
        runtime, applet = self._context.runtime, self._applet
        if number >= MAX_PINS:
            raise SwError(SW_UNCAUGHT)
        count = max(runtime.login_counts.get(number, 0) - 1, 0)
        runtime.login_counts[number] = count
        if count:
            return
        runtime.nonce_ids &= ~(1 << number)
        if number not in applet.pins:
            # CardEdge calls pins[n].reset() on a missing PIN: NullPointerException.
            raise SwError(SW_UNCAUGHT)
        if runtime.nonce_ids == 0:
            runtime.nonce = bytes(NONCE_SIZE)

    def _logout_all(self, number: int) -> None:
        self._context.runtime.login_counts[number] = 0
        self._logout_one(number)

    def _list_pins(self, request: Request) -> bytes:
        if request.p1 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 != 2:
            raise SwError(StatusWord.WRONG_LENGTH)
        mask = sum(1 << number for number in self._applet.pins)
        return mask.to_bytes(2, "big")

    def _pin_tries(self, request: Request) -> bytes:
        pin = self._pin(request.p1)
        if request.p2 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 != 1:
            raise SwError(StatusWord.WRONG_LENGTH)
        return bytes((pin.tries_left,))

    def _create_pin(self, request: Request) -> bytes:
        applet = self._applet
        if not request.ids & applet.create_pin_acl:
            raise SwError(StatusWord.COOLKEY_UNAUTHORIZED)
        if request.p1 >= MAX_PINS or request.p1 in applet.pins:
            # The TPS sends CREATE PIN on every enroll and ignores this 9C10.
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        if not PIN_MIN <= len(request.data) <= PIN_MAX:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        applet.pins[request.p1] = Pin(request.data, request.p2, request.p2)
        applet.pin_enabled = True
        return b""

    def _set_pin(self, request: Request) -> bytes:
        if request.p1 >= MAX_PINS:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P2)
        pin = self._pin(request.p1)
        if not PIN_MIN <= len(request.data) <= PIN_MAX:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        pin.value = request.data
        pin.tries_left = pin.max_tries
        self._logout_all(request.p1)
        return b""

    # -- objects ---------------------------------------------------------------------------

    def _list_objects(self, request: Request) -> bytes:
        applet, runtime = self._applet, self._context.runtime
        if request.p2 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 < 14:
            raise SwError(StatusWord.WRONG_LENGTH)
        if request.p1 == 0:
            runtime.object_cursor = 0
        elif request.p1 != 1:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        if runtime.object_cursor >= len(applet.objects):
            raise SwError(StatusWord.COOLKEY_SEQUENCE_END)
        obj = applet.objects[runtime.object_cursor]
        runtime.object_cursor += 1
        return ObjectEntry(
            obj.object_id, len(obj.data), obj.read_acl, obj.write_acl, obj.delete_acl
        ).encode()

    def _object(self, object_id: bytes) -> CardObject:
        obj = self._applet.find_object(object_id)
        if obj is None:
            raise SwError(StatusWord.COOLKEY_OBJECT_NOT_FOUND)
        return obj

    def _read_object(self, request: Request) -> bytes:
        runtime = self._context.runtime
        if request.p1 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 != 9:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        object_id, offset, size = _object_range(request.data)
        if object_id in IO_BUFFER_IDS:
            if offset + size > runtime.iobuf_size:
                raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
            return bytes(runtime.iobuf[offset : offset + size])
        obj = self._object(object_id)
        if not obj.read_acl & request.ids:
            raise SwError(StatusWord.COOLKEY_UNAUTHORIZED)
        if offset + size > len(obj.data):
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        return bytes(obj.data[offset : offset + size])

    def _write_object(self, request: Request) -> bytes:
        runtime = self._context.runtime
        if request.p1 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P2)
        if len(request.data) < 9:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        object_id, offset, size = _object_range(request.data[:9])
        chunk = request.data[9 : 9 + size]
        if len(chunk) != size:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        if object_id in IO_BUFFER_IDS:
            if offset + size > len(runtime.iobuf):
                raise SwError(SW_UNCAUGHT)
            # CardEdge: writing the I/O buffer sets its size to the end of this write.
            runtime.iobuf_size = offset + size
            runtime.iobuf[offset : offset + size] = chunk
            return b""
        obj = self._object(object_id)
        if not obj.write_acl & request.ids:
            raise SwError(StatusWord.COOLKEY_UNAUTHORIZED)
        if offset + size > len(obj.data):
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        obj.data[offset : offset + size] = chunk
        return b""

    def _create_object(self, request: Request) -> bytes:
        applet, runtime = self._applet, self._context.runtime
        if not request.ids & applet.create_object_acl:
            raise SwError(StatusWord.COOLKEY_UNAUTHORIZED)
        if request.p3 != 14:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        if request.p1 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        object_id, size_field, acls = request.data[0:4], request.data[4:8], request.data[8:14]
        if size_field[0:2] != b"\x00\x00" or size_field[2] & 0x80:
            raise SwError(StatusWord.COOLKEY_NO_MEMORY_LEFT)
        size = int.from_bytes(size_field, "big")
        if size == 0:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        if object_id in IO_BUFFER_IDS:
            if size > len(runtime.iobuf):
                raise SwError(StatusWord.COOLKEY_NO_MEMORY_LEFT)
            runtime.iobuf_size = size
            return b""
        existing = applet.find_object(object_id)
        if existing is not None:
            if not request.ids & RA_ACL:
                raise SwError(StatusWord.COOLKEY_OBJECT_EXISTS)
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
            raise SwError(StatusWord.COOLKEY_NO_MEMORY_LEFT)
        applet.objects.insert(0, obj)
        return b""

    def _delete_object(self, request: Request) -> bytes:
        applet, runtime = self._applet, self._context.runtime
        if request.p1 != 0:
            raise SwError(StatusWord.COOLKEY_INCORRECT_P1)
        if request.p2 not in (0, 1):
            raise SwError(StatusWord.COOLKEY_INCORRECT_P2)
        if request.p3 != 4:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        if request.data in IO_BUFFER_IDS:
            runtime.iobuf_size = 0
            return b""
        obj = self._object(request.data)
        if not obj.delete_acl & request.ids:
            raise SwError(StatusWord.COOLKEY_UNAUTHORIZED)
        applet.objects.remove(obj)
        return b""

    # -- RA settings -----------------------------------------------------------------------

    def _set_life_cycle(self, request: Request) -> bytes:
        if request.p3 != 0:
            raise SwError(StatusWord.WRONG_LENGTH)
        # An applet may only move itself between application-specific states
        # (GP: low three bits 111, not locked).
        if request.p1 & 0x87 != 0x07:
            raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
        self._applet.life_cycle = request.p1
        return b""

    def _set_issuer_info(self, request: Request) -> bytes:
        if request.p3 != ISSUER_INFO_LENGTH:
            raise SwError(StatusWord.WRONG_LENGTH)
        self._applet.issuer_info = request.data
        return b""

    def _set_builtin_acl(self, request: Request) -> bytes:
        applet = self._applet
        if request.p3 != 7:
            raise SwError(StatusWord.WRONG_LENGTH)
        if not applet.enable_acl_change:
            raise SwError(StatusWord.COOLKEY_OPERATION_NOT_ALLOWED)
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
        raise SwError(StatusWord.COOLKEY_INVALID_PARAMETER)
    return data[0:4], int.from_bytes(data[6:8], "big"), data[8]
