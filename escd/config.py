# SPDX-License-Identifier: GPL-2.0-or-later
"""The configuration model: frozen dataclasses, validated once, with errors naming the key.

Pure except ``load_config``/``config_paths``, which read the files. Every key has a
default and a doc string in its field metadata; ``config/escd.yaml`` and
``docs/configuration.md`` are checked against these in the tests. Nothing else in escd
reads configuration files: the daemon hands ``Config`` objects to whoever needs them.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from escd.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/escd/config.yaml")


def _doc(text: str, *, esc: str = "", minimum: float | None = None) -> dict[str, Any]:
    return {"doc": text, "esc": esc, "min": minimum}


class LogLevel(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"
    TRAFFIC = "traffic"


class LogTarget(enum.StrEnum):
    AUTO = "auto"
    STDERR = "stderr"
    JOURNAL = "journal"


class AutoLaunchPolicy(enum.StrEnum):
    """When an inserted token should lead the user to enrollment (``Manager.AutoLaunchPolicy``)."""

    NEVER = "never"
    UNINITIALIZED = "uninitialized"
    UNINITIALIZED_OR_NO_APPLET = "uninitialized-or-no-applet"
    ALWAYS = "always"

    @property
    def dbus_value(self) -> int:
        return list(AutoLaunchPolicy).index(self)


class Switch(enum.StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: LogLevel = field(
        default=LogLevel.INFO,
        metadata=_doc("Log level: error, warning, info, debug or traffic (APDU headers)."),
    )
    target: LogTarget = field(
        default=LogTarget.AUTO,
        metadata=_doc(
            "Where logs go: auto (journald under systemd, else stderr), stderr or journal."
        ),
    )


@dataclass(frozen=True, slots=True)
class PcscConfig:
    reconnect_initial_delay: float = field(
        default=0.5,
        metadata=_doc("Seconds before the first reconnect when pcscd goes away.", minimum=0.01),
    )
    reconnect_max_delay: float = field(
        default=30.0,
        metadata=_doc("Upper bound of the reconnect back-off, in seconds.", minimum=0.1),
    )
    identify_timeout: float = field(
        default=10.0,
        metadata=_doc("Seconds allowed to read a newly inserted card.", minimum=0.1),
    )


@dataclass(frozen=True, slots=True)
class TpsConfig:
    url: str = field(
        default="",
        metadata=_doc(
            "TPS URL used when phone home gives none (e.g. https://tps.example.com:8443/tps/tps).",
            esc="esc.tps.url",
        ),
    )
    message_timeout: float = field(
        default=90.0,
        metadata=_doc(
            "Longest wait for the next TPS message, in seconds.",
            esc="esc.tps.message.timeout",
            minimum=1,
        ),
    )
    connect_timeout: float = field(
        default=30.0,
        metadata=_doc("Seconds allowed to connect to the TPS (TCP and TLS).", minimum=0.1),
    )
    allow_http: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Origins (http://host[:port]) that may be used over plain http for TPS and phone "
            "home. Everything else must be https."
        ),
    )
    token_type: str = field(
        default="userKey",
        metadata=_doc("Token type (TPS profile) sent with enroll and format when none is known."),
    )
    locale: str = field(
        default="",
        metadata=_doc(
            "Locale sent to the TPS for its login texts; empty sends none (the TPS uses en)."
        ),
    )


@dataclass(frozen=True, slots=True)
class PhoneHomeConfig:
    enabled: bool = field(default=True, metadata=_doc("Phone home when a token is inserted."))
    global_url: str = field(
        default="",
        metadata=_doc(
            "Phone Home URL for tokens that carry none. Setting it forces every such token to "
            "the one TPS it names.",
            esc="esc.global.phone.home.url",
        ),
    )
    use_token_url: bool = field(
        default=True,
        metadata=_doc(
            "Use the Phone Home URL stored on the token (false ignores it).",
            esc="esc.ignore.key.issuer.info (inverted)",
        ),
    )
    max_age: float = field(
        default=86400.0,
        metadata=_doc(
            "Seconds a phone-home answer stays fresh; older ones are re-fetched.", minimum=0
        ),
    )
    timeout: float = field(
        default=10.0, metadata=_doc("Seconds allowed for one phone-home request.", minimum=0.1)
    )
    max_size: int = field(
        default=65536,
        metadata=_doc("Largest phone-home answer accepted, in bytes.", minimum=256),
    )
    prompt_for_url: bool = field(
        default=True,
        metadata=_doc("Ask the agent for a Phone Home URL when a token has none and none is set."),
    )


@dataclass(frozen=True, slots=True)
class TrustConfig:
    system_cas: bool = field(
        default=True, metadata=_doc("Trust the system's CA certificates for TPS and phone home.")
    )
    shared_dir: str = field(
        default="",
        metadata=_doc(
            "A system-wide directory of extra trusted CA certificates (PEM or DER files), "
            "shared by all users.",
            esc="esc.global.alt.nss.db",
        ),
    )


@dataclass(frozen=True, slots=True)
class AgentConfig:
    prompt_timeout: float = field(
        default=60.0,
        metadata=_doc(
            "Seconds an agent has to answer a prompt. Keep it below ~75: a TPS drops the "
            "connection after about 80 s without client data.",
            minimum=1,
        ),
    )


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    hide_format: bool = field(
        default=False,
        metadata=_doc("Frontends should not offer Format (Manager.Policy).", esc="esc.hide.format"),
    )
    deny_format: bool = field(
        default=False, metadata=_doc("Refuse Format requests (Error.NotSupported).")
    )
    require_pin_for_certificates: bool = field(
        default=False,
        metadata=_doc(
            "Frontends should ask for the token PIN before showing certificates.",
            esc="esc.disable.password.prompt = no",
        ),
    )


@dataclass(frozen=True, slots=True)
class JobsConfig:
    keep_finished: float = field(
        default=60.0,
        metadata=_doc("Seconds a finished job stays on the bus for late readers.", minimum=0),
    )
    cancel_on_client_vanish: bool = field(
        default=True,
        metadata=_doc("Cancel a job when the bus client that started it disconnects."),
    )


@dataclass(frozen=True, slots=True)
class AutoLaunchConfig:
    policy: AutoLaunchPolicy = field(
        default=AutoLaunchPolicy.NEVER,
        metadata=_doc(
            "When an inserted token leads to enrollment: never, uninitialized, "
            "uninitialized-or-no-applet, always."
        ),
    )
    desktop_app: str = field(
        default="",
        metadata=_doc(
            "D-Bus name of a desktop application to activate "
            "(org.freedesktop.Application.ActivateAction 'enroll')."
        ),
    )
    command: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Command (argument list) run on a suggested enrollment; gets ESCD_TOKEN_CUID, "
            "ESCD_TOKEN_STATE and ESCD_READER in its environment."
        ),
    )
    open_enrollment_ui: bool = field(
        default=False,
        metadata=_doc("Open the enrollment UI URL from phone home with the desktop's URL handler."),
    )
    min_interval: float = field(
        default=10.0,
        metadata=_doc("Least number of seconds between two launches for one token.", minimum=0),
    )
    command_timeout: float = field(
        default=30.0,
        metadata=_doc(
            "Seconds the command (or the URL opener) may run before it is killed with its "
            "process group; a command that starts a GUI must start it in the background.",
            minimum=0.1,
        ),
    )
    open_enrolled_token_url: bool = field(
        default=False,
        metadata=_doc(
            "Open the enrolled-token browser URL from phone home when an enrolled token is "
            "inserted.",
            esc="esc.ignore.token.browser.url = no",
        ),
    )


@dataclass(frozen=True, slots=True)
class NotificationsConfig:
    enabled: Switch = field(
        default=Switch.AUTO,
        metadata=_doc(
            "Desktop notifications: auto (when a notification server is present), on or off."
        ),
    )


@dataclass(frozen=True, slots=True)
class DiagnosticsConfig:
    event_ring_size: int = field(
        default=500,
        metadata=_doc("How many recent events are kept in memory for diagnostics.", minimum=10),
    )


@dataclass(frozen=True, slots=True)
class LegacyConfig:
    import_on_first_start: bool = field(
        default=False,
        metadata=_doc(
            "Import an ESC profile (~/.redhat/esc) automatically on first start; otherwise "
            "the daemon only logs that one exists."
        ),
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    log: LogConfig = field(default_factory=LogConfig)
    pcsc: PcscConfig = field(default_factory=PcscConfig)
    tps: TpsConfig = field(default_factory=TpsConfig)
    phone_home: PhoneHomeConfig = field(default_factory=PhoneHomeConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    auto_launch: AutoLaunchConfig = field(default_factory=AutoLaunchConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    legacy: LegacyConfig = field(default_factory=LegacyConfig)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<config>") -> Config:
        """Validate a parsed YAML mapping; raises ``ConfigError`` naming source and key path."""
        config: Config = _build(cls, data, source, "")
        return config


def _build(cls: type[Any], data: object, source: str, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(source, path or "(top level)", "expected a mapping of keys")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if not isinstance(key, str) or key not in known:
            raise ConfigError(source, _join(path, str(key)), "unknown key")
    values: dict[str, Any] = {}
    for name, fld in known.items():
        if name not in data:
            continue
        values[name] = _convert(hints[name], data[name], fld, source, _join(path, name))
    return cls(**values)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(hint: Any, value: object, fld: dataclasses.Field[Any], source: str, path: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value, source, path)
    minimum = fld.metadata.get("min")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        choices = [m.value for m in hint]
        if isinstance(value, bool) and hint is Switch:
            value = "on" if value else "off"
        if value not in choices:
            raise ConfigError(source, path, "expected one of " + ", ".join(map(str, choices)))
        return hint(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, "expected true or false")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, path, "expected a number")
        if hint is int and not isinstance(value, int):
            raise ConfigError(source, path, "expected a whole number")
        if minimum is not None and value < minimum:
            raise ConfigError(source, path, f"expected a number of at least {minimum}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(source, path, "expected a string")
        if path.endswith("url") and value:
            _check_url(value, source, path)
        return value
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(source, path, "expected a list of strings")
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(source, path, "expected a list of strings")
        if path.endswith("allow_http"):
            for item in value:
                _check_origin(item, source, path)
        return tuple(value)
    if isinstance(hint, types.UnionType):  # pragma: no cover - no optional keys today
        raise ConfigError(source, path, "unsupported type")
    raise ConfigError(source, path, f"unsupported type {hint!r}")  # pragma: no cover


def _check_url(value: str, source: str, path: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(source, path, "expected an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        # A password in a URL would show in logs, properties and diagnostics.
        raise ConfigError(source, path, "expected a URL without a user name or password")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ConfigError(source, path, "expected a valid port in the URL") from exc


def _check_origin(value: str, source: str, path: str) -> None:
    parts = urlsplit(value)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(source, path, "expected origins like http://host or http://host:port")


def config_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """System file first, then the user's file (later files win)."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME", "~")).expanduser()
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return [SYSTEM_CONFIG, config_home / "escd" / "config.yaml"]


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where escd keeps its state: ``$XDG_STATE_HOME/escd``."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME", "~")).expanduser()
    return Path(env.get("XDG_STATE_HOME") or home / ".local" / "state") / "escd"


