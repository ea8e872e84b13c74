# SPDX-License-Identifier: GPL-2.0-or-later
"""Log target choice (journald only when systemd connected our stderr) and the log ring."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from escd.config import LogConfig, LogLevel, LogTarget
from escd.log import TRAFFIC
from escd.logsetup import LogSetup, RingHandler, journal_wanted


def stderr_stream_id() -> str:
    stat = os.fstat(sys.stderr.fileno())
    return f"{stat.st_dev}:{stat.st_ino}"


def test_auto_uses_journald_when_journal_stream_is_our_stderr() -> None:
    assert journal_wanted(LogTarget.AUTO, {"JOURNAL_STREAM": stderr_stream_id()})


@pytest.mark.parametrize("env", [{}, {"JOURNAL_STREAM": "1:2"}, {"INVOCATION_ID": "abc"}])
def test_auto_uses_stderr_when_stderr_is_not_the_journal(env: dict[str, str]) -> None:
    assert not journal_wanted(LogTarget.AUTO, env)


def test_explicit_targets_win_over_the_environment() -> None:
    assert journal_wanted(LogTarget.JOURNAL, {})
    assert not journal_wanted(LogTarget.STDERR, {"JOURNAL_STREAM": stderr_stream_id()})


def test_ring_keeps_recent_info_lines_with_time() -> None:
    ring = RingHandler(2)
    logger = logging.getLogger("escd.test.ring")
    logger.addHandler(ring)
    logger.setLevel(logging.DEBUG)
    try:
        for n in range(3):
            logger.info("event %d", n)
        logger.debug("too chatty for the ring")
    finally:
        logger.removeHandler(ring)
    lines = ring.lines()
    assert len(lines) == 2
    assert lines[0].endswith("INFO escd.test.ring: event 1")
    assert lines[1].endswith("INFO escd.test.ring: event 2")
    assert ring.lines(1) == lines[1:]


def test_level_override_and_reapply_keep_one_output_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    setup = LogSetup(10)
    try:
        setup.apply(LogConfig(level=LogLevel.WARNING, target=LogTarget.STDERR), "traffic")
        assert root.level == TRAFFIC
        setup.apply(LogConfig(level=LogLevel.DEBUG, target=LogTarget.STDERR))
        assert root.level == logging.DEBUG
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 2 and setup.ring in added
    finally:
        setup.close()
        root.setLevel(level)
    assert root.handlers == before
