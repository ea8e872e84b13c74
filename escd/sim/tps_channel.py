# SPDX-License-Identifier: GPL-2.0-or-later
"""How the simulated TPS talks through the client to the card: the conversation, the
in-process TKS and the secure-messaged commands of ``SecureChannel.java``.

Owns:

* the three ways a Java TPS session ends, as exceptions: ``TpsFailure(status)`` (a
  ``TPSException``: END_OP ``result=1 message=status``), ``ClientGone`` (an
  ``IOException``: no END_OP) and ``SessionBroken`` (a runtime exception such as a
  malformed TOKEN_PDU_RESPONSE: no END_OP either, Dogtag TPSSession.java:147-160), plus
  ``SessionAborted`` for the fault switches, which the server has already acted on;
* ``Conversation``: one request, one reply, in lock-step (TOKEN_PDU, STATUS_UPDATE),
  with the record of every APDU sent, for tests;
* ``Tks``: card static keys from the key info (developer keys for ``01 01`` and version
  ``FF``, VISA2 diversification otherwise; Dogtag TKS SecureChannelProtocol.java), random
  data;
* ``SecureChannel``: one opened GP secure channel and the CLA 84 commands sent through
  it, each failing with the END_OP status ``SecureChannel.java`` gives it (line numbers
  below are of Dogtag's TPS and TKS sources, dogtagpki/pki).

Must not: log APDU data, PINs or keys (only ``describe_apdu``), or decide flow order
(``escd.sim.tps_card`` and the processors do).
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from typing import Protocol

from escd.card.apdu import CommandApdu, ResponseApdu
from escd.card.coolkey import ISSUER_INFO_LENGTH
from escd.errors import MalformedResponseError
from escd.log import TRAFFIC, describe_apdu, describe_response
from escd.sim.scp import (
    DEVELOPER_KEY,
    ScpProtocol,
    SecureChannelHost,
    SecurityLevel,
    StaticKeys,
    diversify_visa2,
)
from escd.tps.messages import (
    Message,
    StatusUpdateRequest,
    StatusUpdateResponse,
    TokenPduRequest,
    TokenPduResponse,
    TpsMessage,
)
from escd.tps.status import TpsStatus

logger = logging.getLogger(__name__)

SW_OK = 0x9000
SW_NOT_FOUND = 0x6A88
SW_PIN_EXISTS = 0x9C10
#: ``MAX_READ_BUFFER_SIZE`` / ``MAX_WRITE_SIZE`` of ``SecureChannel.java``.
OBJECT_CHUNK = 0xD0


class TpsFailure(Exception):  # noqa: N818 - named after Dogtag's TPSException
    """A ``TPSException``: the session ends with END_OP ``result=1 message=status``."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"status {status}: {reason}" if reason else f"status {status}")
        self.status = int(status)
        self.reason = reason


class ClientGone(Exception):  # noqa: N818 - an event, like IOException
    """The client closed the connection or went silent: no END_OP can be sent."""


class SessionBroken(Exception):  # noqa: N818 - an event, like a Java runtime exception
    """The client sent something the Java TPS would crash on: the session dies silently."""


class SessionAborted(Exception):  # noqa: N818 - an event
    """A fault switch ended the session; the server has already done what it asked."""


class ClientPort(Protocol):
    """The server's end of one TPS conversation (``escd.sim.tps_server`` implements it)."""

    async def send(self, message: TpsMessage) -> None:
        """Send one server message; raises ``ClientGone`` or ``SessionAborted``."""
        ...

    async def receive(self) -> Message:
        """The next client message; ``ClientGone`` or ``SessionBroken`` if there is none."""
        ...


@dataclass(slots=True)
class Transcript:
    """What one session sent to the card and which progress it reported (for tests)."""

    apdus: list[bytes] = field(default_factory=list)
    responses: list[bytes] = field(default_factory=list)
    progress: list[tuple[int, str]] = field(default_factory=list)

    def headers(self) -> list[str]:
        """``CLA INS P1 P2`` of every APDU, e.g. ``"00A40400"``."""
        return [apdu[:4].hex().upper() for apdu in self.apdus]


