# SPDX-License-Identifier: GPL-2.0-or-later
"""The token registry: which readers exist, which tokens are in them, and what changed.

Pure: no I/O, no threads, no asyncio. The reader watcher (``escd.cardwatch``) feeds it
reader events and identification results; the D-Bus service, diagnostics and sd_notify
status subscribe to its typed events. Records are frozen snapshots: a change replaces
the record and publishes an event naming the fields that changed.

Rules:

* Tokens are keyed by their id (the CUID, or ``fallback_token_id`` for cards without
  one). The same card seen in another reader is the same token: it moves, it is not
  duplicated.
* A token belongs to exactly one reader. A card leaving a reader drops the token that
  reader holds, and only that one.
* Every reader gets a small number when first seen, stable for the registry's lifetime
  (the D-Bus object path ``reader/<n>``), even if the reader goes and comes back.
* Subscribers are called synchronously, in subscription order, after the registry has
  changed; they must not raise (an exception propagates to whoever fed the event).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from escd.errors import NoSuchTokenError
from escd.model import PhoneHomeState, TokenInfo
from escd.readers import PcscState, ReaderState


@dataclass(frozen=True, slots=True)
class ReaderRecord:
    """One reader as escd knows it."""

    name: str
    index: int
    state: ReaderState = ReaderState.UNKNOWN
    token_id: str | None = None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One token present in a reader, with what phone home and the settings say about it.

    The phone-home fields hold the *effective* values (an administrator's setting wins
    over a fetched answer, which wins over the configuration); ``escd.phonehome.service``
    sets them with ``TokenRegistry.update_token``. They survive a re-read of the card.
    """

    token_id: str
    reader: str
    info: TokenInfo
    issuer_name: str = ""
    #: The Phone Home URL escd uses for the token (admin, card, global or agent's).
    phone_home_url: str = ""
    tps_url: str = ""
    enrollment_ui_url: str = ""
    enrolled_token_browser_url: str = ""
    enrolled_token_url: str = ""
    ca_chain_url: str = ""
    token_type: str = ""
    phone_home_state: PhoneHomeState = PhoneHomeState.NOT_ATTEMPTED

    @property
    def cuid(self) -> str:
        return self.info.cuid or ""


@dataclass(frozen=True, slots=True)
class PcscStateChanged:
    state: PcscState


@dataclass(frozen=True, slots=True)
class ReaderAppeared:
    reader: ReaderRecord


@dataclass(frozen=True, slots=True)
class ReaderChanged:
    reader: ReaderRecord
    changed: frozenset[str]


@dataclass(frozen=True, slots=True)
class ReaderGone:
    reader: ReaderRecord


@dataclass(frozen=True, slots=True)
class TokenAppeared:
    token: TokenRecord


@dataclass(frozen=True, slots=True)
class TokenChanged:
    """``changed`` names ``TokenRecord`` fields and, prefixed ``info.``, ``TokenInfo`` fields."""

    token: TokenRecord
    changed: frozenset[str]


@dataclass(frozen=True, slots=True)
class TokenGone:
    token: TokenRecord


RegistryEvent = (
    PcscStateChanged | ReaderAppeared | ReaderChanged | ReaderGone | TokenAppeared
    | TokenChanged | TokenGone
)  # fmt: skip

Subscriber = Callable[[RegistryEvent], None]

#: Reader states in which no token can be read (a mute card does not answer its ATR).
_NO_TOKEN_STATES = frozenset({ReaderState.UNKNOWN, ReaderState.EMPTY, ReaderState.MUTE})


