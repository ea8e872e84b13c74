# SPDX-License-Identifier: GPL-2.0-or-later
"""A program on a pseudo-terminal of its own, driven as a person at that terminal would.

``Terminal`` starts the program in a new session whose controlling terminal is the slave
side of a fresh pty (so the terminal's line discipline applies: echo, Ctrl+C as SIGINT to
the foreground process group), reads the master side with ``select`` and a deadline, and
waits for text rather than sleeping. ``text`` is everything the terminal showed: the
program's output and the terminal's echo of what was typed.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
import termios
import time
from collections.abc import Mapping, Sequence

#: Run in the child (a session leader after ``start_new_session``): make stdin, the pty,
#: its controlling terminal, then become the program. Without a controlling terminal
#: Ctrl+C would be just a byte. A shim instead of ``preexec_fn``, which is not safe in a
#: process with threads (the simulator's).
_CONTROLLING_TTY = (
    "import fcntl, os, sys, termios; "
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class Terminal:
    """``argv`` running on a pty; ``send`` types, ``expect`` waits for what it shows."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], *, timeout: float) -> None:
        self.timeout = timeout
        master, slave = os.openpty()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CONTROLLING_TTY, *argv],
                env=dict(env),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self._master = master
        self._output = b""
        self._eof = False
        #: Where the next ``expect`` starts looking.
        self._seen = 0

    @property
    def text(self) -> str:
        """Everything the terminal showed so far."""
        return self._output.decode("utf-8", "replace")

    @property
    def echo(self) -> bool:
        """Whether the terminal echoes what is typed now (the slave's ``ECHO`` flag)."""
        return bool(termios.tcgetattr(self._master)[3] & termios.ECHO)

    def send(self, keys: str) -> None:
        """Type ``keys`` (``\\r`` is Enter, ``\\x03`` is Ctrl+C)."""
        os.write(self._master, keys.encode())

    def expect(self, text: str, timeout: float | None = None) -> str:
        """Wait until the terminal shows ``text``; return what it showed up to its end."""
        needle = text.encode()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            found = self._output.find(needle, self._seen)
            if found >= 0:
                start, self._seen = self._seen, found + len(needle)
                return self._output[start : self._seen].decode("utf-8", "replace")
            if self._eof:
                raise AssertionError(f"the program ended without showing {text!r}:\n{self.text}")
            if not self._read(deadline):
                raise AssertionError(f"the terminal did not show {text!r}:\n{self.text}")

    def wait(self, timeout: float | None = None) -> int:
        """Read until the program closed the terminal, then its exit status."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._eof:
            if not self._read(deadline):
                raise AssertionError(f"the program did not end:\n{self.text}")
        return self._proc.wait(max(0.1, deadline - time.monotonic()))

    def _read(self, deadline: float) -> bool:
        """Read what is there (or note the end); False when the deadline passed first."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([self._master], [], [], remaining)
        if not ready:
            return False
        try:
            data = os.read(self._master, 4096)
        except OSError as exc:  # EIO: every slave descriptor is closed
            if exc.errno != errno.EIO:
                raise
            data = b""
        if data:
            self._output += data
        else:
            self._eof = True
        return True

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        os.close(self._master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
