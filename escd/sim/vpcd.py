# SPDX-License-Identifier: GPL-2.0-or-later
"""Put a simulated card into a real pcscd through the vsmartcard ``vpcd`` driver.

vpcd listens on TCP port PORT+slot; a card is "inserted" while a client is connected
and answers the ATR request, "removed" when the socket closes. Every message both ways
is a 2-byte big-endian length and a payload; from pcscd a 1-byte payload is a control
message (00 power off, 01 power on, 02 reset: no reply; 04 get ATR: reply the ATR),
anything longer is a C-APDU answered with the R-APDU (vsmartcard's vpcd.c and its
``VirtualSmartcard.py``).

Rules: every ATR request and APDU gets an answer (a silent card wedges pcscd's slot
thread, vpcd has no timeout); ``TCP_QUICKACK`` is re-armed before every ``recv``
(Debian's vpcd sends length and payload in two writes without TCP_NODELAY: without
quick ACKs each APDU costs ~44 ms, see docs/testing.md); the socket loop runs on its
own thread and blocks in ``recv``; APDU data is never logged.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading

from escd.log import TRAFFIC, describe_apdu, describe_response
from escd.sim.card import SimulatedCard

logger = logging.getLogger(__name__)

#: Debian's vpcd entry (``DEVICENAME /dev/null:0x8C7B``): slots on 35963 and 35964.
DEFAULT_PORT = 35963
CTRL_POWER_OFF = 0x00
CTRL_POWER_ON = 0x01
CTRL_RESET = 0x02
CTRL_GET_ATR = 0x04


class VpcdCard:
    """A simulated card plugged into one vpcd slot (``host:port``) while inserted."""

    def __init__(self, card: SimulatedCard, port: int = DEFAULT_PORT, host: str = "127.0.0.1"):
        self.card = card
        self.host = host
        self.port = port
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Set when pcscd has asked for the ATR since the last insert: it has seen the card.
        self.seen = threading.Event()
        #: Set when the connection ended, by ``remove()`` or by pcscd going away.
        self.disconnected = threading.Event()
        self.disconnected.set()

    @property
    def inserted(self) -> bool:
        return not self.disconnected.is_set()

    def insert(self, timeout: float = 5.0) -> None:
        """Connect to vpcd; pcscd notices the card at its next presence poll (<= 400 ms)."""
        with self._lock:
            if self._socket is not None:
                return
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socket = sock
            self.seen.clear()
            self.disconnected.clear()
            self._thread = threading.Thread(
                target=self._serve, args=(sock,), name=f"vpcd-{self.port}", daemon=True
            )
            self._thread.start()
        logger.info("simulated card inserted into vpcd port %d", self.port)

    def remove(self) -> None:
        """Pull the card: close the socket and wait for the loop to end."""
        with self._lock:
            sock, self._socket = self._socket, None
            thread, self._thread = self._thread, None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.card.power_off()
        logger.info("simulated card removed from vpcd port %d", self.port)

    def __enter__(self) -> VpcdCard:
        self.insert()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                (size,) = struct.unpack("!H", _recv_exact(sock, 2))
                message = _recv_exact(sock, size)
                reply = self._handle(message)
                if reply is not None:
                    sock.sendall(struct.pack("!H", len(reply)) + reply)
        except (ConnectionError, OSError) as err:
            logger.debug("vpcd port %d: connection ended (%s)", self.port, err)
        finally:
            self.disconnected.set()

    def _handle(self, message: bytes) -> bytes | None:
        if len(message) == 1:
            control = message[0]
            if control == CTRL_GET_ATR:
                self.seen.set()
                return self.card.atr
            if control == CTRL_POWER_ON:
                self.card.power_on()
            elif control == CTRL_RESET:
                self.card.reset()
            elif control == CTRL_POWER_OFF:
                self.card.power_off()
            else:
                logger.warning("vpcd port %d: unknown control byte %02X", self.port, control)
            return None
        if not self.card.powered:
            # pcscd powers the card before it talks to it; a card that was never told
            # (e.g. plugged in while pcscd already held the slot powered) starts cold here.
            self.card.power_on()
        response = self.card.transmit(message)
        if logger.isEnabledFor(TRAFFIC):
            logger.log(TRAFFIC, "%s -> %s", describe_apdu(message), describe_response(response))
        return response


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < size:
        # Re-armed before every recv: Linux clears quick-ACK mode after a while.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(size - len(buffer))
        if not chunk:
            raise ConnectionError("vpcd closed the connection")
        buffer += chunk
    return bytes(buffer)
