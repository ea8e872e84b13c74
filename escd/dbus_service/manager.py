# SPDX-License-Identifier: GPL-2.0-or-later
"""``io.github.escd.Escd1.Manager`` at ``/io/github/escd/Escd1/Manager``.

A thin dbus-fast interface: properties read the registry and the configuration, methods
check their arguments and call the daemon's application services (``ManagerActions``).
It holds no state of its own and never touches a card, pcscd or a file.
"""

from __future__ import annotations

from typing import Protocol

from dbus_fast.annotations import DBusObjectPath, DBusStr, DBusUInt32
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from escd import __version__
from escd.config import Config
from escd.dbus_service.errors import translate_errors
from escd.dbus_service.names import MANAGER_INTERFACE, token_path
from escd.dbus_service.variants import (
    DBusStrList,
    DBusVarDict,
    DBusVoid,
    parse_options,
    to_vardict,
)
from escd.errors import InvalidArgumentError
from escd.tokens import TokenRegistry

#: Options of ``GetDiagnostics`` and their signatures.
DIAGNOSTICS_OPTIONS = {"log_lines": "u", "format": "s"}
DIAGNOSTICS_FORMATS = ("", "text")


class ManagerActions(Protocol):
    """What the Manager interface asks of the daemon."""

    @property
    def config(self) -> Config: ...

    @property
    def features(self) -> tuple[str, ...]: ...

    def diagnostics(self, log_lines: int | None, as_text: bool) -> dict[str, object]:
        """The diagnostics report (``text`` holds the ESC-style dump when ``as_text``)."""
        ...

    def reload_configuration(self) -> None:
        """Re-read the configuration files; raises ``ConfigError`` and keeps the old one."""
        ...


def policy_of(config: Config) -> dict[str, object]:
    """``Manager.Policy``: what frontends should offer (read-only for clients)."""
    policy = config.policy
    return {
        "hide_format": policy.hide_format,
        "deny_format": policy.deny_format,
        "require_pin_for_certificates": policy.require_pin_for_certificates,
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
        report = self._actions.diagnostics(values.get("log_lines"), as_text=output == "text")
        return to_vardict(report)

    @dbus_method()
    @translate_errors
    def ReloadConfiguration(self) -> DBusVoid:
        self._actions.reload_configuration()

    @dbus_method()
    @translate_errors
    def FindToken(self, query: DBusStr) -> DBusObjectPath:
        return token_path(self._registry.find(query).token_id)

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


def _name_result(method: object, name: str) -> None:
    """dbus-fast leaves out-arguments unnamed; name them for introspection and the docs."""
    method.__dict__["__DBUS_METHOD"].introspection.out_args[0].name = name


_name_result(ManagerInterface.GetDiagnostics, "report")
_name_result(ManagerInterface.FindToken, "token")
