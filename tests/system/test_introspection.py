# SPDX-License-Identifier: GPL-2.0-or-later
"""The shipped dbus/io.github.escd.Escd1.xml is exactly what a running escd exports.

Compared element by element (methods with their arguments, properties with type, access
and annotations, signals), ignoring only comments, whitespace and order.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from escd.dbus_service.names import (
    AGENT_INTERFACE,
    BUS_NAME,
    JOB_INTERFACE,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    OBJECT_MANAGER_INTERFACE,
    READER_INTERFACE,
    ROOT_PATH,
    TOKEN_INTERFACE,
    reader_path,
)
from escd.sim.bus import PrivateBus
from escd.sim.pcscd import PrivatePcscd
from tests.support.escd_process import ROOT, EscdProcess, environment

SHIPPED = ROOT / "dbus" / f"{BUS_NAME}.xml"
OURS = (MANAGER_INTERFACE, READER_INTERFACE, TOKEN_INTERFACE)
#: Also in the file: Job objects exist only while there are jobs (compared in
#: tests/integration/test_operations.py), and the Agent interface is the frontends'
#: (compared with escctl's below).
DOCUMENTED = (*OURS, JOB_INTERFACE, AGENT_INTERFACE)

Canonical = tuple[object, ...]


def canonical(element: ET.Element) -> Canonical:
    """An order-free, whitespace-free form of an introspection element."""
    children = tuple(sorted((canonical(child) for child in element), key=repr))
    return (element.tag, tuple(sorted(element.attrib.items())), children)


def interfaces(xml: str) -> dict[str, Canonical]:
    node = ET.fromstring(xml)
    return {i.attrib["name"]: canonical(i) for i in node.findall("interface")}


def introspect(env: dict[str, str], path: str) -> str:
    result = subprocess.run(
        ["gdbus", "introspect", "--session", "--xml", "--dest", BUS_NAME, "--object-path", path],
        env=env, capture_output=True, text=True, timeout=15, check=True,
    )  # fmt: skip
    return result.stdout


@pytest.fixture(scope="module")
def live(pcscd: PrivatePcscd, session_bus: PrivateBus) -> Iterator[dict[str, str]]:
    from escd.sim.card import SimulatedCard, enrolled_card
    from escd.sim.vpcd import VpcdCard

    pcscd.start()
    env = environment()
    with VpcdCard(SimulatedCard(enrolled_card()), pcscd.port) as card:
        assert card.seen.wait(5)
        with EscdProcess(env).start() as daemon:
            daemon.wait_for(r"token \w+ in .*: enrolled")
            yield env


def test_shipped_xml_equals_live_introspection(live: dict[str, str]) -> None:
    shipped = interfaces(SHIPPED.read_text())
    assert set(shipped) == set(DOCUMENTED)
    listing = subprocess.run(
        ["busctl", "--user", "tree", "--list", BUS_NAME],
        env=live, capture_output=True, text=True, timeout=15, check=True,
    ).stdout.split()  # fmt: skip
    token = next(path for path in listing if "/token/" in path)
    for interface, path in (
        (MANAGER_INTERFACE, MANAGER_PATH),
        (READER_INTERFACE, reader_path(0)),
        (TOKEN_INTERFACE, token),
    ):
        assert interfaces(introspect(live, path))[interface] == shipped[interface], interface


def test_object_manager_is_at_the_root(live: dict[str, str]) -> None:
    root = interfaces(introspect(live, ROOT_PATH))
    assert OBJECT_MANAGER_INTERFACE in root
    manager = interfaces(introspect(live, MANAGER_PATH))
    assert OBJECT_MANAGER_INTERFACE not in manager


def test_shipped_agent_interface_is_what_escctl_exports() -> None:
    from escd.ctl.agent import AgentInterface

    class Nobody:
        async def answer(self, request: object) -> dict[str, str | bool]:
            return {}

        def withdrawn(self, request: object) -> None: ...

        def released(self) -> None: ...

    exported = AgentInterface(Nobody()).introspect()  # type: ignore[arg-type]
    node = ET.fromstring(f"<node>{ET.tostring(exported.to_xml()).decode()}</node>")
    ours = {i.attrib["name"]: canonical(i) for i in node.findall("interface")}
    assert ours[AGENT_INTERFACE] == interfaces(SHIPPED.read_text())[AGENT_INTERFACE]


def test_shipped_xml_documents_the_errors_of_each_method() -> None:
    text = SHIPPED.read_text()
    for error in ("NoSuchToken", "InvalidArgs", "InvalidConfiguration", "TokenRemoved"):
        assert error in text
