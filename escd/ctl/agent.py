# SPDX-License-Identifier: GPL-2.0-or-later
"""A frontend's ``io.github.escd.Escd1.Agent`` object, as escctl (and the tests) export it.

``AgentInterface`` receives escd's ``RequestInput`` calls, hands each prompt as a typed
``PromptRequest`` to an ``AgentHandler`` (escctl's terminal prompter, or a scripted one),
and answers with the values it returns; ``CancelRequest`` withdraws a prompt that is
still being answered (the call then fails with ``Agent.Error.Canceled``) and ``Release``
tells the handler that escd no longer uses this agent. ``register_agent`` exports the
object and registers it with ``Manager.RegisterAgent``.

Must not: log, print or keep an answer; answers leave in the method reply only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusObjectPath, DBusStr
from dbus_fast.service import ServiceInterface, dbus_method

from escd.dbus_service.introspection import name_results
from escd.dbus_service.names import (
    AGENT_ERROR_CANCELED,
    AGENT_ERROR_REJECTED,
    AGENT_INTERFACE,
    BUS_NAME,
    MANAGER_INTERFACE,
    MANAGER_PATH,
)
from escd.dbus_service.variants import DBusVarDict, DBusVoid

logger = logging.getLogger(__name__)

#: Where escctl exports its agent on its own connection.
AGENT_PATH = "/io/github/escd/escctl/agent"
ALL_CAPABILITIES = ("secret", "text", "choice", "confirm")
#: escctl's own agent also answers ``tls-trust`` (escd.ctl.prompts).
ESCCTL_CAPABILITIES = (*ALL_CAPABILITIES, "tls-trust")


class AgentCanceled(Exception):  # noqa: N818 - it names the D-Bus error it becomes
    """The user declined to answer (``Agent.Error.Canceled``; ``rejected`` for ``.Rejected``)."""

    def __init__(self, reason: str = "canceled by the user", *, rejected: bool = False) -> None:
        super().__init__(reason)
        self.rejected = rejected


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Variant) else value


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a prompt (``fields`` of ``RequestInput``)."""

    id: str
    label: str
    type: str
    description: str = ""
    options: tuple[str, ...] = ()
    confirm: bool = False
    min_length: int = 0
    max_length: int = 0

    @property
    def is_secret(self) -> bool:
        return self.type in ("secret", "pin")

    @classmethod
    def from_vardict(cls, values: Mapping[str, Any]) -> FieldSpec:
        v = {key: _plain(value) for key, value in values.items()}
        return cls(
            id=str(v.get("id", "")),
            label=str(v.get("label", "")),
            type=str(v.get("type", "text")),
            description=str(v.get("description", "")),
            options=tuple(v.get("options", ())),
            confirm=bool(v.get("confirm", False)),
            min_length=int(v.get("min_length", 0)),
            max_length=int(v.get("max_length", 0)),
        )


@dataclass(frozen=True, slots=True)
class PromptRequest:
    """One ``RequestInput`` call."""

    job: str
    request_id: str
    kind: str
    fields: tuple[FieldSpec, ...]
    title: str = ""
    description: str = ""
    locale: str = ""
    attempt: int = 1
    previous_error: str = ""
    #: ``tls-trust``: the certificate (``host``, ``port``, ``subject``, ``issuer``,
    #: ``fingerprint``, ``not_before``, ``not_after``, ``reason``, ``der``), plain values.
    certificate: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_call(cls, job: str, request_id: str, prompt: Mapping[str, Any]) -> PromptRequest:
        v = {key: _plain(value) for key, value in prompt.items()}
        certificate = v.get("certificate")
        return cls(
            job=job,
            request_id=request_id,
            kind=str(v.get("kind", "")),
            fields=tuple(FieldSpec.from_vardict(field) for field in v.get("fields", ())),
            title=str(v.get("title", "")),
            description=str(v.get("description", "")),
            locale=str(v.get("locale", "")),
            attempt=int(v.get("attempt", 1)),
            previous_error=str(v.get("previous_error", "")),
            certificate={key: _plain(value) for key, value in certificate.items()}
            if isinstance(certificate, Mapping)
            else {},
        )


Answer = str | bool


class AgentHandler(Protocol):
    """Answers prompts (a terminal, a script, a test)."""

    async def answer(self, request: PromptRequest) -> dict[str, Answer]:
        """The values by field id; raise ``AgentCanceled`` to decline."""
        ...

    def withdrawn(self, request: PromptRequest) -> None:
        """escd withdrew the prompt (timeout, card pulled, job canceled)."""
        ...

    def released(self) -> None:
        """escd no longer uses this agent."""
        ...


class AgentInterface(ServiceInterface):
    """``io.github.escd.Escd1.Agent`` backed by an ``AgentHandler``."""

    def __init__(self, handler: AgentHandler) -> None:
        super().__init__(AGENT_INTERFACE)
        self._handler = handler
        self._pending: dict[str, tuple[PromptRequest, asyncio.Task[dict[str, Answer]]]] = {}

    @dbus_method()
    async def RequestInput(
        self, job: DBusObjectPath, request_id: DBusStr, prompt: DBusVarDict
    ) -> DBusVarDict:
        request = PromptRequest.from_call(job, request_id, prompt)
        # The answer runs as a task of its own so that CancelRequest can stop just it.
        task = asyncio.ensure_future(self._handler.answer(request))
        self._pending[request_id] = (request, task)
        try:
            values = await asyncio.shield(task)
        except AgentCanceled as exc:
            name = AGENT_ERROR_REJECTED if exc.rejected else AGENT_ERROR_CANCELED
            raise DBusError(name, str(exc)) from None
        except asyncio.CancelledError:
            if task.cancelled():  # withdrawn by CancelRequest, not our own shutdown
                raise DBusError(AGENT_ERROR_CANCELED, "the prompt was withdrawn") from None
            task.cancel()
            raise
        finally:
            self._pending.pop(request_id, None)
        return {
            key: Variant("b", value) if isinstance(value, bool) else Variant("s", value)
            for key, value in values.items()
        }

    @dbus_method()
    def CancelRequest(self, request_id: DBusStr) -> DBusVoid:
        pending = self._pending.get(request_id)
        if pending is None:
            return
        request, task = pending
        task.cancel()
        self._handler.withdrawn(request)

    @dbus_method()
    def Release(self) -> DBusVoid:
        self._handler.released()


async def register_agent(
    bus: MessageBus,
    handler: AgentHandler,
    *,
    path: str = AGENT_PATH,
    capabilities: tuple[str, ...] = ALL_CAPABILITIES,
    default: bool = False,
    destination: str = BUS_NAME,
) -> AgentInterface:
    """Export an agent for ``handler`` on ``bus`` and register it with escd."""
    interface = AgentInterface(handler)
    bus.export(path, interface)
    reply = await bus.call(
        Message(
            destination=destination,
            path=MANAGER_PATH,
            interface=MANAGER_INTERFACE,
            member="RegisterAgent",
            signature="oa{sv}",
            body=[
                path,
                {
                    "capabilities": Variant("as", list(capabilities)),
                    "default": Variant("b", default),
                },
            ],
        )
    )
    if reply is None or reply.message_type is MessageType.ERROR:
        bus.unexport(path, interface)
        name = reply.error_name if reply is not None else ""
        text = reply.body[0] if reply is not None and reply.body else ""
        raise DBusError(name or "org.freedesktop.DBus.Error.Failed", str(text))
    return interface


name_results(AgentInterface.RequestInput, "values")
