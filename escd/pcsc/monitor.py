# SPDX-License-Identifier: GPL-2.0-or-later
"""The PC/SC reader monitor: one context, one thread, one blocking wait.

``ReaderMonitor`` owns a PC/SC context on a dedicated thread that blocks in
``SCardGetStatusChange`` over every reader plus the ``\\\\?PnP?\\Notification``
pseudo-reader, with an infinite timeout, so an idle daemon makes no wake-ups of its own
(``bench/idle.py`` measures its idle CPU). It turns what pcscd reports into
``escd.readers`` events: readers added and removed, cards inserted and removed (cards
already present at start-up included), mute and exclusively-used readers, and the state
of the service itself. ``stop`` ends the wait with ``SCardCancel``.

When pcscd is absent, stopped or restarted, the context dies (``SCARD_F_COMM_ERROR``
mid-wait, ``SCARD_E_NO_SERVICE`` afterwards): every reader and card is reported gone,
the state becomes ``SERVICE_UNAVAILABLE``, and a new context is tried after an
exponential back-off (``pcsc.reconnect_initial_delay`` doubling up to
``pcsc.reconnect_max_delay``). That timed wait happens only during an outage and is
interrupted at once by ``stop``. pcscd's polkit refusal (``access_pcsc``) drops the
connection during the handshake, which the client library reports as
``SCARD_F_COMM_ERROR`` from ``SCardEstablishContext``; that is ``ACCESS_DENIED``.

Rules: pyscard stays inside ``escd.pcsc``; events are handed to ``emit`` on the
monitor thread (the backend moves them to the loop); this module never connects to a
card and never sleeps while pcscd is healthy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from smartcard import scard

from escd.errors import EscdError
from escd.pcsc.connection import describe_code, list_readers
from escd.readers import (
    CardInserted,
    CardRemoved,
    PcscState,
    ReaderAdded,
    ReaderEvent,
    ReaderRemoved,
    ReaderState,
    ReaderStateChanged,
    ServiceStateChanged,
)

logger = logging.getLogger(__name__)

PNP_NOTIFICATION = "\\\\?PnP?\\Notification"

#: pcsc-lite's real INFINITE; pyscard's own constant is 0x7FFFFFFF (about 25 days).
_INFINITE = 0xFFFFFFFF

_SUCCESS = 0
_CANCELLED = scard.SCARD_E_CANCELLED & 0xFFFFFFFF
_TIMEOUT = scard.SCARD_E_TIMEOUT & 0xFFFFFFFF
_COMM_ERROR = scard.SCARD_F_COMM_ERROR & 0xFFFFFFFF
_SECURITY_VIOLATION = scard.SCARD_W_SECURITY_VIOLATION & 0xFFFFFFFF
#: The reader list changed between listing and waiting: list again, the context is fine.
_READER_GONE = frozenset(
    code & 0xFFFFFFFF for code in (scard.SCARD_E_UNKNOWN_READER, scard.SCARD_E_READER_UNAVAILABLE)
)

# pcsc-lite keeps an event counter in the high 16 bits of dwEventState (it changes on
# every insertion and removal); the state bits are the low 16.
_STATE_MASK = 0xFFFF
_NOT_READABLE = scard.SCARD_STATE_UNAVAILABLE | scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_IGNORE


class _End(Enum):
    STOPPED = auto()
    LOST = auto()


@dataclass(slots=True)
class _ReaderView:
    """What the monitor last reported for one reader."""

    card: bool = False  # a readable card was reported inserted
    atr: bytes = b""
    counter: int | None = None
    state: ReaderState = ReaderState.UNKNOWN


def reader_state(event_state: int) -> ReaderState:
    """Classify ``dwEventState`` for ``Reader.State``."""
    bits = event_state & _STATE_MASK
    if bits & _NOT_READABLE:
        return ReaderState.UNKNOWN
    if bits & scard.SCARD_STATE_PRESENT:
        if bits & scard.SCARD_STATE_MUTE:
            return ReaderState.MUTE
        if bits & scard.SCARD_STATE_EXCLUSIVE:
            return ReaderState.EXCLUSIVELY_USED
        return ReaderState.CARD_PRESENT
    if bits & scard.SCARD_STATE_EMPTY:
        return ReaderState.EMPTY
    return ReaderState.UNKNOWN


class ReaderMonitor:
    """Watch pcscd on a thread of its own; report ``ReaderEvent``s through ``emit``."""

    def __init__(
        self,
        emit: Callable[[ReaderEvent], None],
        *,
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
    ) -> None:
        self._emit = emit
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._context: int | None = None
        self._thread: threading.Thread | None = None
        self._service = PcscState.UNKNOWN
        self._healthy = False
        self._readers: dict[str, _ReaderView] = {}

    # -- control (any thread) ---------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the monitor is already running")
        # A daemon thread: a wait that cannot be cancelled must never block the exit.
        self._thread = threading.Thread(target=self._run, name="pcsc-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread; no event is emitted once this returns."""
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return
        # SCardCancel only ends a wait that is in progress (pcsc-lite ignores it
        # otherwise), and the thread may be between two waits: cancel until it is gone.
        attempts = max(1, int(timeout / 0.05))
        for _ in range(attempts):
            with self._lock:
                if self._context is not None:
                    scard.SCardCancel(self._context)
            thread.join(0.05)
            if not thread.is_alive():
                break
        else:
            logger.warning("the PC/SC monitor thread did not stop within %.1f s", timeout)
        self._thread = None

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._run_until_stopped()
        except Exception:
            # A bug here must not leave the daemon silently deaf to cards.
            logger.exception("the PC/SC monitor failed")
            self._set_service(PcscState.UNKNOWN)

    def _run_until_stopped(self) -> None:
        delay = self.initial_delay
        while not self._stopping.is_set():
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            code = hresult & 0xFFFFFFFF
            if code == _SUCCESS:
                end, healthy = self._watch_context(context)
                if end is _End.STOPPED:
                    return
                self._forget_readers()
                self._set_service(PcscState.SERVICE_UNAVAILABLE)
                if healthy:
                    # A session that worked resets the back-off; one that died at once
                    # (pcscd half up) keeps growing it, so nothing here can spin.
                    delay = self.initial_delay
            else:
                self._unavailable(code)
            logger.debug("next PC/SC connection attempt in %.1f s", delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.max_delay)

    def _watch_context(self, context: int) -> tuple[_End, bool]:
        with self._lock:
            if self._stopping.is_set():
                scard.SCardReleaseContext(context)
                return _End.STOPPED, False
            self._context = context
        self._healthy = False
        try:
            return self._watch(context), self._healthy
        finally:
            with self._lock:
                self._context = None
            scard.SCardReleaseContext(context)

    def _unavailable(self, code: int) -> None:
        if code in (_COMM_ERROR, _SECURITY_VIOLATION):
            state = PcscState.ACCESS_DENIED
        else:
            state = PcscState.SERVICE_UNAVAILABLE
        if state != self._service:
            if state is PcscState.ACCESS_DENIED:
                logger.warning(
                    "pcscd refused access (%s); a polkit rule for "
                    "org.debian.pcsc-lite.access_pcsc may be needed; retrying",
                    describe_code(code),
                )
            else:
                logger.warning("pcscd is not available (%s); retrying", describe_code(code))
        self._set_service(state)

    def _watch(self, context: int) -> _End:
        """Report readers and cards until the context dies or ``stop`` cancels the wait."""
        readers = self._list_readers(context)
        if readers is None:
            return _End.LOST
        logger.info("connected to pcscd; %d reader(s)", len(readers))
        states = self._sync_readers(readers, {})
        pnp_state = scard.SCARD_STATE_UNAWARE
        while True:
            request = [(name, state) for name, state in states.items()]
            request.append((PNP_NOTIFICATION, pnp_state))
            hresult, answer = scard.SCardGetStatusChange(context, _INFINITE, request)
            code = hresult & 0xFFFFFFFF
            if self._stopping.is_set():
                return _End.STOPPED
            if code in (_TIMEOUT, _CANCELLED):
                continue
            relist = code in _READER_GONE
            if code != _SUCCESS and not relist:
                logger.warning("lost the connection to pcscd: %s", describe_code(code))
                return _End.LOST
            self._healthy = True
            for name, event_state, atr in answer if code == _SUCCESS else ():
                # Hand pcscd back what it told us (counter included), minus CHANGED, so
                # that the next wait blocks until something really changes.
                current = event_state & ~scard.SCARD_STATE_CHANGED
                if name == PNP_NOTIFICATION:
                    relist = relist or bool(event_state & scard.SCARD_STATE_CHANGED)
                    pnp_state = current
                elif name in states:
                    states[name] = current
                    self._reader_changed(name, event_state, bytes(atr))
            if relist:
                readers = self._list_readers(context)
                if readers is None:
                    return _End.LOST
                states = self._sync_readers(readers, states)

    def _list_readers(self, context: int) -> list[str] | None:
        try:
            readers = list_readers(context)
        except EscdError as exc:
            logger.info("cannot list readers: %s", exc.message)
            return None
        self._set_service(PcscState.OK if readers else PcscState.NO_READERS)
        return readers

    def _sync_readers(self, readers: list[str], states: dict[str, int]) -> dict[str, int]:
        for name in [name for name in self._readers if name not in readers]:
            self._reader_gone(name)
        new_states: dict[str, int] = {}
        for name in readers:
            if name not in self._readers:
                self._readers[name] = _ReaderView()
                logger.info("reader added: %s", name)
                self._emit(ReaderAdded(name))
            new_states[name] = states.get(name, scard.SCARD_STATE_UNAWARE)
        return new_states

    def _reader_changed(self, name: str, event_state: int, atr: bytes) -> None:
        view = self._readers[name]
        state = reader_state(event_state)
        counter = event_state >> 16
        card = state in (ReaderState.CARD_PRESENT, ReaderState.EXCLUSIVELY_USED)
        # Out and in again between two looks (pcscd polls every 400 ms): the counter moved.
        swapped = view.card and card and (counter != view.counter or atr != view.atr)
        if view.card and (not card or swapped):
            logger.info("card removed from %s", name)
            self._emit(CardRemoved(name))
            view.card, view.state = False, ReaderState.EMPTY
        if card and not view.card:
            logger.info("card inserted in %s (ATR %s)", name, atr.hex())
            self._emit(CardInserted(name, atr))
            view.card, view.state = True, ReaderState.CARD_PRESENT
        view.atr, view.counter = atr, counter
        if state != view.state:
            logger.info("reader %s: %s", name, state.name.lower())
            self._emit(ReaderStateChanged(name, state))
            view.state = state

    def _reader_gone(self, name: str) -> None:
        view = self._readers.pop(name)
        if view.card:
            self._emit(CardRemoved(name))
        logger.info("reader removed: %s", name)
        self._emit(ReaderRemoved(name))

    def _forget_readers(self) -> None:
        for name in list(self._readers):
            self._reader_gone(name)

    def _set_service(self, state: PcscState) -> None:
        if state != self._service:
            self._service = state
            self._emit(ServiceStateChanged(state))
