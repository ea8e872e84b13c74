# SPDX-License-Identifier: GPL-2.0-or-later
"""``io.github.escd.Escd1.Token``, one object per present token at ``…/token/<id>``.

Its properties mirror one ``TokenRecord`` of the registry; ``update`` swaps the record
and emits ``PropertiesChanged`` for exactly the properties that changed (``Certificates``
is announced as invalidated, per its ``EmitsChangedSignal`` annotation). Methods call
the daemon's application services (``TokenActions``). No secret is ever a property, and
no operation takes one as an argument: credentials and PINs come from the agent.

``PhoneHome``, ``Format``, ``Enroll``, ``ResetPin``, ``Renew`` and ``Unblock`` check
their options and reply at once with the path of the job they started
(``/job/<sender>/<handle_token>`` when the caller passed ``handle_token``); ``Job`` and
``LastOperation`` follow it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from dbus_fast import Variant
from dbus_fast.annotations import DBusInt32, DBusObjectPath, DBusStr, DBusUInt32
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from escd.dbus_service.caller import caller
from escd.dbus_service.errors import translate_errors
from escd.dbus_service.introspection import name_results
from escd.dbus_service.names import (
    ANNOTATION_EMITS_CHANGED,
    NO_OBJECT,
    TOKEN_INTERFACE,
    job_path_for,
)
from escd.dbus_service.variants import (
    DBusUIntPair,
    DBusVarDict,
    DBusVarDictList,
    DBusVoid,
    parse_options,
    to_vardict,
)
from escd.model import CertificateInfo, JobKind
from escd.operation import OperationRequest
from escd.tokens import TokenRecord

#: Options of every TPS operation method, and the extra one of ``Format``.
OPERATION_OPTIONS = {"handle_token": "s", "tps_url": "s", "token_type": "s"}
#: Options of ``PhoneHome``.
PHONE_HOME_OPTIONS = {"handle_token": "s", "force": "b", "url": "s"}
FORMAT_OPTIONS = {**OPERATION_OPTIONS, "confirmed": "b"}


class TokenActions(Protocol):
    async def refresh_token(self, token_id: str) -> None:
        """Read the token's card again; raises ``NoSuchTokenError``, ``CardRemovedError``…"""
        ...

    def start_operation(self, request: OperationRequest) -> str:
        """Start a TPS operation as a job; its object path (``BusyError``, ``InvalidState``…)."""
        ...

    def start_phone_home(
        self, token_id: str, caller: str, *, force: bool, url: str, path: str | None
    ) -> str:
        """Phone home for the token as a job; its object path (``BusyError``…)."""
        ...

    def token_job(self, token_id: str) -> str:
        """The path of the job running on the token, ``/`` when idle."""
        ...

    def last_operation(self, token_id: str) -> Mapping[str, object]:
        """The result of the token's last job (``LastOperation``), empty if none."""
        ...


#: Registry field (``TokenChanged.changed``) → the property that shows it.
PROPERTY_OF_FIELD = {
    "reader": "Reader",
    "info.cuid": "Cuid",
    "info.atr": "Atr",
    "info.applet": "Applet",
    "info.applet_version": "AppletVersion",
    "info.state": "State",
    "info.phone_home_url": "PhoneHomeUrl",
    "info.pin_tries_left": "PinTriesLeft",
    "info.certificates": "Certificates",
    "phone_home_url": "PhoneHomeUrl",
    "issuer_name": "IssuerName",
    "tps_url": "TpsUrl",
    "enrollment_ui_url": "EnrollmentUiUrl",
    "enrolled_token_browser_url": "EnrolledTokenUrl",
    "ca_chain_url": "CaChainUrl",
    "token_type": "TokenType",
    "phone_home_state": "PhoneHomeState",
}
INVALIDATED_PROPERTIES = frozenset({"Certificates"})


def certificate_vardict(cert: CertificateInfo) -> dict[str, Variant]:
    """One ``Certificates`` entry; the times are ``t`` (Unix seconds) as the contract says."""
    return {
        "subject": Variant("s", cert.subject),
        "issuer": Variant("s", cert.issuer),
        "serial": Variant("s", cert.serial),
        "not_before": Variant("t", max(0, int(cert.not_before.timestamp()))),
        "not_after": Variant("t", max(0, int(cert.not_after.timestamp()))),
        "sha256": Variant("s", cert.sha256),
        "label": Variant("s", cert.label),
    }


