# SPDX-License-Identifier: GPL-2.0-or-later
"""Desktop notifications through ``org.freedesktop.Notifications`` (Desktop Notifications
Specification 1.2): token inserted (with its state), removed, operation finished or failed.

``Notifier`` is a client of whatever notification server owns that name on the session
bus. It watches the name (``NameOwnerChanged``), so a server that starts after escd is
used as soon as it appears and one that goes away is simply not used; asks its
capabilities (``actions``: only then does an unenrolled token's notification carry an
"Enroll…" button); sends ``Notify`` calls one after another from a queue of its own
(a token's removal replaces its insertion notice); and turns ``ActionInvoked`` from that
server, for a notification it sent, into a call of ``on_action(token_id, action)``.
``NotificationClosed`` forgets the notification.

``notifications.enabled``: ``auto`` and ``on`` notify while a server is present, ``off``
never talks to one. No server is not an error: nothing is sent and nothing is logged
above DEBUG (``on`` says once, at INFO, that it waits for one).

Must not: block anything on the server (every call is bounded by a timeout and made from
the queue's task), put a secret or server-supplied text into a notification (texts are
built from token states, CUIDs, reader names and escd's own result messages), or act on
a signal that does not come from the current server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from escd.config import Switch
from escd.dbus_service.busdaemon import call_bus_daemon
from escd.dbus_service.names import DBUS_INTERFACE, DBUS_NAME
from escd.events import EventKind
from escd.model import TokenState
from escd.tokens import RegistryEvent, TokenAppeared, TokenGone, TokenRecord

logger = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
Record = Callable[[EventKind, str, str], None]

NOTIFICATIONS_NAME = "org.freedesktop.Notifications"
NOTIFICATIONS_PATH = "/org/freedesktop/Notifications"
NOTIFICATIONS_INTERFACE = "org.freedesktop.Notifications"
APP_NAME = "escd"
APP_ICON = "media-flash"
ENROLL_ACTION = "enroll"
ENROLL_LABEL = "Enroll…"
#: Longest wait for the notification server's answer to one call.
CALL_TIMEOUT = 5.0
#: ``expire_timeout`` -1: the server's default.
DEFAULT_EXPIRY = -1

_STATE_TEXT = {
    TokenState.ENROLLED: "enrolled",
    TokenState.UNINITIALIZED: "not enrolled (formatted, ready for enrollment)",
    TokenState.NO_APPLET: "blank (no CoolKey applet; it needs formatting)",
    TokenState.UNKNOWN: "not readable as a CoolKey token",
}


def describe_state(state: TokenState) -> str:
    return _STATE_TEXT[state]


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification to send; ``replace`` replaces the token's previous notice."""

    token_id: str
    summary: str
    body: str
    category: str = ""
    actions: tuple[tuple[str, str], ...] = ()
    replace: bool = False
    transient: bool = False
    urgency: int = 1


