# SPDX-License-Identifier: GPL-2.0-or-later
"""Per-token settings and the phone-home cache, one JSON file per token.

Owns ``state_dir()/tokens/<token id>.json`` (the token id is the lower-case CUID). Each
file holds three separate things, never mixed:

* ``admin``: values an administrator set by hand for this token (TPS URL, enrollment
  UI URL, issuer name, Phone Home URL, enrolled-token URLs; ESC manual §3.3.3). They win
  over anything fetched and escd itself never changes them.
* ``agent_phone_home_url``: the Phone Home URL a user typed when asked (ESC's dialog,
  ESC.js ``DoPhoneHome``), remembered so they are asked once. Not an admin value: a
  URL on the card or a configured global URL comes first.
* ``phone_home``: the last phone-home answer, when it was fetched and from where, used
  while fresh and as a fallback when the server cannot be reached.

One file per token keeps a damaged file from costing more than that token's cache.
Files are written atomically (``escd.statefile``); a corrupt one is set aside at load
with a warning and the token starts empty. ``effective`` merges the three with the
configuration into what the D-Bus ``Token`` properties show, and says where each value
came from.

Rules: no network here and no decisions about when to phone home beyond ``is_fresh``;
methods block briefly on fsync and are safe to call from worker threads.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum, unique
from pathlib import Path

from escd.config import PhoneHomeConfig, state_dir
from escd.errors import InvalidArgumentError, PhoneHomeError, StateFileError
from escd.phonehome.parser import PhoneHomeInfo, build_info, url_problem
from escd.statefile import (
    BeforeReplace,
    read_json,
    remove_stale_temp_files,
    set_aside,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

_SCHEMA_VERSION = 1
# CUIDs are 20 hex digits; cards without one get ``atr_<hash>_<hash>`` (escd.model).
_TOKEN_ID = re.compile(r"[0-9a-z_]{1,64}")


@unique
class RecordSource(StrEnum):
    """How a cached phone-home answer got here."""

    FETCHED = "fetched"
    LEGACY_IMPORT = "legacy-import"


@unique
class ValueSource(StrEnum):
    """Where an effective value came from (shown by diagnostics and ``escctl``)."""

    ADMIN = "admin"
    PHONE_HOME = "phone-home"
    CARD = "card"
    CONFIG = "config"
    AGENT = "agent"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class PhoneHomeRecord:
    """A phone-home answer with its provenance."""

    info: PhoneHomeInfo
    #: When it was fetched (aware, UTC); None when unknown (imported from ESC): never fresh.
    fetched_at: datetime | None
    #: The Phone Home URL it came from, without the ``cuid`` query.
    source_url: str
    source: RecordSource = RecordSource.FETCHED


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """Values an administrator set by hand for one token; each wins over phone home."""

    tps_url: str | None = None
    enrollment_ui_url: str | None = None
    issuer_name: str | None = None
    phone_home_url: str | None = None
    enrolled_token_browser_url: str | None = None
    enrolled_token_url: str | None = None


ADMIN_FIELDS = tuple(f.name for f in dataclasses.fields(TokenSettings))
_ADMIN_URL_FIELDS = frozenset(ADMIN_FIELDS) - {"issuer_name"}


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """Everything stored for one token."""

    token_id: str
    admin: TokenSettings = TokenSettings()
    agent_phone_home_url: str | None = None
    phone_home: PhoneHomeRecord | None = None


_Change = Callable[[TokenRecord], TokenRecord]


@dataclass(frozen=True, slots=True)
class Sourced:
    """A value and where it came from; ``""`` with ``NONE`` when nothing is known."""

    value: str = ""
    source: ValueSource = ValueSource.NONE


@dataclass(frozen=True, slots=True)
class EffectiveTokenInfo:
    """What escd uses for a token after merging admin values, phone home and config."""

    token_id: str
    issuer_name: Sourced
    phone_home_url: Sourced
    tps_url: Sourced
    enrollment_ui_url: Sourced
    enrolled_token_browser_url: Sourced
    enrolled_token_url: Sourced
    ca_chain_url: Sourced
    token_type: Sourced
    #: The cached answer behind the PHONE_HOME values, if any.
    phone_home: PhoneHomeRecord | None


def is_fresh(record: PhoneHomeRecord | None, max_age: float, now: datetime) -> bool:
    """True if ``record`` was fetched at most ``max_age`` seconds before ``now``.

    An answer with an unknown fetch time, or one from the future (the clock was set
    back), is stale: re-fetching costs one request, trusting it could cost days.
    """
    if record is None or record.fetched_at is None:
        return False
    age = now - record.fetched_at
    return timedelta(0) <= age <= timedelta(seconds=max_age)


def resolve_phone_home_url(
    record: TokenRecord, *, card_url: str = "", config: PhoneHomeConfig | None = None
) -> Sourced:
    """The Phone Home URL to use: admin → card → configured global → remembered from the agent.

    ESC's order is card, then ``esc.global.phone.home.url``, then the dialog (ESC.js
    ``DoPhoneHome``); an administrator's per-token URL overrides all of them (ESC manual
    §3.3.3).
    """
    config = config or PhoneHomeConfig()
    if record.admin.phone_home_url:
        return Sourced(record.admin.phone_home_url, ValueSource.ADMIN)
    if card_url and config.use_token_url:
        return Sourced(card_url, ValueSource.CARD)
    if config.global_url:
        return Sourced(config.global_url, ValueSource.CONFIG)
    if record.agent_phone_home_url:
        return Sourced(record.agent_phone_home_url, ValueSource.AGENT)
    return Sourced()


def effective(
    record: TokenRecord,
    *,
    card_url: str = "",
    config: PhoneHomeConfig | None = None,
    default_tps_url: str = "",
    default_token_type: str = "",
) -> EffectiveTokenInfo:
    """Merge a token's record with the configuration (admin values always win)."""
    admin = record.admin
    info = record.phone_home.info if record.phone_home is not None else None

    def pick(admin_value: str | None, fetched: str | None, default: str = "") -> Sourced:
        if admin_value:
            return Sourced(admin_value, ValueSource.ADMIN)
        if fetched:
            return Sourced(fetched, ValueSource.PHONE_HOME)
        if default:
            return Sourced(default, ValueSource.CONFIG)
        return Sourced()

    return EffectiveTokenInfo(
        token_id=record.token_id,
        issuer_name=pick(admin.issuer_name, info.issuer_name if info else None),
        phone_home_url=resolve_phone_home_url(record, card_url=card_url, config=config),
        tps_url=pick(admin.tps_url, info.tps_url if info else None, default_tps_url),
        enrollment_ui_url=pick(admin.enrollment_ui_url, info.enrollment_ui_url if info else None),
        enrolled_token_browser_url=pick(
            admin.enrolled_token_browser_url, info.enrolled_token_browser_url if info else None
        ),
        enrolled_token_url=pick(
            admin.enrolled_token_url, info.enrolled_token_url if info else None
        ),
        ca_chain_url=pick(None, info.ca_chain_url if info else None),
        token_type=pick(None, info.token_type if info else None, default_token_type),
        phone_home=record.phone_home,
    )


