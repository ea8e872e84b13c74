# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated TPS's view of the card: the building blocks ``TPSProcessor.java`` uses in
every operation, each sending exactly the APDUs the Java TPS sends.

Owns ``CardLink`` (one per session):

* ``applet_info``: the seven-APDU ``getAppletInfo`` (default SELECT with the ``6Cxx``
  retry and FCI parse, explicit SELECT of the card manager, CPLC, SELECT CoolKey, GET
  STATUS, SELECT CoolKey + GET VERSION), TPSProcessor.java:3405-3489;
* ``lifecycle_state`` and ``applet_version``;
* ``discover``: the once-per-session protocol discovery (SELECT ISD, GET DATA 0066 and
  00E0, falling back to SCP01/GP 2.0.1), TPSProcessor.java:4178-4350;
* ``open_channel``: INITIALIZE UPDATE, the key-version and token-DB checks, the TKS's
  card cryptogram check, EXTERNAL AUTHENTICATE (TPSProcessor.java:589-900);
* ``upgrade_applet``: DELETE ×2, INSTALL [for load], LOAD…, INSTALL [for install],
  SELECT CoolKey (TPSProcessor.java:1188-1263).

Must not: touch the token DB, talk to the user, or log APDU data.

Line numbers are of Dogtag's ``base/tps`` sources (dogtagpki/pki): TPSProcessor.java,
SecureChannel.java, TPSEngine.java, the TPS CS.cfg; TokenServlet.java is the TKS's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from escd.card.apdu import CommandApdu, ResponseApdu
from escd.card.coolkey import (
    ListSequence,
    get_build_id,
    get_cplc,
    get_life_cycle,
    get_status,
    list_objects,
    select_card_manager,
)
from escd.sim.loadfile import COOLKEY_INSTANCE_AID, COOLKEY_PACKAGE_AID, frame_load_file
from escd.sim.scp import SCP02_I, ScpCryptogramError, SecureChannelHost
from escd.sim.tps_channel import (
    SW_OK,
    Conversation,
    SecureChannel,
    SessionBroken,
    Tks,
    TpsFailure,
    protocol_of,
)
from escd.sim.tps_config import Quirk, TpsConfig
from escd.tps.status import TpsStatus

#: ``op.<op>.<type>.cardmgr_instance`` (TPS CS.cfg:1492), in the order the TPS tries
#: them.
CARD_MANAGER_AIDS = (
    bytes.fromhex("A0000000030000"),
    bytes.fromhex("A000000003000000"),
    bytes.fromhex("A0000001510000"),
)
#: ``TPSEngine.CFG_DEF_CARDMGR_211_INSTANCE_AID``, the SD named in GP 2.1.1 INSTALL.
GP211_ISD_AID = bytes.fromhex("A000000003000000")
CPLC_RESPONSE_SIZE = 47
LIFECYCLE_UNKNOWN = 0xF0
#: The fourth OID of the card recognition data carries the SCP and its "i"
#: (TPSProcessor.java:4260-4330).
_SCP_OID_TAG = 0x64


def select_apdu(aid: bytes) -> bytes:
    """SELECT by AID with the ``00`` Le trailer the Java ``SelectAPDU`` appends."""
    return CommandApdu(0x00, 0xA4, 0x04, 0x00, aid, le=256).encode()


def _signed(byte: int) -> int:
    return byte - 256 if byte & 0x80 else byte


@dataclass(frozen=True, slots=True)
class AppletInfo:
    """``AppletInfo``: identity and applet state read by ``getAppletInfo``."""

    cuid: bytes
    msn: bytes
    card_manager: bytes
    protocol_major: int = 0
    protocol_minor: int = 0
    applet_major: int = 0
    applet_minor: int = 0
    total_memory: int = 0
    free_memory: int = 0
    build_id: int | None = None

    @property
    def version(self) -> str | None:
        """``formatCurrentAppletVersion``: ``"1.4.58768072"``, None without an applet."""
        if self.build_id is None:
            return None
        return f"{self.applet_major}.{self.applet_minor}.{self.build_id:08x}"


