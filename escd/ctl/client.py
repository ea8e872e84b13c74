# SPDX-License-Identifier: GPL-2.0-or-later
"""A small typed client of the escd D-Bus API, shared by ``escctl`` and the tests.

It talks to the daemon only over the bus (calling it starts it through D-Bus
activation when it is activatable), turns property dictionaries into frozen views and
signals into ``WatchEvent``s, and maps "nobody owns the name" to
``DaemonUnreachableError``. It knows nothing about output formats.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from escd.dbus_service.names import (
    BUS_NAME,
    DBUS_INTERFACE,
    DBUS_NAME,
    DBUS_PATH,
    ERROR_NAME_HAS_NO_OWNER,
    ERROR_SERVICE_UNKNOWN,
    JOB_INTERFACE,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    OBJECT_MANAGER_INTERFACE,
    PROPERTIES_INTERFACE,
    READER_INTERFACE,
    ROOT_PATH,
    TOKEN_INTERFACE,
    job_path_for,
    token_id_from_path,
)
from escd.model import AppletKind, PhoneHomeState, TokenState
from escd.readers import PcscState, ReaderState

#: ``Job.State`` values a client acts on (docs/dbus-api.md); from Succeeded on, a job
#: has ended.
JOB_SUCCEEDED = 4
JOB_CANCELED = 6


class DaemonUnreachableError(Exception):
    """There is no session bus, or no escd on it and none can be started."""


def plain(value: Any) -> Any:
    """Strip variants recursively."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class ManagerView:
    version: str
    pcsc_state: PcscState
    features: tuple[str, ...]
    policy: dict[str, Any]
    auto_launch_policy: int

    @classmethod
    def from_properties(cls, props: Mapping[str, Any]) -> ManagerView:
        p = plain(dict(props))
        return cls(
            version=p.get("Version", ""),
            pcsc_state=PcscState(p.get("PcscState", 0)),
            features=tuple(p.get("Features", ())),
            policy=p.get("Policy", {}),
            auto_launch_policy=p.get("AutoLaunchPolicy", 0),
        )


@dataclass(frozen=True, slots=True)
class ReaderView:
    path: str
    name: str
    state: ReaderState
    token: str  # object path, "/" when empty

    @classmethod
    def from_properties(cls, path: str, props: Mapping[str, Any]) -> ReaderView:
        p = plain(dict(props))
        return cls(path, p.get("Name", ""), ReaderState(p.get("State", 0)), p.get("Token", "/"))


@dataclass(frozen=True, slots=True)
class TokenView:
    path: str
    cuid: str
    reader: str  # object path
    atr: str
    applet: AppletKind
    applet_version: tuple[int, int]
    state: TokenState
    phone_home_url: str
    pin_tries_left: int
    certificates: tuple[dict[str, Any], ...]
    reader_name: str = ""
    issuer_name: str = ""
    tps_url: str = ""
    enrollment_ui_url: str = ""
    enrolled_token_url: str = ""
    ca_chain_url: str = ""
    token_type: str = ""
    phone_home_state: PhoneHomeState = PhoneHomeState.NOT_ATTEMPTED

    @property
    def token_id(self) -> str:
        return token_id_from_path(self.path)

    @classmethod
    def from_properties(cls, path: str, props: Mapping[str, Any]) -> TokenView:
        p = plain(dict(props))
        major, minor = p.get("AppletVersion", (0, 0))
        return cls(
            path=path,
            cuid=p.get("Cuid", ""),
            reader=p.get("Reader", "/"),
            atr=p.get("Atr", ""),
            applet=AppletKind(p.get("Applet", 0)),
            applet_version=(major, minor),
            state=TokenState(p.get("State", 0)),
            phone_home_url=p.get("PhoneHomeUrl", ""),
            pin_tries_left=p.get("PinTriesLeft", -1),
            certificates=tuple(p.get("Certificates", ())),
            **{attr: p[prop] for prop, attr in _PHONE_HOME_PROPERTIES.items() if prop in p},
            phone_home_state=PhoneHomeState(p.get("PhoneHomeState", 0)),
        )


#: Token properties from phone home (and the settings) → ``TokenView`` fields.
_PHONE_HOME_PROPERTIES = {
    "IssuerName": "issuer_name",
    "TpsUrl": "tps_url",
    "EnrollmentUiUrl": "enrollment_ui_url",
    "EnrolledTokenUrl": "enrolled_token_url",
    "CaChainUrl": "ca_chain_url",
    "TokenType": "token_type",
}


