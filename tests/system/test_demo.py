# SPDX-License-Identifier: GPL-2.0-or-later
"""``escd-sim demo --non-interactive`` (what ``make demo`` runs) works end to end.

This is how the demo runs in CI, so it cannot rot: every step's line must appear, in
order, the exit status must be 0, the run must take under a minute, and nothing it
started may outlive it.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from tests.support.escd_process import BIN, environment

STEPS = [
    "starting a private D-Bus session bus",
    "starting a private pcscd with the vpcd driver",
    "starting the simulated Dogtag TPS over TLS",
    "starting escd on the private bus",
    "trusting the TPS's CA: escctl trust import --yes",
    "inserting a blank simulated card; escd reads it and phones home",
    "formatting the card",
    "enrolling the card as user 'demo' with PIN 123456",
    "escctl info: the enrolled token",
    "pkcs11-tool -O (OpenSC) lists the new certificate",
    "resetting the PIN to 654321",
    "removing the card",
]


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(cmdline.decode(errors="replace"))
    return found


def test_make_demo_runs_every_step_in_under_a_minute() -> None:
    env = environment()
    # The demo must not lean on the test session's bus or pcscd.
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.pop("PCSCLITE_CSOCK_NAME", None)
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "escd-sim"), "demo", "--non-interactive"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    numbered = re.findall(r"^\[\s*(\d+)/(\d+)\] (.*)$", result.stdout, re.MULTILINE)
    assert [int(n) for n, _, _ in numbered] == list(range(1, len(STEPS) + 1)), output
    for (_, total, text), expected in zip(numbered, STEPS, strict=True):
        assert int(total) == len(STEPS)
        assert text.startswith(expected), (text, expected)
    assert re.search(r"^demo finished in \d+\.\d s$", result.stdout, re.MULTILINE)
    assert "Certificate Object" in result.stdout  # pkcs11-tool saw the certificate
    assert "FAILED" not in output
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"
    # pcscd, dbus-daemon and escd were all started with the demo's directory in their
    # command lines; none of them may outlive the demo.
    root = re.search(r"everything runs privately under (\S+)", result.stdout)
    assert root is not None
    assert _processes_mentioning(root.group(1)) == []
    assert not Path(root.group(1)).exists()
