# SPDX-License-Identifier: GPL-2.0-or-later
"""A private D-Bus session bus (dbus-daemon) for the demo, the lab and tests.

It listens on a socket in its own directory and activates services from a service
directory next to it, so D-Bus activation can be exercised without touching the user's
real session bus. This module starts and stops a process; it does not speak D-Bus.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class BusError(RuntimeError):
    """The private bus could not be started."""


class PrivateBus:
    """A dbus-daemon of our own with a service directory for activation tests."""

    def __init__(self, root: Path | None = None) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="escd-bus-")) if root is None else root
        self.services_dir = self.root / "services"
        self.services_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self.root / "bus.sock"
        self.config_path = self.root / "session.conf"
        self.log_path = self.root / "dbus.log"
        self.address = f"unix:path={self.socket_path}"
        self._proc: subprocess.Popen[str] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        daemon = shutil.which("dbus-daemon")
        if daemon is None:
            raise BusError("dbus-daemon is not installed (apt-get install dbus-daemon)")
        self.socket_path.unlink(missing_ok=True)
        self.config_path.write_text(
            _CONFIG.format(socket=self.socket_path, services=self.services_dir)
        )
        log = open(self.log_path, "a")
        try:
            self._proc = subprocess.Popen(
                [daemon, f"--config-file={self.config_path}", "--nofork", "--print-address=1"],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                text=True,
            )
        finally:
            log.close()
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self._proc.stdout.readline().strip()
        if not line:
            raise BusError(f"dbus-daemon did not start; see {self.log_path}")
        while not self.socket_path.exists():
            if time.monotonic() > deadline:
                raise BusError("dbus-daemon did not create its socket")
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateBus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
