# SPDX-License-Identifier: GPL-2.0-or-later
"""Which bus clients leave: ``NameOwnerChanged`` for unique names that lost their owner.

Agents of a connection that disconnects are dropped (NetworkManager's rule) and jobs it
started may be canceled (``jobs.cancel_on_client_vanish``, fprintd's rule). One match
rule asks the bus daemon for exactly those signals (``arg2=''``: no new owner), so escd
is not woken for well-known names changing hands.

Must not: decide what a departure means; it only tells its subscribers the name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from escd.dbus_service.busdaemon import call_bus_daemon
from escd.dbus_service.names import DBUS_INTERFACE, DBUS_NAME, DBUS_PATH

logger = logging.getLogger(__name__)

VANISHED_RULE = (
    f"type='signal',sender='{DBUS_NAME}',path='{DBUS_PATH}',interface='{DBUS_INTERFACE}',"
    "member='NameOwnerChanged',arg2=''"
)

Vanished = Callable[[str], None]


class PeerWatcher:
    """Calls its subscribers with the unique name of every connection that leaves the bus."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus
        self._subscribers: list[Vanished] = []

    def subscribe(self, subscriber: Vanished) -> None:
        self._subscribers.append(subscriber)

    async def start(self) -> None:
        """Install the match rule (one round trip to the bus daemon) and the handler."""
        self._bus.add_message_handler(self._handle)
        if await call_bus_daemon(self._bus, "AddMatch", "s", [VANISHED_RULE]) is None:
            # Without it, agents and jobs of vanished clients linger until used; say so.
            logger.warning("cannot watch for clients leaving the bus; agents may linger")

    def _handle(self, message: Message) -> bool:
        if (
            message.message_type is MessageType.SIGNAL
            and message.member == "NameOwnerChanged"
            and message.sender == DBUS_NAME
            and message.interface == DBUS_INTERFACE
            and len(message.body) == 3
        ):
            name, _old, new = message.body
            if isinstance(name, str) and name.startswith(":") and not new:
                for subscriber in list(self._subscribers):
                    subscriber(name)
        # Never consumes the message: other handlers may want it too.
        return False
