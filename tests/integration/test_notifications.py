# SPDX-License-Identifier: GPL-2.0-or-later
"""Desktop notifications against a fake ``org.freedesktop.Notifications`` on the private bus.

The daemon runs in-process over the simulator's readers; the notification server is a
test double of that external service on its own connection. Covers: insertion (with the
token's state) and removal (replacing the insertion notice), the "Enroll…" action on an
unenrolled token starting the same launch as auto-launch, a signal from anyone but the
server ignored, ``off`` sending nothing, and no server at all being no error, with a
server that appears later used from then on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message
from dbus_fast.aio import MessageBus

from escd.sim.bus import PrivateBus
from escd.sim.card import SimulatedCard, blank_card, enrolled_card, formatted_card
from tests.support.embedded import embedded_daemon
from tests.support.fake_desktop import FakeNotifications, Notification

HOOK = """\
import json, os, sys
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"cuid": os.environ["ESCD_TOKEN_CUID"],
                          "reason": os.environ["ESCD_REASON"]}) + "\\n")
"""


def settings(tmp_path: Path, enabled: str = "auto", policy: str = "never") -> dict[str, Any]:
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    return {
        "phone_home": {"enabled": False},
        "notifications": {"enabled": enabled},
        "auto_launch": {
            "policy": policy,
            "command": [sys.executable, str(script), str(tmp_path / "hook.jsonl")],
        },
    }


def launches(tmp_path: Path) -> list[dict[str, str]]:
    output = tmp_path / "hook.jsonl"
    if not output.exists():
        return []
    return [json.loads(line) for line in output.read_text().splitlines()]


@pytest.fixture
async def server(session_bus: PrivateBus) -> Any:
    fake = await FakeNotifications().start()
    yield fake
    fake.stop()


def inserted(n: Notification) -> bool:
    return n.summary == "Smart card inserted"


async def test_insertion_and_removal_are_notified(
    server: FakeNotifications, tmp_path: Path
) -> None:
    async with embedded_daemon(settings(tmp_path), tmp_path) as running:
        card = SimulatedCard(enrolled_card())
        await running.insert(0, card)
        first = await server.notifications.wait_for(inserted)
        await running.remove(0)
        removed = await server.notifications.wait_for(lambda n: n.summary == "Smart card removed")
    cuid = card.state.cuid.hex()
    assert first.app_name == "escd"
    assert cuid in first.body and "is enrolled" in first.body
    assert first.actions == []  # nothing to enroll on an enrolled token
    assert first.hints["category"] == "device.added"
    assert cuid in removed.body
    assert removed.replaces_id == first.id  # the removal replaces the insertion notice


@pytest.mark.parametrize(
    ("factory", "words"),
    [(blank_card, "blank"), (formatted_card, "not enrolled")],
    ids=["blank", "formatted"],
)
async def test_an_unenrolled_token_offers_enroll_and_the_action_launches(
    server: FakeNotifications, tmp_path: Path, factory: Any, words: str
) -> None:
    async with embedded_daemon(settings(tmp_path), tmp_path) as running:
        card = SimulatedCard(factory())
        path = await running.insert(0, card)
        notice = await server.notifications.wait_for(inserted)
        assert words in notice.body
        assert notice.actions == ["enroll", "Enroll…"]
        assert launches(tmp_path) == []  # policy never: only the click launches
        mark = running.signals.mark()
        server.click(notice.id, "enroll")
        suggested = await running.signals.wait_for(
            lambda m: m.member == "EnrollmentSuggested", mark
        )
        await running.daemon.launcher.wait_idle()
    assert suggested.body[0] == path
    (launch,) = launches(tmp_path)
    assert launch["cuid"] == card.state.cuid.hex()


async def test_an_action_signal_from_another_connection_is_ignored(
    server: FakeNotifications, tmp_path: Path, session_bus: PrivateBus
) -> None:
    async with embedded_daemon(settings(tmp_path), tmp_path) as running:
        await running.insert(0, SimulatedCard(formatted_card()))
        notice = await server.notifications.wait_for(inserted)
        impostor = await MessageBus().connect()
        try:
            impostor.send(
                Message.new_signal(
                    "/org/freedesktop/Notifications",
                    "org.freedesktop.Notifications",
                    "ActionInvoked",
                    "us",
                    [notice.id, "enroll"],
                )
            )
            await impostor.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="GetId",
                )
            )
        finally:
            impostor.disconnect()
        await running.round_trip()
        await running.daemon.launcher.wait_idle()
    assert launches(tmp_path) == []


async def test_without_a_launch_target_there_is_no_enroll_button(
    server: FakeNotifications, tmp_path: Path
) -> None:
    config = settings(tmp_path)
    config["auto_launch"] = {"policy": "never"}
    async with embedded_daemon(config, tmp_path) as running:
        await running.insert(0, SimulatedCard(formatted_card()))
        notice = await server.notifications.wait_for(inserted)
    assert notice.actions == []


async def test_off_sends_nothing(server: FakeNotifications, tmp_path: Path) -> None:
    async with embedded_daemon(settings(tmp_path, enabled="off"), tmp_path) as running:
        await running.insert(0, SimulatedCard(formatted_card()))
        await running.remove(0)
        await running.round_trip()
        # Whatever escd would have sent has reached the server by now: a call on the
        # server's own connection is answered after anything queued before it.
        await running.client.call(
            "/org/freedesktop/Notifications",
            "org.freedesktop.Notifications",
            "GetServerInformation",
            destination="org.freedesktop.Notifications",
        )
    assert server.notifications.items == []


async def test_no_server_is_no_error_and_a_later_one_is_used(
    session_bus: PrivateBus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escd")
    async with embedded_daemon(settings(tmp_path), tmp_path) as running:
        assert not running.daemon.notifier.active
        await running.insert(0, SimulatedCard(formatted_card()))
        await running.remove(0)
        fake = await FakeNotifications().start()
        try:
            async with asyncio.timeout(5):
                await running.daemon.notifier.wait_active()
            card = SimulatedCard(enrolled_card())
            await running.insert(1, card)
            notice = await fake.notifications.wait_for(inserted)
        finally:
            fake.stop()
    assert card.state.cuid.hex() in notice.body
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
