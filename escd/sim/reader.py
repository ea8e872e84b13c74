# SPDX-License-Identifier: GPL-2.0-or-later
"""An in-process reader backend hosting simulated cards: any number of readers, no pcscd.

Implements ``escd.readers.ReaderBackend`` for scale tests, benchmarks and the demo.
``insert(reader, card)`` and ``remove(reader)`` may be called from any thread; events
reach ``on_event`` on the asyncio loop thread through ``call_soon_threadsafe`` (the
loop is given to the constructor), and none arrives after ``stop()``.

Sessions behave like shared PC/SC connections: ``connect`` powers a cold card, a
transaction holds the reader (other sessions' transmits and transactions wait on a
condition, no polling), and every call of a session made for a card that has since been
removed raises ``CardRemovedError`` (also when another card is in the reader by then).

Must not: log APDU data, or sleep (a slow card's delay is the card's own knob).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable

from escd.errors import CardError, CardRemovedError
from escd.log import TRAFFIC, describe_apdu, describe_response
from escd.readers import (
    CardInserted,
    CardRemoved,
    CardSession,
    ReaderAdded,
    ReaderBackend,
    ReaderEvent,
    ReaderRemoved,
)
from escd.sim.card import SimulatedCard

logger = logging.getLogger(__name__)

DEFAULT_READER_PREFIX = "Simulated Reader"


class _Slot:
    """One reader: the card in it, which insertion that is, and who holds a transaction."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.card: SimulatedCard | None = None
        self.insertion = 0
        self.owner: SimSession | None = None
        self.depth = 0
        self.condition = threading.Condition()


class SimSession:
    """A shared connection to the card in one simulated reader."""

    def __init__(self, slot: _Slot, card: SimulatedCard, insertion: int) -> None:
        self._slot = slot
        self._card = card
        self._insertion = insertion
        self._closed = False

    @property
    def reader(self) -> str:
        return self._slot.name

    @property
    def atr(self) -> bytes:
        with self._slot.condition:
            self._check()
        return self._card.atr

    def _check(self) -> None:
        # Called with the slot's condition held.
        if self._closed:
            raise CardError("the card session is closed")
        if self._slot.insertion != self._insertion or self._slot.card is not self._card:
            raise CardRemovedError()

    def _wait_turn(self) -> None:
        slot = self._slot
        while True:
            self._check()
            if slot.owner is None or slot.owner is self:
                return
            slot.condition.wait()

    def transmit(self, apdu: bytes) -> bytes:
        with self._slot.condition:
            self._wait_turn()
        response = self._card.transmit(apdu)
        with self._slot.condition:
            # The card may have been pulled while it was answering: PC/SC reports that
            # as a failed transmit, not as an answer.
            self._check()
        if logger.isEnabledFor(TRAFFIC):
            logger.log(
                TRAFFIC,
                "%s: %s -> %s",
                self._slot.name,
                describe_apdu(apdu),
                describe_response(response),
            )
        return response

    def begin_transaction(self) -> None:
        with self._slot.condition:
            self._wait_turn()
            self._slot.owner = self
            self._slot.depth += 1

    def end_transaction(self) -> None:
        # Never raises: callers end transactions in ``finally`` blocks, and a removed
        # card has already released the reader.
        with self._slot.condition:
            if self._slot.owner is self:
                self._slot.depth -= 1
                if self._slot.depth == 0:
                    self._slot.owner = None
                    self._slot.condition.notify_all()

    def reset(self) -> None:
        with self._slot.condition:
            self._wait_turn()
        self._card.reset()

    def close(self) -> None:
        with self._slot.condition:
            if self._closed:
                return
            self._closed = True
            if self._slot.owner is self:
                self._slot.owner = None
                self._slot.depth = 0
                self._slot.condition.notify_all()


class SimReaderBackend:
    """``ReaderBackend`` over in-process readers holding ``SimulatedCard``s."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        readers: int | Iterable[str] = 1,
        *,
        prefix: str = DEFAULT_READER_PREFIX,
    ) -> None:
        self._loop = loop
        names = (
            [f"{prefix} {index:02d}" for index in range(readers)]
            if isinstance(readers, int)
            else list(readers)
        )
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {name: _Slot(name) for name in names}
        self._on_event: Callable[[ReaderEvent], None] | None = None

    @property
    def readers(self) -> list[str]:
        with self._lock:
            return list(self._slots)

    def card_in(self, reader: str) -> SimulatedCard | None:
        slot = self._slot(reader)
        with slot.condition:
            return slot.card

    # -- ReaderBackend ---------------------------------------------------------------------

    def start(self, on_event: Callable[[ReaderEvent], None]) -> None:
        with self._lock:
            self._on_event = on_event
            slots = list(self._slots.values())
        for slot in slots:
            self._emit(ReaderAdded(slot.name))
            with slot.condition:
                card = slot.card
            if card is not None:
                self._emit(CardInserted(slot.name, card.atr))

    def stop(self) -> None:
        with self._lock:
            self._on_event = None

    def connect(self, reader: str) -> SimSession:
        slot = self._slot(reader)
        with slot.condition:
            card = slot.card
            if card is None:
                raise CardRemovedError("no card in the reader")
            insertion = slot.insertion
        if not card.powered:
            card.power_on()
        return SimSession(slot, card, insertion)

    # -- what tests and the demo drive -----------------------------------------------------

    def add_reader(self, name: str) -> None:
        with self._lock:
            if name in self._slots:
                raise ValueError(f"reader {name!r} exists")
            self._slots[name] = _Slot(name)
        self._emit(ReaderAdded(name))

    def remove_reader(self, name: str) -> None:
        if self.card_in(name) is not None:
            self.remove(name)
        with self._lock:
            del self._slots[name]
        self._emit(ReaderRemoved(name))

    def insert(self, reader: str, card: SimulatedCard) -> None:
        slot = self._slot(reader)
        with slot.condition:
            if slot.card is not None:
                raise ValueError(f"reader {reader!r} already holds a card")
            slot.card = card
            slot.insertion += 1
        card.power_off()
        self._emit(CardInserted(reader, card.atr))

    def remove(self, reader: str) -> SimulatedCard | None:
        slot = self._slot(reader)
        with slot.condition:
            card, slot.card = slot.card, None
            if card is None:
                return None
            slot.insertion += 1
            slot.owner = None
            slot.depth = 0
            slot.condition.notify_all()
        card.power_off()
        self._emit(CardRemoved(reader))
        return card

    def _slot(self, reader: str) -> _Slot:
        with self._lock:
            slot = self._slots.get(reader)
        if slot is None:
            raise CardError(f"no reader named {reader!r}")
        return slot

    def _emit(self, event: ReaderEvent) -> None:
        with self._lock:
            if self._on_event is None:
                return
        self._loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: ReaderEvent) -> None:
        # Re-checked on the loop: an event queued before stop() is dropped after it.
        with self._lock:
            callback = self._on_event
        if callback is not None:
            callback(event)


def _conforms(backend: SimReaderBackend, session: SimSession) -> tuple[ReaderBackend, CardSession]:
    """Typing only: mypy checks here that both classes implement the reader port."""
    return backend, session