class TokenRegistry:
    """Readers and tokens, with typed change events for subscribers."""

    def __init__(self) -> None:
        self._pcsc_state = PcscState.UNKNOWN
        self._readers: dict[str, ReaderRecord] = {}
        self._tokens: dict[str, TokenRecord] = {}
        self._indexes: dict[str, int] = {}
        self._subscribers: list[Subscriber] = []

    # -- subscription -------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` with every future event; returns the function that stops it."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def _publish(self, event: RegistryEvent) -> None:
        for subscriber in list(self._subscribers):
            subscriber(event)

    # -- queries --------------------------------------------------------------------

    @property
    def pcsc_state(self) -> PcscState:
        return self._pcsc_state

    def readers(self) -> list[ReaderRecord]:
        """Present readers, by index."""
        return sorted(self._readers.values(), key=lambda reader: reader.index)

    def reader(self, name: str) -> ReaderRecord | None:
        return self._readers.get(name)

    def tokens(self) -> list[TokenRecord]:
        """Present tokens, by reader index."""
        return sorted(self._tokens.values(), key=lambda token: self._indexes[token.reader])

    def token(self, token_id: str) -> TokenRecord:
        """The token with this id; raises ``NoSuchTokenError``."""
        try:
            return self._tokens[token_id]
        except KeyError:
            raise NoSuchTokenError(f"no token {token_id!r} is present") from None

    def token_in(self, reader: str) -> TokenRecord | None:
        record = self._readers.get(reader)
        if record is None or record.token_id is None:
            return None
        return self._tokens.get(record.token_id)

    def find(self, query: str) -> TokenRecord:
        """A token by id, unique id prefix (case-insensitive) or reader name.

        An empty query finds the only token when exactly one is present.
        """
        if not query:
            if len(self._tokens) == 1:
                return next(iter(self._tokens.values()))
            if not self._tokens:
                raise NoSuchTokenError("no token is present")
            raise NoSuchTokenError(f"{len(self._tokens)} tokens are present; name one")
        lowered = query.lower()
        if lowered in self._tokens:
            return self._tokens[lowered]
        by_reader = self.token_in(query)
        if by_reader is not None:
            return by_reader
        matches = [token for key, token in self._tokens.items() if key.startswith(lowered)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise NoSuchTokenError(f"{query!r} matches {len(matches)} tokens; give more digits")
        raise NoSuchTokenError(f"no token matches {query!r}")

    def reader_index(self, name: str) -> int:
        """The stable number of a reader seen at least once."""
        return self._indexes[name]

    # -- the PC/SC service ------------------------------------------------------------

    def set_pcsc_state(self, state: PcscState) -> None:
        if state == self._pcsc_state:
            return
        self._pcsc_state = state
        self._publish(PcscStateChanged(state))

    # -- readers --------------------------------------------------------------------

    def add_reader(self, name: str) -> ReaderRecord:
        """The reader's record; a reader not seen before is added and announced."""
        existing = self._readers.get(name)
        if existing is not None:
            return existing
        index = self._indexes.setdefault(name, len(self._indexes))
        record = ReaderRecord(name=name, index=index)
        self._readers[name] = record
        self._publish(ReaderAppeared(record))
        return record

    def remove_reader(self, name: str) -> None:
        """Forget a reader and drop the token in it."""
        record = self._readers.get(name)
        if record is None:
            return
        self._drop_token_in(name)
        record = self._readers.pop(name)
        self._publish(ReaderGone(record))

    def set_reader_state(self, name: str, state: ReaderState) -> None:
        """Record a reader's state; a reader without a readable card drops its token."""
        self.add_reader(name)
        if state in _NO_TOKEN_STATES:
            self._drop_token_in(name)
        self._set_state(name, state)

    def card_inserted(self, reader: str) -> None:
        """A card went in: whatever token the reader held before is gone."""
        self.add_reader(reader)
        self._drop_token_in(reader)
        self._set_state(reader, ReaderState.CARD_PRESENT)

    def card_removed(self, reader: str) -> None:
        self.set_reader_state(reader, ReaderState.EMPTY)

    def _set_state(self, name: str, state: ReaderState) -> None:
        self._replace_reader(dataclasses.replace(self._readers[name], state=state))

    def _set_token_id(self, name: str, token_id: str | None) -> None:
        self._replace_reader(dataclasses.replace(self._readers[name], token_id=token_id))

    def _replace_reader(self, new: ReaderRecord) -> None:
        changed = _changed_fields(self._readers[new.name], new)
        if changed:
            self._readers[new.name] = new
            self._publish(ReaderChanged(new, changed))

    # -- tokens ---------------------------------------------------------------------

    def token_identified(self, info: TokenInfo) -> TokenRecord:
        """Add or update the token read from ``info.reader``.

        A different token previously in that reader is dropped; the same token seen
        before in another reader moves here.
        """
        reader = info.reader
        self.add_reader(reader)
        token_id = info.token_id
        previous_here = self.token_in(reader)
        if previous_here is not None and previous_here.token_id != token_id:
            self._drop_token_in(reader)
        old = self._tokens.get(token_id)
        if old is not None and old.reader != reader and old.reader in self._readers:
            # The same card in another reader: the old reader no longer holds it.
            self._set_token_id(old.reader, None)
        if old is None:
            new = TokenRecord(token_id=token_id, reader=reader, info=info)
        else:
            # What escd learned about the token besides the card (phone home) stays.
            new = dataclasses.replace(old, reader=reader, info=info)
        self._tokens[token_id] = new
        # The token is announced before the reader points at it, so that a client
        # following Reader.Token never sees a path that does not exist yet.
        if old is None:
            self._publish(TokenAppeared(new))
        else:
            changed = _token_changes(old, new)
            if changed:
                self._publish(TokenChanged(new, changed))
        self._set_token_id(reader, token_id)
        return new

    def update_token(self, token_id: str, **changes: object) -> TokenRecord | None:
        """Change fields of a present token other than its id, reader and card info.

        Publishes ``TokenChanged`` naming the fields that really changed; returns the new
        record, or None when the token is not present (it left meanwhile).
        """
        old = self._tokens.get(token_id)
        if old is None:
            return None
        reserved = {"token_id", "reader", "info"} & set(changes)
        if reserved:
            raise ValueError(f"update_token cannot change {', '.join(sorted(reserved))}")
        new = dataclasses.replace(old, **changes)  # type: ignore[arg-type]
        changed = _changed_fields(old, new)
        if changed:
            self._tokens[token_id] = new
            self._publish(TokenChanged(new, changed))
        return new

    def _drop_token_in(self, reader: str) -> None:
        record = self._readers.get(reader)
        if record is None or record.token_id is None:
            return
        token = self._tokens.get(record.token_id)
        self._set_token_id(reader, None)
        if token is not None and token.reader == reader:
            del self._tokens[token.token_id]
            self._publish(TokenGone(token))

    def clear(self) -> None:
        """Forget every reader and token (pcscd went away)."""
        for name in [reader.name for reader in self.readers()]:
            self.remove_reader(name)


def _changed_fields(old: object, new: object) -> frozenset[str]:
    return frozenset(
        f.name
        for f in dataclasses.fields(old)  # type: ignore[arg-type]
        if getattr(old, f.name) != getattr(new, f.name)
    )


def _token_changes(old: TokenRecord, new: TokenRecord) -> frozenset[str]:
    changed = set(_changed_fields(old, new) - {"info"})
    changed.update(f"info.{name}" for name in _changed_fields(old.info, new.info))
    return frozenset(changed)
