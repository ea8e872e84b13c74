# SPDX-License-Identifier: GPL-2.0-or-later
"""The D-Bus API of a daemon running in this process on the private session bus.

The daemon is the real composition (registry, watcher, identification, D-Bus objects)
over the simulator's in-process reader backend, so insertions are instant and
deterministic; the PC/SC backend is covered by ``test_monitor`` and the system tests.
Clients are separate bus connections: ``escd.ctl.client`` and a raw signal recorder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import DBusError, Message, Variant

from escd.config import Config
from escd.daemon import Daemon
from escd.dbus_service.errors import INTERNAL_MESSAGE
from escd.dbus_service.names import (
    ERROR_INTERNAL,
    ERROR_INVALID_ARGS,
    ERROR_NO_SUCH_TOKEN,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    OBJECT_MANAGER_INTERFACE,
    PROPERTIES_INTERFACE,
    READER_INTERFACE,
    ROOT_PATH,
    TOKEN_INTERFACE,
    reader_path,
    token_path,
)
from escd.errors import ERROR_PREFIX, CardRemovedError
from escd.readers import CardSession, ReaderEvent
from escd.sim.bus import PrivateBus
from escd.sim.card import SimulatedCard, enrolled_card, formatted_card
from escd.sim.reader import SimReaderBackend
from escd.sim.state import LifeCycle
from tests.support.embedded import Embedded, serving

TIMEOUT = 5.0


class FaultyBackend:
    """The simulator's backend, except that ``connect`` fails while ``fault`` is set."""

    def __init__(self, inner: SimReaderBackend) -> None:
        self.inner = inner
        self.fault: Exception | None = None

    def start(self, on_event: Callable[[ReaderEvent], None]) -> None:
        self.inner.start(on_event)

    def stop(self) -> None:
        self.inner.stop()

    def connect(self, reader: str) -> CardSession:
        if self.fault is not None:
            raise self.fault
        return self.inner.connect(reader)


def added(path: str) -> Callable[[Message], bool]:
    return lambda m: m.member == "InterfacesAdded" and m.body[0] == path


def removed(path: str) -> Callable[[Message], bool]:
    return lambda m: m.member == "InterfacesRemoved" and m.body[0] == path


def changed(path: str, interface: str, prop: str) -> Callable[[Message], bool]:
    return lambda m: (
        m.member == "PropertiesChanged"
        and m.path == path
        and m.body[0] == interface
        and (prop in m.body[1] or prop in m.body[2])
    )


@dataclasses.dataclass
class Running(Embedded):
    backend: FaultyBackend

    async def get(self, path: str, interface: str, prop: str) -> Any:
        (value,) = await self.client.call(
            path, PROPERTIES_INTERFACE, "Get", "ss", [interface, prop]
        )
        assert isinstance(value, Variant)
        return value.value


