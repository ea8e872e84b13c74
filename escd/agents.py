# SPDX-License-Identifier: GPL-2.0-or-later
"""Agents: the frontends that answer prompts, and the broker that asks them.

Owns the agent registrations (``Manager.RegisterAgent``/``UnregisterAgent``) and the
rules for asking (docs/dbus-api.md, "Agent"; after BlueZ's AgentManager1 and
NetworkManager's SecretAgent):

* one agent per bus connection; registering again replaces the old registration (a
  different object is told ``Release``); a connection that leaves the bus loses its
  agent;
* choice: the agent of the connection that started the job, then the default agent,
  then any agent with the capability the prompt needs; otherwise ``NoAgentError``;
* every prompt is bounded by ``agent.prompt_timeout`` (``PromptTimeoutError``) and
  withdrawn with ``CancelRequest`` when it times out or its job stops waiting for it
  (canceled, card pulled);
* answers to secret fields arrive as ``Secret`` (the D-Bus edge wraps them at once) and
  go straight back to the caller; the broker keeps no reference to them.

Any part of escd that needs a person asks ``AgentBroker.ask`` with a
``escd.tps.session.Prompt``: TPS logins and new PINs, the format confirmation, and
other kinds (a TLS certificate to trust, a Phone Home URL) alike.

Must not: talk D-Bus itself (``AgentChannel`` is the port, ``escd.dbus_service.agent``
implements it), log an answer, or keep one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from escd.errors import (
    InvalidArgumentError,
    NoAgentError,
    PromptTimeoutError,
)
from escd.log import Secret
from escd.tps.session import FieldType, Prompt, PromptKind

logger = logging.getLogger(__name__)

#: ``RegisterAgent`` ``capabilities`` (docs/dbus-api.md).
CAPABILITIES = frozenset({"secret", "text", "choice", "confirm", "tls-trust"})
#: What an agent that names no capabilities can do: every plain prompt, not TLS trust.
DEFAULT_CAPABILITIES = frozenset({"secret", "text", "choice", "confirm"})

_FIELD_CAPABILITY = {
    FieldType.TEXT: "text",
    FieldType.SECRET: "secret",
    FieldType.PIN: "secret",
    FieldType.CHOICE: "choice",
    FieldType.BOOL: "confirm",
}

#: One answer: a ``Secret`` for secret and PIN fields, ``bool`` for bool fields, else ``str``.
AnswerValue = Secret | str | bool
Answers = dict[str, AnswerValue]


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """One registered agent: who (unique bus name), where (object path), what it can do."""

    owner: str
    path: str
    capabilities: frozenset[str] = DEFAULT_CAPABILITIES
    default: bool = False
    ui: bool = False


class AgentChannel(Protocol):
    """How the broker reaches agents (the D-Bus ``io.github.escd.Escd1.Agent`` calls)."""

    async def request_input(
        self, agent: AgentRecord, job: str, request_id: str, prompt: Prompt
    ) -> Answers:
        """``RequestInput``; raises ``CanceledError`` (the user said no), ``NoAgentError``."""
        ...

    def cancel_request(self, agent: AgentRecord, request_id: str) -> None:
        """``CancelRequest``, without waiting for an answer."""
        ...

    def release(self, agent: AgentRecord) -> None:
        """``Release``, without waiting for an answer."""
        ...


def capabilities_for(prompt: Prompt) -> frozenset[str]:
    """What an agent must be able to do to answer ``prompt``."""
    if prompt.kind is PromptKind.TLS_TRUST:
        return frozenset({"tls-trust"})
    return frozenset(_FIELD_CAPABILITY[field.type] for field in prompt.fields)


def drop_answers(values: Mapping[str, AnswerValue]) -> None:
    for value in values.values():
        if isinstance(value, Secret):
            value.drop()


class AgentBroker:
    """Registered agents, and asking one of them (``PromptBroker`` of the operations)."""

    def __init__(self, channel: AgentChannel, timeout: Callable[[], float]) -> None:
        self._channel = channel
        self._timeout = timeout
        #: By owner: one agent per connection.
        self._agents: dict[str, AgentRecord] = {}
        self._ids = itertools.count(1)

    # -- registration ------------------------------------------------------------------

    def agents(self) -> list[AgentRecord]:
        return list(self._agents.values())

    def register(
        self,
        owner: str,
        path: str,
        *,
        capabilities: frozenset[str] | None = None,
        default: bool = False,
        ui: bool = False,
    ) -> AgentRecord:
        """Register (or re-register) the agent of connection ``owner``."""
        if capabilities is not None:
            unknown = capabilities - CAPABILITIES
            if unknown:
                known = ", ".join(sorted(CAPABILITIES))
                raise InvalidArgumentError(
                    f"unknown capabilities {', '.join(sorted(unknown))} (known: {known})"
                )
        record = AgentRecord(
            owner,
            path,
            DEFAULT_CAPABILITIES if capabilities is None else capabilities,
            default,
            ui,
        )
        old = self._agents.get(owner)
        if old is not None and old.path != path:
            # One agent per connection (BlueZ): the new object replaces the old one.
            self._channel.release(old)
        if default:
            for other, agent in list(self._agents.items()):
                if agent.default and other != owner:
                    self._agents[other] = replace(agent, default=False)
        self._agents[owner] = record
        logger.info(
            "agent %s registered by %s (%s%s)",
            path,
            owner,
            ", ".join(sorted(record.capabilities)) or "no capabilities",
            ", default" if default else "",
        )
        return record

    def unregister(self, owner: str, path: str) -> None:
        record = self._agents.get(owner)
        if record is None or record.path != path:
            raise InvalidArgumentError(f"this connection has no agent registered at {path}")
        del self._agents[owner]
        logger.info("agent %s of %s unregistered", path, owner)

    def peer_vanished(self, owner: str) -> None:
        """A connection left the bus: its agent is dropped (NetworkManager's rule)."""
        if self._agents.pop(owner, None) is not None:
            logger.info("agent of %s dropped: it left the bus", owner)

    def close(self) -> None:
        """The daemon stops: every agent is told ``Release``."""
        for record in self._agents.values():
            self._channel.release(record)
        self._agents.clear()

    # -- asking ------------------------------------------------------------------------

    def choose(self, starter: str, needs: frozenset[str]) -> AgentRecord:
        """The agent to ask: the starter's, the default, any capable one (in that order)."""
        candidates = [self._agents.get(starter)]
        candidates += [agent for agent in self._agents.values() if agent.default]
        candidates += list(self._agents.values())
        for agent in candidates:
            if agent is not None and needs <= agent.capabilities:
                return agent
        if not self._agents:
            raise NoAgentError("no agent is registered to ask the user")
        raise NoAgentError(f"no registered agent can answer ({', '.join(sorted(needs))} needed)")

    def can_ask(self, starter: str, prompt: Prompt) -> bool:
        """Whether ``ask`` would find an agent for ``prompt`` now (nobody is asked)."""
        try:
            self.choose(starter, capabilities_for(prompt))
        except NoAgentError:
            return False
        return True

    async def ask(self, job: str, starter: str, prompt: Prompt) -> Answers:
        """Ask the user through an agent; the answers keyed by field id.

        Raises ``NoAgentError``, ``PromptTimeoutError``, ``CanceledError``; when the
        calling task is cancelled the prompt is withdrawn (``CancelRequest``).
        """
        agent = self.choose(starter, capabilities_for(prompt))
        request_id = str(next(self._ids))
        timeout = self._timeout()
        logger.debug(
            "asking agent %s of %s for %s (request %s)",
            agent.path,
            agent.owner,
            prompt.kind,
            request_id,
        )
        try:
            async with asyncio.timeout(timeout):
                answers = await self._channel.request_input(agent, job, request_id, prompt)
        except TimeoutError:
            self._channel.cancel_request(agent, request_id)
            raise PromptTimeoutError(
                f"nobody answered the {prompt.kind} prompt within {timeout:g} s"
            ) from None
        except asyncio.CancelledError:
            self._channel.cancel_request(agent, request_id)
            raise
        wanted = {field.id for field in prompt.fields}
        drop_answers({key: value for key, value in answers.items() if key not in wanted})
        return {key: value for key, value in answers.items() if key in wanted}
