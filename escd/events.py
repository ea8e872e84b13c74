# SPDX-License-Identifier: GPL-2.0-or-later
"""The in-memory ring of recent events (insertions, removals, results, errors) for diagnostics.

Pure: a bounded deque of frozen records and the translation of registry events into
them. The clock is injected. Nothing here is persisted, and a record never carries a
secret: messages are built from token ids, reader names and state names only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum, unique

from escd.model import enum_word
from escd.tokens import (
    PcscStateChanged,
    ReaderAppeared,
    ReaderChanged,
    ReaderGone,
    RegistryEvent,
    TokenAppeared,
    TokenChanged,
    TokenGone,
)


@unique
class EventKind(StrEnum):
    PCSC = "pcsc"
    READER_ADDED = "reader-added"
    READER_REMOVED = "reader-removed"
    READER_STATE = "reader-state"
    TOKEN_INSERTED = "token-inserted"  # noqa: S105 - not a password
    TOKEN_CHANGED = "token-changed"  # noqa: S105 - not a password
    TOKEN_REMOVED = "token-removed"  # noqa: S105 - not a password
    OPERATION = "operation"
    PHONE_HOME = "phone-home"
    TRUST = "trust"
    LEGACY_IMPORT = "legacy-import"
    LAUNCH = "launch"
    NOTIFICATION = "notification"
    CRYPTO = "crypto"
    ERROR = "error"
    CONFIG = "config"
    DAEMON = "daemon"


@dataclass(frozen=True, slots=True)
class EventRecord:
    time: float  # seconds since the epoch
    kind: EventKind
    message: str
    token_id: str = ""
    reader: str = ""


class EventRing:
    """The last ``size`` events, oldest first."""

    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._records: deque[EventRecord] = deque(maxlen=size)

    @property
    def size(self) -> int:
        return self._records.maxlen or 0

    def resize(self, size: int) -> None:
        if size != self.size:
            self._records = deque(self._records, maxlen=size)

    def record(
        self, kind: EventKind, message: str, *, token_id: str = "", reader: str = ""
    ) -> EventRecord:
        entry = EventRecord(self._clock(), kind, message, token_id, reader)
        self._records.append(entry)
        return entry

    def recent(self, limit: int | None = None) -> list[EventRecord]:
        """The newest ``limit`` records (all when ``None``), oldest first."""
        records = list(self._records)
        return records if limit is None else records[max(0, len(records) - limit) :]

    def observe(self, event: RegistryEvent) -> None:
        """Registry subscriber: keep the events a support engineer would ask about."""
        match event:
            case PcscStateChanged(state=state):
                self.record(EventKind.PCSC, f"PC/SC service: {enum_word(state)}")
            case ReaderAppeared(reader=reader):
                self.record(EventKind.READER_ADDED, "reader added", reader=reader.name)
            case ReaderGone(reader=reader):
                self.record(EventKind.READER_REMOVED, "reader removed", reader=reader.name)
            case ReaderChanged(reader=reader, changed=changed) if "state" in changed:
                self.record(
                    EventKind.READER_STATE,
                    f"reader state: {enum_word(reader.state)}",
                    reader=reader.name,
                )
            case TokenAppeared(token=token):
                info = token.info
                text = f"token inserted: {enum_word(info.state)}"
                if info.problem:
                    text += f" ({info.problem})"
                self.record(
                    EventKind.TOKEN_INSERTED, text, token_id=token.token_id, reader=token.reader
                )
            case TokenChanged(token=token, changed=changed):
                self.record(
                    EventKind.TOKEN_CHANGED,
                    "token changed: " + ", ".join(sorted(changed)),
                    token_id=token.token_id,
                    reader=token.reader,
                )
            case TokenGone(token=token):
                self.record(
                    EventKind.TOKEN_REMOVED,
                    "token removed",
                    token_id=token.token_id,
                    reader=token.reader,
                )
            case _:
                pass
