# SPDX-License-Identifier: GPL-2.0-or-later
"""From reader events to tokens: the watcher between a ``ReaderBackend`` and the registry.

``CardWatcher`` receives the backend's events on the loop thread, records them in the
``TokenRegistry`` and identifies every inserted card: on a worker thread of that reader
(one per reader, so a slow card never delays another), inside one PC/SC transaction on a
shared connection (other PC/SC users keep working), bounded by ``pcsc.identify_timeout``.
A result that arrives after its card was pulled is dropped. ``refresh_token`` re-reads a
present token the same way (``Token.Refresh``).

Jobs get their card here too (``hold``): connected and inside one transaction for the
whole operation, on the same worker thread, so a job and an identification never
interleave on a card. While a reader is held nothing else reads its card (a refresh is
``BusyError``); the job re-reads it when it is done (``reidentify``).

It never blocks the loop and never talks to pyscard itself: the backend's
``CardSession`` does, on the worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from escd.card.transport import CardConnection, exchange
from escd.errors import BusyError, CardError, CardRemovedError, EscdError, PcscUnavailableError
from escd.model import TokenInfo, TokenState
from escd.readers import (
    CardInserted,
    CardRemoved,
    CardSession,
    ReaderAdded,
    ReaderBackend,
    ReaderEvent,
    ReaderRemoved,
    ReaderState,
    ReaderStateChanged,
    ServiceStateChanged,
)
from escd.tokens import TokenRegistry

logger = logging.getLogger(__name__)

T = TypeVar("T")
Identify = Callable[[CardConnection, str], TokenInfo]
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class _ReaderWorker:
    """One daemon thread running blocking card calls for one reader, in order.

    Not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit, and a card
    that hangs in a transmit (vpcd has no I/O timeout) would then hang the daemon's exit.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[
            tuple[Callable[[], Any], asyncio.AbstractEventLoop, asyncio.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((call, loop, future))
        return await future

    def submit(self, call: Callable[[], object]) -> None:
        """Queue ``call`` without waiting for it (clean-up that must run even when the
        caller is being cancelled); it runs after everything queued before it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        future.add_done_callback(_log_failure)
        self._queue.put((call, loop, future))

    def close(self) -> None:
        self._queue.put(None)

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            call, loop, future = item
            try:
                result = call()
            except BaseException as exc:  # handed to the awaiting task, which re-raises it
                _deliver(loop, future, None, exc)
            else:
                _deliver(loop, future, result, None)


def _log_failure(future: asyncio.Future[object]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("a card clean-up call failed: %s", future.exception())


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: object,
    error: BaseException | None,
) -> None:
    def settle() -> None:
        if future.done():  # the awaiting task timed out or was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: the daemon is exiting
        pass


class CardWatcher:
    """Feeds the registry from a reader backend and identifies the cards that go in."""

    def __init__(
        self,
        backend: ReaderBackend,
        registry: TokenRegistry,
        identify: Identify,
        spawn: Spawn,
        *,
        identify_timeout: float,
    ) -> None:
        self._backend = backend
        self._registry = registry
        self._identify = identify
        self._spawn = spawn
        self.identify_timeout = identify_timeout
        self._workers: dict[str, _ReaderWorker] = {}
        self._atrs: dict[str, bytes] = {}
        #: Bumped on every insertion and removal: a result for an older value is stale.
        self._generations: dict[str, int] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}
        #: Readers whose card a job holds.
        self._held: set[str] = set()
        self._stopped = False

    def start(self) -> None:
        self._backend.start(self._on_event)

    def stop(self) -> None:
        """Stop the backend, abandon pending identifications, release the workers."""
        self._stopped = True
        self._backend.stop()
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()
        for worker in self._workers.values():
            worker.close()
        self._workers.clear()

    # -- reader events (loop thread) ------------------------------------------------------

    def _on_event(self, event: ReaderEvent) -> None:
        if self._stopped:
            return
        match event:
            case ServiceStateChanged(state=state):
                self._registry.set_pcsc_state(state)
            case ReaderAdded(reader=reader):
                self._registry.add_reader(reader)
            case ReaderRemoved(reader=reader):
                self._forget_card(reader)
                self._registry.remove_reader(reader)
                worker = self._workers.pop(reader, None)
                if worker is not None:
                    worker.close()
            case CardInserted(reader=reader, atr=atr):
                self._forget_card(reader)
                self._atrs[reader] = atr
                self._registry.card_inserted(reader)
                self._start_identification(reader)
            case CardRemoved(reader=reader):
                self._forget_card(reader)
                token = self._registry.token_in(reader)
                self._registry.card_removed(reader)
                if token is not None:
                    logger.info(
                        "token %s removed from %s",
                        token.token_id,
                        reader,
                        extra={"ESCD_TOKEN_CUID": token.cuid, "ESCD_READER": reader},
                    )
            case ReaderStateChanged(reader=reader, state=state):
                before = self._registry.reader(reader)
                self._registry.set_reader_state(reader, state)
                # A card that another program held exclusively can be read now.
                if (
                    state is ReaderState.CARD_PRESENT
                    and before is not None
                    and before.state is ReaderState.EXCLUSIVELY_USED
                    and reader in self._atrs
                ):
                    self._start_identification(reader)

    def _forget_card(self, reader: str) -> None:
        self._generations[reader] = self._generations.get(reader, 0) + 1
        self._atrs.pop(reader, None)
        task = self._pending.pop(reader, None)
        if task is not None:
            task.cancel()

    def _start_identification(self, reader: str) -> asyncio.Task[None] | None:
        if reader in self._held:
            # A job holds the card in a transaction; it re-reads the card when it ends.
            return None
        generation = self._generations.get(reader, 0)
        task = self._spawn(self._identify_card(reader, generation))
        self._pending[reader] = task
        return task

    async def _identify_card(self, reader: str, generation: int) -> None:
        try:
            info = await self._read(reader)
        except CardRemovedError:
            logger.debug("card left %s while it was being read", reader)
            return
        except PcscUnavailableError as exc:
            logger.info("cannot read the card in %s: %s", reader, exc.message)
            return
        except TimeoutError:
            info = self._unreadable(reader, f"no answer within {self.identify_timeout:g} s")
        except EscdError as exc:
            info = self._unreadable(reader, exc.message)
        except Exception:
            logger.exception("reading the card in %s failed", reader)
            info = self._unreadable(reader, "internal error while reading the card")
        finally:
            if self._generations.get(reader) == generation:
                self._pending.pop(reader, None)
        if self._stopped or self._generations.get(reader) != generation:
            return
        record = self._registry.token_identified(info)
        logger.info(
            "token %s in %s: %s%s",
            record.token_id,
            reader,
            info.state.name.lower(),
            f" ({info.problem})" if info.problem else "",
            extra={"ESCD_TOKEN_CUID": info.cuid or "", "ESCD_READER": reader},
        )

    def _unreadable(self, reader: str, problem: str) -> TokenInfo:
        atr = self._atrs.get(reader, b"")
        return TokenInfo(reader=reader, atr=atr, state=TokenState.UNKNOWN, problem=problem)

    # -- application service ------------------------------------------------------------

    async def refresh_token(self, token_id: str) -> None:
        """Read a present token's card again (``Token.Refresh``)."""
        token = self._registry.token(token_id)
        reader = token.reader
        if reader in self._held:
            raise BusyError("a job is using this token; it is read again when the job ends")
        generation = self._generations.get(reader, 0)
        try:
            info = await self._read(reader)
        except TimeoutError:
            raise CardError(f"the card did not answer within {self.identify_timeout:g} s") from None
        if self._generations.get(reader) != generation:
            raise CardRemovedError("the card was removed while it was being read")
        self._registry.token_identified(info)

    async def _read(self, reader: str) -> TokenInfo:
        worker = self._worker(reader)
        async with asyncio.timeout(self.identify_timeout):
            return await worker.run(lambda: self._read_blocking(reader))

    def _worker(self, reader: str) -> _ReaderWorker:
        worker = self._workers.get(reader)
        if worker is None:
            worker = self._workers[reader] = _ReaderWorker(f"reader-{reader}")
        return worker

    # -- jobs (escd.operation.CardAccess) -------------------------------------------------

    @contextlib.asynccontextmanager
    async def hold(self, reader: str) -> AsyncIterator[HeldCard]:
        """The card in ``reader`` for a job: connected, in one transaction, until the end.

        Raises ``BusyError`` if another job holds it, and what connecting raises
        (``CardRemovedError``, ``CardError``, ``PcscUnavailableError``).
        """
        if self._stopped:
            raise CardError("escd is stopping")
        if reader in self._held:
            raise BusyError("another job is using the card in this reader")
        worker = self._worker(reader)
        held = HeldCard(worker, self._backend, reader)
        self._held.add(reader)
        try:
            try:
                # Another program's transaction makes SCardBeginTransaction wait.
                async with asyncio.timeout(self.identify_timeout):
                    await worker.run(held.open_blocking)
            except TimeoutError:
                raise CardError(
                    f"the card could not be held within {self.identify_timeout:g} s "
                    "(is another program using it?)"
                ) from None
            yield held
        finally:
            # Queued, not awaited: it must also happen while the job is being cancelled,
            # and it runs after whatever the job still had queued on this worker.
            worker.submit(held.release_blocking)
            self._held.discard(reader)

    async def reidentify(self, reader: str) -> None:
        """Read the card in ``reader`` again (after a job); nothing if it has gone."""
        if self._stopped or reader not in self._atrs:
            return
        task = self._pending.get(reader) or self._start_identification(reader)
        if task is not None:
            # ``wait``, not ``await``: cancelling the caller must not cancel the read.
            await asyncio.wait({task})

    def _read_blocking(self, reader: str) -> TokenInfo:
        """On the reader's worker thread: connect shared, one transaction, identify."""
        session = self._backend.connect(reader)
        try:
            session.begin_transaction()
            try:
                return self._identify(session, reader)
            finally:
                session.end_transaction()
        finally:
            session.close()


class HeldCard:
    """A card held by a job: its APDUs run on the reader's worker thread (``CardChannel``)."""

    def __init__(self, worker: _ReaderWorker, backend: ReaderBackend, reader: str) -> None:
        self._worker = worker
        self._backend = backend
        self._reader = reader
        #: Set and cleared on the worker thread only.
        self._session: CardSession | None = None

    async def exchange(self, apdu: bytes) -> bytes:
        return await self._worker.run(lambda: exchange(self._connected(), apdu))

    async def reset(self) -> None:
        await self._worker.run(lambda: self._connected().reset())

    def _connected(self) -> CardSession:
        if self._session is None:
            raise CardError("the card session is closed")
        return self._session

    def open_blocking(self) -> None:
        session = self._backend.connect(self._reader)
        try:
            session.begin_transaction()
        except BaseException:
            session.close()
            raise
        self._session = session

    def release_blocking(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            session.end_transaction()
        except EscdError as exc:
            # After a reset or a removal the transaction is already gone.
            logger.debug("ending the transaction in %s: %s", self._reader, exc.message)
        finally:
            session.close()
