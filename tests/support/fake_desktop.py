# SPDX-License-Identifier: GPL-2.0-or-later
"""Test doubles of the desktop's D-Bus services escd talks to, on the private bus.

``FakeNotifications`` plays ``org.freedesktop.Notifications`` (Desktop Notifications
Specification 1.2): it records every ``Notify`` call, hands out ids, and lets a test
emit ``ActionInvoked`` / ``NotificationClosed`` as a server would when the user clicks.
``FakeApplication`` plays a D-Bus activatable application
(``org.freedesktop.Application``) and records ``ActivateAction`` calls. Each runs on a
bus connection of its own that owns the well-known name, like the real services; they
are fakes of external services, never of escd's own code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from dbus_fast import Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature, DBusStr, DBusUInt32
from dbus_fast.constants import NameFlag, RequestNameReply
from dbus_fast.service import ServiceInterface, dbus_method, dbus_signal

from escd.dbus_service.variants import DBusStrList, DBusVarDict, DBusVoid
from tests.support.recorder import Recorder

DBusNotifyArgs = Annotated[list[Any], DBusSignature("us")]
DBusClosedArgs = Annotated[list[Any], DBusSignature("uu")]
DBusServerInfo = Annotated[list[str], DBusSignature("ssss")]
DBusVariantList = Annotated[list[Variant], DBusSignature("av")]


@dataclass
class Notification:
    id: int
    app_name: str
    replaces_id: int
    icon: str
    summary: str
    body: str
    actions: list[str]
    hints: dict[str, Any]
    expire_timeout: int


class _NotificationsInterface(ServiceInterface):
    def __init__(self, owner: FakeNotifications) -> None:
        super().__init__("org.freedesktop.Notifications")
        self._owner = owner

    @dbus_method()
    def GetCapabilities(self) -> DBusStrList:
        return list(self._owner.capabilities)

    @dbus_method()
    def Notify(
        self,
        app_name: DBusStr,
        replaces_id: DBusUInt32,
        app_icon: DBusStr,
        summary: DBusStr,
        body: DBusStr,
        actions: DBusStrList,
        hints: DBusVarDict,
        expire_timeout: Annotated[int, DBusSignature("i")],
    ) -> DBusUInt32:
        new_id = replaces_id or self._owner.next_id()
        self._owner.notifications.add(
            Notification(
                new_id,
                app_name,
                replaces_id,
                app_icon,
                summary,
                body,
                list(actions),
                {key: value.value for key, value in hints.items()},
                expire_timeout,
            )
        )
        return new_id

    @dbus_method()
    def CloseNotification(self, notification_id: DBusUInt32) -> DBusVoid:
        self.NotificationClosed(notification_id, 3)

    @dbus_method()
    def GetServerInformation(self) -> DBusServerInfo:
        return ["fake-notifications", "escd tests", "1.0", "1.2"]

    @dbus_signal()
    def ActionInvoked(self, notification_id: int, action: str) -> DBusNotifyArgs:
        return [notification_id, action]

    @dbus_signal()
    def NotificationClosed(self, notification_id: int, reason: int) -> DBusClosedArgs:
        return [notification_id, reason]


@dataclass
class FakeNotifications:
    """A notification server on its own bus connection."""

    capabilities: tuple[str, ...] = ("actions", "body")
    notifications: Recorder[Notification] = field(default_factory=Recorder)
    bus: MessageBus | None = None
    _ids: int = 0

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def start(self) -> FakeNotifications:
        self.bus = await MessageBus().connect()
        self.interface = _NotificationsInterface(self)
        self.bus.export("/org/freedesktop/Notifications", self.interface)
        reply = await self.bus.request_name("org.freedesktop.Notifications", NameFlag.DO_NOT_QUEUE)
        assert reply is RequestNameReply.PRIMARY_OWNER
        return self

    def click(self, notification_id: int, action: str) -> None:
        self.interface.ActionInvoked(notification_id, action)

    def stop(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None


class _ApplicationInterface(ServiceInterface):
    def __init__(self, owner: FakeApplication) -> None:
        super().__init__("org.freedesktop.Application")
        self._owner = owner

    @dbus_method()
    def Activate(self, platform_data: DBusVarDict) -> DBusVoid:
        self._owner.calls.add(("Activate", [], {}))

    @dbus_method()
    def Open(self, uris: DBusStrList, hint: DBusStr, platform_data: DBusVarDict) -> DBusVoid:
        self._owner.calls.add(("Open", list(uris), {}))

    @dbus_method()
    def ActivateAction(
        self, action_name: DBusStr, parameter: DBusVariantList, platform_data: DBusVarDict
    ) -> DBusVoid:
        self._owner.calls.add(
            (
                action_name,
                [v.value for v in parameter],
                {k: v.value for k, v in platform_data.items()},
            )
        )


@dataclass
class FakeApplication:
    """A D-Bus activatable desktop application named ``name``."""

    name: str
    calls: Recorder[Any] = field(default_factory=Recorder)
    bus: MessageBus | None = None

    async def start(self) -> FakeApplication:
        self.bus = await MessageBus().connect()
        path = "/" + self.name.replace(".", "/").replace("-", "_")
        self.bus.export(path, _ApplicationInterface(self))
        reply = await self.bus.request_name(self.name, NameFlag.DO_NOT_QUEUE)
        assert reply is RequestNameReply.PRIMARY_OWNER
        return self

    def stop(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None
