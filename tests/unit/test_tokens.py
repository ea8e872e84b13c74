# SPDX-License-Identifier: GPL-2.0-or-later
"""The token registry: keyed by CUID, one token per reader, typed events in order."""

from __future__ import annotations

import pytest

from escd.errors import NoSuchTokenError
from escd.model import PhoneHomeState, TokenInfo, TokenState
from escd.readers import PcscState, ReaderState
from escd.tokens import (
    PcscStateChanged,
    ReaderAppeared,
    ReaderChanged,
    ReaderGone,
    RegistryEvent,
    TokenAppeared,
    TokenChanged,
    TokenGone,
    TokenRegistry,
)

CUID_A = "40906145c2f8a0120c3b"
CUID_B = "40906145c2f8a0120d77"
ATR = bytes.fromhex("3bff1400ff8131fe458025a00000005657534331")


def info(reader: str, cuid: str | None = CUID_A, **changes: object) -> TokenInfo:
    fields: dict[str, object] = {"state": TokenState.ENROLLED, "cuid": cuid}
    fields.update(changes)
    return TokenInfo(reader=reader, atr=ATR, **fields)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> TokenRegistry:
    return TokenRegistry()


@pytest.fixture
def events(registry: TokenRegistry) -> list[RegistryEvent]:
    seen: list[RegistryEvent] = []
    registry.subscribe(seen.append)
    return seen


def insert(registry: TokenRegistry, reader: str, token: TokenInfo) -> None:
    registry.card_inserted(reader)
    registry.token_identified(token)


def test_identified_card_becomes_a_token_announced_before_the_reader_points_at_it(
    registry: TokenRegistry, events: list[RegistryEvent]
) -> None:
    insert(registry, "R0", info("R0"))
    kinds = [type(event) for event in events]
    assert kinds == [ReaderAppeared, ReaderChanged, TokenAppeared, ReaderChanged]
    assert isinstance(events[-1], ReaderChanged)
    assert events[-1].changed == frozenset({"token_id"})
    assert registry.token(CUID_A).reader == "R0"
    reader = registry.reader("R0")
    assert reader is not None
    assert reader.token_id == CUID_A
    assert reader.state is ReaderState.CARD_PRESENT


def test_removal_drops_the_token_and_empties_the_reader(
    registry: TokenRegistry, events: list[RegistryEvent]
) -> None:
    insert(registry, "R0", info("R0"))
    events.clear()
    registry.card_removed("R0")
    assert [type(event) for event in events] == [ReaderChanged, TokenGone, ReaderChanged]
    assert registry.tokens() == []
    reader = registry.reader("R0")
    assert reader is not None
    assert (reader.state, reader.token_id) == (ReaderState.EMPTY, None)
    with pytest.raises(NoSuchTokenError):
        registry.token(CUID_A)


def test_the_same_card_in_another_reader_is_the_same_token(
    registry: TokenRegistry, events: list[RegistryEvent]
) -> None:
    insert(registry, "R0", info("R0"))
    registry.add_reader("R1")
    events.clear()
    insert(registry, "R1", info("R1"))
    assert len(registry.tokens()) == 1
    changes = [event for event in events if isinstance(event, TokenChanged)]
    assert len(changes) == 1
    assert {"reader", "info.reader"} <= changes[0].changed
    assert not any(isinstance(event, TokenAppeared | TokenGone) for event in events)
    old = registry.reader("R0")
    assert old is not None and old.token_id is None
    # The old reader's (late) removal must not take the token that moved away.
    registry.card_removed("R0")
    assert registry.token(CUID_A).reader == "R1"


def test_another_card_in_the_same_reader_replaces_the_token(
    registry: TokenRegistry, events: list[RegistryEvent]
) -> None:
    insert(registry, "R0", info("R0"))
    events.clear()
    insert(registry, "R0", info("R0", cuid=CUID_B))
    assert [token.token_id for token in registry.tokens()] == [CUID_B]
    assert any(isinstance(e, TokenGone) and e.token.token_id == CUID_A for e in events)
    assert any(isinstance(e, TokenAppeared) and e.token.token_id == CUID_B for e in events)


def test_refresh_reports_only_the_fields_that_changed(
    registry: TokenRegistry, events: list[RegistryEvent]
) -> None:
    insert(registry, "R0", info("R0", pin_tries_left=3))
    events.clear()
    registry.token_identified(info("R0", pin_tries_left=3))
    assert events == []
    registry.token_identified(info("R0", pin_tries_left=0, state=TokenState.UNINITIALIZED))
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, TokenChanged)
    assert event.changed == frozenset({"info.pin_tries_left", "info.state"})


def test_card_without_cuid_is_keyed_by_its_fallback_id(registry: TokenRegistry) -> None:
    token = info("R0", cuid=None, state=TokenState.UNKNOWN)
    insert(registry, "R0", token)
    (record,) = registry.tokens()
    assert record.token_id == token.token_id
    assert record.token_id.startswith("atr_")
    assert record.cuid == ""