class Notifier:
    """Sends escd's desktop notifications while a notification server is present."""

    def __init__(
        self,
        bus: MessageBus,
        setting: Switch,
        spawn: Spawn,
        record: Record,
        *,
        on_action: Callable[[str, str], None],
        can_enroll: Callable[[], bool],
    ) -> None:
        self._bus = bus
        self.setting = setting
        self._spawn = spawn
        self._record = record
        self._on_action = on_action
        self._can_enroll = can_enroll
        #: Unique name of the notification server escd talks to, "" while there is none.
        self._owner = ""
        self._server = ""
        self._capabilities: frozenset[str] = frozenset()
        self._queue: asyncio.Queue[Notice] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        #: Notification id → token id, for ActionInvoked; token id → its last id.
        self._tokens_by_id: dict[int, str] = {}
        self._last_id: dict[str, int] = {}
        self._said_waiting = False
        self._server_known = asyncio.Condition()

    @property
    def active(self) -> bool:
        """Whether notifications are sent now (enabled, and a server is there)."""
        return self.setting is not Switch.OFF and bool(self._server)

    async def wait_active(self) -> None:
        """Wait until notifications are sent (a server appeared); for tests and tools."""
        async with self._server_known:
            await self._server_known.wait_for(lambda: self.active)

    @property
    def supports_actions(self) -> bool:
        return "actions" in self._capabilities

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the server's name and connect to it if it is there already."""
        self._bus.add_message_handler(self._on_message)
        for rule in (
            f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_INTERFACE}',"
            f"member='NameOwnerChanged',arg0='{NOTIFICATIONS_NAME}'",
            f"type='signal',interface='{NOTIFICATIONS_INTERFACE}',path='{NOTIFICATIONS_PATH}'",
        ):
            await call_bus_daemon(self._bus, "AddMatch", "s", [rule])
        owner = await call_bus_daemon(self._bus, "GetNameOwner", "s", [NOTIFICATIONS_NAME])
        self._worker = self._spawn(self._work())
        await self._server_changed(str(owner[0]) if owner else "")

    def stop(self) -> None:
        self._bus.remove_message_handler(self._on_message)
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None

    def apply(self, setting: Switch) -> None:
        """A reloaded ``notifications.enabled``."""
        if setting == self.setting:
            return
        self.setting = setting
        self._server = ""
        self._capabilities = frozenset()
        self._spawn(self._server_changed(self._owner))

    async def _server_changed(self, owner: str) -> None:
        self._owner = owner
        self._server = ""
        self._capabilities = frozenset()
        if self.setting is Switch.OFF:
            return
        if not owner:
            if self.setting is Switch.ON and not self._said_waiting:
                self._said_waiting = True
                logger.info("no notification server on the session bus; waiting for one")
            else:
                logger.debug("no notification server on the session bus")
            return
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                reply = await self._bus.call(self._server_call(owner, "GetCapabilities", "", []))
        except TimeoutError:
            reply = None
        if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
            logger.info("the notification server %s did not answer GetCapabilities", owner)
            return
        if owner != self._owner:  # it changed again while we asked
            return
        self._server = owner
        self._capabilities = frozenset(str(item) for item in reply.body[0])
        logger.info(
            "desktop notifications on (server %s, capabilities: %s)",
            owner,
            ", ".join(sorted(self._capabilities)) or "none",
        )
        self._record(EventKind.NOTIFICATION, "notification server found", "")
        async with self._server_known:
            self._server_known.notify_all()

    @staticmethod
    def _server_call(owner: str, member: str, signature: str, body: list[Any]) -> Message:
        return Message(
            destination=owner,
            path=NOTIFICATIONS_PATH,
            interface=NOTIFICATIONS_INTERFACE,
            member=member,
            signature=signature,
            body=body,
        )

    # -- signals ----------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        if message.message_type is not MessageType.SIGNAL:
            return
        if (
            message.interface == DBUS_INTERFACE
            and message.member == "NameOwnerChanged"
            and message.sender == DBUS_NAME
            and message.body[0] == NOTIFICATIONS_NAME
        ):
            self._spawn(self._server_changed(str(message.body[2])))
            return
        if message.interface != NOTIFICATIONS_INTERFACE or not self._server:
            return
        if message.sender != self._server:
            return  # only the server we talk to may report clicks on our notifications
        # A Notify reply wakes the task that sent it one loop turn later (call_soon),
        # while this handler runs as soon as the message is read: a click sent right
        # after the reply would find no id yet. Handle signals after that turn.
        loop = asyncio.get_running_loop()
        if message.member == "ActionInvoked" and message.signature == "us":
            loop.call_soon(self._action_invoked, int(message.body[0]), str(message.body[1]))
        elif message.member == "NotificationClosed" and message.signature == "uu":
            loop.call_soon(self._closed, int(message.body[0]))

    def _action_invoked(self, notification_id: int, action: str) -> None:
        token_id = self._tokens_by_id.get(notification_id)
        if token_id is not None:
            logger.info("notification action %r for %s", action, token_id)
            self._on_action(token_id, action)

    def _closed(self, notification_id: int) -> None:
        token_id = self._tokens_by_id.pop(notification_id, None)
        if token_id is not None and self._last_id.get(token_id) == notification_id:
            del self._last_id[token_id]

    # -- what is notified ---------------------------------------------------------------

    def observe(self, event: RegistryEvent) -> None:
        """Registry subscriber: insertions and removals."""
        if not self.active:
            return
        match event:
            case TokenAppeared(token=token):
                self.send(self._inserted(token))
            case TokenGone(token=token):
                self.send(
                    Notice(
                        token.token_id,
                        "Smart card removed",
                        f"Token {_short(token)} was removed from {token.reader}.",
                        category="device.removed",
                        replace=True,
                        transient=True,
                    )
                )
            case _:
                pass

    def _inserted(self, token: TokenRecord) -> Notice:
        state = token.info.state
        actions: tuple[tuple[str, str], ...] = ()
        if (
            state in (TokenState.UNINITIALIZED, TokenState.NO_APPLET)
            and self.supports_actions
            and self._can_enroll()
        ):
            actions = ((ENROLL_ACTION, ENROLL_LABEL),)
        return Notice(
            token.token_id,
            "Smart card inserted",
            f"Token {_short(token)} in {token.reader} is {describe_state(state)}.",
            category="device.added",
            actions=actions,
            replace=True,
            transient=not actions,
        )

    def operation_finished(
        self, token_id: str, operation: str, succeeded: bool, message: str
    ) -> None:
        """A job on a token ended; ``message`` is escd's own wording of the result."""
        if not self.active:
            return
        what = operation.replace("-", " ")
        if succeeded:
            summary = f"{what.capitalize()} finished"
            body = f"Token {token_id}: {message or 'done'}."
        else:
            summary = f"{what.capitalize()} failed"
            body = f"Token {token_id}: {message or 'the operation failed'}."
        self.send(
            Notice(
                token_id,
                summary,
                body,
                category="transfer.complete" if succeeded else "transfer.error",
                replace=True,
                urgency=1 if succeeded else 2,
            )
        )

    def send(self, notice: Notice) -> None:
        """Queue a notification; sent in order while a server is present."""
        self._queue.put_nowait(notice)

    async def _work(self) -> None:
        while True:
            notice = await self._queue.get()
            if not self.active:
                continue
            try:
                await self._notify(notice)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A misbehaving server must not end the daemon's task group.
                logger.exception("sending a desktop notification failed")

    async def _notify(self, notice: Notice) -> None:
        replaces = self._last_id.get(notice.token_id, 0) if notice.replace else 0
        hints: dict[str, Variant] = {"urgency": Variant("y", notice.urgency)}
        if notice.category:
            hints["category"] = Variant("s", notice.category)
        if notice.transient:
            hints["transient"] = Variant("b", True)
        actions = [part for pair in notice.actions for part in pair]
        body = [
            APP_NAME,
            replaces,
            APP_ICON,
            notice.summary,
            notice.body,
            actions,
            hints,
            DEFAULT_EXPIRY,
        ]
        server = self._server
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                reply = await self._bus.call(
                    self._server_call(server, "Notify", "susssasa{sv}i", body)
                )
        except TimeoutError:
            logger.info("the notification server did not answer Notify in %g s", CALL_TIMEOUT)
            return
        if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
            logger.info(
                "the notification server refused a notification: %s",
                reply.error_name if reply is not None else "no reply",
            )
            return
        notification_id = int(reply.body[0])
        old = self._last_id.get(notice.token_id)
        if old is not None and old != notification_id:
            self._tokens_by_id.pop(old, None)
        self._last_id[notice.token_id] = notification_id
        self._tokens_by_id[notification_id] = notice.token_id


def _short(token: TokenRecord) -> str:
    """A token's CUID as people read it off ESC (it is also the object path's last part)."""
    return token.cuid or token.token_id
