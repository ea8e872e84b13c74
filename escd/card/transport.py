# SPDX-License-Identifier: GPL-2.0-or-later
"""The card port: what every card connection offers, and the exchange rules on top of it.

Pure: this module defines the ``CardConnection`` protocol (raw bytes in, raw bytes out)
and ``exchange``/``send``, which resolve ISO 7816-4 ``61xx`` with GET RESPONSE as
libckyapplet and ESC do. ``6Cxx`` is returned unchanged: during a TPS session the server
re-sends with the right Le itself (Dogtag TPSProcessor.java, ``selectDefaultCardManager``
and the GET DATA calls). Implementations live at the edges (``escd.pcsc.connection``,
``escd.sim.reader``) and raise ``CardRemovedError`` or ``CardError`` (never a foreign
exception) when the exchange fails.
"""

from __future__ import annotations

from typing import Protocol

from escd.card.apdu import CommandApdu, ResponseApdu
from escd.errors import MalformedResponseError

#: More than this many 61xx rounds for one command means the card is misbehaving.
MAX_GET_RESPONSE_ROUNDS = 256


class CardConnection(Protocol):
    """A connected card, used from one thread at a time."""

    @property
    def atr(self) -> bytes: ...

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU; return the response data followed by SW1 SW2."""
        ...


def exchange(connection: CardConnection, apdu: bytes) -> bytes:
    """Send ``apdu``; while the card answers 61xx, fetch the rest with GET RESPONSE."""
    response = connection.transmit(apdu)
    data = b""
    for _ in range(MAX_GET_RESPONSE_ROUNDS):
        if len(response) < 2:
            raise MalformedResponseError(f"card answered {len(response)} bytes, no status word")
        if response[-2] != 0x61:
            return data + response
        data += response[:-2]
        response = connection.transmit(bytes((0x00, 0xC0, 0x00, 0x00, response[-1])))
    raise MalformedResponseError("card kept answering 61xx")


def send(connection: CardConnection, command: CommandApdu) -> ResponseApdu:
    """Send a typed command and return the typed response (61xx resolved)."""
    return ResponseApdu.decode(exchange(connection, command.encode()))
