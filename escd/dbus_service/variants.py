# SPDX-License-Identifier: GPL-2.0-or-later
"""``a{sv}`` in and out: checking option dictionaries, and turning plain data into variants.

Options are checked against a table of key → signature; an unknown key or a wrong type
is ``InvalidArgumentError`` (``org.freedesktop.DBus.Error.InvalidArgs``), so a client's
typo is never silently ignored. Outgoing reports are built from plain Python values
(str, bool, int, float, bytes, lists and dicts of them) and typed here in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from dbus_fast import Variant
from dbus_fast.annotations import DBusSignature

from escd.errors import InvalidArgumentError

Options = dict[str, Any]

# Signatures dbus-fast does not ship an alias for. ``DBusVoid`` exists because a plain
# ``-> None`` is read as a signature string under ``from __future__ import annotations``.
DBusVoid = Annotated[None, DBusSignature("")]
DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusVarDict = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
DBusVarDictList = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
DBusUIntPair = Annotated[tuple[int, int], DBusSignature("(uu)")]


def parse_options(options: Mapping[str, Variant], allowed: Mapping[str, str]) -> Options:
    """The plain values of ``options``; raises ``InvalidArgumentError`` for bad keys or types."""
    values: Options = {}
    for key, variant in options.items():
        signature = allowed.get(key)
        if signature is None:
            known = ", ".join(sorted(allowed)) or "none"
            raise InvalidArgumentError(f"unknown option {key!r} (known options: {known})")
        if variant.signature != signature:
            raise InvalidArgumentError(
                f"option {key!r} must have type {signature!r}, not {variant.signature!r}"
            )
        values[key] = variant.value
    return values


def to_variant(value: object) -> Variant:
    """Type a plain value: bool b, int x, float d, str s, bytes ay, lists and dicts nested."""
    signature = _signature(value)
    return Variant(signature, _unwrap(value, signature))


def to_vardict(values: Mapping[str, object]) -> dict[str, Variant]:
    return {key: to_variant(value) for key, value in values.items()}


def _signature(value: object) -> str:
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "x"
    if isinstance(value, float):
        return "d"
    if isinstance(value, str):
        return "s"
    if isinstance(value, bytes):
        return "ay"
    if isinstance(value, Mapping):
        return "a{sv}"
    if isinstance(value, Sequence):
        items = list(value)
        if items and all(isinstance(item, Mapping) for item in items):
            return "aa{sv}"
        if all(isinstance(item, str) for item in items):
            return "as"
        return "av"
    raise TypeError(f"cannot send a {type(value).__name__} over D-Bus")


def _unwrap(value: object, signature: str) -> Any:
    if signature == "a{sv}":
        assert isinstance(value, Mapping)
        return to_vardict(value)
    if signature == "aa{sv}":
        assert isinstance(value, Sequence)
        return [to_vardict(item) for item in value]
    if signature == "av":
        assert isinstance(value, Sequence)
        return [to_variant(item) for item in value]
    if signature == "as":
        assert isinstance(value, Sequence)
        return list(value)
    return value
