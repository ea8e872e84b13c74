# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated card's GlobalPlatform side: application selection, the card manager (ISD)
and the secure channel it opens for itself and for the CoolKey applet.

Owns: SELECT by AID (what the Java Card runtime does before any applet sees a command),
the ISD's commands (GET DATA 9F7F/0066/00E0, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE,
DELETE, INSTALL [for load]/[for install], LOAD, PUT KEY) and the one secure-channel
session of the card (``unwrap`` for CLA 84 commands, ``unwrap_key`` for wrapped keys).

Must not: touch the CoolKey applet's PINs, keys or objects (``escd.sim.applet``), do I/O,
or log. Handlers return response data and raise ``SwError`` for any other status word.
References: GlobalPlatform Card Specification 2.1.1 (SCP01, SCP02, card content
management) and what the Dogtag TPS sends and parses (TPSProcessor.java,
SecureChannel.java, the ``org.dogtagpki.tps.apdu`` classes).
"""

from __future__ import annotations

from escd.card.apdu import CommandApdu, StatusWord
from escd.sim.command import SwError
from escd.sim.loadfile import LoadFile, split_load_data
from escd.sim.scp import SCP02_I, ScpError, ScpProtocol, SecureChannelCard, StaticKeys, kcv
from escd.sim.state import (
    AppletState,
    CardContext,
    LifeCycle,
    PackageState,
    PendingLoad,
    Selected,
)

ISD_AIDS = (
    bytes.fromhex("A0000000030000"),  # OP 2.0.1 card manager (OpenSC, TPS default)
    bytes.fromhex("A000000003000000"),  # GP 2.1.1 ISD (the TPS after an FCI)
    bytes.fromhex("A0000001510000"),  # GP 2.2 ISD RID
)
#: The FCI a real ISD returns to the default SELECT; the TPS takes the AID after ``84``
#: and selects it (Dogtag TPSProcessor.java, ``selectDefaultCardManager``).
ISD_FCI = bytes.fromhex("6F108408A000000003000000A5049F6501FF")
#: The CardEdge source's own build constants, reported for load files we cannot read.
SOURCE_BUILD_ID = 0x58755637
SCP01_I = 0x05
#: An initial ("factory") key set that the first PUT KEY replaces (GP 2.1.1 §11.8.2.2).
INITIAL_KEY_VERSION = 0xFF


def _optional_zero(command: CommandApdu) -> bytes:
    # GP 2.1.1 commands sent with Le answer a single 00 byte ("no additional data").
    return b"\x00" if command.le is not None else b""


def _lv_fields(data: bytes, count: int) -> list[bytes]:
    fields: list[bytes] = []
    offset = 0
    for _ in range(count):
        if offset >= len(data):
            raise SwError(StatusWord.INCORRECT_DATA)
        length = data[offset]
        value = data[offset + 1 : offset + 1 + length]
        if len(value) != length:
            raise SwError(StatusWord.INCORRECT_DATA)
        fields.append(value)
        offset += 1 + length
    return fields


def _tlv(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset + 2 <= len(data):
        tag, length = data[offset], data[offset + 1]
        found.setdefault(tag, data[offset + 2 : offset + 2 + length])
        offset += 2 + length
    return found


class CardManager:
    """Selection, the ISD and the secure channel of one simulated card."""

    def __init__(self, context: CardContext) -> None:
        self._context = context

    # -- selection (Java Card runtime) ------------------------------------------------------

    def select(self, command: CommandApdu) -> bytes:
        """SELECT by AID. Unknown AIDs answer 6A82 and keep the current selection."""
        state, runtime = self._context.state, self._context.runtime
        aid = command.data
        if not aid or aid in ISD_AIDS:
            if runtime.selected is Selected.COOLKEY:
                # CardEdge's I/O buffer is CLEAR_ON_DESELECT transient memory.
                runtime.iobuf[:] = bytes(len(runtime.iobuf))
            runtime.selected = Selected.ISD
            runtime.drop_channel()
            runtime.pending_load = None
            # The bare 9000 is the default because libckyapplet rejects a body (CoolKey
            # cky_applet.c); OpenSC asks for no FCI with P2=0C anyway (OpenSC gp.c).
            if not aid and state.select_fci and command.p2 & 0x0C != 0x0C:
                return ISD_FCI
            return b""
        applet = state.applet
        if applet is not None and aid == applet.instance_aid and _selectable(applet):
            runtime.selected = Selected.COOLKEY
            runtime.drop_channel()
            runtime.iobuf[:] = bytes(len(runtime.iobuf))
            return b""
        raise SwError(StatusWord.APPLICATION_NOT_FOUND)

    # -- the ISD ---------------------------------------------------------------------------

    def process(self, command: CommandApdu) -> bytes:
        """A command while the ISD is selected (blank cards always are)."""
        cla, ins = command.cla, command.ins
        if cla not in (0x00, 0x80, 0x84):
            # In particular CoolKey's B0 commands: a blank card must never answer them
            # with a bare 9000. The TPS sends GET LIFE CYCLE to blank cards, and a bare
            # 9000 there is an NPE outside its handlers: the session dies without END_OP
            # (Dogtag TPSProcessor.java, getLifecycleState).
            raise SwError(StatusWord.INVALID_CLASS)
        if cla == 0x84:
            if ins == 0x82:
                return self.external_authenticate(command)
            command = self.unwrap(command)
        if ins == 0xCA:
            return self._get_data(command)
        if cla == 0x80 and ins == 0x50:
            return self.initialize_update(command)
        handlers = {0xE4: self._delete, 0xE6: self._install, 0xE8: self._load, 0xD8: self._put_key}
        if ins in handlers:
            if cla != 0x84:
                # Card content management needs an authenticated channel.
                raise SwError(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
            return handlers[ins](command)
        if cla == 0x00 and ins == 0xA4:
            # SELECT by file ID or path: the ISD has no file system.
            raise SwError(StatusWord.APPLICATION_NOT_FOUND)
        raise SwError(StatusWord.INVALID_INSTRUCTION)

    def _get_data(self, command: CommandApdu) -> bytes:
        state = self._context.state
        tag = (command.p1 << 8) | command.p2
        if tag == 0x9F7F:
            data = state.cplc
        elif tag == 0x0066:
            data = self._card_recognition_data()
        elif tag == 0x00E0:
            version = state.key_version
            data = b"\xe0\x12" + b"".join(
                bytes((0xC0, 0x04, key_id, version, 0x80, 0x10)) for key_id in (1, 2, 3)
            )
        else:
            raise SwError(StatusWord.REFERENCED_DATA_NOT_FOUND)
        # An explicit Le too short for the data gets 6Cxx, which the TPS answers by
        # re-sending with that Le (Dogtag TPSProcessor.java); a longer Le is fine.
        if command.le is not None and command.le < len(data):
            raise SwError(0x6C00 | len(data))
        return data

    def _card_recognition_data(self) -> bytes:
        protocol = self._context.state.protocol
        i = SCP02_I if protocol is ScpProtocol.SCP02 else SCP01_I
        body = (
            bytes.fromhex("06072A864886FC6B01")
            + bytes.fromhex("600C060A2A864886FC6B02020101")
            + bytes.fromhex("630906072A864886FC6B03")
            + bytes.fromhex("640B06092A864886FC6B04")
            + bytes((protocol, i))
        )
        inner = b"\x73" + bytes((len(body),)) + body
        return b"\x66" + bytes((len(inner),)) + inner

    # -- secure channel --------------------------------------------------------------------

    def initialize_update(self, command: CommandApdu) -> bytes:
        """INITIALIZE UPDATE (also forwarded here by the applet for CLA 80 INS 50)."""
        state, runtime, knobs = self._context.state, self._context.runtime, self._context.knobs
        if len(command.data) != 8:
            raise SwError(StatusWord.WRONG_LENGTH)
        version = command.p1 or state.key_version
        keys = state.key_sets.get(version)
        if keys is None:
            runtime.drop_channel()
            raise SwError(StatusWord.REFERENCED_DATA_NOT_FOUND)
        if knobs.wrong_static_keys:
            keys = StaticKeys(*(bytes(b ^ 0x5A for b in k) for k in (keys.enc, keys.mac, keys.kek)))
        channel = SecureChannelCard(
            keys,
            kdd=state.cuid,
            key_version=version,
            protocol=state.protocol,
            sequence_counter=state.sequence_counter,
        )
        runtime.channel = channel
        return channel.initialize_update(command.data)

    def external_authenticate(self, command: CommandApdu) -> bytes:
        state, runtime = self._context.state, self._context.runtime
        channel = runtime.channel
        if channel is None or channel.authenticated:
            raise SwError(StatusWord.CONDITIONS_OF_USE_NOT_SATISFIED)
        if command.ins in self._context.knobs.mac_failure_ins:
            runtime.drop_channel()
            raise SwError(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        try:
            channel.external_authenticate(command)
        except ScpError as err:
            runtime.drop_channel()
            raise SwError(err.sw) from err
        if state.protocol is ScpProtocol.SCP02:
            # One increment per opened session (GP 2.1.1 SCP02 sequence counter).
            state.sequence_counter = (state.sequence_counter + 1) & 0xFFFF
        return b""

    def unwrap(self, command: CommandApdu) -> CommandApdu:
        """Check and strip C-MAC/C-DEC; 6982 (and the channel is gone) on any failure."""
        runtime = self._context.runtime
        channel = runtime.channel
        if channel is None or not channel.authenticated:
            raise SwError(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        if command.ins in self._context.knobs.mac_failure_ins:
            runtime.drop_channel()
            raise SwError(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        try:
            return channel.unwrap(command)
        except ScpError as err:
            runtime.drop_channel()
            raise SwError(StatusWord.SECURITY_STATUS_NOT_SATISFIED) from err

    def unwrap_key(self, wrapped: bytes) -> bytes:
        """A key wrapped under the static KEK (SCP01) or S-DEK (SCP02)."""
        channel = self._context.runtime.channel
        if channel is None:
            raise SwError(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        return channel.unwrap_key(wrapped)

    def static_kek(self) -> bytes:
        """The static KEK of the open channel: GENERATE KEY's challenge is wrapped with it."""
        channel = self._context.runtime.channel
        if channel is None:
            raise SwError(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        return channel.keys.kek

    # -- card content management -----------------------------------------------------------

    def _delete(self, command: CommandApdu) -> bytes:
        state = self._context.state
        data = command.data
        if len(data) < 2 or data[0] != 0x4F or len(data) != 2 + data[1]:
            raise SwError(StatusWord.INCORRECT_DATA)
        aid = data[2:]
        if aid in ISD_AIDS:
            raise SwError(StatusWord.CONDITIONS_OF_USE_NOT_SATISFIED)
        applet = state.applet
        if applet is not None and aid == applet.instance_aid:
            state.applet = None
            return _optional_zero(command)
        package = state.find_package(aid)
        if package is None:
            raise SwError(StatusWord.REFERENCED_DATA_NOT_FOUND)
        if applet is not None and applet.package_aid == aid:
            if not command.p2 & 0x80:
                # An instance still depends on the package (GP: delete it first).
                raise SwError(StatusWord.CONDITIONS_OF_USE_NOT_SATISFIED)
            state.applet = None
        state.packages.remove(package)
        return _optional_zero(command)

    def _install(self, command: CommandApdu) -> bytes:
        if command.p1 == 0x02:
            return self._install_for_load(command)
        if command.p1 & 0x04:
            return self._install_for_install(command)
        if command.p1 == 0x08:
            applet = self._context.state.applet
            if applet is None:
                raise SwError(StatusWord.REFERENCED_DATA_NOT_FOUND)
            applet.life_cycle = LifeCycle.SELECTABLE
            return _optional_zero(command)
        raise SwError(StatusWord.INCORRECT_P1_P2)

    def _install_for_load(self, command: CommandApdu) -> bytes:
        state, runtime, knobs = self._context.state, self._context.runtime, self._context.knobs
        package_aid, _sd_aid, _hash, params, _token = _lv_fields(command.data, 5)
        if state.find_package(package_aid) is not None:
            raise SwError(StatusWord.CONDITIONS_OF_USE_NOT_SATISFIED)
        code_limit = _tlv(_tlv(params).get(0xEF, b"")).get(0xC6, b"")
        declared = int.from_bytes(code_limit, "big") if code_limit else 0
        if knobs.out_of_memory or declared > state.nv_free:
            raise SwError(StatusWord.NOT_ENOUGH_MEMORY)
        runtime.pending_load = PendingLoad(package_aid)
        return _optional_zero(command)

    def _load(self, command: CommandApdu) -> bytes:
        state, runtime, knobs = self._context.state, self._context.runtime, self._context.knobs
        pending = runtime.pending_load
        if pending is None:
            raise SwError(StatusWord.CONDITIONS_OF_USE_NOT_SATISFIED)
        if command.p2 != pending.next_block & 0xFF or command.p1 not in (0x00, 0x80):
            runtime.pending_load = None
            raise SwError(StatusWord.INCORRECT_P1_P2)
        pending.data += command.data
        pending.next_block += 1
        if knobs.out_of_memory or len(pending.data) > state.nv_free:
            runtime.pending_load = None
            raise SwError(StatusWord.NOT_ENOUGH_MEMORY)
        if command.p1 == 0x80:
            runtime.pending_load = None
            state.packages.append(_package_from_load(pending))
        return _optional_zero(command)

    def _install_for_install(self, command: CommandApdu) -> bytes:
        state, knobs = self._context.state, self._context.knobs
        package_aid, _module_aid, instance_aid, _privileges, params, _token = _lv_fields(
            command.data, 6
        )
        package = state.find_package(package_aid)
        if package is None:
            raise SwError(StatusWord.REFERENCED_DATA_NOT_FOUND)
        if state.applet is not None:
            raise SwError(StatusWord.CONDITIONS_OF_USE_NOT_SATISFIED)
        parameters = _tlv(params)
        system = _tlv(parameters.get(0xEF, b""))
        size_field = system.get(0xC8, b"")
        instance_size = int.from_bytes(size_field, "big") if size_field else 0
        if knobs.out_of_memory or instance_size > state.nv_free:
            raise SwError(StatusWord.NOT_ENOUGH_MEMORY)
        applet = AppletState(
            life_cycle=LifeCycle.SELECTABLE if command.p1 & 0x08 else LifeCycle.INSTALLED,
            applet_major=package.applet_major,
            applet_minor=package.applet_minor,
            build_id=package.build_id,
            instance_aid=instance_aid,
            package_aid=package_aid,
            instance_size=instance_size,
        )
        _apply_install_parameters(applet, parameters.get(0xC9, b""))
        state.applet = applet
        return _optional_zero(command)

    def _put_key(self, command: CommandApdu) -> bytes:
        state, runtime = self._context.state, self._context.runtime
        channel = runtime.channel
        if channel is None:
            raise SwError(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        if command.p2 & 0x7F != 0x01:
            raise SwError(StatusWord.INCORRECT_P1_P2)
        try:
            new_version, keys = channel.parse_put_key(command.data)
        except ValueError as err:
            raise SwError(StatusWord.INCORRECT_DATA) from err
        old_version = command.p1
        if old_version:
            if old_version not in state.key_sets:
                raise SwError(StatusWord.REFERENCED_DATA_NOT_FOUND)
            del state.key_sets[old_version]
        elif set(state.key_sets) == {INITIAL_KEY_VERSION}:
            del state.key_sets[INITIAL_KEY_VERSION]
        state.key_sets[new_version] = keys
        state.key_version = new_version
        return bytes((new_version,)) + kcv(keys.enc) + kcv(keys.mac) + kcv(keys.kek)


def _selectable(applet: AppletState) -> bool:
    # SELECTABLE and the application-specific states above it; not INSTALLED, not LOCKED.
    return applet.life_cycle & 0x87 == 0x07


def _package_from_load(pending: PendingLoad) -> PackageState:
    try:
        content = split_load_data(bytes(pending.data))
    except ValueError as err:
        raise SwError(StatusWord.INCORRECT_DATA) from err
    try:
        parsed = LoadFile.decode(content)
    except ValueError:
        # Not our synthetic format (e.g. a real .ijc): a card cannot tell its version, so
        # report the CardEdge source constants. Only our synthetic load files carry their
        # version (``escd.sim.loadfile``).
        return PackageState(pending.package_aid, len(content), 1, 4, SOURCE_BUILD_ID)
    if parsed.package_aid != pending.package_aid:
        raise SwError(StatusWord.INCORRECT_DATA)
    return PackageState(
        pending.package_aid,
        len(content),
        parsed.applet_major,
        parsed.applet_minor,
        parsed.build_id,
    )


def _apply_install_parameters(applet: AppletState, app_data: bytes) -> None:
    """CardEdge's install data: len‖issuer info, len‖memory size, len‖bit mask."""
    offset = 0
    if offset >= len(app_data):
        return
    issuer_length = app_data[offset]
    issuer = app_data[offset + 1 : offset + 1 + issuer_length]
    if issuer_length < len(applet.issuer_info):
        applet.issuer_info = issuer + bytes(len(applet.issuer_info) - len(issuer))
    offset += 1 + issuer_length
    if offset >= len(app_data):
        return
    size_length = app_data[offset]
    if size_length == 2 and offset + 3 <= len(app_data):
        memory = int.from_bytes(app_data[offset + 1 : offset + 3], "big")
        if 0 < memory < 0x8000:
            applet.memory_size = memory
    offset += 1 + size_length
    if offset + 1 < len(app_data) and app_data[offset] > 0 and app_data[offset + 1]:
        applet.enable_acl_change = app_data[offset + 1] & 0x01
