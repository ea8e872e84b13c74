# SPDX-License-Identifier: GPL-2.0-or-later
"""``Recorder``: what arrives on the event loop, kept in order, and a wait for one item.

The bus signals of an embedded daemon, the fake desktop's notifications and the
PC/SC backend's reader events are all recorded with it. Waits end on arrival (never a
fixed sleep) or fail after a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

TIMEOUT = 5.0


class Recorder(Generic[T]):
    """A list that can be awaited for an item matching a predicate."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Condition()

    def add(self, item: T) -> None:
        self.items.append(item)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_index(
        self, match: Callable[[T], bool], start: int = 0, timeout: float = TIMEOUT
    ) -> int:
        """The index of the first item from ``start`` on that matches, once there is one."""

        def index() -> int | None:
            return next((i for i in range(start, len(self.items)) if match(self.items[i])), None)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: index() is not None)
        found = index()
        assert found is not None
        return found

    async def wait_for(
        self, match: Callable[[T], bool], start: int = 0, timeout: float = TIMEOUT
    ) -> T:
        """The first item from ``start`` on that matches, once there is one."""
        return self.items[await self.wait_for_index(match, start, timeout)]

    def mark(self) -> int:
        """Where the next item will go: a ``start`` for waiting on what comes after now."""
        return len(self.items)