def test_reader_numbers_are_stable_while_the_registry_lives(registry: TokenRegistry) -> None:
    registry.add_reader("R0")
    registry.add_reader("R1")
    registry.remove_reader("R0")
    registry.add_reader("R2")
    registry.add_reader("R0")
    assert {r.name: r.index for r in registry.readers()} == {"R0": 0, "R1": 1, "R2": 2}


def test_removing_a_reader_drops_its_token(
    registry: TokenRegistry, events: list[RegistryEvent]
) -> None:
    insert(registry, "R0", info("R0"))
    events.clear()
    registry.remove_reader("R0")
    assert [type(event) for event in events] == [ReaderChanged, TokenGone, ReaderGone]
    assert registry.readers() == [] and registry.tokens() == []


@pytest.mark.parametrize("state", [ReaderState.MUTE, ReaderState.UNKNOWN, ReaderState.EMPTY])
def test_a_reader_without_a_readable_card_holds_no_token(
    registry: TokenRegistry, state: ReaderState
) -> None:
    insert(registry, "R0", info("R0"))
    registry.set_reader_state("R0", state)
    assert registry.tokens() == []


def test_an_exclusively_used_reader_keeps_its_token(registry: TokenRegistry) -> None:
    insert(registry, "R0", info("R0"))
    registry.set_reader_state("R0", ReaderState.EXCLUSIVELY_USED)
    assert registry.token(CUID_A).reader == "R0"


def test_pcsc_state_is_published_once_per_change(
    registry: TokenRegistry, events: list[RegistryEvent]
) -> None:
    registry.set_pcsc_state(PcscState.OK)
    registry.set_pcsc_state(PcscState.OK)
    registry.set_pcsc_state(PcscState.SERVICE_UNAVAILABLE)
    assert events == [
        PcscStateChanged(PcscState.OK),
        PcscStateChanged(PcscState.SERVICE_UNAVAILABLE),
    ]
    assert registry.pcsc_state is PcscState.SERVICE_UNAVAILABLE


def test_clear_forgets_every_reader_and_token(registry: TokenRegistry) -> None:
    insert(registry, "R0", info("R0"))
    insert(registry, "R1", info("R1", cuid=CUID_B))
    registry.clear()
    assert registry.readers() == [] and registry.tokens() == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (CUID_A, CUID_A),
        (CUID_A.upper(), CUID_A),
        ("40906145c2f8a0120c", CUID_A),
        ("R1", CUID_B),
        ("40906145c2f8a0120d", CUID_B),
    ],
)
def test_find_accepts_cuid_unique_prefix_or_reader(
    registry: TokenRegistry, query: str, expected: str
) -> None:
    insert(registry, "R0", info("R0"))
    insert(registry, "R1", info("R1", cuid=CUID_B))
    assert registry.find(query).token_id == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [("40906145", "matches 2 tokens"), ("ffff", "no token matches"), ("", "2 tokens are present")],
)
def test_find_refuses_ambiguous_or_unknown_queries(
    registry: TokenRegistry, query: str, message: str
) -> None:
    insert(registry, "R0", info("R0"))
    insert(registry, "R1", info("R1", cuid=CUID_B))
    with pytest.raises(NoSuchTokenError, match=message):
        registry.find(query)


def test_find_without_query_takes_the_only_token(registry: TokenRegistry) -> None:
    with pytest.raises(NoSuchTokenError, match="no token is present"):
        registry.find("")
    insert(registry, "R0", info("R0"))
    assert registry.find("").token_id == CUID_A


def test_unsubscribed_callbacks_hear_nothing(registry: TokenRegistry) -> None:
    seen: list[RegistryEvent] = []
    unsubscribe = registry.subscribe(seen.append)
    unsubscribe()
    registry.add_reader("R0")
    assert seen == []


def test_update_token_publishes_only_real_changes_and_survives_a_reread(
    registry: TokenRegistry, events: list[RegistryEvent]
) -> None:
    insert(registry, "R0", info("R0"))
    events.clear()
    registry.update_token(
        CUID_A, issuer_name="Example Corp", phone_home_state=PhoneHomeState.FETCHED
    )
    registry.update_token(CUID_A, issuer_name="Example Corp")
    assert events == [
        TokenChanged(registry.token(CUID_A), frozenset({"issuer_name", "phone_home_state"}))
    ]
    registry.token_identified(info("R0", pin_tries_left=2))
    assert registry.token(CUID_A).issuer_name == "Example Corp"
    assert registry.update_token(CUID_B, issuer_name="x") is None
    with pytest.raises(ValueError, match="reader"):
        registry.update_token(CUID_A, reader="R1")