@dataclass(frozen=True, slots=True)
class JobView:
    """One ``io.github.escd.Escd1.Job`` as seen by a client."""

    path: str
    operation: str = ""
    token: str = "/"  # noqa: S105 - an object path
    state: int = 0
    progress: float = 0.0
    progress_valid: bool = False
    tps_stage: int = 0
    tps_task: str = ""
    started_by: str = ""
    start_time: int = 0
    cancelable: bool = False
    result: dict[str, Any] = field(default_factory=dict)
    #: True once ``Completed`` was received (``result`` is then final).
    completed: bool = False

    def merged(self, props: Mapping[str, Any]) -> JobView:
        values = plain(dict(props))
        changes = {attr: values[prop] for prop, attr in _JOB_PROPERTIES.items() if prop in values}
        return dataclasses.replace(self, **changes)


_JOB_PROPERTIES = {
    "Operation": "operation",
    "Token": "token",
    "State": "state",
    "Progress": "progress",
    "ProgressValid": "progress_valid",
    "TpsStage": "tps_stage",
    "TpsTask": "tps_task",
    "StartedBy": "started_by",
    "StartTime": "start_time",
    "Cancelable": "cancelable",
    "Result": "result",
}


class JobWatch:
    """The signals of one job path, subscribed to before the job starts (portal style).

    ``async with client.watch_job(path) as watch:`` then start the job, then
    ``async for view in watch.updates():`` until ``Completed``.
    """

    def __init__(self, client: EscdClient, path: str) -> None:
        self._client = client
        self.path = path
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._rules = [
            f"type='signal',sender='{BUS_NAME}',path='{path}',interface='{PROPERTIES_INTERFACE}',"
            "member='PropertiesChanged'",
            f"type='signal',sender='{BUS_NAME}',path='{path}',interface='{JOB_INTERFACE}',"
            "member='Completed'",
        ]

    def _handle(self, message: Message) -> None:
        if message.message_type is MessageType.SIGNAL and message.path == self.path:
            self._queue.put_nowait(message)

    async def __aenter__(self) -> JobWatch:
        self._client.bus.add_message_handler(self._handle)
        for rule in self._rules:
            await self._client.call(DBUS_PATH, DBUS_INTERFACE, "AddMatch", "s", [rule], DBUS_NAME)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client.bus.remove_message_handler(self._handle)
        if self._client.bus.connected:
            for rule in self._rules:
                try:
                    await self._client.call(
                        DBUS_PATH, DBUS_INTERFACE, "RemoveMatch", "s", [rule], DBUS_NAME
                    )
                except DBusError:
                    pass

    async def updates(self) -> AsyncIterator[JobView]:
        """The job as it changes: first its current properties, last the completed view."""
        try:
            view = await self._client.job(self.path)
        except DBusError:
            # Already ended and gone (a short grace period): its Completed is queued.
            view = JobView(self.path)
        yield view
        if view.state >= JOB_SUCCEEDED:
            # It had already ended: Completed was sent before we looked.
            yield dataclasses.replace(view, completed=True)
            return
        while True:
            message = await self._queue.get()
            if message.member == "Completed":
                state, _name, details = message.body
                yield dataclasses.replace(
                    view,
                    state=int(state),
                    result=plain(details),
                    cancelable=False,
                    completed=True,
                )
                return
            if message.member == "PropertiesChanged" and message.body[0] == JOB_INTERFACE:
                view = view.merged(message.body[1])
                yield view


