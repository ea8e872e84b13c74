# SPDX-License-Identifier: GPL-2.0-or-later
"""``io.github.escd.Escd1.Manager`` at ``/io/github/escd/Escd1/Manager``.

A thin dbus-fast interface: properties read the registry and the configuration, methods
check their arguments and call the daemon's application services (``ManagerActions``).
It holds no state of its own and never touches a card, pcscd or a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Protocol

from dbus_fast import Variant
from dbus_fast.annotations import DBusBytes, DBusObjectPath, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from escd import __version__
from escd.config import Config
from escd.dbus_service.caller import caller
from escd.dbus_service.errors import translate_errors
from escd.dbus_service.introspection import name_results, name_signal_args
from escd.dbus_service.names import MANAGER_INTERFACE, token_path
from escd.dbus_service.variants import (
    DBusStrList,
    DBusVarDict,
    DBusVarDictList,
    DBusVoid,
    parse_options,
    to_vardict,
    to_variant,
)
from escd.errors import InvalidArgumentError
from escd.legacy import ImportReport
from escd.tokens import TokenRegistry

#: ``EnrollmentSuggested(o token, u reason)``.
DBusSuggestion = Annotated[list[Any], DBusSignature("ou")]

#: Options of ``GetDiagnostics`` and their signatures.
DIAGNOSTICS_OPTIONS = {"log_lines": "u", "format": "s", "token": "s"}
DIAGNOSTICS_FORMATS = ("", "text")
#: Options of ``RegisterAgent`` and their signatures.
AGENT_OPTIONS = {"capabilities": "as", "default": "b", "ui": "b"}
IMPORT_AUTHORITY_OPTIONS = {"confirmed": "b"}
PIN_SERVER_OPTIONS = {"subject": "s"}
#: ``SetTokenSettings`` keys (all ``s``; ``""`` clears one).
TOKEN_SETTINGS = (
    "tps_url",
    "enrollment_ui_url",
    "issuer_name",
    "phone_home_url",
    "enrolled_token_browser_url",
    "enrolled_token_url",
)


class AdminActions(Protocol):
    """Trust, ESC migration and per-token settings (``escd.admin.AdminService``)."""

    def import_authority(self, data: bytes, *, confirmed: bool) -> list[dict[str, object]]: ...

    def list_trust(self) -> list[dict[str, object]]: ...

    def remove_trust(self, entry_id: str) -> dict[str, object]: ...

    async def fetch_server_certificate(self, url: str) -> dict[str, object]: ...

    def pin_server(
        self, url: str, shown_fingerprint: str, subject: str = ""
    ) -> dict[str, object]: ...

    async def import_legacy(self, path: str) -> tuple[ImportReport, list[Path]]: ...

    def get_token_settings(self, token_id: str) -> dict[str, str]: ...

    async def set_token_settings(
        self, token_id: str, values: Mapping[str, str]
    ) -> dict[str, str]: ...


#: Signatures of the keys of trust entries and certificates (``ListTrust`` and friends).
_TRUST_SIGNATURES = {
    "port": "u",
    "not_before": "t",
    "not_after": "t",
    "shared": "b",
    "pinned": "b",
    "der": "ay",
}


def trust_vardict(item: Mapping[str, object]) -> dict[str, Variant]:
    """A trust entry or certificate description with the documented types."""
    return {
        key: Variant(_TRUST_SIGNATURES[key], value)
        if key in _TRUST_SIGNATURES
        else to_variant(value)
        for key, value in item.items()
    }


DBusImportResult = Annotated[list[Any], DBusSignature("ua{sv}")]


class ManagerActions(Protocol):
    """What the Manager interface asks of the daemon."""

    @property
    def config(self) -> Config: ...

    @property
    def features(self) -> tuple[str, ...]: ...

    def diagnostics(
        self, log_lines: int | None, as_text: bool, token: str | None = None
    ) -> dict[str, object]:
        """The diagnostics report (``text`` holds the ESC-style dump when ``as_text``);
        ``token`` (as ``FindToken`` takes it) restricts it to one token."""
        ...

    def reload_configuration(self) -> None:
        """Re-read the configuration files; raises ``ConfigError`` and keeps the old one."""
        ...

    def register_agent(
        self,
        owner: str,
        path: str,
        *,
        capabilities: frozenset[str] | None,
        default: bool,
        ui: bool,
    ) -> None:
        """Register the agent of connection ``owner`` (one per connection; replaces)."""
        ...

    def unregister_agent(self, owner: str, path: str) -> None:
        """``InvalidArgumentError`` when ``owner`` has no agent at ``path``."""
        ...

    @property
    def admin(self) -> AdminActions: ...


def policy_of(config: Config) -> dict[str, object]:
    """``Manager.Policy``: what frontends should offer (read-only for clients)."""
    policy = config.policy
    return {
        "hide_format": policy.hide_format,
        "deny_format": policy.deny_format,
        "require_pin_for_certificates": policy.require_pin_for_certificates,
        "tps_message_timeout": config.tps.message_timeout,
        "global_phone_home_url": config.phone_home.global_url,
    }


class ManagerInterface(ServiceInterface):
    def __init__(self, registry: TokenRegistry, actions: ManagerActions) -> None:
        super().__init__(MANAGER_INTERFACE)
        self._registry = registry
        self._actions = actions

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusStr:
        return __version__

    @dbus_property(access=PropertyAccess.READ)
    def PcscState(self) -> DBusUInt32:
        return int(self._registry.pcsc_state)

    @dbus_property(access=PropertyAccess.READ)
    def AutoLaunchPolicy(self) -> DBusUInt32:
        return self._actions.config.auto_launch.policy.dbus_value

    @dbus_property(access=PropertyAccess.READ)
    def Features(self) -> DBusStrList:
        return list(self._actions.features)

    @dbus_property(access=PropertyAccess.READ)
    def Policy(self) -> DBusVarDict:
        return to_vardict(policy_of(self._actions.config))

    @dbus_method()
    @translate_errors
    def GetDiagnostics(self, options: DBusVarDict) -> DBusVarDict:
        values = parse_options(options, DIAGNOSTICS_OPTIONS)
        output = values.get("format", "")
        if output not in DIAGNOSTICS_FORMATS:
            raise InvalidArgumentError(f"format must be 'text' or empty, not {output!r}")
        report = self._actions.diagnostics(
            values.get("log_lines"), as_text=output == "text", token=values.get("token")
        )
        return to_vardict(report)

    @dbus_method()
    @translate_errors
    def ReloadConfiguration(self) -> DBusVoid:
        self._actions.reload_configuration()

    @dbus_method()
    @translate_errors
    def RegisterAgent(self, agent: DBusObjectPath, options: DBusVarDict) -> DBusVoid:
        values = parse_options(options, AGENT_OPTIONS)
        capabilities = values.get("capabilities")
        self._actions.register_agent(
            caller(),
            agent,
            capabilities=frozenset(capabilities) if capabilities is not None else None,
            default=bool(values.get("default", False)),
            ui=bool(values.get("ui", False)),
        )

    @dbus_method()
    @translate_errors
    def UnregisterAgent(self, agent: DBusObjectPath) -> DBusVoid:
        self._actions.unregister_agent(caller(), agent)

    @dbus_method()
    @translate_errors
    def FindToken(self, query: DBusStr) -> DBusObjectPath:
        return token_path(self._registry.find(query).token_id)

    @dbus_method()
    @translate_errors
    def ImportAuthority(self, data: DBusBytes, options: DBusVarDict) -> DBusVarDictList:
        values = parse_options(options, IMPORT_AUTHORITY_OPTIONS)
        items = self._actions.admin.import_authority(
            bytes(data), confirmed=bool(values.get("confirmed", False))
        )
        return [trust_vardict(item) for item in items]

    @dbus_method()
    @translate_errors
    def ListTrust(self) -> DBusVarDictList:
        return [trust_vardict(item) for item in self._actions.admin.list_trust()]

    @dbus_method()
    @translate_errors
    def RemoveTrust(self, id: DBusStr) -> DBusVoid:
        self._actions.admin.remove_trust(id)

    @dbus_method()
    @translate_errors
    async def FetchServerCertificate(self, url: DBusStr) -> DBusVarDict:
        return trust_vardict(await self._actions.admin.fetch_server_certificate(url))

    @dbus_method()
    @translate_errors
    def PinServer(self, url: DBusStr, fingerprint: DBusStr, options: DBusVarDict) -> DBusVarDict:
        values = parse_options(options, PIN_SERVER_OPTIONS)
        entry = self._actions.admin.pin_server(url, fingerprint, values.get("subject", ""))
        return trust_vardict(entry)

    @dbus_method()
    @translate_errors
    async def ImportLegacyPreferences(
        self, path: DBusStr, options: DBusVarDict
    ) -> DBusImportResult:
        parse_options(options, {})
        report, files = await self._actions.admin.import_legacy(path)
        details = {
            "imported": list(report.imported),
            "skipped": [{"item": item, "reason": reason} for item, reason in report.skipped],
            "written": str(report.written) if report.written else "",
            "files": [str(file) for file in files],
        }
        return [len(report.imported), to_vardict(details)]

    @dbus_method()
    @translate_errors
    def GetTokenSettings(self, token: DBusStr) -> DBusVarDict:
        return to_vardict(self._actions.admin.get_token_settings(token))

    @dbus_method()
    @translate_errors
    async def SetTokenSettings(self, token: DBusStr, settings: DBusVarDict) -> DBusVoid:
        values = parse_options(settings, dict.fromkeys(TOKEN_SETTINGS, "s"))
        await self._actions.admin.set_token_settings(token, values)

    @dbus_signal()
    def EnrollmentSuggested(self, token: str, reason: int) -> DBusSuggestion:
        """Sent once per insertion when the auto-launch policy suggests enrollment."""
        return [token, reason]

    # -- change notification (called by the service, not over the bus) -----------------

    def pcsc_state_changed(self) -> None:
        self.emit_properties_changed({"PcscState": int(self._registry.pcsc_state)})

    def config_changed(self, old: Config, new: Config) -> None:
        changed: dict[str, object] = {}
        if old.auto_launch.policy != new.auto_launch.policy:
            changed["AutoLaunchPolicy"] = new.auto_launch.policy.dbus_value
        if policy_of(old) != policy_of(new):
            changed["Policy"] = to_vardict(policy_of(new))
        if changed:
            self.emit_properties_changed(changed)


name_results(ManagerInterface.GetDiagnostics, "report")
name_signal_args(ManagerInterface.EnrollmentSuggested, "token", "reason")
name_results(ManagerInterface.FindToken, "token")
name_results(ManagerInterface.ImportAuthority, "certificates")
name_results(ManagerInterface.ListTrust, "entries")
name_results(ManagerInterface.FetchServerCertificate, "certificate")
name_results(ManagerInterface.PinServer, "entry")
name_results(ManagerInterface.GetTokenSettings, "settings")
name_results(ManagerInterface.ImportLegacyPreferences, "imported", "report")
