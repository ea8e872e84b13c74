# SPDX-License-Identifier: GPL-2.0-or-later
"""Auto-launch on insertion: the real daemon in-process over the simulator's readers.

Covers ``Manager.EnrollmentSuggested`` for every policy and blank / formatted / enrolled
cards (once per insertion, with the contract's reasons), the command hook (environment,
exit status and output logged, a failing or hanging hook never delaying insertions, the
timeout that kills it), the rate limit under 50 insert/remove cycles, ``ui`` agents
suppressing the launch, and ActivateAction on a fake ``org.freedesktop.Application``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from escd.dbus_service.names import MANAGER_INTERFACE, MANAGER_PATH, token_path
from escd.sim.bus import PrivateBus
from escd.sim.card import SimulatedCard, blank_card, enrolled_card, formatted_card
from escd.sim.state import CardState
from tests.support.embedded import embedded_daemon
from tests.support.escd_process import process_alive
from tests.support.fake_desktop import FakeApplication

HOOK = """\
import json, os, sys
keys = ("ESCD_TOKEN_CUID", "ESCD_TOKEN_STATE", "ESCD_READER", "ESCD_TOKEN_PATH", "ESCD_REASON")
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({key: os.environ.get(key) for key in keys}) + "\\n")
print("hook ran for", os.environ.get("ESCD_TOKEN_CUID"))
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""

CARDS = {"blank": blank_card, "formatted": formatted_card, "enrolled": enrolled_card}

#: policy → the reason expected for a blank, formatted and enrolled card (None: no signal).
EXPECTED: dict[str, dict[str, int | None]] = {
    "never": {"blank": None, "formatted": None, "enrolled": None},
    "uninitialized": {"blank": None, "formatted": 1, "enrolled": None},
    "uninitialized-or-no-applet": {"blank": 2, "formatted": 1, "enrolled": None},
    "always": {"blank": 2, "formatted": 1, "enrolled": 4},
}


def hook_command(tmp_path: Path, *extra: str) -> tuple[list[str], Path]:
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    output = tmp_path / "hook.jsonl"
    return [sys.executable, str(script), str(output), *extra], output


def runs(output: Path) -> list[dict[str, Any]]:
    if not output.exists():
        return []
    return [json.loads(line) for line in output.read_text().splitlines()]


def config(policy: str, **auto_launch: Any) -> dict[str, Any]:
    return {
        "phone_home": {"enabled": False},
        "notifications": {"enabled": "off"},
        "auto_launch": {"policy": policy, **auto_launch},
    }


@pytest.mark.parametrize("policy", list(EXPECTED))
async def test_each_policy_suggests_enrollment_for_the_right_cards(
    session_bus: PrivateBus, tmp_path: Path, policy: str
) -> None:
    command, output = hook_command(tmp_path)
    async with embedded_daemon(config(policy, command=command), tmp_path) as running:
        for kind, reason in EXPECTED[policy].items():
            card = SimulatedCard(CARDS[kind]())
            mark = running.signals.mark()
            path = await running.insert(0, card)
            await running.round_trip()
            expected = [] if reason is None else [(path, reason)]
            assert running.signals.suggestions(mark) == expected, kind
            await running.remove(0)
        await running.daemon.launcher.wait_idle()
    launched = {run["ESCD_TOKEN_STATE"] for run in runs(output)}
    states = {"blank": "NO_APPLET", "formatted": "UNINITIALIZED", "enrolled": "ENROLLED"}
    assert launched == {states[k] for k, r in EXPECTED[policy].items() if r is not None}


async def test_the_signal_comes_from_the_manager_once_per_insertion(
    session_bus: PrivateBus, tmp_path: Path
) -> None:
    async with embedded_daemon(config("uninitialized"), tmp_path) as running:
        card = SimulatedCard(formatted_card())
        mark = running.signals.mark()
        path = await running.insert(0, card)
        await running.client.call(path, "io.github.escd.Escd1.Token", "Refresh")
        await running.round_trip()
        (message,) = [
            m for m in running.signals.messages[mark:] if m.member == "EnrollmentSuggested"
        ]
        assert (message.path, message.interface, message.signature) == (
            MANAGER_PATH,
            MANAGER_INTERFACE,
            "ou",
        )
        await running.remove(0)
        await running.insert(1, card)
        await running.round_trip()
        assert [p for p, _ in running.signals.suggestions(mark)] == [path, path]