def check_token_id(token_id: str) -> str:
    """The lower-case token id, or ``InvalidArgumentError`` if it cannot name a file."""
    normalized = token_id.strip().lower()
    if not _TOKEN_ID.fullmatch(normalized):
        raise InvalidArgumentError(f"{token_id!r} is not a token id (a CUID of 20 hex digits)")
    return normalized


class TokenStore:
    """The per-token files in one directory."""

    def __init__(self, directory: Path, *, before_replace: BeforeReplace | None = None) -> None:
        self.directory = directory
        # Only tests pass this: it runs between writing a file and renaming it into place.
        self._before_replace = before_replace
        # One read-modify-write at a time, so two updates to one token cannot lose either.
        self._lock = threading.Lock()

    @classmethod
    def in_state_dir(cls, state: Path | None = None) -> TokenStore:
        return cls((state or state_dir()) / "tokens")

    def recover(self) -> list[str]:
        """At start-up: drop unfinished writes, set corrupt files aside; the stored token ids."""
        if not self.directory.is_dir():
            return []
        with self._lock:
            remove_stale_temp_files(self.directory)
            ids = []
            for path in sorted(self.directory.glob("*.json")):
                if _TOKEN_ID.fullmatch(path.stem) and self._read(path.stem) is not None:
                    ids.append(path.stem)
            return ids

    def known_tokens(self) -> list[str]:
        """Ids of the tokens that have a file."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if _TOKEN_ID.fullmatch(p.stem))

    def load(self, token_id: str) -> TokenRecord:
        """The stored record, or an empty one (also when the file was corrupt)."""
        token_id = check_token_id(token_id)
        with self._lock:
            return self._read(token_id) or TokenRecord(token_id)

    def effective(
        self,
        token_id: str,
        *,
        card_url: str = "",
        config: PhoneHomeConfig | None = None,
        default_tps_url: str = "",
        default_token_type: str = "",
    ) -> EffectiveTokenInfo:
        """``effective`` over the stored record."""
        return effective(
            self.load(token_id),
            card_url=card_url,
            config=config,
            default_tps_url=default_tps_url,
            default_token_type=default_token_type,
        )

    def save_fetched(
        self, token_id: str, info: PhoneHomeInfo, now: datetime, source_url: str = ""
    ) -> TokenRecord:
        """Remember a fresh phone-home answer; admin values are left as they are.

        A failed write (full disk) is logged and the previous file stays; the record
        is returned either way, because the answer itself is good.
        """
        record = PhoneHomeRecord(info, now, source_url, RecordSource.FETCHED)
        try:
            return self.put_phone_home(token_id, record)
        except StateFileError:
            logger.warning("the phone-home answer for %s was not saved", token_id)
            return dataclasses.replace(self.load(token_id), phone_home=record)

    def put_phone_home(self, token_id: str, record: PhoneHomeRecord | None) -> TokenRecord:
        """Store (or with None, forget) the cached answer; raises ``StateFileError``."""
        return self._update(
            token_id, lambda current: dataclasses.replace(current, phone_home=record)
        )

    def set_admin(self, token_id: str, **values: str | None) -> TokenRecord:
        """Set or (with ``""``/None) clear admin values; other values are kept.

        Raises ``InvalidArgumentError`` for an unknown name or an unusable URL, and
        ``StateFileError`` when the file cannot be written.
        """
        unknown = sorted(set(values) - set(ADMIN_FIELDS))
        if unknown:
            raise InvalidArgumentError(
                f"unknown token setting {', '.join(unknown)}; known: {', '.join(ADMIN_FIELDS)}"
            )
        cleaned: dict[str, str | None] = {}
        for name, value in values.items():
            text = value.strip() if value else ""
            if text and name in _ADMIN_URL_FIELDS:
                why = url_problem(text)
                if why is not None:
                    raise InvalidArgumentError(f"{name}: {why}")
            cleaned[name] = text or None

        def change(current: TokenRecord) -> TokenRecord:
            return dataclasses.replace(current, admin=dataclasses.replace(current.admin, **cleaned))

        record = self._update(token_id, change)
        logger.info("token %s: settings %s changed by hand", record.token_id, ", ".join(cleaned))
        return record

    def set_agent_phone_home_url(self, token_id: str, url: str | None) -> TokenRecord:
        """Remember (or forget) the Phone Home URL the user gave for this token."""
        text = url.strip() if url else ""
        if text:
            why = url_problem(text)
            if why is not None:
                raise InvalidArgumentError(f"Phone Home URL: {why}")
        return self._update(
            token_id,
            lambda current: dataclasses.replace(current, agent_phone_home_url=text or None),
        )

    # -- file format ----------------------------------------------------------------

    def _path(self, token_id: str) -> Path:
        return self.directory / f"{token_id}.json"

    def _update(self, token_id: str, change: _Change) -> TokenRecord:
        token_id = check_token_id(token_id)
        with self._lock:
            current = self._read(token_id) or TokenRecord(token_id)
            updated = change(current)
            if updated != current:
                write_json_atomic(
                    self._path(token_id), _to_json(updated), before_replace=self._before_replace
                )
            return updated

    def _read(self, token_id: str) -> TokenRecord | None:
        path = self._path(token_id)
        data = read_json(path)
        if data is None:
            return None
        try:
            return _from_json(token_id, data)
        except _CorruptError as exc:
            set_aside(path, str(exc))
            return None


class _CorruptError(Exception):
    pass


def _to_json(record: TokenRecord) -> dict[str, object]:
    data: dict[str, object] = {"version": _SCHEMA_VERSION, "token": record.token_id}
    admin = {name: getattr(record.admin, name) for name in ADMIN_FIELDS}
    data["admin"] = {name: value for name, value in admin.items() if value}
    if record.agent_phone_home_url:
        data["agent_phone_home_url"] = record.agent_phone_home_url
    ph = record.phone_home
    if ph is not None:
        data["phone_home"] = {
            "issuer_name": ph.info.issuer_name,
            "services": [[name, text] for name, text in ph.info.services],
            "fetched_at": ph.fetched_at.isoformat() if ph.fetched_at else None,
            "source_url": ph.source_url,
            "source": ph.source.value,
        }
    return data


def _from_json(token_id: str, data: dict[str, object]) -> TokenRecord:
    if data.get("version") != _SCHEMA_VERSION:
        raise _CorruptError(f"unknown format version {data.get('version')!r}")
    if data.get("token") != token_id:
        raise _CorruptError("the file names another token")
    admin_data = data.get("admin", {})
    if not isinstance(admin_data, dict):
        raise _CorruptError("'admin' is not an object")
    admin_values: dict[str, str] = {}
    for name, value in admin_data.items():
        if name not in ADMIN_FIELDS:
            raise _CorruptError(f"unknown admin setting {name!r}")
        if not isinstance(value, str):
            raise _CorruptError(f"admin setting {name!r} is not a string")
        if name in _ADMIN_URL_FIELDS and url_problem(value) is not None:
            raise _CorruptError(f"admin setting {name!r} is not a usable URL")
        admin_values[name] = value
    agent_url = data.get("agent_phone_home_url")
    if agent_url is not None and (not isinstance(agent_url, str) or url_problem(agent_url)):
        raise _CorruptError("'agent_phone_home_url' is not a usable URL")
    return TokenRecord(
        token_id=token_id,
        admin=TokenSettings(**admin_values),
        agent_phone_home_url=agent_url,
        phone_home=_record_from_json(token_id, data.get("phone_home")),
    )


def _record_from_json(token_id: str, raw: object) -> PhoneHomeRecord | None:
    # A cached answer that no longer passes the parser's rules is dropped on its own:
    # it is refetchable, unlike the admin values in the same file.
    if raw is None:
        return None
    try:
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        services = raw.get("services")
        issuer = raw.get("issuer_name")
        fetched = raw.get("fetched_at")
        source_url = raw.get("source_url", "")
        if not isinstance(services, list) or not isinstance(issuer, str):
            raise ValueError("services or issuer missing")
        pairs = []
        for item in services:
            if not (
                isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
            ):
                raise ValueError("a service entry is malformed")
            pairs.append((item[0], item[1]))
        fetched_at = None
        if fetched is not None:
            if not isinstance(fetched, str):
                raise ValueError("fetched_at is not a string")
            fetched_at = datetime.fromisoformat(fetched)
            if fetched_at.tzinfo is None:
                raise ValueError("fetched_at has no time zone")
        if not isinstance(source_url, str):
            raise ValueError("source_url is not a string")
        source = RecordSource(raw.get("source", RecordSource.FETCHED.value))
        info = build_info(issuer, pairs)
    except (ValueError, PhoneHomeError) as exc:
        logger.warning("dropping the cached phone-home answer of %s: %s", token_id, exc)
        return None
    return PhoneHomeRecord(info, fetched_at, source_url, source)