@pytest.fixture
async def running(session_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[Running]:
    config_path = tmp_path / "config.yaml"
    config_path.write_text("policy:\n  hide_format: false\n")
    readers = SimReaderBackend(asyncio.get_running_loop(), 4)
    backend = FaultyBackend(readers)
    daemon = Daemon(Config(), config_files=[config_path], backend=backend)
    async with serving(daemon) as (client, signals):
        yield Running(daemon, readers, client, signals, config_path, backend)


def cuid_of(card: SimulatedCard) -> str:
    return card.state.cuid.hex()


async def test_inserted_card_appears_with_the_contract_properties(running: Running) -> None:
    card = SimulatedCard(enrolled_card(phone_home_url="https://tps.example.com/phone_home"))
    path = await running.insert(0, card)
    assert path == token_path(cuid_of(card))
    message = await running.signals.wait_for(added(path))
    assert message.path == ROOT_PATH
    assert message.interface == OBJECT_MANAGER_INTERFACE
    props = {name: variant.value for name, variant in message.body[1][TOKEN_INTERFACE].items()}
    assert props["Cuid"] == cuid_of(card)
    assert props["State"] == 3
    assert props["Applet"] == 1
    assert tuple(props["AppletVersion"]) == (1, 1)
    assert props["Atr"] == card.atr.hex()
    assert props["Reader"] == reader_path(0)
    assert props["PhoneHomeUrl"] == "https://tps.example.com/phone_home"
    (cert,) = props["Certificates"]
    assert {key: value.signature for key, value in cert.items()} == {
        "subject": "s",
        "issuer": "s",
        "serial": "s",
        "not_before": "t",
        "not_after": "t",
        "sha256": "s",
        "label": "s",
    }
    assert "CN=Test User" in cert["subject"].value
    assert await running.get(reader_path(0), READER_INTERFACE, "Token") == path
    assert await running.get(reader_path(0), READER_INTERFACE, "State") == 2


async def test_removal_removes_the_object_and_empties_the_reader(running: Running) -> None:
    path = await running.insert(1, SimulatedCard(formatted_card()))
    mark = running.signals.mark()
    running.readers.remove(running.readers.readers[1])
    message = await running.signals.wait_for(removed(path), mark)
    assert message.path == ROOT_PATH
    assert message.body[1] == [TOKEN_INTERFACE]
    await running.signals.wait_for(changed(reader_path(1), READER_INTERFACE, "Token"), mark)
    assert await running.get(reader_path(1), READER_INTERFACE, "Token") == "/"
    assert await running.get(reader_path(1), READER_INTERFACE, "State") == 1
    snapshot = await running.client.snapshot()
    assert path not in snapshot.tokens


async def test_the_same_card_in_another_reader_keeps_its_path(running: Running) -> None:
    card = SimulatedCard(formatted_card())
    first = await running.insert(0, card)
    running.readers.remove(running.readers.readers[0])
    second = await running.insert(2, card)
    assert first == second
    assert await running.get(second, TOKEN_INTERFACE, "Reader") == reader_path(2)


async def test_refresh_rereads_the_card_and_emits_properties_changed(running: Running) -> None:
    card = SimulatedCard(formatted_card())
    path = await running.insert(0, card)
    assert await running.get(path, TOKEN_INTERFACE, "State") == 2
    assert card.state.applet is not None
    card.state.applet.life_cycle = LifeCycle.PERSONALIZED
    mark = running.signals.mark()
    await running.client.call(path, TOKEN_INTERFACE, "Refresh")
    message = await running.signals.wait_for(changed(path, TOKEN_INTERFACE, "State"), mark)
    assert message.body[1]["State"].value == 3
    assert await running.get(path, TOKEN_INTERFACE, "State") == 3


async def test_certificate_changes_are_announced_as_invalidated(running: Running) -> None:
    path = await running.insert(0, SimulatedCard(enrolled_card()))
    record = running.daemon.registry.token(path.rsplit("/", 1)[1])
    mark = running.signals.mark()
    running.daemon.registry.token_identified(dataclasses.replace(record.info, certificates=()))
    message = await running.signals.wait_for(changed(path, TOKEN_INTERFACE, "Certificates"), mark)
    assert message.body[2] == ["Certificates"]
    assert "Certificates" not in message.body[1]
    assert await running.get(path, TOKEN_INTERFACE, "Certificates") == []


async def test_find_token_by_cuid_prefix_or_reader_and_named_error_otherwise(
    running: Running,
) -> None:
    card = SimulatedCard(formatted_card())
    path = await running.insert(3, card)
    assert await running.client.find_token(cuid_of(card)[:12].upper()) == path
    assert await running.client.find_token(running.readers.readers[3]) == path
    with pytest.raises(DBusError) as caught:
        await running.client.find_token("ffffffff")
    assert caught.value.type == ERROR_NO_SUCH_TOKEN
    assert "ffffffff" in caught.value.text


@pytest.mark.parametrize(
    "options",
    [
        {"colour": Variant("s", "red")},
        {"log_lines": Variant("s", "10")},
        {"format": Variant("s", "html")},
    ],
    ids=["unknown-option", "wrong-type", "unknown-format"],
)
async def test_bad_diagnostics_options_are_invalid_args(
    running: Running, options: dict[str, Variant]
) -> None:
    with pytest.raises(DBusError) as caught:
        await running.client.diagnostics(options)
    assert caught.value.type == ERROR_INVALID_ARGS


async def test_diagnostics_report_tokens_events_and_text(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escd")
    card = SimulatedCard(enrolled_card())
    await running.insert(0, card)
    report = await running.client.diagnostics(
        {"format": Variant("s", "text"), "log_lines": Variant("u", 1)}
    )
    assert report["pcsc_state"] == "unknown"  # the simulator has no PC/SC service
    assert {"escd", "python", "pyscard", "dbus-fast", "cryptography"} <= set(report["versions"])
    (token,) = report["tokens"]
    assert token["cuid"] == cuid_of(card) and token["state"] == "enrolled"
    assert any(event["kind"] == "token-inserted" for event in report["events"])
    (line,) = report["log"]  # the newest one
    assert f"INFO escd.cardwatch: token {cuid_of(card)} in " in line
    assert cuid_of(card) in report["text"]
    assert "Recent events:" in report["text"]


async def test_card_pulled_during_refresh_is_token_removed(running: Running) -> None:
    path = await running.insert(0, SimulatedCard(formatted_card()))
    running.backend.fault = CardRemovedError("the card was removed")
    with pytest.raises(DBusError) as caught:
        await running.client.call(path, TOKEN_INTERFACE, "Refresh")
    assert caught.value.type == ERROR_PREFIX + "TokenRemoved"


async def test_unexpected_exception_is_internal_without_its_text(running: Running) -> None:
    path = await running.insert(0, SimulatedCard(formatted_card()))
    running.backend.fault = RuntimeError("secret detail at /home/user/.escd/state")
    with pytest.raises(DBusError) as caught:
        await running.client.call(path, TOKEN_INTERFACE, "Refresh")
    assert caught.value.type == ERROR_INTERNAL
    assert caught.value.text == INTERNAL_MESSAGE
    assert "secret" not in str(caught.value.reply.body if caught.value.reply else "")


async def test_reload_applies_policy_and_refuses_a_broken_file(running: Running) -> None:
    mark = running.signals.mark()
    running.config_path.write_text("policy:\n  hide_format: true\nauto_launch:\n  policy: always\n")
    await running.client.call(MANAGER_PATH, MANAGER_INTERFACE, "ReloadConfiguration")
    message = await running.signals.wait_for(changed(MANAGER_PATH, MANAGER_INTERFACE, "Policy"))
    assert message.body[1]["Policy"].value["hide_format"].value is True
    assert message.body[1]["AutoLaunchPolicy"].value == 3
    running.config_path.write_text("policy:\n  hide_format: sometimes\n")
    with pytest.raises(DBusError) as caught:
        await running.client.call(MANAGER_PATH, MANAGER_INTERFACE, "ReloadConfiguration")
    assert caught.value.type == ERROR_PREFIX + "InvalidConfiguration"
    assert "policy.hide_format" in caught.value.text
    assert str(running.config_path) in caught.value.text
    policy = await running.get(MANAGER_PATH, MANAGER_INTERFACE, "Policy")
    assert policy["hide_format"].value is True  # the old configuration stays
    assert mark < running.signals.mark()


async def test_manager_properties(running: Running) -> None:
    snapshot = await running.client.snapshot()
    manager = snapshot.manager
    assert manager.version
    assert "phone-home" in manager.features
    assert manager.policy == {
        "hide_format": False,
        "deny_format": False,
        "require_pin_for_certificates": False,
        "tps_message_timeout": 90.0,
        "global_phone_home_url": "",
    }
    assert manager.auto_launch_policy == 0


async def test_object_manager_lives_at_the_root_only(running: Running) -> None:
    path = await running.insert(0, SimulatedCard(formatted_card()))
    (root,) = await running.client.call(
        ROOT_PATH, "org.freedesktop.DBus.Introspectable", "Introspect"
    )
    (token,) = await running.client.call(path, "org.freedesktop.DBus.Introspectable", "Introspect")
    assert OBJECT_MANAGER_INTERFACE in root
    assert OBJECT_MANAGER_INTERFACE not in token and TOKEN_INTERFACE in token


async def test_many_readers_each_with_a_token(running: Running) -> None:
    cards = [SimulatedCard(formatted_card()) for _ in range(4)]
    paths = {await running.insert(n, card) for n, card in enumerate(cards)}
    snapshot = await running.client.snapshot()
    assert set(snapshot.tokens) == paths
    assert {token.reader_name for token in snapshot.tokens.values()} == set(running.readers.readers)


async def test_escctl_watch_prints_state_changes(running: Running) -> None:
    card = SimulatedCard(formatted_card())
    path = await running.insert(0, card)
    token_id = path.rsplit("/", 1)[1]
    watch = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("escctl")), "watch", stdout=asyncio.subprocess.PIPE
    )
    assert watch.stdout is not None
    try:
        async with asyncio.timeout(TIMEOUT):
            assert b"watching escd" in await watch.stdout.readline()
        assert card.state.applet is not None
        card.state.applet.life_cycle = LifeCycle.PERSONALIZED
        await running.client.call(path, TOKEN_INTERFACE, "Refresh")
        async with asyncio.timeout(TIMEOUT):
            line = (await watch.stdout.readline()).decode()
        assert line.split()[1:] == ["changed", token_id, "State=enrolled"]
    finally:
        watch.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(watch.wait(), TIMEOUT) == 0