@dataclass(frozen=True, slots=True)
class Snapshot:
    manager: ManagerView
    readers: dict[str, ReaderView] = field(default_factory=dict)
    tokens: dict[str, TokenView] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen on the bus.

    ``kind``: ``inserted``, ``removed``, ``changed`` (token), ``reader-added``,
    ``reader-removed``, ``reader-changed``, ``pcsc`` (PcscState), ``daemon-started``,
    ``daemon-stopped``, and ``subscribed`` once at the start of ``watch``.
    """

    kind: str
    path: str = ""
    token: TokenView | None = None
    reader: ReaderView | None = None
    changed: dict[str, Any] = field(default_factory=dict)
    pcsc_state: PcscState | None = None


class EscdClient:
    """A connection to the session bus, aimed at escd."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, address: str | None = None) -> EscdClient:
        try:
            bus = await MessageBus(bus_address=address).connect()
        except Exception as exc:  # dbus-fast raises OSError, AuthError, InvalidAddressError…
            detail = str(exc) or exc.__class__.__name__
            raise DaemonUnreachableError(f"cannot connect to the session bus: {detail}") from exc
        return cls(bus)

    def close(self) -> None:
        self.bus.disconnect()

    async def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        destination: str = BUS_NAME,
    ) -> list[Any]:
        """Call a method; an error reply raises ``DBusError`` (or ``DaemonUnreachableError``)."""
        reply = await self.bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body or [],
            )
        )
        assert reply is not None
        if reply.message_type is MessageType.ERROR:
            name = reply.error_name or ""
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            if destination == BUS_NAME and name in (ERROR_SERVICE_UNKNOWN, ERROR_NAME_HAS_NO_OWNER):
                raise DaemonUnreachableError(
                    f"escd is not running on this session bus and cannot be started ({text})"
                )
            raise DBusError(name, text, reply)
        return list(reply.body)

    async def snapshot(self) -> Snapshot:
        """Everything the daemon exports, in one ``GetManagedObjects`` round trip."""
        (objects,) = await self.call(ROOT_PATH, OBJECT_MANAGER_INTERFACE, "GetManagedObjects")
        return self._snapshot(objects)

    @staticmethod
    def _snapshot(objects: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Snapshot:
        manager = ManagerView.from_properties(
            objects.get(MANAGER_PATH, {}).get(MANAGER_INTERFACE, {})
        )
        readers = {
            path: ReaderView.from_properties(path, interfaces[READER_INTERFACE])
            for path, interfaces in objects.items()
            if READER_INTERFACE in interfaces
        }
        tokens = {}
        for path, interfaces in objects.items():
            if TOKEN_INTERFACE in interfaces:
                token = TokenView.from_properties(path, interfaces[TOKEN_INTERFACE])
                reader = readers.get(token.reader)
                tokens[path] = _with_reader_name(token, reader)
        return Snapshot(manager, readers, tokens)

    async def find_token(self, query: str) -> str:
        """The object path of a token by CUID, CUID prefix or reader name (``FindToken``)."""
        (path,) = await self.call(MANAGER_PATH, MANAGER_INTERFACE, "FindToken", "s", [query])
        return str(path)

    @property
    def unique_name(self) -> str:
        return self.bus.unique_name or ""

    def job_path(self, handle_token: str) -> str:
        """The path escd gives a job this connection starts with ``handle_token``."""
        return job_path_for(self.unique_name, handle_token)

    def watch_job(self, path: str) -> JobWatch:
        return JobWatch(self, path)

    async def start_operation(
        self, token: str, method: str, options: dict[str, Variant] | None = None
    ) -> str:
        """``Token.<method>(options)`` (Format, Enroll, ResetPin, Renew, Unblock): the job."""
        (path,) = await self.call(token, TOKEN_INTERFACE, method, "a{sv}", [options or {}])
        return str(path)

    async def job(self, path: str) -> JobView:
        (props,) = await self.call(path, PROPERTIES_INTERFACE, "GetAll", "s", [JOB_INTERFACE])
        return JobView(path).merged(props)

    async def cancel_job(self, path: str) -> None:
        await self.call(path, JOB_INTERFACE, "Cancel", "a{sv}", [{}])

    async def diagnostics(self, options: dict[str, Variant]) -> dict[str, Any]:
        (report,) = await self.call(
            MANAGER_PATH, MANAGER_INTERFACE, "GetDiagnostics", "a{sv}", [options]
        )
        return dict(plain(report))

    async def watch(self) -> AsyncIterator[WatchEvent]:
        """Changes as they happen; subscribes before taking the snapshot it starts from.

        The first item is a ``subscribed`` event, sent once the subscription is in place
        and the starting state is read, so callers know from when on nothing is missed.
        """
        queue: asyncio.Queue[Message] = asyncio.Queue()
        rules = [
            f"type='signal',sender='{BUS_NAME}',path='{ROOT_PATH}',"
            f"interface='{OBJECT_MANAGER_INTERFACE}'",
            f"type='signal',sender='{BUS_NAME}',interface='{PROPERTIES_INTERFACE}',"
            f"member='PropertiesChanged',path_namespace='{ROOT_PATH}'",
            f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_INTERFACE}',"
            f"member='NameOwnerChanged',arg0='{BUS_NAME}'",
        ]

        def handler(message: Message) -> None:
            if message.message_type is MessageType.SIGNAL:
                queue.put_nowait(message)

        self.bus.add_message_handler(handler)
        try:
            for rule in rules:
                await self.call(DBUS_PATH, DBUS_INTERFACE, "AddMatch", "s", [rule], DBUS_NAME)
            state = await self.snapshot()
            readers = dict(state.readers)
            tokens = dict(state.tokens)
            yield WatchEvent("subscribed")
            while True:
                message = await queue.get()
                for event in _interpret(message, readers, tokens):
                    yield event
        finally:
            self.bus.remove_message_handler(handler)


