# SPDX-License-Identifier: GPL-2.0-or-later
"""Names for the arguments dbus-fast leaves unnamed in introspection.

dbus-fast names a method's in-arguments after its parameters, but leaves its
out-arguments and every signal argument unnamed; the shipped XML
(dbus/io.github.escd.Escd1.xml) and docs/dbus-api.md name them. This is the one place
that reaches into dbus-fast's private method and signal records to do so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def name_results(method: object, *names: str) -> None:
    """Name the out-arguments of a ``@dbus_method``, in order (one name for each)."""
    _name(method.__dict__["__DBUS_METHOD"].introspection.out_args, names)


def name_signal_args(signal: object, *names: str) -> None:
    """Name the arguments of a ``@dbus_signal``, in order (one name for each)."""
    _name(signal.__dict__["__DBUS_SIGNAL"].introspection.args, names)


def _name(args: Iterable[Any], names: tuple[str, ...]) -> None:
    for arg, name in zip(args, names, strict=True):
        arg.name = name
