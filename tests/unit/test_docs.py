# SPDX-License-Identifier: GPL-2.0-or-later
"""The documentation stays true to the code: every D-Bus member and error is described."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import escd.errors as errors

ROOT = Path(__file__).resolve().parents[2]
XML = ROOT / "dbus" / "io.github.escd.Escd1.xml"
DOC = (ROOT / "docs" / "dbus-api.md").read_text()


def _members() -> list[tuple[str, str, str]]:
    tree = ET.parse(XML)
    found = []
    for interface in tree.getroot().iter("interface"):
        for kind in ("method", "property", "signal"):
            for member in interface.iter(kind):
                found.append((interface.get("name", ""), kind, member.get("name", "")))
    return found


def _error_names() -> list[str]:
    names = set()
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, errors.EscdError):
            names.add(value.dbus_name)
    return sorted(names)


@pytest.mark.parametrize(("interface", "kind", "name"), _members())
def test_every_shipped_member_is_documented(interface: str, kind: str, name: str) -> None:
    assert f"`{name}" in DOC, f"{interface} {kind} {name} is not in docs/dbus-api.md"


@pytest.mark.parametrize("name", _error_names())
def test_every_error_escd_can_return_is_documented(name: str) -> None:
    short = name.removeprefix(errors.ERROR_PREFIX)
    assert f"`{short}`" in DOC or f"`{name}`" in DOC, f"{name} is not in docs/dbus-api.md"
