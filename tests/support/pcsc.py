# SPDX-License-Identifier: GPL-2.0-or-later
"""Waiting for a reader's state through PC/SC itself, for tests against a private pcscd.

Blocks in ``SCardGetStatusChange`` (never polls or sleeps) until the state bit a test
wants is set, or fails once the timeout has passed.
"""

from __future__ import annotations

import time

from smartcard import scard

#: pcscd polls vpcd slots every 400 ms (docs/testing.md): wait for events this long.
EVENT_TIMEOUT_MS = 5000


def wait_for_reader_state(context: int, reader: str, wanted: int) -> bytes:
    """Block until ``wanted`` (``SCARD_STATE_*``) is set for ``reader``; the reader's ATR."""
    deadline = time.monotonic() + EVENT_TIMEOUT_MS / 1000
    current = scard.SCARD_STATE_UNAWARE
    while True:
        remaining = max(int((deadline - time.monotonic()) * 1000), 0)
        hresult, states = scard.SCardGetStatusChange(context, remaining, [(reader, current)])
        assert hresult == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hresult)
        _, event_state, atr = states[0]
        # pcsc-lite keeps an event counter in the high 16 bits of dwEventState.
        if event_state & wanted:
            return bytes(atr)
        current = event_state & ~scard.SCARD_STATE_CHANGED
