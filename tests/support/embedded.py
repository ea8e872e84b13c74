# SPDX-License-Identifier: GPL-2.0-or-later
"""The real daemon run in the test's own event loop over the simulator's readers.

``embedded_daemon(config, tmp_path)`` builds ``escd.daemon.Daemon`` with a
``SimReaderBackend`` (insertions are instant and deterministic), a state directory under
``tmp_path`` and the configuration given as a mapping (written to a file, so reloads
work), waits until it owns its bus name, and yields an ``Embedded`` with a client
connection that records every signal escd sends. The daemon stops, and must exit 0,
when the context ends. ``serving(daemon)`` does the running, connecting and recording
for a daemon a test composed itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dbus_fast import Message, MessageType

from escd.config import Config
from escd.ctl.client import EscdClient
from escd.daemon import Daemon
from escd.dbus_service.names import BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH, TOKEN_INTERFACE
from escd.sim.card import SimulatedCard
from escd.sim.reader import SimReaderBackend
from tests.support.recorder import TIMEOUT, Recorder


class Signals(Recorder[Message]):
    """Every signal escd sends, recorded on a client connection of its own."""

    def __init__(self, client: EscdClient) -> None:
        super().__init__()
        client.bus.add_message_handler(self._handle)

    def _handle(self, message: Message) -> None:
        if message.message_type is MessageType.SIGNAL:
            self.add(message)

    @property
    def messages(self) -> list[Message]:
        return self.items

    def suggestions(self, start: int = 0) -> list[tuple[str, int]]:
        return [
            (str(m.body[0]), int(m.body[1]))
            for m in self.messages[start:]
            if m.interface == MANAGER_INTERFACE and m.member == "EnrollmentSuggested"
        ]


@dataclass
class Embedded:
    daemon: Daemon
    readers: SimReaderBackend
    client: EscdClient
    signals: Signals
    config_path: Path

    async def insert(self, reader: int, card: SimulatedCard) -> str:
        """Insert and wait for the token object; its path."""
        mark = self.signals.mark()
        self.readers.insert(self.readers.readers[reader], card)
        message = await self.signals.wait_for(
            lambda m: m.member == "InterfacesAdded" and TOKEN_INTERFACE in m.body[1], mark
        )
        return str(message.body[0])

    async def remove(self, reader: int) -> str:
        """Pull the card and wait for its token object to go; its path."""
        mark = self.signals.mark()
        self.readers.remove(self.readers.readers[reader])
        message = await self.signals.wait_for(
            lambda m: m.member == "InterfacesRemoved" and TOKEN_INTERFACE in m.body[1], mark
        )
        return str(message.body[0])

    async def round_trip(self) -> None:
        """A call answered after everything escd sent before it (signals included)."""
        await self.client.call(
            MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get", "ss",
            [MANAGER_INTERFACE, "Version"],
        )  # fmt: skip


@contextlib.asynccontextmanager
async def serving(
    daemon: Daemon, timeout: float = TIMEOUT
) -> AsyncIterator[tuple[EscdClient, Signals]]:
    """Run ``daemon`` until the context ends, when it must exit 0; a client connection
    and the signals escd sends, recorded from before the first one."""
    task = asyncio.create_task(daemon.run())
    client: EscdClient | None = None
    try:
        async with asyncio.timeout(timeout):
            await daemon.ready.wait()
        client = await EscdClient.connect()
        signals = Signals(client)
        await client.call(
            "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
            [f"type='signal',sender='{BUS_NAME}'"], "org.freedesktop.DBus",
        )  # fmt: skip
        yield client, signals
    finally:
        if client is not None:
            client.close()
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout) == 0


@contextlib.asynccontextmanager
async def embedded_daemon(
    config: Mapping[str, Any], tmp_path: Path, *, readers: int = 2
) -> AsyncIterator[Embedded]:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(dict(config)))
    loaded = Config.from_mapping(config, str(config_path))
    backend = SimReaderBackend(asyncio.get_running_loop(), readers)
    daemon = Daemon(loaded, config_files=[config_path], backend=backend, state=tmp_path / "state")
    async with serving(daemon) as (client, signals):
        yield Embedded(daemon, backend, client, signals, config_path)