async def test_the_hook_gets_the_token_in_its_environment(
    session_bus: PrivateBus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escd.launcher")
    command, output = hook_command(tmp_path)
    async with embedded_daemon(config("uninitialized", command=command), tmp_path) as running:
        card = SimulatedCard(formatted_card())
        path = await running.insert(1, card)
        await running.round_trip()
        await running.daemon.launcher.wait_idle()
        reader = running.readers.readers[1]
    cuid = card.state.cuid.hex()
    assert runs(output) == [
        {
            "ESCD_TOKEN_CUID": cuid,
            "ESCD_TOKEN_STATE": "UNINITIALIZED",
            "ESCD_READER": reader,
            "ESCD_TOKEN_PATH": path,
            "ESCD_REASON": "UNINITIALIZED",
        }
    ]
    assert path == token_path(cuid)
    assert f"command output: hook ran for {cuid}" in caplog.text
    assert "exited with status 0" in caplog.text


async def test_a_failing_hook_is_logged_and_insertions_go_on(
    session_bus: PrivateBus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escd.launcher")
    command, output = hook_command(tmp_path, "3")
    async with embedded_daemon(
        config("uninitialized", command=command, min_interval=0), tmp_path
    ) as running:
        await running.insert(0, SimulatedCard(formatted_card()))
        await running.round_trip()
        await running.daemon.launcher.wait_idle()
        assert "exited with status 3" in caplog.text
        await running.insert(1, SimulatedCard(formatted_card()))
        await running.round_trip()
        await running.daemon.launcher.wait_idle()
        report = await running.client.diagnostics({})
    assert len(runs(output)) == 2
    assert any("exited with status 3" in event["message"] for event in report["events"])


async def test_a_hanging_hook_does_not_delay_the_next_insertion(
    session_bus: PrivateBus, tmp_path: Path
) -> None:
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    async with embedded_daemon(
        config("uninitialized", command=hang, min_interval=0, command_timeout=60), tmp_path
    ) as running:
        first = await running.insert(0, SimulatedCard(formatted_card()))
        await running.round_trip()
        assert running.daemon.launcher.busy(first.rsplit("/", 1)[1])
        started = time.monotonic()
        await running.insert(1, SimulatedCard(formatted_card()))
        elapsed = time.monotonic() - started
        assert running.daemon.launcher.busy(first.rsplit("/", 1)[1])
    # Identification of a simulated card takes milliseconds; a blocked loop would take 60 s.
    assert elapsed < 1.0


async def test_a_hook_that_outlives_its_timeout_is_killed(
    session_bus: PrivateBus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escd.launcher")
    pid_file = tmp_path / "child.pid"
    # The hook starts a grandchild that would outlive it: both must go.
    hang = [
        "sh",
        "-c",
        f"sleep 60 & echo $! > {pid_file}; echo waiting; wait",
    ]
    async with embedded_daemon(
        config("uninitialized", command=hang, command_timeout=0.5), tmp_path
    ) as running:
        path = await running.insert(0, SimulatedCard(formatted_card()))
        await running.round_trip()
        started = time.monotonic()
        await running.daemon.launcher.wait_idle()
        assert time.monotonic() - started < 5
        assert not running.daemon.launcher.busy(path.rsplit("/", 1)[1])
    assert "did not finish in 0.5 s; killed it" in caplog.text
    assert "command output: waiting" in caplog.text
    grandchild = int(pid_file.read_text())
    assert not process_alive(grandchild)


async def test_fifty_quick_cycles_launch_once(session_bus: PrivateBus, tmp_path: Path) -> None:
    command, output = hook_command(tmp_path)
    async with embedded_daemon(
        config("uninitialized", command=command, min_interval=3600), tmp_path
    ) as running:
        card = SimulatedCard(formatted_card())
        mark = running.signals.mark()
        for _ in range(50):
            await running.insert(0, card)
            await running.remove(0)
        await running.round_trip()
        await running.daemon.launcher.wait_idle()
        suggestions = running.signals.suggestions(mark)
    assert len(suggestions) == 50  # the signal: once per insertion
    assert len(runs(output)) == 1  # the launch: once per min_interval


async def test_a_connected_ui_agent_means_nothing_is_launched(
    session_bus: PrivateBus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escd.launcher")
    command, output = hook_command(tmp_path)
    async with embedded_daemon(config("uninitialized", command=command), tmp_path) as running:
        await running.client.call(
            MANAGER_PATH,
            MANAGER_INTERFACE,
            "RegisterAgent",
            "oa{sv}",
            ["/org/example/Agent", {"ui": Variant("b", True)}],
        )
        mark = running.signals.mark()
        path = await running.insert(0, SimulatedCard(formatted_card()))
        await running.round_trip()
        assert running.signals.suggestions(mark) == [(path, 1)]
        assert not running.daemon.launcher.busy(path.rsplit("/", 1)[1])
        # Without it (the frontend left), the next insertion launches.
        await running.client.call(
            MANAGER_PATH, MANAGER_INTERFACE, "UnregisterAgent", "o", ["/org/example/Agent"]
        )
        await running.remove(0)
        await running.insert(1, SimulatedCard(formatted_card()))
        await running.round_trip()
        await running.daemon.launcher.wait_idle()
    assert "enrollment UI is connected; nothing launched" in caplog.text
    assert len(runs(output)) == 1


async def test_a_desktop_application_is_activated_with_the_enroll_action(
    session_bus: PrivateBus, tmp_path: Path
) -> None:
    app = await FakeApplication("org.example.EscdFrontend").start()
    command, output = hook_command(tmp_path)
    try:
        async with embedded_daemon(
            config(
                "uninitialized-or-no-applet",
                desktop_app="org.example.EscdFrontend",
                command=command,
            ),
            tmp_path,
        ) as running:
            card = SimulatedCard(blank_card())
            await running.insert(0, card)
            call = await app.calls.wait_for(lambda c: c[0] == "enroll")
            await running.daemon.launcher.wait_idle()
    finally:
        app.stop()
    assert call == ("enroll", [card.state.cuid.hex()], {})
    assert runs(output) == []  # the application took it; the command is the fallback


async def test_an_absent_desktop_application_falls_back_to_the_command(
    session_bus: PrivateBus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escd.launcher")
    command, output = hook_command(tmp_path)
    async with embedded_daemon(
        config("uninitialized", desktop_app="org.example.NotThere", command=command), tmp_path
    ) as running:
        await running.insert(0, SimulatedCard(formatted_card()))
        await running.round_trip()
        await running.daemon.launcher.wait_idle()
    assert "activating org.example.NotThere failed" in caplog.text
    assert [run["ESCD_TOKEN_STATE"] for run in runs(output)] == ["UNINITIALIZED"]


async def test_phone_home_failure_is_the_reason(session_bus: PrivateBus, tmp_path: Path) -> None:
    settings = config("uninitialized")
    settings["phone_home"] = {"enabled": True, "timeout": 2, "prompt_for_url": False}
    async with embedded_daemon(settings, tmp_path) as running:
        # Port 1 on loopback refuses the connection: phone home fails at once.
        state: CardState = formatted_card(phone_home_url="https://127.0.0.1:1/tps/phoneHome")
        mark = running.signals.mark()
        path = await running.insert(0, SimulatedCard(state))
        message = await running.signals.wait_for(
            lambda m: m.member == "EnrollmentSuggested", mark, timeout=10
        )
    assert (message.body[0], message.body[1]) == (path, 3)
