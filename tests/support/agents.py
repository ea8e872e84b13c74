# SPDX-License-Identifier: GPL-2.0-or-later
"""A scripted agent for tests and benchmarks: escctl's ``AgentInterface`` with canned answers.

``ScriptedAgent`` answers every prompt from a dictionary keyed by field id, records the
prompts it was asked and the ones escd withdrew, and can be told to never answer a
prompt kind (``hang``) or to decline it (``decline``). It runs on a bus connection of its
own; ``connect_agent`` exports and registers it there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from dbus_fast.aio import MessageBus

from escd.ctl.agent import AgentCanceled, AgentInterface, Answer, PromptRequest, register_agent

TIMEOUT = 10.0


@dataclass
class ScriptedAgent:
    """Canned answers (``UID``/``PASSWORD`` of the simulated TPS, the new PIN, confirm)."""

    answers: dict[str, Answer] = field(
        default_factory=lambda: {"UID": "demo", "PASSWORD": "demo", "confirm": True}
    )
    hang: set[str] = field(default_factory=set)
    decline: set[str] = field(default_factory=set)
    requests: list[PromptRequest] = field(default_factory=list)
    withdrawn_ids: list[str] = field(default_factory=list)
    released_count: int = 0

    def __post_init__(self) -> None:
        self._changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def answer(self, request: PromptRequest) -> dict[str, Answer]:
        self.requests.append(request)
        await self._notify()
        if request.kind in self.hang:
            await asyncio.Event().wait()  # until escd withdraws it (CancelRequest)
        if request.kind in self.decline:
            raise AgentCanceled("declined by the test")
        return {f.id: self.answers[f.id] for f in request.fields if f.id in self.answers}

    def withdrawn(self, request: PromptRequest) -> None:
        self.withdrawn_ids.append(request.request_id)
        asyncio.get_running_loop().create_task(self._notify())

    def released(self) -> None:
        self.released_count += 1

    def kinds(self) -> list[str]:
        return [request.kind for request in self.requests]

    async def wait_asked(self, kind: str, count: int = 1) -> PromptRequest:
        """The ``count``-th prompt of ``kind``, once it has been asked."""

        def asked() -> list[PromptRequest]:
            return [request for request in self.requests if request.kind == kind]

        async with asyncio.timeout(TIMEOUT), self._changed:
            await self._changed.wait_for(lambda: len(asked()) >= count)
        return asked()[count - 1]

    async def wait_withdrawn(self, request_id: str) -> None:
        async with asyncio.timeout(TIMEOUT), self._changed:
            await self._changed.wait_for(lambda: request_id in self.withdrawn_ids)


async def connect_agent(
    agent: ScriptedAgent, *, default: bool = False, capabilities: tuple[str, ...] | None = None
) -> tuple[MessageBus, AgentInterface]:
    """A new bus connection with ``agent`` exported and registered with escd."""
    bus = await MessageBus().connect()
    kwargs = {} if capabilities is None else {"capabilities": capabilities}
    interface = await register_agent(bus, agent, default=default, **kwargs)  # type: ignore[arg-type]
    return bus, interface
