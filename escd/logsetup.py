# SPDX-License-Identifier: GPL-2.0-or-later
"""Where the daemon's log records go: stderr or journald, plus a ring for diagnostics.

Under systemd (``JOURNAL_STREAM`` names our stderr) or when ``log.target`` says so,
records go to journald through ``systemd.journal.JournalHandler``, which keeps the
structured fields callers pass as ``extra`` (``ESCD_TOKEN_CUID``, ``ESCD_READER``,
``ESCD_OPERATION``, ``ESCD_TPS_STATUS``). Otherwise they go to stderr without a
timestamp (journald or the terminal adds one). A bounded in-memory ring keeps the
recent INFO-and-above lines for ``GetDiagnostics``.

This module only configures the root logger; it never decides what is logged.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Mapping

from escd.config import LogConfig, LogLevel, LogTarget
from escd.log import TRAFFIC

_LEVELS = {
    LogLevel.ERROR: logging.ERROR,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.INFO: logging.INFO,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.TRAFFIC: TRAFFIC,
}

STDERR_FORMAT = "%(levelname)s %(name)s: %(message)s"


class RingHandler(logging.Handler):
    """Keeps the last ``size`` formatted records, with their time, for diagnostics."""

    def __init__(self, size: int) -> None:
        super().__init__(logging.INFO)
        self._lines: deque[str] = deque(maxlen=size)
        self.setFormatter(logging.Formatter(STDERR_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        try:
            self._lines.append(f"{stamp} {self.format(record)}")
        except Exception:  # a broken record must not break the daemon
            self.handleError(record)

    def resize(self, size: int) -> None:
        if size != self._lines.maxlen:
            self._lines = deque(self._lines, maxlen=size)

    def lines(self, limit: int | None = None) -> list[str]:
        lines = list(self._lines)
        return lines if limit is None else lines[max(0, len(lines) - limit) :]


def journal_wanted(target: LogTarget, env: Mapping[str, str] | None = None) -> bool:
    """Whether records should go to journald.

    ``auto`` follows systemd's own hint: ``JOURNAL_STREAM`` is ``<device>:<inode>`` of
    the stream systemd connected to our stderr; it only counts if stderr is still that
    stream (a child that redirected stderr inherits the variable but not the stream).
    """
    if target is LogTarget.JOURNAL:
        return True
    if target is LogTarget.STDERR:
        return False
    env = os.environ if env is None else env
    stream = env.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stream == f"{stat.st_dev}:{stat.st_ino}"


class LogSetup:
    """Installs and re-installs the daemon's handlers on the root logger."""

    def __init__(self, ring_size: int) -> None:
        self.ring = RingHandler(ring_size)
        self._output: logging.Handler | None = None
        self.to_journal = False

    def apply(self, config: LogConfig, level_override: str | None = None) -> None:
        """(Re)configure from ``log.*``; ``level_override`` (``--log-level``) wins."""
        root = logging.getLogger()
        level = LogLevel(level_override) if level_override else config.level
        root.setLevel(_LEVELS[level])
        to_journal = journal_wanted(config.target)
        if self._output is not None and to_journal == self.to_journal:
            return
        if self._output is not None:
            root.removeHandler(self._output)
            self._output.close()
        self._output = _journal_handler() if to_journal else _stderr_handler()
        self.to_journal = to_journal
        root.addHandler(self._output)
        if self.ring not in root.handlers:
            root.addHandler(self.ring)

    def attach_ring(self) -> None:
        """Only feed the diagnostics ring (an embedded daemon leaves output to its host)."""
        root = logging.getLogger()
        if self.ring not in root.handlers:
            root.addHandler(self.ring)

    def close(self) -> None:
        root = logging.getLogger()
        for handler in (self._output, self.ring):
            if handler is not None and handler in root.handlers:
                root.removeHandler(handler)
        self._output = None


def _stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    return handler


def _journal_handler() -> logging.Handler:
    from systemd.journal import JournalHandler

    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="escd")
    return handler
