# SPDX-License-Identifier: GPL-2.0-or-later
"""The systemd user unit, the D-Bus activation file and ``make install-user``.

``systemd-analyze verify --user`` runs without PID-1 systemd as long as
``XDG_RUNTIME_DIR`` is an existing 0700 directory; ExecStart is
pointed at the venv's escd, as the install script does.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from escd.dbus_service.names import BUS_NAME
from tests.support.escd_process import ESCD, ROOT

UNIT = ROOT / "systemd" / "escd.service"
ACTIVATION = ROOT / "dbus" / f"{BUS_NAME}.service"
INSTALL = ROOT / "scripts" / "install-user.sh"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def read_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(exist_ok=True)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    unit = tmp_path / "escd.service"
    unit.write_text(unit_text)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    return subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def with_exec_start(text: str, command: str) -> str:
    return "\n".join(
        f"ExecStart={command}" if line.startswith("ExecStart=") else line
        for line in text.splitlines()
    )


@needs_systemd_analyze
def test_user_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = verify(with_exec_start(UNIT.read_text(), ESCD), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_systemd_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    # What the test above relies on: a bad value is a warning, a bad command an error.
    typo = with_exec_start(UNIT.read_text(), ESCD).replace("Type=dbus", "Type=dbsu")
    result = verify(typo, tmp_path / "typo")
    assert "Failed to parse service type" in result.stderr
    missing = with_exec_start(UNIT.read_text(), str(tmp_path / "no-escd"))
    assert verify(missing, tmp_path / "missing").returncode != 0


def test_unit_is_a_dbus_service_restarted_on_failure() -> None:
    service = read_unit(UNIT.read_text())["Service"]
    assert service["Type"] == "dbus"
    assert service["BusName"] == BUS_NAME
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes"
    # Exit codes restarting cannot fix: invalid configuration, another instance.
    assert set(service["RestartPreventExitStatus"].split()) == {"78", "3"}
    assert read_unit(UNIT.read_text())["Install"]["WantedBy"] == "default.target"


def test_activation_file_names_the_bus_name_and_the_unit() -> None:
    service = read_unit(ACTIVATION.read_text())["D-BUS Service"]
    assert service["Name"] == BUS_NAME
    assert service["SystemdService"] == "escd.service"
    assert service["Exec"].endswith("/escd")


def test_install_user_installs_both_files_pointing_at_the_venv(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        ESCD_BIN=ESCD,
        PATH="/usr/bin:/bin",  # no systemctl user manager to talk to here
    )
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    result = subprocess.run(
        [str(INSTALL), "--no-start"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "config" / "systemd" / "user" / "escd.service"
    activation = tmp_path / "data" / "dbus-1" / "services" / f"{BUS_NAME}.service"
    assert read_unit(unit.read_text())["Service"]["ExecStart"] == ESCD
    assert read_unit(activation.read_text())["D-BUS Service"]["Exec"] == ESCD
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    result = subprocess.run(
        [str(INSTALL), "--uninstall"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert not unit.exists() and not activation.exists()


def test_install_user_refuses_a_missing_escd(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path))
    env["ESCD_BIN"] = str(tmp_path / "no-escd")
    result = subprocess.run(
        [str(INSTALL), "--no-start"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "is not an executable" in result.stderr
    assert not (tmp_path / "systemd").exists()
