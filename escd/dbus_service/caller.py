# SPDX-License-Identifier: GPL-2.0-or-later
"""Who is calling: the unique bus name of the sender of the method call being handled.

dbus-fast hands a service method its arguments only, but several escd methods depend on
the caller: ``RegisterAgent`` (one agent per connection), the operations (the job path
``/job/<sender>/<handle_token>``, ``Job.StartedBy``, the starter's own agent, cancel when
the starter leaves). ``CallerAwareBus`` puts the sender into a context variable around
every method handler; ``caller()`` reads it. A coroutine method runs in a task created
inside that context, so it sees its own caller for its whole life, and concurrent calls
never see each other's.

Must not: carry anything but the sender's name, or be read outside a method handler
(it answers "" there).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from dbus_fast import Message
from dbus_fast.service import ServiceInterface

from escd.dbus_service.objectmanager import ObjectManagerBus

# A ContextVar is per-task context, not shared state: each call sees only its own value.
_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("escd_dbus_caller", default="")


def caller() -> str:
    """The unique bus name (``:1.42``) that sent the method call being handled."""
    return _CALLER.get()


class CallerAwareBus(ObjectManagerBus):
    """The escd bus: the object manager at the root, and ``caller()`` in method handlers."""

    def _make_method_handler(
        self, interface: ServiceInterface, method: Any
    ) -> Callable[[Message, Callable[[Message], None]], None]:
        handler = super()._make_method_handler(interface, method)

        def with_caller(message: Message, send_reply: Callable[[Message], None]) -> None:
            token = _CALLER.set(message.sender or "")
            try:
                handler(message, send_reply)
            finally:
                _CALLER.reset(token)

        return with_caller