class Conversation:
    """Lock-step exchanges with the client during one operation."""

    def __init__(self, port: ClientPort, *, status_updates: bool) -> None:
        self.port = port
        self.status_updates = status_updates
        self.transcript = Transcript()

    async def apdu(self, command: bytes) -> ResponseApdu:
        """Send one APDU through the client and return the card's answer."""
        logger.log(TRAFFIC, "APDU %s", describe_apdu(command))
        self.transcript.apdus.append(command)
        await self.port.send(TokenPduRequest(command))
        reply = await self.port.receive()
        if not isinstance(reply, TokenPduResponse):
            # ClassCastException in TPSProcessor.handleAPDURequest: no handler catches
            # it, so no END_OP (TPSSession.java:147-160).
            raise SessionBroken(f"expected TOKEN_PDU_RESPONSE, got {reply.msg_type.name}")
        try:
            response = ResponseApdu.decode(reply.response)
        except MalformedResponseError as err:
            raise SessionBroken("card answer without a status word") from err
        self.transcript.responses.append(reply.response)
        logger.log(TRAFFIC, "card %s", describe_response(reply.response))
        return response

    async def status(self, state: int, task: str) -> None:
        """STATUS_UPDATE_REQUEST, only when BEGIN_OP asked for them (``requiresStatusUpdate``)."""
        if not self.status_updates:
            return
        self.transcript.progress.append((state, task))
        await self.port.send(StatusUpdateRequest(state, task))
        reply = await self.port.receive()
        if not isinstance(reply, StatusUpdateResponse):
            raise SessionBroken(f"expected STATUS_UPDATE_RESPONSE, got {reply.msg_type.name}")


class Tks:
    """The in-process TKS: card keys per key info, random data (as the TKS's TokenServlet.java)."""

    def __init__(self, master_key: bytes = DEVELOPER_KEY) -> None:
        self._master_key = master_key

    def card_keys(self, key_info: bytes, kdd: bytes) -> StaticKeys:
        """Developer keys for key info ``01 01`` and any version ``FF``; else VISA2."""
        if key_info[:1] == b"\xff" or key_info[:2] == b"\x01\x01":
            return StaticKeys.developer()
        return diversify_visa2(self._master_key, kdd)

    @staticmethod
    def random(size: int) -> bytes:
        return os.urandom(size)


def float32(value: float) -> float:
    """``value`` rounded to a Java ``float``, for progress values.

    Computed as in SecureChannel.java:846-870.
    """
    return float(struct.unpack("f", struct.pack("f", value))[0])