class TokenInterface(ServiceInterface):
    def __init__(
        self,
        record: TokenRecord,
        reader_path: Callable[[str], str],
        actions: TokenActions,
    ) -> None:
        super().__init__(TOKEN_INTERFACE)
        self._record = record
        self._reader_path = reader_path
        self._actions = actions

    @property
    def record(self) -> TokenRecord:
        return self._record

    def update(self, record: TokenRecord, changed: frozenset[str]) -> None:
        self._record = record
        names = sorted({PROPERTY_OF_FIELD[f] for f in changed if f in PROPERTY_OF_FIELD})
        values = {name: getattr(self, name) for name in names if name not in INVALIDATED_PROPERTIES}
        invalidated = [name for name in names if name in INVALIDATED_PROPERTIES]
        if values or invalidated:
            self.emit_properties_changed(values, invalidated)

    @dbus_property(access=PropertyAccess.READ)
    def Cuid(self) -> DBusStr:
        return self._record.cuid

    @dbus_property(access=PropertyAccess.READ)
    def Reader(self) -> DBusObjectPath:
        return self._reader_path(self._record.reader)

    @dbus_property(access=PropertyAccess.READ)
    def Atr(self) -> DBusStr:
        return self._record.info.atr.hex()

    @dbus_property(access=PropertyAccess.READ)
    def Applet(self) -> DBusUInt32:
        return int(self._record.info.applet)

    @dbus_property(access=PropertyAccess.READ)
    def AppletVersion(self) -> DBusUIntPair:
        major, minor = self._record.info.applet_version
        return (major, minor)

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusUInt32:
        return int(self._record.info.state)

    @dbus_property(access=PropertyAccess.READ)
    def PhoneHomeUrl(self) -> DBusStr:
        # The URL escd phones home to; until phone home ran, the one on the card.
        return self._record.phone_home_url or self._record.info.phone_home_url

    @dbus_property(access=PropertyAccess.READ)
    def IssuerName(self) -> DBusStr:
        return self._record.issuer_name

    @dbus_property(access=PropertyAccess.READ)
    def TpsUrl(self) -> DBusStr:
        return self._record.tps_url

    @dbus_property(access=PropertyAccess.READ)
    def EnrollmentUiUrl(self) -> DBusStr:
        return self._record.enrollment_ui_url

    @dbus_property(access=PropertyAccess.READ)
    def EnrolledTokenUrl(self) -> DBusStr:
        # ESC's EnrolledTokenBrowserURL: the page for an enrolled token (never opened
        # by escd unless auto_launch.open_enrolled_token_url says so).
        return self._record.enrolled_token_browser_url

    @dbus_property(access=PropertyAccess.READ)
    def CaChainUrl(self) -> DBusStr:
        return self._record.ca_chain_url

    @dbus_property(access=PropertyAccess.READ)
    def TokenType(self) -> DBusStr:
        return self._record.token_type

    @dbus_property(access=PropertyAccess.READ)
    def PhoneHomeState(self) -> DBusUInt32:
        return int(self._record.phone_home_state)

    @dbus_property(access=PropertyAccess.READ)
    def PinTriesLeft(self) -> DBusInt32:
        return self._record.info.pin_tries_left

    @dbus_property(access=PropertyAccess.READ)
    def Certificates(self) -> DBusVarDictList:
        return [certificate_vardict(cert) for cert in self._record.info.certificates]

    @dbus_property(access=PropertyAccess.READ)
    def Job(self) -> DBusObjectPath:
        return self._actions.token_job(self._record.token_id) or NO_OBJECT

    @dbus_property(access=PropertyAccess.READ)
    def LastOperation(self) -> DBusVarDict:
        return to_vardict(self._actions.last_operation(self._record.token_id))

    def job_changed(self) -> None:
        """A job started or ended on this token (called by the service, not over the bus)."""
        self.emit_properties_changed({"Job": self.Job, "LastOperation": self.LastOperation})

    @dbus_method()
    @translate_errors
    async def Refresh(self) -> DBusVoid:
        await self._actions.refresh_token(self._record.token_id)

    @dbus_method()
    @translate_errors
    def PhoneHome(self, options: DBusVarDict) -> DBusObjectPath:
        values: dict[str, Any] = parse_options(options, PHONE_HOME_OPTIONS)
        sender = caller()
        handle_token = values.get("handle_token", "")
        return self._actions.start_phone_home(
            self._record.token_id,
            sender,
            force=bool(values.get("force", False)),
            url=values.get("url", ""),
            path=job_path_for(sender, handle_token) if handle_token else None,
        )

    @dbus_method()
    @translate_errors
    def Format(self, options: DBusVarDict) -> DBusObjectPath:
        return self._start(JobKind.FORMAT, options)

    @dbus_method()
    @translate_errors
    def Enroll(self, options: DBusVarDict) -> DBusObjectPath:
        return self._start(JobKind.ENROLL, options)

    @dbus_method()
    @translate_errors
    def ResetPin(self, options: DBusVarDict) -> DBusObjectPath:
        return self._start(JobKind.RESET_PIN, options)

    @dbus_method()
    @translate_errors
    def Renew(self, options: DBusVarDict) -> DBusObjectPath:
        return self._start(JobKind.RENEW, options)

    @dbus_method()
    @translate_errors
    def Unblock(self, options: DBusVarDict) -> DBusObjectPath:
        return self._start(JobKind.UNBLOCK, options)

    def _start(self, kind: JobKind, options: Mapping[str, Variant]) -> str:
        values: dict[str, Any] = parse_options(
            options, FORMAT_OPTIONS if kind is JobKind.FORMAT else OPERATION_OPTIONS
        )
        sender = caller()
        handle_token = values.get("handle_token", "")
        request = OperationRequest(
            kind=kind,
            token_id=self._record.token_id,
            caller=sender,
            tps_url=values.get("tps_url", ""),
            token_type=values.get("token_type", ""),
            confirmed=bool(values.get("confirmed", False)),
            path=job_path_for(sender, handle_token) if handle_token else None,
        )
        return self._actions.start_operation(request)


# dbus-fast builds property introspection without annotations; add the contract's one.
TokenInterface.Certificates.introspection.annotations[ANNOTATION_EMITS_CHANGED] = "invalidates"

for _method in (
    TokenInterface.PhoneHome,
    TokenInterface.Format,
    TokenInterface.Enroll,
    TokenInterface.ResetPin,
    TokenInterface.Renew,
    TokenInterface.Unblock,
):
    name_results(_method, "job")
