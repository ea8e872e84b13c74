# SPDX-License-Identifier: GPL-2.0-or-later
"""The escd daemon as a subprocess, for the system tests.

``EscdProcess`` starts ``.venv/bin/escd`` with a given environment, reads its stderr on
a thread (every line kept, and waited for with a condition, never by polling) and stops
it with a signal. Nothing here talks D-Bus; tests use ``escd.ctl.client`` or the bus
command-line tools for that.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ESCD = str(BIN / "escd")
ESCCTL = str(BIN / "escctl")

READY = "is ready on the session bus"


class EscdProcess:
    """One ``escd`` run in the foreground with its stderr captured."""

    def __init__(self, env: Mapping[str, str], args: Sequence[str] = ()) -> None:
        self.env = dict(env)
        self.args = list(args)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, wait_ready: bool = True, timeout: float = 15.0) -> EscdProcess:
        self._proc = subprocess.Popen(
            [ESCD, *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_for(READY, timeout)
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 5.0, *, start: int = 0) -> str:
        """The first stderr line from index ``start`` on matching ``pattern`` (a regex)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if regex.search(line):
                        return line
                if (
                    self._proc is not None
                    and self._proc.poll() is not None
                    and (self._reader is None or not self._reader.is_alive())
                ):
                    raise AssertionError(
                        f"escd exited ({self._proc.returncode}) before logging {pattern!r}:\n"
                        + "\n".join(self.lines)
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log = "\n".join(self.lines)
                    raise AssertionError(f"escd did not log {pattern!r} in {timeout} s:\n{log}")
                self._changed.wait(remaining)

    def mark(self) -> int:
        """The index of the next stderr line (for ``wait_for(start=…)``)."""
        with self._changed:
            return len(self.lines)

    def send(self, signum: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Signal the daemon and wait for it; SIGKILL if it does not exit in time."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signum)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(2)
        if proc.stderr is not None:
            proc.stderr.close()
        return proc.returncode

    def __enter__(self) -> EscdProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_escctl(
    env: Mapping[str, str], *args: str, timeout: float = 15.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ESCCTL, *args], env=dict(env), capture_output=True, text=True, timeout=timeout
    )


def process_alive(pid: int) -> bool:
    """Alive and not a zombie: daemons re-parented to PID 1 can linger as zombies."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("JOURNAL_STREAM", None)
    env.pop("INVOCATION_ID", None)
    return env
