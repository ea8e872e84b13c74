# SPDX-License-Identifier: GPL-2.0-or-later
"""The PC/SC reader monitor and backend against a real pcscd with vpcd readers.

Events are awaited with 5 s timeouts (pcscd polls vpcd every 400 ms), never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from escd.config import PcscConfig
from escd.pcsc.backend import PcscReaderBackend
from escd.pcsc.connection import PcscCardSession
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
from escd.sim.pcscd import PrivatePcscd
from escd.sim.vpcd import VpcdCard
from tests.support.recorder import TIMEOUT, Recorder


class BackendEvents(Recorder[ReaderEvent]):
    """Collects backend events on the loop and lets a test wait for one."""

    def __call__(self, event: ReaderEvent) -> None:
        self.add(event)

    async def wait_for_event(
        self, wanted: ReaderEvent | type, timeout: float = TIMEOUT, *, start: int = 0
    ) -> int:
        """Index of the first event from ``start`` on equal to ``wanted`` (or of that type)."""
        return await self.wait_for_index(
            lambda event: (
                event == wanted or (isinstance(wanted, type) and isinstance(event, wanted))
            ),
            start,
            timeout,
        )


@pytest.fixture
async def monitored(pcscd: PrivatePcscd) -> AsyncIterator[tuple[PcscReaderBackend, BackendEvents]]:
    pcscd.start()  # a previous test may have stopped it
    recorder = BackendEvents()
    config = PcscConfig(reconnect_initial_delay=0.05, reconnect_max_delay=0.2)
    backend = PcscReaderBackend(config, PcscCardSession.open)
    backend.start(recorder)
    yield backend, recorder
    backend.stop()


async def test_readers_are_reported_at_start_and_the_service_is_ok(
    pcscd: PrivatePcscd, monitored: tuple[PcscReaderBackend, BackendEvents]
) -> None:
    _backend, recorder = monitored
    await recorder.wait_for_event(ServiceStateChanged(PcscState.OK))
    for reader in pcscd.readers:
        await recorder.wait_for_event(ReaderAdded(reader))
        await recorder.wait_for_event(ReaderStateChanged(reader, ReaderState.EMPTY))


async def test_card_present_before_start_is_reported_as_inserted(
    pcscd: PrivatePcscd, vpcd_card: Callable[..., VpcdCard]
) -> None:
    card = vpcd_card(0)
    card.insert()
    assert card.seen.wait(TIMEOUT)
    recorder = BackendEvents()
    backend = PcscReaderBackend(PcscConfig(), PcscCardSession.open)
    backend.start(recorder)
    try:
        await recorder.wait_for_event(CardInserted(pcscd.readers[0], card.card.atr))
    finally:
        backend.stop()


async def test_insert_and_remove_in_two_readers(
    pcscd: PrivatePcscd,
    monitored: tuple[PcscReaderBackend, BackendEvents],
    vpcd_card: Callable[..., VpcdCard],
) -> None:
    _backend, recorder = monitored
    first, second = pcscd.readers
    await recorder.wait_for_event(ReaderStateChanged(second, ReaderState.EMPTY))
    card_a, card_b = vpcd_card(0), vpcd_card(1)
    card_a.insert()
    card_b.insert()
    await recorder.wait_for_event(CardInserted(first, card_a.card.atr))
    await recorder.wait_for_event(CardInserted(second, card_b.card.atr))
    mark = recorder.mark()
    card_a.remove()
    await recorder.wait_for_event(CardRemoved(first))
    assert CardRemoved(second) not in recorder.items[mark:]
    card_b.remove()
    await recorder.wait_for_event(CardRemoved(second))


async def test_a_connected_session_reads_the_card_in_shared_mode(
    pcscd: PrivatePcscd,
    monitored: tuple[PcscReaderBackend, BackendEvents],
    vpcd_card: Callable[..., VpcdCard],
) -> None:
    backend, recorder = monitored
    card = vpcd_card(0)
    card.insert()
    await recorder.wait_for_event(CardInserted(pcscd.readers[0], card.card.atr))

    def two_sessions() -> tuple[bytes, bytes]:
        # Shared mode: a second PC/SC user can connect while we hold a session.
        with (
            backend.connect(pcscd.readers[0]) as ours,
            PcscCardSession.open(pcscd.readers[0]) as theirs,
        ):
            ours.begin_transaction()
            ours.end_transaction()
            return ours.atr, theirs.atr

    ours, theirs = await asyncio.to_thread(two_sessions)
    assert ours == theirs == card.card.atr


async def test_pcscd_restart_reports_service_loss_and_brings_cards_back(
    pcscd: PrivatePcscd,
    monitored: tuple[PcscReaderBackend, BackendEvents],
    vpcd_card: Callable[..., VpcdCard],
) -> None:
    _backend, recorder = monitored
    reader = pcscd.readers[0]
    card = vpcd_card(0)
    card.insert()
    await recorder.wait_for_event(CardInserted(reader, card.card.atr))
    mark = recorder.mark()
    pcscd.kill()
    unavailable = ServiceStateChanged(PcscState.SERVICE_UNAVAILABLE)
    lost = await recorder.wait_for_event(unavailable, start=mark)
    gone = recorder.items[mark : lost + 1]
    assert CardRemoved(reader) in gone
    assert {ReaderRemoved(name) for name in pcscd.readers} <= set(gone)
    pcscd.start()
    card.remove()  # vpcd's side of the old connection died with pcscd: plug in again
    card.insert()
    back = await recorder.wait_for_event(ServiceStateChanged(PcscState.OK), start=lost)
    await recorder.wait_for_event(ReaderAdded(reader), start=back)
    await recorder.wait_for_event(CardInserted(reader, card.card.atr), start=back)


async def test_pcscd_absent_is_reported_and_stop_interrupts_the_back_off(
    pcscd: PrivatePcscd,
) -> None:
    pcscd.stop()
    try:
        recorder = BackendEvents()
        config = PcscConfig(reconnect_initial_delay=30.0, reconnect_max_delay=60.0)
        backend = PcscReaderBackend(config, PcscCardSession.open)
        backend.start(recorder)
        await recorder.wait_for_event(ServiceStateChanged(PcscState.SERVICE_UNAVAILABLE))
        started = time.monotonic()
        backend.stop()  # the monitor is in a 30 s back-off wait: stop must not wait it out
        assert time.monotonic() - started < 1.0
    finally:
        pcscd.start()


async def test_stop_ends_the_blocking_wait_promptly_and_silences_events(
    pcscd: PrivatePcscd,
    monitored: tuple[PcscReaderBackend, BackendEvents],
    vpcd_card: Callable[..., VpcdCard],
) -> None:
    backend, recorder = monitored
    await recorder.wait_for_event(ReaderStateChanged(pcscd.readers[1], ReaderState.EMPTY))
    started = time.monotonic()
    backend.stop()
    assert time.monotonic() - started < 1.0
    count = len(recorder.items)
    card = vpcd_card(1)
    card.insert()
    assert card.seen.wait(TIMEOUT)
    # pcscd has seen the card; give its state change time to reach a (dead) monitor.
    await asyncio.sleep(0.5)
    assert len(recorder.items) == count


def _context_switches(thread_id: int) -> int:
    status = Path(f"/proc/self/task/{thread_id}/status").read_text()
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(values["voluntary_ctxt_switches"]) + int(values["nonvoluntary_ctxt_switches"])


async def test_monitor_thread_does_not_wake_up_while_idle_with_a_card_in(
    pcscd: PrivatePcscd,
    monitored: tuple[PcscReaderBackend, BackendEvents],
    vpcd_card: Callable[..., VpcdCard],
) -> None:
    backend, recorder = monitored
    card = vpcd_card(0)
    card.insert()
    await recorder.wait_for_event(CardInserted(pcscd.readers[0], card.card.atr))
    monitor = backend._monitor
    assert monitor is not None and monitor._thread is not None
    thread_id = monitor._thread.native_id
    assert thread_id is not None
    # Let the thread finish reporting the insertion and block in its next wait; then
    # watch it for 2 s, during which pcscd polls the card 5 times.
    await asyncio.sleep(0.5)
    before = _context_switches(thread_id)
    await asyncio.sleep(2.0)
    assert _context_switches(thread_id) == before
