# SPDX-License-Identifier: GPL-2.0-or-later
"""``io.github.escd.Escd1.Reader``, one object per reader at ``…/reader/<n>``.

Read-only properties mirroring one ``ReaderRecord``; ``update`` emits
``PropertiesChanged`` for what changed. Nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

from dbus_fast.annotations import DBusObjectPath, DBusStr, DBusUInt32
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_property

from escd.dbus_service.names import NO_OBJECT, READER_INTERFACE
from escd.tokens import ReaderRecord

_PROPERTY_OF_FIELD = {"name": "Name", "state": "State", "token_id": "Token"}


class ReaderInterface(ServiceInterface):
    def __init__(self, record: ReaderRecord, token_path: Callable[[str], str]) -> None:
        super().__init__(READER_INTERFACE)
        self._record = record
        self._token_path = token_path

    @property
    def record(self) -> ReaderRecord:
        return self._record

    def update(self, record: ReaderRecord, changed: frozenset[str]) -> None:
        self._record = record
        names = sorted({_PROPERTY_OF_FIELD[f] for f in changed if f in _PROPERTY_OF_FIELD})
        if names:
            self.emit_properties_changed({name: getattr(self, name) for name in names})

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return self._record.name

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusUInt32:
        return int(self._record.state)

    @dbus_property(access=PropertyAccess.READ)
    def Token(self) -> DBusObjectPath:
        token_id = self._record.token_id
        return NO_OBJECT if token_id is None else self._token_path(token_id)