@dataclass(frozen=True, slots=True)
class Platform:
    """``PlatformAndSecChannelProtoInfo``: GP 2.1.1 iff SCP02/03.

    TPSProcessor.java:4340-4344.
    """

    protocol: int
    implementation: int = 0

    @property
    def gp211(self) -> bool:
        return self.protocol in (0x02, 0x03)


class CardLink:
    """The card through the client, with the session state the Java TPS keeps about it."""

    def __init__(self, conversation: Conversation, config: TpsConfig, tks: Tks) -> None:
        self.conversation = conversation
        self.config = config
        self.tks = tks
        self.card_manager: bytes | None = None
        self.platform: Platform | None = None
        #: Key info the token DB holds for this card ("" if none): must match (17).
        self.expected_key_info = ""
        #: Key info of the last channel opened, as ``0101`` (``tokenRecord.setKeyInfo``).
        self.key_info = ""

    async def apdu(self, command: bytes) -> ResponseApdu:
        return await self.conversation.apdu(command)

    async def _with_length_retry(self, command: CommandApdu) -> ResponseApdu:
        # The TPS repeats default SELECT and GET DATA with the Le a 6Cxx names
        # (TPSProcessor.java:406-434, 3492-3574, 4210-4344).
        response = await self.apdu(command.encode())
        if response.sw1 == 0x6C:
            retry = CommandApdu(
                command.cla, command.ins, command.p1, command.p2, le=response.sw2 or 256
            )
            response = await self.apdu(retry.encode())
        return response

    # -- selection -------------------------------------------------------------------------

    async def select(self, aid: bytes) -> ResponseApdu:
        return await self.apdu(select_apdu(aid))

    async def select_coolkey(self) -> ResponseApdu:
        return await self.select(COOLKEY_INSTANCE_AID)

    async def select_default_card_manager(self) -> None:
        """``selectDefaultCardManager`` (TPSProcessor.java:3492-3574).

        Status 45 when nothing answers.
        """
        response = await self._with_length_retry(select_card_manager())
        if response.sw != SW_OK:
            raise TpsFailure(TpsStatus.ERROR_CANNOT_ESTABLISH_COMMUNICATION, "no card manager")
        aid = _aid_from_fci(response.data) or CARD_MANAGER_AIDS[0]
        if aid in CARD_MANAGER_AIDS:
            confirmed = await self.select(aid)
            if confirmed.sw == SW_OK:
                self.card_manager = aid
                return
        raise TpsFailure(
            TpsStatus.ERROR_CANNOT_ESTABLISH_COMMUNICATION, "card manager not selected"
        )

    # -- what is on the card ---------------------------------------------------------------

    async def applet_info(self) -> AppletInfo:
        """``getAppletInfo`` (TPSProcessor.java:3405-3489): seven APDUs plus 6Cxx retries."""
        await self.select_default_card_manager()
        assert self.card_manager is not None
        cplc = await self._with_length_retry(get_cplc())
        if cplc.sw != SW_OK or len(cplc.encode()) != CPLC_RESPONSE_SIZE:
            raise TpsFailure(TpsStatus.ERROR_SECURE_CHANNEL, "CPLC data missing or wrong size")
        raw = cplc.data
        cuid, msn = raw[3:7] + raw[19:21] + raw[15:19], raw[41:45]
        await self.select_coolkey()
        status = await self.apdu(get_status().encode())
        values = status.data if status.sw == SW_OK else b""
        info = AppletInfo(cuid, msn, self.card_manager)
        if len(values) >= 4:
            info = replace(
                info,
                protocol_major=values[0],
                protocol_minor=values[1],
                applet_major=values[2],
                applet_minor=values[3],
            )
        if len(values) >= 12:
            info = replace(
                info,
                total_memory=self._memory(values[6], values[7]),
                free_memory=self._memory(values[10], values[11]),
            )
        build_id = await self.applet_version(select=self.config.quirk(Quirk.REDUNDANT_SELECT))
        return replace(info, build_id=build_id)

    def _memory(self, high: int, low: int) -> int:
        if self.config.quirk(Quirk.SIGNED_MEMORY):
            # Java bytes are signed: 0x1388 reads as 4744 (TPSProcessor.java:3456-3466).
            return (_signed(high) << 8) + _signed(low)
        return (high << 8) | low

    async def applet_version(self, *, select: bool = True) -> int | None:
        """``getAppletVersion``: SELECT CoolKey + GET VERSION; None without an applet."""
        if select:
            await self.select_coolkey()
        response = await self.apdu(get_build_id().encode())
        if response.sw != SW_OK:
            return None
        if len(response.data) != 4:
            raise TpsFailure(TpsStatus.ERROR_CANNOT_PERFORM_OPERATION, "bad GET VERSION answer")
        return int.from_bytes(response.data, "big")

    async def lifecycle_state(self) -> int:
        """``getLifecycleState`` (TPSProcessor.java:500-538).

        F0 when the card does not answer 9000.
        """
        await self.select_coolkey()
        response = await self.apdu(get_life_cycle(long_form=False).encode())
        if response.sw != SW_OK:
            return LIFECYCLE_UNKNOWN
        if not response.data:
            # A bare 9000 leaves the result null; the NPE escapes every handler
            # (TPSProcessor.java:518-526): the session ends without END_OP.
            raise SessionBroken("GET LIFECYCLE answered 9000 without data")
        return response.data[0] if len(response.data) == 1 else LIFECYCLE_UNKNOWN

    async def list_object(self, first: bool) -> bytes | None:
        """One LIST OBJECTS record, None at the end (``9C12``) or on any error."""
        sequence = ListSequence.RESET if first else ListSequence.NEXT
        response = await self.apdu(list_objects(sequence).encode())
        if response.sw != SW_OK or len(response.data) < 8:
            return None
        return response.data

    # -- secure channel --------------------------------------------------------------------

    async def discover(self) -> Platform:
        """``acquireChannelPlatformAndProtocolInfo``: once per session; SCP01 on failure."""
        if self.platform is not None:
            return self.platform
        platform = Platform(0x01)
        try:
            if self.card_manager is None:
                await self.select_default_card_manager()
            else:
                selected = await self.select(self.card_manager)
                if selected.sw != SW_OK:
                    raise TpsFailure(TpsStatus.ERROR_CANNOT_ESTABLISH_COMMUNICATION)
            card_data = await self._with_length_retry(CommandApdu(0x80, 0xCA, 0x00, 0x66, le=0x2D))
            key_data = await self._with_length_retry(CommandApdu(0x80, 0xCA, 0x00, 0xE0, le=0x2D))
            if card_data.sw != SW_OK or key_data.sw != SW_OK:
                raise TpsFailure(TpsStatus.ERROR_SECURE_CHANNEL, "GET DATA failed")
            found = _scp_from_card_data(card_data.data)
            if found is not None:
                platform = Platform(*found)
        except TpsFailure:
            platform = Platform(0x01)
        self.platform = platform
        if platform.protocol == 0x02 and platform.implementation != SCP02_I:
            # TPSException(String): the default status is SNAC
            # (TPSProcessor.java:4190-4196).
            raise TpsFailure(TpsStatus.ERROR_SNAC, "SCP02 implementation is not i=15")
        return platform

    async def open_channel(self) -> SecureChannel:
        """``setupSecureChannel`` + ``externalAuthenticate`` with the default key version."""
        platform = await self.discover()
        host_challenge = self.tks.random(8)
        init = CommandApdu(
            0x80, 0x50, self.config.def_key_version, self.config.def_key_index, host_challenge
        )
        response = await self.apdu(init.encode())
        if response.sw != SW_OK:
            raise TpsFailure(TpsStatus.ERROR_SECURE_CHANNEL, "INITIALIZE UPDATE failed")
        data = response.data
        if len(data) not in (28, 29, 32):
            raise TpsFailure(TpsStatus.ERROR_SECURE_CHANNEL, "INITIALIZE UPDATE answer size")
        kdd, key_info = data[0:10], bytearray(data[10:12])
        if platform.protocol == 0x02:
            # The TPS rewrites SCP02 key info to "ver 01" (TPSProcessor.java:720).
            key_info[1] = 0x01
        key_info_hex = bytes(key_info).hex().upper()
        # enableBoundedGPKeyVersion 01..FF and validateCardKeyInfoAgainstTokenDB
        # (TPSProcessor.java:4355-4700, TPS CS.cfg:1484-1489).
        if key_info[0] < 0x01:
            raise TpsFailure(TpsStatus.ERROR_SECURE_CHANNEL, "key version out of range")
        if self.expected_key_info and self.expected_key_info != key_info_hex:
            raise TpsFailure(TpsStatus.ERROR_SECURE_CHANNEL, "key info differs from token DB")
        card_protocol = protocol_of(data)
        if card_protocol is None or card_protocol != platform.protocol or len(data) != 28:
            raise TpsFailure(TpsStatus.ERROR_SECURE_CHANNEL, "unsupported secure channel")
        keys = self.tks.card_keys(bytes(key_info), kdd)
        host = SecureChannelHost(keys, host_challenge)
        try:
            host.open(data)
        except (ScpCryptogramError, ValueError) as err:
            # The TKS refuses a wrong card cryptogram: 17 before EXT AUTH
            # (TokenServlet.java:1454).
            raise TpsFailure(TpsStatus.ERROR_SECURE_CHANNEL, "card cryptogram") from err
        channel = SecureChannel(
            self.conversation,
            host,
            bytes(key_info),
            gp211=platform.gp211,
            wrong_mac_ins=self.config.faults.wrong_mac_ins,
            ignore_results=self.config.quirk(Quirk.IGNORE_RESULTS),
        )
        await channel.external_authenticate()
        self.key_info = key_info_hex
        return channel

    async def upgrade_applet(self, start: int, end: int) -> None:
        """``upgradeApplet`` (TPSProcessor.java:1188-1263): reinstall the required applet."""
        config = self.config
        load_file = config.load_file.encode()
        if self.card_manager is None:
            await self.select_default_card_manager()
        assert self.card_manager is not None
        if not config.quirk(Quirk.STICKY_SELECTION):
            # Java selects the card manager only while none is known
            # (TPSProcessor.java:1208-1214); a clean server makes sure the ISD, not the
            # applet, gets the GP commands.
            await self.select(self.card_manager)
        channel = await self.open_channel()
        await channel.delete(COOLKEY_INSTANCE_AID)
        await channel.delete(COOLKEY_PACKAGE_AID)
        sd_aid = GP211_ISD_AID
        if GP211_ISD_AID[: len(self.card_manager)] != self.card_manager:
            # SecureChannel.java:757-770: a differing ISD AID is named instead.
            sd_aid = self.card_manager
        await channel.install_load(COOLKEY_PACKAGE_AID, sd_aid, len(load_file))
        load_data = frame_load_file(load_file)
        await channel.load_file(
            load_data, config.block_size, start, end, java_loop=config.quirk(Quirk.JAVA_LOAD_LOOP)
        )
        await channel.install_applet(
            COOLKEY_PACKAGE_AID,
            COOLKEY_INSTANCE_AID,
            config.instance_size,
            config.applet_memory_size,
        )
        selected = await self.select_coolkey()
        if selected.sw != SW_OK:
            raise TpsFailure(TpsStatus.ERROR_UPGRADE_APPLET, "cannot select the new applet")


def _aid_from_fci(data: bytes) -> bytes:
    """``parseAIDResponse``: the AID after the first tag 84 of an FCI (``6F …``)."""
    if len(data) < 4 or data[0] != 0x6F:
        return b""
    index = data.find(b"\x84", 2)
    if index < 0 or index + 2 > len(data):
        return b""
    length = data[index + 1]
    return data[index + 2 : index + 2 + length]


def _scp_from_card_data(data: bytes) -> tuple[int, int] | None:
    """SCP and "i" from card recognition data (with or without the outer ``66 L``)."""
    if len(data) >= 2 and data[0] == 0x66:
        data = data[2 : 2 + data[1]]
    if len(data) < 2 or data[0] != 0x73:
        return None
    body = data[2 : 2 + data[1]]
    offset = 0
    while offset + 2 <= len(body):
        tag, length = body[offset], body[offset + 1]
        value = body[offset + 2 : offset + 2 + length]
        if tag == _SCP_OID_TAG and len(value) >= 4 and value[0] == 0x06:
            oid = value[2 : 2 + value[1]]
            if len(oid) >= 2:
                return oid[-2], oid[-1]
        offset += 2 + length
    return None