def _with_reader_name(token: TokenView, reader: ReaderView | None) -> TokenView:
    return token if reader is None else dataclasses.replace(token, reader_name=reader.name)


def _interpret(
    message: Message, readers: dict[str, ReaderView], tokens: dict[str, TokenView]
) -> list[WatchEvent]:
    """Turn one signal into events, keeping the caller's view of readers and tokens."""
    member = message.member
    if message.interface == DBUS_INTERFACE and member == "NameOwnerChanged":
        _name, _old, new = message.body
        if new:
            return [WatchEvent("daemon-started")]
        events = [WatchEvent("removed", path, token=token) for path, token in tokens.items()]
        tokens.clear()
        readers.clear()
        return [*events, WatchEvent("daemon-stopped")]
    if message.interface == OBJECT_MANAGER_INTERFACE and member == "InterfacesAdded":
        path, interfaces = message.body
        if READER_INTERFACE in interfaces:
            reader = ReaderView.from_properties(path, interfaces[READER_INTERFACE])
            readers[path] = reader
            return [WatchEvent("reader-added", path, reader=reader)]
        if TOKEN_INTERFACE in interfaces:
            token = TokenView.from_properties(path, interfaces[TOKEN_INTERFACE])
            token = _with_reader_name(token, readers.get(token.reader))
            tokens[path] = token
            return [WatchEvent("inserted", path, token=token)]
        return []
    if message.interface == OBJECT_MANAGER_INTERFACE and member == "InterfacesRemoved":
        path, names = message.body
        if TOKEN_INTERFACE in names and path in tokens:
            return [WatchEvent("removed", path, token=tokens.pop(path))]
        if READER_INTERFACE in names and path in readers:
            return [WatchEvent("reader-removed", path, reader=readers.pop(path))]
        return []
    if message.interface == PROPERTIES_INTERFACE and member == "PropertiesChanged":
        interface, changed, invalidated = message.body
        values = plain(changed)
        values.update(dict.fromkeys(invalidated))
        path = message.path or ""
        if interface == MANAGER_INTERFACE and "PcscState" in values:
            return [WatchEvent("pcsc", path, pcsc_state=PcscState(values["PcscState"]))]
        if interface == TOKEN_INTERFACE and path in tokens:
            old = tokens[path]
            token = _merge_token(old, values, readers)
            tokens[path] = token
            return [WatchEvent("changed", path, token=token, changed=values)]
        if interface == READER_INTERFACE and path in readers:
            old_reader = readers[path]
            props = {
                "Name": old_reader.name,
                "State": int(old_reader.state),
                "Token": old_reader.token,
            }
            props.update({k: v for k, v in values.items() if v is not None})
            reader = ReaderView.from_properties(path, props)
            readers[path] = reader
            if "State" in values:
                return [WatchEvent("reader-changed", path, reader=reader, changed=values)]
        return []
    return []


def _merge_token(
    old: TokenView, values: Mapping[str, Any], readers: Mapping[str, ReaderView]
) -> TokenView:
    props = {prop: value for prop, value in values.items() if value is not None}
    token = dataclasses.replace(
        old,
        cuid=props.get("Cuid", old.cuid),
        reader=props.get("Reader", old.reader),
        atr=props.get("Atr", old.atr),
        applet=AppletKind(props.get("Applet", old.applet)),
        applet_version=tuple(props.get("AppletVersion", old.applet_version)),
        state=TokenState(props.get("State", old.state)),
        phone_home_url=props.get("PhoneHomeUrl", old.phone_home_url),
        pin_tries_left=props.get("PinTriesLeft", old.pin_tries_left),
        certificates=tuple(props.get("Certificates", old.certificates)),
        phone_home_state=PhoneHomeState(props.get("PhoneHomeState", old.phone_home_state)),
        **{attr: props[prop] for prop, attr in _PHONE_HOME_PROPERTIES.items() if prop in props},
    )
    reader = readers.get(token.reader)
    return _with_reader_name(token, reader)