def load_config(paths: list[Path] | None = None) -> Config:
    """Read and merge the config files that exist; raises ``ConfigError`` on any problem."""
    merged: dict[str, Any] = {}
    sources: list[str] = []
    for path in config_paths() if paths is None else paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            reason = f"cannot read the file ({exc.__class__.__name__})"
            raise ConfigError(str(path), "", reason) from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "somewhere"
            raise ConfigError(str(path), "", f"not valid YAML ({where})") from exc
        # Validate each file alone so that an error names the file it is in.
        Config.from_mapping(data or {}, str(path))
        _merge(merged, data or {})
        sources.append(str(path))
    return Config.from_mapping(merged, " + ".join(sources) or "<defaults>")


def _merge(into: dict[str, Any], data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, Mapping):
            into[key] = dict(value)
        else:
            into[key] = value


def describe_keys(cls: type[Any] = Config, prefix: str = "") -> list[tuple[str, Any, str, str]]:
    """(key path, default, doc, ESC preference) for every key, in declaration order."""
    rows: list[tuple[str, Any, str, str]] = []
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        hint = hints[fld.name]
        path = _join(prefix, fld.name)
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            rows.extend(describe_keys(hint, path))
            continue
        default = fld.default
        if isinstance(default, enum.Enum):
            default = default.value
        if isinstance(default, tuple):
            default = list(default)
        rows.append((path, default, fld.metadata.get("doc", ""), fld.metadata.get("esc", "")))
    return rows
