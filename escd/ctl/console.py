# SPDX-License-Identifier: GPL-2.0-or-later
"""What every escctl command shares: its exit status codes and the two ways it speaks.

``say`` writes a result to standard output; ``complain`` writes a problem or a warning
to standard error, prefixed ``escctl:``. Both flush at once, so that lines reach a
terminal in the order they were written. ``escd.ctl.main`` lists the codes for users.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
#: The daemon refused the request, or the operation failed.
EXIT_FAILED = 1
EXIT_USAGE = 2
#: No session bus, or escd neither running nor activatable.
EXIT_NO_DAEMON = 3
#: No such token: unknown, ambiguous, or none present.
EXIT_NO_TOKEN = 4
#: A TPS operation was canceled: Ctrl+C, a declined prompt, the format not confirmed.
EXIT_CANCELED = 5


def say(text: str) -> None:
    print(text, flush=True)


def complain(text: str) -> None:
    print(f"escctl: {text}", file=sys.stderr, flush=True)
