# SPDX-License-Identifier: GPL-2.0-or-later
"""A private pcscd with the vsmartcard vpcd driver, for the simulator, the demo and tests.

pcscd 1.9.9 hard-codes its socket to ``/run/pcscd/pcscd.comm``; only the client library
reads ``PCSCLITE_CSOCK_NAME``. So a private pcscd runs in its own mount namespace with a
private directory bound over ``/run/pcscd`` (as root: ``unshare --mount``; otherwise
``unshare --user --map-root-user --mount``), and its clients are pointed at the socket
in that directory. One vpcd entry gives two readers, "<name> 00 00" and "<name> 00 01",
on TCP ports PORT and PORT+1; a simulated card connects to one of them.

This module starts and stops processes; it never talks PC/SC itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
READERS_PER_VPCD = 2


class PcscdError(RuntimeError):
    """The private pcscd could not be started."""


def free_port_pair(start: int = 42000, stop: int = 60000) -> int:
    """A port P such that P and P+1 are free on every address (vpcd binds 0.0.0.0)."""
    base = start + (os.getpid() * 7919) % ((stop - start) // 2) * 2
    candidates = list(range(base, stop - 1, 2)) + list(range(start, base, 2))
    for port in candidates:
        sockets: list[socket.socket] = []
        try:
            for candidate in (port, port + 1):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("0.0.0.0", candidate))  # noqa: S104 - probing what vpcd will bind
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise PcscdError("no free TCP port pair for vpcd")


class PrivatePcscd:
    """A pcscd of our own, in its own mount namespace, with one vpcd entry (two readers)."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        reader_name: str = "Virtual PCD",
        port: int | None = None,
        log_apdus: bool = False,
    ) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="escd-pcscd-")) if root is None else root
        self.reader_name = reader_name
        self.port = free_port_pair() if port is None else port
        self.log_apdus = log_apdus
        self.run_dir = self.root / "run"
        self.conf_dir = self.root / "readers"
        self.socket_path = self.run_dir / "pcscd.comm"
        self.log_path = self.root / "pcscd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "vpcd").write_text(
            f'FRIENDLYNAME "{reader_name}"\n'
            f"DEVICENAME /dev/null:{self.port}\n"
            f"LIBPATH {VPCD_DRIVER}\n"
            f"CHANNELID {self.port}\n"
        )

    @property
    def readers(self) -> list[str]:
        """The reader names pcscd gives the two vpcd slots."""
        return [f"{self.reader_name} 00 {slot:02d}" for slot in range(READERS_PER_VPCD)]

    def port_for(self, slot: int) -> int:
        return self.port + slot

    @property
    def env(self) -> dict[str, str]:
        """Environment a PC/SC client needs to reach this pcscd."""
        return {"PCSCLITE_CSOCK_NAME": str(self.socket_path)}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        for name in ("pcscd.comm", "pcscd.pid"):
            (self.run_dir / name).unlink(missing_ok=True)
        pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
        if not Path(pcscd).exists():
            raise PcscdError("pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)")
        if not VPCD_DRIVER.exists():
            raise PcscdError("the vpcd driver is not installed (apt-get install vsmartcard-vpcd)")
        flags = "--foreground --apdu" if self.log_apdus else "--foreground"
        inner = f"{self._mount_script()} && exec {pcscd} {flags} -c '{self.conf_dir}'"
        if os.geteuid() == 0:
            Path("/run/pcscd").mkdir(parents=True, exist_ok=True)
            argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", inner]
        else:
            argv = ["unshare", "--user", "--map-root-user", "--mount", "--propagation",
                    "private", "--", "sh", "-c", inner]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        # pcscd creates its socket after the vpcd readers are up: a reliable readiness signal.
        while not self.socket_path.exists():
            if self._proc.poll() is not None:
                raise PcscdError(f"pcscd exited at start-up; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise PcscdError(f"pcscd did not create its socket; see {self.log_path}")
            time.sleep(0.02)

    def _mount_script(self) -> str:
        bind = f"mount --bind '{self.run_dir}' /run/pcscd"
        if os.geteuid() == 0 or Path("/run/pcscd").is_dir():
            return bind
        # Without root and without /run/pcscd to mount on, give the namespace its own /run.
        return f"mount -t tmpfs tmpfs /run && mkdir -p /run/pcscd && {bind}"

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self) -> None:
        """Stop pcscd abruptly (SIGKILL), as a crash would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePcscd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
