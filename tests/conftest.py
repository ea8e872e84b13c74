# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared fixtures: a private pcscd with vpcd readers and a private session bus.

Both are per pytest session. libpcsclite reads PCSCLITE_CSOCK_NAME once per process, so
the pcscd fixture sets it before any test makes a PC/SC call, and hands the same
environment to every subprocess (daemon, escctl, pkcs11-tool) a test starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from escd.sim.bus import PrivateBus
from escd.sim.pcscd import PrivatePcscd

if TYPE_CHECKING:
    from escd.sim.state import CardState
    from escd.sim.vpcd import VpcdCard


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reader", default=None, help="run hardware tests against this reader")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reader"):
        return
    skip = pytest.mark.skip(reason="hardware test: pass --reader NAME to run it")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def private_xdg_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """State and config of every daemon the tests start live in a temporary directory,
    never in the user's own ``~/.local/state/escd`` or ``~/.config/escd``."""
    base = tmp_path_factory.mktemp("xdg")
    values = {"XDG_STATE_HOME": str(base / "state"), "XDG_CONFIG_HOME": str(base / "config")}
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    yield base
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def pcscd() -> Iterator[PrivatePcscd]:
    """A private pcscd whose two vpcd readers are free for simulated cards."""
    daemon = PrivatePcscd(reader_name=f"escd test {os.getpid()}", log_apdus=True)
    daemon.start()
    os.environ.update(daemon.env)
    yield daemon
    daemon.close()


@pytest.fixture(scope="session")
def session_bus() -> Iterator[PrivateBus]:
    """A private dbus-daemon; DBUS_SESSION_BUS_ADDRESS points at it for the whole session."""
    bus = PrivateBus()
    bus.start()
    previous = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    os.environ.update(bus.env)
    yield bus
    bus.close()
    if previous is None:
        os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
    else:
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = previous


@pytest.fixture
def vpcd_card(pcscd: PrivatePcscd) -> Iterator[Callable[..., VpcdCard]]:
    """Factory: ``vpcd_card(slot, state)`` plugs a simulated card into a vpcd slot.

    The card is not inserted yet; call ``insert()``. Every card is pulled at teardown.
    ``state`` defaults to a freshly enrolled token.
    """
    from escd.sim.card import SimulatedCard, enrolled_card
    from escd.sim.vpcd import VpcdCard

    cards: list[VpcdCard] = []

    def make(slot: int = 0, state: CardState | None = None) -> VpcdCard:
        card = VpcdCard(SimulatedCard(state or enrolled_card()), pcscd.port_for(slot))
        cards.append(card)
        return card

    yield make
    for card in cards:
        card.remove()
