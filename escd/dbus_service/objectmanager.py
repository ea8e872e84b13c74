# SPDX-License-Identifier: GPL-2.0-or-later
"""A dbus-fast message bus whose ``org.freedesktop.DBus.ObjectManager`` lives at the root.

dbus-fast answers ``GetManagedObjects`` on any path, but sends ``InterfacesAdded`` and
``InterfacesRemoved`` from the path of the object that changed, and lists the
ObjectManager interface on every exported object. The D-Bus specification (and
GDBusObjectManagerClient, which matches on the manager's path) wants both signals sent
from the manager's own path, which for escd is ``ROOT_PATH`` (docs/dbus-api.md).
This subclass fixes exactly that and nothing else; it must not grow other behaviour.
"""

from __future__ import annotations

from typing import Any

from dbus_fast import Message
from dbus_fast import introspection as intr
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from escd.dbus_service.names import OBJECT_MANAGER_INTERFACE, ROOT_PATH


class ObjectManagerBus(MessageBus):
    """``MessageBus`` with the object manager at ``ROOT_PATH`` (signals and introspection)."""

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        if self._disconnected:
            return

        def send(
            interface: ServiceInterface, values: Any, _user_data: Any, error: Exception | None
        ) -> None:
            # Our getters never fail; an error here is a bug and the values are partial.
            if error is not None:
                raise error
            self.send(
                Message.new_signal(
                    ROOT_PATH,
                    OBJECT_MANAGER_INTERFACE,
                    "InterfacesAdded",
                    "oa{sa{sv}}",
                    [path, {interface.name: values}],
                )
            )

        ServiceInterface._get_all_property_values(interface, send)

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        if self._disconnected:
            return
        self.send(
            Message.new_signal(
                ROOT_PATH,
                OBJECT_MANAGER_INTERFACE,
                "InterfacesRemoved",
                "oas",
                [path, removed_interfaces],
            )
        )

    def _introspect_export_path(self, path: str) -> intr.Node:
        node: intr.Node = super()._introspect_export_path(path)
        if path == ROOT_PATH:
            if not any(i.name == OBJECT_MANAGER_INTERFACE for i in node.interfaces):
                default = intr.Node.default(path)
                node.interfaces = list(default.interfaces) + list(node.interfaces)
        else:
            node.interfaces = [i for i in node.interfaces if i.name != OBJECT_MANAGER_INTERFACE]
        return node
