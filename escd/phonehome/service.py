# SPDX-License-Identifier: GPL-2.0-or-later
"""Phone home as an application service: when to fetch, what to keep, what tokens show.

``PhoneHomeService`` follows the token registry. When a token with a CUID appears (or its
card's Phone Home URL changes) it runs, in a background task of its own, ESC's
``DoPhoneHome`` (ESC.js) with escd's rules:

1. The URL: an administrator's per-token URL, else the one on the card, else
   ``phone_home.global_url``, else the one the user gave for this token before, else
   (if ``phone_home.prompt_for_url`` and an agent can be asked) a new one from the user,
   remembered for the token. None at all: ``PhoneHomeState`` NoUrl.
2. A stored answer from that URL younger than ``phone_home.max_age`` is used as it is
   (``Fetched``, no request). Otherwise the answer is fetched (``Running``, then
   ``Fetched``) and stored with the time; if that fails, a stored answer is shown
   (``FromCache``), else ``Failed``. In a ``Token.PhoneHome`` job (``trust`` given), a
   server whose certificate is not trusted is shown to the user first, and fetched from
   once more if they pin it; the phone home on insertion never asks.
3. The effective values (``escd.phonehome.cache.effective``: admin values win over
   fetched ones, fetched ones over the configuration) go into the token's registry
   record, which the D-Bus ``Token`` object mirrors.

One run at a time per token (a per-token lock); a token leaving cancels its run. Every
network wait is bounded (``phone_home.timeout``, the agent's prompt timeout), file
writes run on worker threads, and nothing here blocks the reader monitor. It also owns
the administrator's per-token settings (``set_settings``) and answers which TPS URL and
token type an operation should use (``resolve_tps``).

Must not: log or record anything secret (there is none here: URLs, issuer names and
fingerprints only), open URLs by itself, or decide about trust (``escd.trust`` does).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from escd.config import Config
from escd.errors import (
    EscdError,
    NetworkError,
    NoSuchTokenError,
    PhoneHomeError,
    TlsUntrustedError,
)
from escd.events import EventKind, EventRing
from escd.model import PhoneHomeState
from escd.phonehome.cache import (
    ADMIN_FIELDS,
    EffectiveTokenInfo,
    Sourced,
    TokenRecord,
    TokenStore,
    ValueSource,
    check_token_id,
    effective,
    is_fresh,
    resolve_phone_home_url,
)
from escd.tokens import RegistryEvent, TokenAppeared, TokenChanged, TokenGone, TokenRegistry

if TYPE_CHECKING:
    import httpx

    from escd.phonehome.parser import PhoneHomeInfo

logger = logging.getLogger(__name__)

#: Asks a user (through an agent) for a token's Phone Home URL; "" when nobody answered.
AskUrl = Callable[[str], Awaitable[str]]
#: Asks a user (through an agent) to trust a server's certificate; True once it is pinned.
ConfirmTrust = Callable[[TlsUntrustedError], Awaitable[bool]]
#: Builds the HTTP client, once, when the first answer is fetched.
MakeClient = Callable[[], "httpx.AsyncClient"]
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


@dataclass(frozen=True, slots=True)
class PhoneHomeOutcome:
    """How one run ended: the state the token shows and the error behind a failure."""

    state: PhoneHomeState
    url: str = ""
    error: EscdError | None = None


@dataclass(frozen=True, slots=True)
class TpsTarget:
    """Where an operation on a token goes, and with which token type."""

    url: str
    url_source: ValueSource
    token_type: str
    token_type_source: ValueSource


def _now() -> datetime:
    return datetime.now(UTC)


class PhoneHomeService:
    """Runs phone home for present tokens and publishes the effective values."""

    def __init__(
        self,
        registry: TokenRegistry,
        store: TokenStore,
        config: Callable[[], Config],
        client: MakeClient,
        spawn: Spawn,
        ring: EventRing,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._registry = registry
        self._store = store
        self._config = config
        self._make_client = client
        self._client: httpx.AsyncClient | None = None
        self._spawn = spawn
        self._ring = ring
        self._clock = clock
        #: Asks an agent for a Phone Home URL on insertion; set once agents exist.
        self.ask_url: AskUrl | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: dict[str, asyncio.Task[None]] = {}
        self._unsubscribe: Callable[[], None] | None = None

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Follow the registry; tokens already present are handled as if just inserted."""
        self._unsubscribe = self._registry.subscribe(self._on_event)
        for token in self._registry.tokens():
            self._schedule(token.token_id)

    def stop(self) -> None:
        """Stop following the registry and cancel every background run."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in self._background.values():
            task.cancel()
        self._background.clear()

    async def aclose(self) -> None:
        self.stop()
        if self._client is not None:
            await self._client.aclose()

    def _on_event(self, event: RegistryEvent) -> None:
        match event:
            case TokenAppeared(token=token):
                self._schedule(token.token_id)
            case TokenChanged(token=token, changed=changed) if "info.phone_home_url" in changed:
                # A format or enroll wrote a new issuer info URL onto the card.
                self._schedule(token.token_id)
            case TokenGone(token=token):
                task = self._background.pop(token.token_id, None)
                if task is not None:
                    task.cancel()
                lock = self._locks.get(token.token_id)
                if lock is not None and not lock.locked():
                    del self._locks[token.token_id]

    def _schedule(self, token_id: str) -> None:
        running = self._background.get(token_id)
        if running is not None and not running.done():
            return
        self._background[token_id] = self._spawn(self._on_insertion(token_id))

    async def _on_insertion(self, token_id: str) -> None:
        try:
            token = self._registry.token(token_id)
            if not token.cuid:
                return  # ESC phones home only for tokens with a CUID (ESC.js DoPhoneHome).
            if not self._config().phone_home.enabled:
                record = await asyncio.to_thread(self._store.load, token_id)
                state = (
                    PhoneHomeState.FROM_CACHE if record.phone_home else PhoneHomeState.NOT_ATTEMPTED
                )
                self._publish(token_id, record, state)
                return
            await self.run(token_id, ask=self.ask_url)
        except NoSuchTokenError:
            pass  # it left before its turn
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not take the daemon down with it; the token shows Failed.
            logger.exception("phone home for %s failed unexpectedly", token_id)
            self._registry.update_token(token_id, phone_home_state=PhoneHomeState.FAILED)
        finally:
            current = self._background.get(token_id)
            if current is asyncio.current_task():
                del self._background[token_id]

    # -- one run ------------------------------------------------------------------------

    async def run(
        self,
        token_id: str,
        *,
        force: bool = False,
        url: str = "",
        ask: AskUrl | None = None,
        trust: ConfirmTrust | None = None,
    ) -> PhoneHomeOutcome:
        """Phone home for a present token now (``Token.PhoneHome`` and insertions).

        ``force`` ignores a fresh stored answer; ``url`` replaces the resolved Phone Home
        URL for this run (remembered for the token when it worked, as ESC's dialog did);
        ``ask`` is called when no URL is known; ``trust`` when a server's certificate is
        not trusted (the fetch is tried once more when it returns True). Waits for a run
        already going on for the token. Raises ``NoSuchTokenError``, and what ``trust``
        raises (an unanswered prompt); network and answer problems are reported in the
        outcome, not raised.
        """
        token_id = check_token_id(token_id)
        lock = self._locks.setdefault(token_id, asyncio.Lock())
        async with lock:
            return await self._run_locked(token_id, force=force, url=url, ask=ask, trust=trust)

    async def _run_locked(
        self,
        token_id: str,
        *,
        force: bool,
        url: str,
        ask: AskUrl | None,
        trust: ConfirmTrust | None,
    ) -> PhoneHomeOutcome:
        token = self._registry.token(token_id)
        config = self._config()
        settings = config.phone_home
        record = await asyncio.to_thread(self._store.load, token_id)
        given = url.strip()
        if given:
            chosen = Sourced(given, ValueSource.AGENT)
        else:
            chosen = resolve_phone_home_url(
                record, card_url=token.info.phone_home_url, config=settings
            )
        if not chosen.value and ask is not None and settings.prompt_for_url:
            answer = (await ask(token_id)).strip()
            if answer:
                record = await asyncio.to_thread(
                    self._store.set_agent_phone_home_url, token_id, answer
                )
                chosen = Sourced(answer, ValueSource.AGENT)
                self._event(token_id, "the user gave a Phone Home URL")
        if not chosen.value:
            state = PhoneHomeState.FROM_CACHE if record.phone_home else PhoneHomeState.NO_URL
            self._publish(token_id, record, state)
            logger.debug("token %s has no Phone Home URL", token_id, extra=_fields(token_id))
            self._event(token_id, "phone home: no Phone Home URL known")
            return PhoneHomeOutcome(state)
        now = self._clock()
        cached = record.phone_home
        if (
            not force
            and cached is not None
            and cached.source_url == chosen.value
            and is_fresh(cached, settings.max_age, now)
        ):
            self._publish(token_id, record, PhoneHomeState.FETCHED, chosen.value)
            logger.debug("phone home for %s: the stored answer is fresh", token_id)
            return PhoneHomeOutcome(PhoneHomeState.FETCHED, chosen.value)
        self._publish(token_id, record, PhoneHomeState.RUNNING, chosen.value)
        try:
            info = await self._fetch(chosen.value, token.cuid, config, trust)
        except (NetworkError, PhoneHomeError) as exc:
            state = PhoneHomeState.FROM_CACHE if cached is not None else PhoneHomeState.FAILED
            self._publish(token_id, record, state, chosen.value)
            shown = "using the stored answer" if cached is not None else "no stored answer"
            logger.warning(
                "phone home for %s to %s failed (%s): %s",
                token_id,
                chosen.value,
                shown,
                exc.message,
                extra=_fields(token_id),
            )
            self._event(token_id, f"phone home failed ({shown}): {exc.message}", error=True)
            return PhoneHomeOutcome(state, chosen.value, exc)
        except (EscdError, asyncio.CancelledError):
            # The trust prompt went unanswered, or the job was canceled while it waited:
            # the token must not stay Running.
            state = PhoneHomeState.FROM_CACHE if cached is not None else PhoneHomeState.FAILED
            self._publish(token_id, record, state, chosen.value)
            raise
        record = await asyncio.to_thread(
            self._store.save_fetched, token_id, info, self._clock(), chosen.value
        )
        if given and chosen.value != record.agent_phone_home_url:
            record = await self._remember_url(token_id, record, chosen.value)
        self._publish(token_id, record, PhoneHomeState.FETCHED, chosen.value)
        logger.info(
            "phone home for %s: issuer %r, TPS %s",
            token_id,
            info.issuer_name,
            info.tps_url or "(none)",
            extra=_fields(token_id),
        )
        self._event(
            token_id, f"phone home: issuer {info.issuer_name!r}, TPS {info.tps_url or '(none)'}"
        )
        return PhoneHomeOutcome(PhoneHomeState.FETCHED, chosen.value)

    async def _fetch(
        self, url: str, cuid: str, config: Config, trust: ConfirmTrust | None
    ) -> PhoneHomeInfo:
        # Imported here, not with this module: the HTTP client stack (httpx, ~2.5 MB and
        # ~40 ms to import) is needed only once an answer is fetched, which a daemon
        # whose tokens have no Phone Home URL, or fresh stored answers, never does.
        from escd.phonehome.client import fetch_service_info

        if self._client is None:
            self._client = self._make_client()
        client = self._client

        async def fetch() -> PhoneHomeInfo:
            return await fetch_service_info(
                url,
                cuid,
                client,
                max_size=config.phone_home.max_size,
                timeout=config.phone_home.timeout,
                allow_http=config.tps.allow_http,
            )

        try:
            return await fetch()
        except TlsUntrustedError as untrusted:
            if trust is None or not await trust(untrusted):
                raise
        # The certificate the user saw is pinned now (the client builds a new transport
        # for the new context): once more, verified against that pin, never asked again.
        return await fetch()

    async def _remember_url(self, token_id: str, record: TokenRecord, url: str) -> TokenRecord:
        # Only a URL that worked is remembered, and only where nothing better exists.
        token = self._registry.token(token_id)
        resolved = resolve_phone_home_url(
            record, card_url=token.info.phone_home_url, config=self._config().phone_home
        )
        if resolved.source not in (ValueSource.NONE, ValueSource.AGENT):
            return record
        try:
            return await asyncio.to_thread(self._store.set_agent_phone_home_url, token_id, url)
        except EscdError as exc:
            logger.warning("the Phone Home URL of %s was not remembered: %s", token_id, exc)
            return record

    # -- what the token shows -----------------------------------------------------------

    def effective_info(self, record: TokenRecord, card_url: str = "") -> EffectiveTokenInfo:
        config = self._config()
        return effective(
            record,
            card_url=card_url,
            config=config.phone_home,
            default_tps_url=config.tps.url,
            default_token_type=config.tps.token_type,
        )

    def _publish(
        self,
        token_id: str,
        record: TokenRecord,
        state: PhoneHomeState | None = None,
        url: str = "",
    ) -> None:
        try:
            token = self._registry.token(token_id)
        except NoSuchTokenError:
            return
        values = self.effective_info(record, token.info.phone_home_url)
        changes: dict[str, object] = {
            "issuer_name": values.issuer_name.value,
            "phone_home_url": url or values.phone_home_url.value,
            "tps_url": values.tps_url.value,
            "enrollment_ui_url": values.enrollment_ui_url.value,
            "enrolled_token_browser_url": values.enrolled_token_browser_url.value,
            "enrolled_token_url": values.enrolled_token_url.value,
            "ca_chain_url": values.ca_chain_url.value,
            "token_type": values.token_type.value,
        }
        if state is not None:
            changes["phone_home_state"] = state
        self._registry.update_token(token_id, **changes)

    async def refresh_values(self, token_id: str) -> None:
        """Show a present token's values again (settings or configuration changed)."""
        try:
            self._registry.token(token_id)
        except NoSuchTokenError:
            return
        record = await asyncio.to_thread(self._store.load, token_id)
        self._publish(token_id, record)

    async def configuration_changed(self, *, phone_home: bool = False) -> None:
        """The configuration was reloaded: defaults may differ for every present token.

        With ``phone_home`` (the ``phone_home`` section changed, e.g. a global URL was
        set) every present token phones home again as if inserted; a fresh stored
        answer from the same URL still means no request.
        """
        for token in self._registry.tokens():
            await self.refresh_values(token.token_id)
            if phone_home and token.cuid:
                self._schedule(token.token_id)

    # -- the administrator's settings --------------------------------------------------

    def get_settings(self, token_id: str) -> dict[str, str]:
        """The values set by hand for a token (present or not); ``""`` when unset."""
        return _settings(self._store.load(token_id))

    async def set_settings(self, token_id: str, values: Mapping[str, str]) -> dict[str, str]:
        """Set (``""`` clears) settings for a token; a present token shows them at once.

        A changed Phone Home URL is fetched from right away, as if the token was
        inserted again. Raises ``InvalidArgumentError`` and ``StateFileError``.
        """
        token_id = check_token_id(token_id)
        before = await asyncio.to_thread(self._store.load, token_id)
        after = await asyncio.to_thread(lambda: self._store.set_admin(token_id, **values))
        self._event(token_id, "settings changed by hand: " + ", ".join(sorted(values)))
        await self.refresh_values(token_id)
        if after.admin.phone_home_url != before.admin.phone_home_url:
            try:
                self._registry.token(token_id)
            except NoSuchTokenError:
                pass
            else:
                self._schedule(token_id)
        return _settings(after)

    # -- for operations -------------------------------------------------------------

    def resolve_tps(self, token_id: str, *, url: str = "", token_type: str = "") -> TpsTarget:
        """The TPS URL and token type for an operation on a token.

        URL: the caller's > the administrator's for this token > phone home's
        ``Operation`` > ``tps.url``. Token type: the caller's > phone home's
        ``TokenType`` > ``tps.token_type``. An empty URL means none is known.
        """
        values = self._effective(self._store.load(token_id))
        tps = Sourced(url, ValueSource.AGENT) if url else values.tps_url
        kind = Sourced(token_type, ValueSource.AGENT) if token_type else values.token_type
        return TpsTarget(tps.value, tps.source, kind.value, kind.source)

    # -- diagnostics ------------------------------------------------------------------

    def describe(self, token_id: str) -> dict[str, object]:
        """The stored and effective phone-home data of a token, with sources (no secrets)."""
        record = self._store.load(token_id)
        values = self._effective(record)
        data: dict[str, object] = {}
        for item in dataclasses.fields(values):
            value = getattr(values, item.name)
            if isinstance(value, Sourced):
                data[item.name] = {"value": value.value, "source": str(value.source)}
        cached = record.phone_home
        if cached is not None:
            data["cached"] = {
                "issuer_name": cached.info.issuer_name,
                "services": [{"name": n, "value": v} for n, v in cached.info.services],
                "fetched_at": cached.fetched_at.isoformat() if cached.fetched_at else "",
                "source_url": cached.source_url,
                "source": str(cached.source),
            }
        data["admin"] = {k: v for k, v in _settings(record).items() if v}
        return data

    def _effective(self, record: TokenRecord) -> EffectiveTokenInfo:
        """``effective_info`` for a stored token, with its card's URL if it is present."""
        card_url = ""
        try:
            card_url = self._registry.token(record.token_id).info.phone_home_url
        except NoSuchTokenError:
            pass
        return self.effective_info(record, card_url)

    def _event(self, token_id: str, message: str, *, error: bool = False) -> None:
        reader = ""
        try:
            reader = self._registry.token(token_id).reader
        except NoSuchTokenError:
            pass
        kind = EventKind.ERROR if error else EventKind.PHONE_HOME
        self._ring.record(kind, message, token_id=token_id, reader=reader)


def _settings(record: TokenRecord) -> dict[str, str]:
    """The values set by hand for a token, ``""`` for each one unset."""
    return {name: getattr(record.admin, name) or "" for name in ADMIN_FIELDS}


def _fields(token_id: str) -> dict[str, str]:
    return {"ESCD_TOKEN_CUID": token_id}
