# SPDX-License-Identifier: GPL-2.0-or-later
"""The reader port: reader/card events and the card sessions a reader backend hands out.

Pure: typed events and ``typing.Protocol``s only. Two backends implement it: PC/SC
(``escd.pcsc.monitor`` + ``escd.pcsc.connection``) and the simulator's in-process readers
(``escd.sim.reader``). The daemon (``escd.daemon``) is the only place that picks one.

Threading rule: ``ReaderBackend.start`` delivers events by calling ``on_event`` on the
asyncio loop thread (backends that watch on a thread use ``call_soon_threadsafe``);
``ReaderBackend.connect`` and every ``CardSession`` method block and are called from a
worker thread, never from the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, unique
from typing import Protocol

from escd.card.transport import CardConnection


@unique
class PcscState(IntEnum):
    """State of the reader service (D-Bus ``Manager.PcscState``)."""

    UNKNOWN = 0
    OK = 1
    SERVICE_UNAVAILABLE = 2
    ACCESS_DENIED = 3
    NO_READERS = 4


@unique
class ReaderState(IntEnum):
    """State of one reader (D-Bus ``Reader.State``)."""

    UNKNOWN = 0
    EMPTY = 1
    CARD_PRESENT = 2
    MUTE = 3
    EXCLUSIVELY_USED = 4


@dataclass(frozen=True, slots=True)
class ReaderAdded:
    reader: str


@dataclass(frozen=True, slots=True)
class ReaderRemoved:
    reader: str


@dataclass(frozen=True, slots=True)
class CardInserted:
    reader: str
    atr: bytes


@dataclass(frozen=True, slots=True)
class CardRemoved:
    reader: str


@dataclass(frozen=True, slots=True)
class ReaderStateChanged:
    """A reader's state changed without an insert or removal (mute, exclusive use)."""

    reader: str
    state: ReaderState


@dataclass(frozen=True, slots=True)
class ServiceStateChanged:
    state: PcscState


ReaderEvent = (
    ReaderAdded | ReaderRemoved | CardInserted | CardRemoved | ReaderStateChanged
    | ServiceStateChanged
)  # fmt: skip


class CardSession(CardConnection, Protocol):
    """A card connected in shared mode; blocking, used from one worker thread at a time."""

    @property
    def reader(self) -> str: ...

    def begin_transaction(self) -> None:
        """Hold the card for a multi-APDU exchange (other PC/SC users wait)."""
        ...

    def end_transaction(self) -> None: ...

    def reset(self) -> None:
        """Warm-reset the card (after enroll and format, as ESC does)."""
        ...

    def close(self) -> None: ...


class ReaderBackend(Protocol):
    """A source of reader events and card sessions."""

    def start(self, on_event: Callable[[ReaderEvent], None]) -> None:
        """Begin watching; report readers and cards already present as events."""
        ...

    def stop(self) -> None:
        """Stop watching (returns promptly; no event is delivered afterwards)."""
        ...

    def connect(self, reader: str) -> CardSession:
        """Connect to the card in ``reader`` (blocking; call from a worker thread)."""
        ...
