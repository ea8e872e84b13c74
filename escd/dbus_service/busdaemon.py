# SPDX-License-Identifier: GPL-2.0-or-later
"""Calls to the bus daemon itself (``org.freedesktop.DBus``): match rules, name owners.

``call_bus_daemon`` answers with the reply's body, or None when the bus daemon answered
with an error (or not at all); what that means is the caller's to decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from escd.dbus_service.names import DBUS_INTERFACE, DBUS_NAME, DBUS_PATH


async def call_bus_daemon(
    bus: MessageBus, member: str, signature: str = "", body: Sequence[Any] = ()
) -> list[Any] | None:
    """Call ``member`` of ``org.freedesktop.DBus``; its body, or None on an error reply."""
    reply = await bus.call(
        Message(
            destination=DBUS_NAME,
            path=DBUS_PATH,
            interface=DBUS_INTERFACE,
            member=member,
            signature=signature,
            body=list(body),
        )
    )
    if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
        return None
    return list(reply.body)
