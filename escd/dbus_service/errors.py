# SPDX-License-Identifier: GPL-2.0-or-later
"""The one place where exceptions become D-Bus error replies.

An ``EscdError`` becomes ``DBusError(exc.dbus_name, exc.message)``: its message is
written for users and never carries a secret (``escd.errors``). Any other exception is a
bug: it is logged here with its traceback and answered ``…Error.Internal`` with a fixed
text, so no exception text, path or traceback reaches a peer on the bus. Every D-Bus
method of the service is wrapped with ``translate_errors``; nothing else in
``escd.dbus_service`` catches exceptions to answer a caller.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from dbus_fast import DBusError

from escd.dbus_service.names import ERROR_INTERNAL
from escd.errors import EscdError

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error in escd; the daemon's log has the details"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def to_dbus_error(exc: BaseException) -> DBusError:
    """The reply for ``exc``; logs anything that is not an escd error."""
    if isinstance(exc, DBusError):
        return exc
    if isinstance(exc, EscdError):
        return DBusError(exc.dbus_name, exc.message)
    logger.error("unexpected error in a D-Bus call", exc_info=exc)
    return DBusError(ERROR_INTERNAL, INTERNAL_MESSAGE)


def translate_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Wrap a D-Bus method (sync or async) so that every exception leaves as ``to_dbus_error``.

    ``functools.wraps`` keeps the signature and annotations dbus-fast reads.
    """
    if inspect.iscoroutinefunction(fn):
        async_fn = cast(Callable[_P, Awaitable[Any]], fn)

        @functools.wraps(fn)
        async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            try:
                return await async_fn(*args, **kwargs)
            except Exception as exc:
                raise to_dbus_error(exc) from None

        return cast(Callable[_P, _R], async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise to_dbus_error(exc) from None

    return wrapper
