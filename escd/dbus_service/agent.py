# SPDX-License-Identifier: GPL-2.0-or-later
"""The daemon's side of ``io.github.escd.Escd1.Agent``: calling the frontends' agents.

``DBusAgentChannel`` implements ``escd.agents.AgentChannel`` over the bus:
``RequestInput(o job, s request_id, a{sv} prompt) → a{sv}``, ``CancelRequest(s)`` and
``Release()`` on the object a frontend registered (docs/dbus-api.md). It turns a
``Prompt`` into the contract's dictionary and an answer back into values, wrapping the
answers to secret and PIN fields in ``Secret`` the moment they arrive; an error reply
becomes ``CanceledError`` (the agent's ``Error.Canceled``; ``Error.Rejected``, the user
said no, is its subclass ``PromptRejectedError``) or ``NoAgentError`` (the agent left,
or could not answer).

Must not: log an answer, keep one, or put one into an exception text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusFastError

from escd.agents import AgentRecord, Answers
from escd.dbus_service.names import (
    AGENT_ERROR_CANCELED,
    AGENT_ERROR_REJECTED,
    AGENT_INTERFACE,
    ERROR_NO_REPLY,
)
from escd.errors import CanceledError, NoAgentError, PromptRejectedError
from escd.log import Secret
from escd.tps.session import CertificateDetails, FieldType, Prompt, PromptField

logger = logging.getLogger(__name__)


def field_vardict(field: PromptField) -> dict[str, Variant]:
    return {
        "id": Variant("s", field.id),
        "label": Variant("s", field.label),
        "type": Variant("s", str(field.type)),
        "description": Variant("s", field.description),
        "options": Variant("as", list(field.options)),
        "confirm": Variant("b", field.confirm),
        "min_length": Variant("u", field.min_length),
        "max_length": Variant("u", field.max_length),
    }


def certificate_vardict(cert: CertificateDetails) -> dict[str, Variant]:
    """``certificate`` of a ``tls-trust`` prompt (docs/dbus-api.md)."""
    return {
        "host": Variant("s", cert.host),
        "port": Variant("u", cert.port),
        "subject": Variant("s", cert.subject),
        "issuer": Variant("s", cert.issuer),
        "fingerprint": Variant("s", cert.fingerprint),
        "not_before": Variant("t", max(cert.not_before, 0)),
        "not_after": Variant("t", max(cert.not_after, 0)),
        "reason": Variant("s", cert.reason),
        "der": Variant("ay", cert.der),
    }


def prompt_vardict(prompt: Prompt) -> dict[str, Variant]:
    """The ``prompt`` argument of ``RequestInput`` (docs/dbus-api.md)."""
    values = {
        "kind": Variant("s", str(prompt.kind)),
        "title": Variant("s", prompt.title),
        "description": Variant("s", prompt.description),
        "locale": Variant("s", prompt.locale),
        "fields": Variant("aa{sv}", [field_vardict(field) for field in prompt.fields]),
        "attempt": Variant("u", prompt.attempt),
        "previous_error": Variant("s", prompt.previous_error),
    }
    if prompt.certificate is not None:
        values["certificate"] = Variant("a{sv}", certificate_vardict(prompt.certificate))
    return values


def answers_from(values: Mapping[str, Any], prompt: Prompt) -> Answers:
    """The answers for the prompt's fields; a value of the wrong type counts as missing.

    Secret and PIN answers become ``Secret`` here, before anything else sees them.
    """
    answers: Answers = {}
    for field in prompt.fields:
        variant = values.get(field.id)
        if not isinstance(variant, Variant):
            continue
        if field.type is FieldType.BOOL:
            if variant.signature == "b":
                answers[field.id] = bool(variant.value)
        elif variant.signature == "s":
            value = str(variant.value)
            answers[field.id] = Secret(value) if field.is_secret else value
    return answers


class DBusAgentChannel:
    """``AgentChannel`` over the bus escd is on."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus

    async def request_input(
        self, agent: AgentRecord, job: str, request_id: str, prompt: Prompt
    ) -> Answers:
        message = Message(
            destination=agent.owner,
            path=agent.path,
            interface=AGENT_INTERFACE,
            member="RequestInput",
            signature="osa{sv}",
            body=[job or "/", request_id, prompt_vardict(prompt)],
        )
        try:
            reply = await self._bus.call(message)
        except (OSError, EOFError, DBusFastError) as exc:
            # escd's own bus connection broke (dbus-fast raises these): nobody to ask.
            raise NoAgentError("escd's bus connection failed while asking the agent") from exc
        if reply is None:
            raise NoAgentError("the agent could not be reached")
        if reply.message_type is MessageType.ERROR:
            name = reply.error_name or ""
            if name == AGENT_ERROR_CANCELED:
                raise CanceledError(f"the {prompt.kind} prompt was canceled")
            if name == AGENT_ERROR_REJECTED:
                raise PromptRejectedError(f"the {prompt.kind} prompt was rejected")
            if name == ERROR_NO_REPLY:
                raise NoAgentError("the agent left the bus before answering")
            # The error's own text stays out: a broken agent may put anything there.
            raise NoAgentError(f"the agent could not answer ({name})")
        if reply.signature != "a{sv}":
            raise NoAgentError(f"the agent answered with {reply.signature!r}, not 'a{{sv}}'")
        return answers_from(reply.body[0], prompt)

    def cancel_request(self, agent: AgentRecord, request_id: str) -> None:
        self._send(agent, "CancelRequest", "s", [request_id])

    def release(self, agent: AgentRecord) -> None:
        self._send(agent, "Release", "", [])

    def _send(self, agent: AgentRecord, member: str, signature: str, body: list[Any]) -> None:
        if not self._bus.connected:
            return
        sent = self._bus.send(
            Message(
                destination=agent.owner,
                path=agent.path,
                interface=AGENT_INTERFACE,
                member=member,
                signature=signature,
                body=body,
                flags=MessageFlag.NO_REPLY_EXPECTED,
            )
        )
        if isinstance(sent, asyncio.Future):
            sent.add_done_callback(_log_send_failure)


def _log_send_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.debug("could not send to an agent: %s", future.exception())
