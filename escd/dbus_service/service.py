# SPDX-License-Identifier: GPL-2.0-or-later
"""The escd object tree on the bus: Manager, one Reader per reader, one Token per token.

``EscdService`` subscribes to the token registry and keeps the exported objects in step
with it: a new reader or token is exported (``InterfacesAdded`` from the root object
manager), a change updates its object (``PropertiesChanged``), a removal unexports it
(``InterfacesRemoved``). It owns no state besides the exported objects, and it neither
requests the bus name nor touches a card; the daemon does both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from dbus_fast.aio import MessageBus

from escd.config import Config
from escd.dbus_service.manager import ManagerActions, ManagerInterface
from escd.dbus_service.names import MANAGER_PATH, reader_path, token_path
from escd.dbus_service.reader import ReaderInterface
from escd.dbus_service.token import TokenActions, TokenInterface
from escd.tokens import (
    PcscStateChanged,
    ReaderAppeared,
    ReaderChanged,
    ReaderGone,
    ReaderRecord,
    RegistryEvent,
    TokenAppeared,
    TokenChanged,
    TokenGone,
    TokenRecord,
    TokenRegistry,
)

logger = logging.getLogger(__name__)


class ServiceActions(ManagerActions, TokenActions, Protocol):
    """Everything the exported objects ask of the daemon."""


class EscdService:
    """Exports the escd objects on ``bus`` and mirrors the registry into them."""

    def __init__(self, bus: MessageBus, registry: TokenRegistry, actions: ServiceActions) -> None:
        self._bus = bus
        self._registry = registry
        self._actions = actions
        self.manager = ManagerInterface(registry, actions)
        self._readers: dict[str, ReaderInterface] = {}
        self._tokens: dict[str, TokenInterface] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        """Export the Manager and every reader and token the registry knows already."""
        self._bus.export(MANAGER_PATH, self.manager)
        for reader in self._registry.readers():
            self._add_reader(reader)
        for token in self._registry.tokens():
            self._add_token(token)
        self._unsubscribe = self._registry.subscribe(self._on_event)

    def stop(self) -> None:
        """Stop following the registry and unexport everything."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for token_id in list(self._tokens):
            self._remove_token(token_id)
        for name in list(self._readers):
            self._remove_reader(name)
        self._bus.unexport(MANAGER_PATH, self.manager)

    def config_changed(self, old: Config, new: Config) -> None:
        self.manager.config_changed(old, new)

    def token_object(self, token_id: str) -> TokenInterface | None:
        return self._tokens.get(token_id)

    def _reader_path(self, name: str) -> str:
        return reader_path(self._registry.reader_index(name))

    def _on_event(self, event: RegistryEvent) -> None:
        match event:
            case PcscStateChanged():
                self.manager.pcsc_state_changed()
            case ReaderAppeared(reader=reader):
                self._add_reader(reader)
            case ReaderChanged(reader=reader, changed=changed):
                interface = self._readers.get(reader.name)
                if interface is not None:
                    interface.update(reader, changed)
            case ReaderGone(reader=reader):
                self._remove_reader(reader.name)
            case TokenAppeared(token=token):
                self._add_token(token)
            case TokenChanged(token=token, changed=changed):
                token_interface = self._tokens.get(token.token_id)
                if token_interface is not None:
                    token_interface.update(token, changed)
            case TokenGone(token=token):
                self._remove_token(token.token_id)

    def _add_reader(self, reader: ReaderRecord) -> None:
        if reader.name in self._readers:
            return
        interface = ReaderInterface(reader, token_path)
        self._readers[reader.name] = interface
        self._bus.export(reader_path(reader.index), interface)

    def _remove_reader(self, name: str) -> None:
        interface = self._readers.pop(name, None)
        if interface is not None:
            self._bus.unexport(reader_path(interface.record.index), interface)

    def _add_token(self, token: TokenRecord) -> None:
        if token.token_id in self._tokens:
            return
        interface = TokenInterface(token, self._reader_path, self._actions)
        self._tokens[token.token_id] = interface
        self._bus.export(token_path(token.token_id), interface)

    def _remove_token(self, token_id: str) -> None:
        interface = self._tokens.pop(token_id, None)
        if interface is not None:
            self._bus.unexport(token_path(token_id), interface)
