# SPDX-License-Identifier: GPL-2.0-or-later
"""``escctl diagnose`` after a real enrollment: every field there, no secret anywhere.

The daemon runs in-process over the simulator's readers; the simulated TPS runs over
TLS with its CA imported through ``Manager.ImportAuthority``; a formatted card phones
home and is enrolled through a job, its login and new PIN answered by a scripted agent.
Then ``escctl diagnose`` (text) and ``escctl diagnose --json`` run as the user would
run them, and neither they nor the daemon's log at the TRAFFIC level may contain the
password or the PIN.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from dbus_fast import Variant

from escd.dbus_service.names import MANAGER_INTERFACE, MANAGER_PATH, TOKEN_INTERFACE
from escd.log import TRAFFIC
from escd.sim.bus import PrivateBus
from escd.sim.card import SimulatedCard, formatted_card
from escd.sim.tps import SimulatedTps
from escd.sim.tps_config import TokenPolicy, TpsConfig
from escd.sim.tps_db import User, UserDirectory
from tests.support.agents import ScriptedAgent, connect_agent
from tests.support.embedded import embedded_daemon

PASSWORD = "Diag-Pw-7c1f"
PIN = "864209"
ESCCTL = str(Path(sys.executable).parent / "escctl")

TEXT_LABELS = [
    "escd version:",
    "Components:",
    "pyscard",
    "pcsc-lite",
    "dbus-fast",
    "cryptography",
    "python",
    "PC/SC service:",
    "Number of cards: 1",
    "Key ID (CUID)",
    "Smart Card Applet Version",
    "Status: ENROLLED",
    "Phone Home URL",
    "Issuer: escd simulated TPS",
    "ATR",
    "TPS URL: https://127.0.0.1:",
    "TPS Enrollment UI URL",
    "Certificate 1",
    "Subject",
    "Valid until",
    "SHA-256",
    "Recent events:",
    "token-inserted",
    "operation",
    "crypto: crypto initialised",
]

TOKEN_KEYS = {
    "cuid", "state", "applet_version", "atr", "phone_home_url", "issuer", "tps_url",
    "enrollment_ui_url", "certificates", "events", "phone_home_state", "reader",
}  # fmt: skip


async def escctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        ESCCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_diagnose_after_an_enrollment_has_every_field_and_no_secret(
    session_bus: PrivateBus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(TRAFFIC, logger="escd")
    tps = SimulatedTps(
        TpsConfig(default_policy=TokenPolicy(pin_reset=True), key_size=1024),
        state_dir=tmp_path / "tps",
        users=UserDirectory([User("demo", PASSWORD, "Demo User")]),
    )
    await tps.start()
    try:
        settings = {
            "phone_home": {"prompt_for_url": False},
            "notifications": {"enabled": "off"},
        }
        async with embedded_daemon(settings, tmp_path) as running:
            await running.client.call(
                MANAGER_PATH, MANAGER_INTERFACE, "ImportAuthority", "aya{sv}",
                [tps.ca_certificate_pem, {"confirmed": Variant("b", True)}],
            )  # fmt: skip
            agent = ScriptedAgent()
            agent.answers.update({"PASSWORD": PASSWORD, "new_pin": PIN})
            bus, _ = await connect_agent(agent, default=True)
            try:
                card = SimulatedCard(formatted_card(phone_home_url=tps.phone_home_url))
                mark = running.signals.mark()
                path = await running.insert(0, card)
                await running.signals.wait_for(
                    lambda m: (
                        m.path == path
                        and m.member == "PropertiesChanged"
                        and "PhoneHomeState" in m.body[1]
                        and m.body[1]["PhoneHomeState"].value == 3
                    ),  # Fetched
                    mark,
                    timeout=20,
                )
                mark = running.signals.mark()
                (job,) = await running.client.call(path, TOKEN_INTERFACE, "Enroll", "a{sv}", [{}])
                done = await running.signals.wait_for(
                    lambda m: m.path == job and m.member == "Completed", mark, timeout=60
                )
                assert done.body[0] == 4, done.body
                text = await escctl("diagnose", "--log", "500")
                raw = await escctl("diagnose", "--json", "--log", "500")
                single = await escctl("diagnose", card.state.cuid.hex()[:8])
            finally:
                bus.disconnect()
    finally:
        await tps.stop()
    for label in TEXT_LABELS:
        assert label in text, label
    report = json.loads(raw)
    assert report["cards"] == 1
    assert {"pyscard", "pcsc-lite", "dbus-fast", "cryptography", "python"} <= set(
        report["versions"]
    )
    (token,) = report["tokens"]
    assert TOKEN_KEYS <= set(token)
    assert token["state"] == "enrolled" and token["issuer"] == "escd simulated TPS"
    assert token["certificates"] and token["certificates"][0]["subject"]
    kinds = {event["kind"] for event in report["events"]}
    assert {"token-inserted", "operation", "crypto"} <= kinds
    assert card.state.cuid.hex() in single
    assert "TOKEN_PDU_REQUEST" in caplog.text  # the most verbose level ran
    for output in (text, raw, single, caplog.text):
        assert PASSWORD not in output
        assert PIN not in output
