# SPDX-License-Identifier: GPL-2.0-or-later
"""The diagnostics event ring: bounded, ordered, fed by the registry."""

from __future__ import annotations

import itertools

from escd.events import EventKind, EventRing
from escd.model import TokenInfo, TokenState
from escd.readers import PcscState
from escd.tokens import TokenRegistry


def make_ring(size: int = 10) -> EventRing:
    ticks = itertools.count(1000)
    return EventRing(size, clock=lambda: float(next(ticks)))


def test_ring_keeps_the_newest_events_oldest_first() -> None:
    ring = make_ring(3)
    for n in range(5):
        ring.record(EventKind.DAEMON, f"event {n}")
    assert [r.message for r in ring.recent()] == ["event 2", "event 3", "event 4"]
    assert [r.message for r in ring.recent(2)] == ["event 3", "event 4"]
    assert [r.time for r in ring.recent()] == [1002.0, 1003.0, 1004.0]


def test_resize_keeps_the_newest() -> None:
    ring = make_ring(5)
    for n in range(5):
        ring.record(EventKind.DAEMON, f"event {n}")
    ring.resize(2)
    assert ring.size == 2
    assert [r.message for r in ring.recent()] == ["event 3", "event 4"]


def test_registry_events_become_insert_and_remove_records() -> None:
    ring = make_ring(50)
    registry = TokenRegistry()
    registry.subscribe(ring.observe)
    registry.set_pcsc_state(PcscState.OK)
    registry.card_inserted("R0")
    registry.token_identified(
        TokenInfo(reader="R0", atr=b"\x3b", state=TokenState.UNINITIALIZED, cuid="00" * 10)
    )
    registry.card_removed("R0")
    kinds = [record.kind for record in ring.recent()]
    assert kinds[0] is EventKind.PCSC
    assert EventKind.TOKEN_INSERTED in kinds
    assert kinds[-2:] == [EventKind.TOKEN_REMOVED, EventKind.READER_STATE]
    inserted = next(r for r in ring.recent() if r.kind is EventKind.TOKEN_INSERTED)
    assert (inserted.token_id, inserted.reader) == ("00" * 10, "R0")
    assert "uninitialized" in inserted.message
