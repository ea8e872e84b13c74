# SPDX-License-Identifier: GPL-2.0-or-later
"""The PC/SC ``ReaderBackend``: the reader monitor for events, card sessions for cards.

Glue only. ``start`` runs a ``ReaderMonitor`` and moves its events from the monitor
thread to the asyncio loop with ``call_soon_threadsafe`` (the one way threads reach the
loop); ``stop`` cancels the monitor's wait and guarantees no event is delivered after
it returns; ``connect`` opens a shared-mode card session through the function it was
given (``escd.pcsc.connection``), on the caller's worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from escd.config import PcscConfig
from escd.pcsc.monitor import ReaderMonitor
from escd.readers import CardSession, ReaderEvent


class PcscReaderBackend:
    """Reader events from pcscd and shared-mode card sessions."""

    def __init__(self, config: PcscConfig, open_session: Callable[[str], CardSession]) -> None:
        self._open_session = open_session
        self._config = config
        self._monitor: ReaderMonitor | None = None
        self._stopped = False

    def start(self, on_event: Callable[[ReaderEvent], None]) -> None:
        loop = asyncio.get_running_loop()

        def deliver(event: ReaderEvent) -> None:
            if not self._stopped:
                on_event(event)

        def from_thread(event: ReaderEvent) -> None:
            try:
                loop.call_soon_threadsafe(deliver, event)
            except RuntimeError:  # the loop is closed: the daemon is exiting
                pass

        self._stopped = False
        self._monitor = ReaderMonitor(
            from_thread,
            initial_delay=self._config.reconnect_initial_delay,
            max_delay=self._config.reconnect_max_delay,
        )
        self._monitor.start()

    def stop(self) -> None:
        self._stopped = True
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None

    def update_config(self, config: PcscConfig) -> None:
        """New back-off delays apply from the next reconnect attempt."""
        self._config = config
        if self._monitor is not None:
            self._monitor.initial_delay = config.reconnect_initial_delay
            self._monitor.max_delay = config.reconnect_max_delay

    def connect(self, reader: str) -> CardSession:
        return self._open_session(reader)