class SecureChannel:
    """One authenticated secure channel and the commands of ``SecureChannel.java``."""

    def __init__(
        self,
        conversation: Conversation,
        host: SecureChannelHost,
        key_info: bytes,
        *,
        gp211: bool,
        wrong_mac_ins: frozenset[int] = frozenset(),
        ignore_results: bool = True,
    ) -> None:
        self.conversation = conversation
        self.host = host
        self.key_info = key_info
        self.gp211 = gp211
        self._wrong_mac = wrong_mac_ins
        self._ignore_results = ignore_results

    @property
    def static_kek(self) -> bytes:
        return self.host.keys.kek

    def _corrupt(self, wire: bytes, has_le: bool, ins: int) -> bytes:
        if ins not in self._wrong_mac:
            return wire
        # Flip the last MAC byte (Le, if any, follows the MAC and is not covered by it).
        end = len(wire) - (1 if has_le else 0)
        return wire[: end - 1] + bytes((wire[end - 1] ^ 0xFF,)) + wire[end:]

    async def external_authenticate(self) -> None:
        wire = self.host.external_authenticate(SecurityLevel.C_DEC_C_MAC)
        response = await self.conversation.apdu(self._corrupt(wire, False, 0x82))
        if response.sw != SW_OK:
            raise TpsFailure(TpsStatus.ERROR_SECURE_CHANNEL, "EXTERNAL AUTHENTICATE failed")

    async def send(self, command: CommandApdu) -> ResponseApdu:
        wire = self.host.wrap(command)
        return await self.conversation.apdu(
            self._corrupt(wire, command.le is not None, command.ins)
        )

    async def _expect(self, command: CommandApdu, status: int, what: str) -> ResponseApdu:
        response = await self.send(command)
        if response.sw != SW_OK:
            raise TpsFailure(status, f"{what} answered {response.sw:04X}")
        return response

    def _tolerated(
        self, response: ResponseApdu, accepted: tuple[int, ...], status: int, what: str
    ) -> None:
        # The Java TPS ignores these answers; a clean server accepts only the expected ones.
        if not self._ignore_results and response.sw not in accepted:
            raise TpsFailure(status, f"{what} answered {response.sw:04X}")

    # -- applet installation (SecureChannel.java:757-988) ----------------------------------

    async def delete(self, aid: bytes) -> None:
        """DELETE of an instance or package; the answer is ignored (TPSProcessor.java:1188-1263)."""
        data = b"\x4f" + bytes((len(aid),)) + aid
        if self.gp211:
            command = CommandApdu(0x84, 0xE4, 0x00, 0x80, data, le=256)
        else:
            command = CommandApdu(0x84, 0xE4, 0x00, 0x00, data)
        response = await self.send(command)
        self._tolerated(response, (SW_OK, SW_NOT_FOUND), TpsStatus.ERROR_UPGRADE_APPLET, "DELETE")

    async def install_load(self, package_aid: bytes, sd_aid: bytes, file_length: int) -> None:
        """INSTALL [for load]; GP 2.1.1 names the security domain and asks for Le."""
        sd = sd_aid if self.gp211 else b""
        code_limit = (file_length + 24 + len(sd)) & 0xFFFF
        data = (
            bytes((len(package_aid),)) + package_aid
            + bytes((len(sd),)) + sd
            + b"\x00"
            + b"\x06\xef\x04\xc6\x02" + code_limit.to_bytes(2, "big")
            + b"\x00"
        )  # fmt: skip
        command = CommandApdu(0x84, 0xE6, 0x02, 0x00, data, le=256 if self.gp211 else None)
        await self._expect(command, TpsStatus.ERROR_UPGRADE_APPLET, "INSTALL [for load]")

    async def load_file(
        self,
        load_data: bytes,
        block_size: int,
        start: int,
        end: int,
        *,
        java_loop: bool = True,
    ) -> None:
        """LOAD blocks of ``blocksize-16`` (SCP01) or ``blocksize-8`` (SCP02).

        SecureChannel.java:826-945.
        """
        piece_size = block_size - (8 if self.gp211 else 16)
        loops = len(load_data) // block_size
        if loops == 0:
            raise TpsFailure(TpsStatus.ERROR_UPGRADE_APPLET, "load file too small")
        step = float32((end - start) / loops)
        remaining, count = len(load_data), 0
        while remaining > 0:
            size, last = piece_size, False
            if remaining < piece_size or (not java_loop and remaining == piece_size):
                # Java marks the last block only when it is short: an exact multiple of
                # the block size never gets P1=80 (SecureChannel.java:881-904).
                size, last = remaining, True
            offset = len(load_data) - remaining
            block = load_data[offset : offset + size]
            command = CommandApdu(0x84, 0xE8, 0x80 if last else 0x00, count & 0xFF, block)
            await self._expect(command, TpsStatus.ERROR_UPGRADE_APPLET, "LOAD")
            await self.conversation.status(
                start + int(float32(count * step)), "PROGRESS_APPLET_BLOCK"
            )
            remaining -= size
            count += 1

    async def install_applet(
        self, package_aid: bytes, instance_aid: bytes, instance_size: int, memory_size: int
    ) -> None:
        """INSTALL [for install & make selectable] with CardEdge's C9 memory size (#16)."""
        system = b"\xc8\x02" + instance_size.to_bytes(2, "big")
        applet = b"\x00\x02" + memory_size.to_bytes(2, "big")
        params = b"\xef" + bytes((len(system),)) + system + b"\xc9" + bytes((len(applet),)) + applet
        data = (
            bytes((len(package_aid),)) + package_aid
            + bytes((len(instance_aid),)) + instance_aid
            + bytes((len(instance_aid),)) + instance_aid
            + b"\x01\x00"
            + bytes((len(params),)) + params
            + b"\x00"
        )  # fmt: skip
        command = CommandApdu(0x84, 0xE6, 0x0C, 0x00, data, le=256 if self.gp211 else None)
        await self._expect(command, TpsStatus.ERROR_UPGRADE_APPLET, "INSTALL [for install]")

    # -- CoolKey RA commands ---------------------------------------------------------------

    async def set_issuer_info(self, url: str) -> None:
        """SET ISSUER INFO: the URL in ASCII, NUL-padded to 224 bytes.

        SecureChannel.java:990-1025.
        """
        raw = url.encode("ascii")[:ISSUER_INFO_LENGTH]
        command = CommandApdu(0x84, 0xF4, 0x00, 0x00, raw.ljust(ISSUER_INFO_LENGTH, b"\x00"))
        await self._expect(command, TpsStatus.ERROR_UPGRADE_APPLET, "SET ISSUER INFO")

    async def set_lifecycle(self, state: int = 0x0F) -> None:
        command = CommandApdu(0x84, 0xF0, state, 0x00)
        await self._expect(command, TpsStatus.ERROR_MAC_LIFECYCLE_PDU, "SET LIFECYCLE")

    async def create_pin(self, max_retries: int, initial: str) -> None:
        """CREATE PIN 0 with Dogtag's fixed string; a re-enroll gets 9C10, ignored.

        SecureChannel.java:1513.
        """
        command = CommandApdu(0x84, 0x40, 0x00, max_retries & 0xFF, initial.encode("utf-8"))
        response = await self.send(command)
        self._tolerated(
            response, (SW_OK, SW_PIN_EXISTS), TpsStatus.ERROR_MAC_RESET_PIN_PDU, "CREATE PIN"
        )

    async def set_pin(self, pin: str) -> None:
        command = CommandApdu(0x84, 0x04, 0x00, 0x00, pin.encode("utf-8"))
        await self._expect(command, TpsStatus.ERROR_MAC_RESET_PIN_PDU, "SET PIN")

    async def generate_key(
        self, private_slot: int, public_slot: int, key_size: int, wrapped_challenge: bytes
    ) -> int:
        """GENERATE KEY (``SecureStartEnrollment``); returns the I/O buffer length.

        SecureChannel.java:1422.
        """
        data = (
            b"\x80" + key_size.to_bytes(2, "big") + b"\x00\x00"
            + b"\x10" + wrapped_challenge + b"\x00"
        )  # fmt: skip
        command = CommandApdu(0x84, 0x0C, private_slot, public_slot, data, le=256)
        response = await self._expect(command, TpsStatus.ERROR_MAC_ENROLL_PDU, "GENERATE KEY")
        if len(response.data) < 2:
            raise TpsFailure(TpsStatus.ERROR_MAC_ENROLL_PDU, "GENERATE KEY gave no length")
        return int.from_bytes(response.data[:2], "big")

    async def read_object(self, object_id: bytes, offset: int, length: int) -> bytes:
        """READ OBJECT in 0xD0-byte pieces, Le 00 (SecureChannel.java:1133-1195)."""
        out = bytearray()
        while len(out) < length:
            size = min(OBJECT_CHUNK, length - len(out))
            data = object_id + (offset + len(out)).to_bytes(4, "big") + bytes((size,))
            command = CommandApdu(0x84, 0x56, 0x00, 0x00, data, le=256)
            response = await self._expect(
                command, TpsStatus.ERROR_CANNOT_PERFORM_OPERATION, "READ OBJECT"
            )
            if not response.data:
                # Java would loop forever on an empty answer; fail instead.
                raise TpsFailure(TpsStatus.ERROR_CANNOT_PERFORM_OPERATION, "READ OBJECT empty")
            out += response.data
        return bytes(out[:length])

    async def create_object(self, object_id: bytes, size: int, acl: bytes) -> None:
        command = CommandApdu(0x84, 0x5A, 0x00, 0x00, object_id + size.to_bytes(4, "big") + acl)
        await self._expect(command, TpsStatus.ERROR_MAC_ENROLL_PDU, "CREATE OBJECT")

    async def write_object(self, object_id: bytes, data: bytes) -> None:
        """WRITE OBJECT in 0xD0-byte pieces (SecureChannel.java:1083-1131)."""
        for offset in range(0, len(data), OBJECT_CHUNK):
            chunk = data[offset : offset + OBJECT_CHUNK]
            body = object_id + offset.to_bytes(4, "big") + bytes((len(chunk),)) + chunk
            await self._expect(
                CommandApdu(0x84, 0x54, 0x00, 0x00, body),
                TpsStatus.ERROR_CANNOT_PERFORM_OPERATION,
                "WRITE OBJECT",
            )

    async def import_key_encrypted(
        self,
        private_slot: int,
        public_slot: int,
        object_id: bytes,
        des_key: bytes,
        iv: bytes,
        check: bytes,
    ) -> None:
        """IMPORT KEY ENCRYPTED of a PKCS#8 blob in ``object_id``.

        TPSEnrollProcessor.java:3163-3287.
        """
        data = (
            object_id + b"\x81"
            + b"\x10" + self.host.wrap_key(des_key)
            + bytes((len(check),)) + check
            + bytes((len(iv),)) + iv
        )  # fmt: skip
        command = CommandApdu(0x84, 0x0A, private_slot, public_slot, data)
        await self._expect(command, TpsStatus.ERROR_MAC_ENROLL_PDU, "IMPORT KEY ENCRYPTED")

    async def clear_key_slots(self, keep: bytes) -> None:
        """CLEAR KEY SLOTS keeping ``keep`` (pairs of slots); answer ignored.

        SecureChannel.java:1054.
        """
        response = await self.send(CommandApdu(0x84, 0x55, 0x00, 0x00, keep))
        self._tolerated(response, (SW_OK,), TpsStatus.ERROR_MAC_ENROLL_PDU, "CLEAR KEY SLOTS")


def protocol_of(response_data: bytes) -> ScpProtocol | None:
    """The protocol byte of an INITIALIZE UPDATE answer, if it is one escd's SCP code knows."""
    if len(response_data) < 12:
        return None
    try:
        return ScpProtocol(response_data[11])
    except ValueError:
        return None
