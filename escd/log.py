# SPDX-License-Identifier: GPL-2.0-or-later
"""Logging vocabulary shared by every module: the TRAFFIC level, ``Secret`` and redaction.

Rule: secrets (PINs, passwords, ``pdu_data``, the data of PIN commands) never reach a
log record, a signal, a property or an exception text. Values that are secret travel
wrapped in ``Secret``, whose ``repr``/``str`` say nothing; APDUs are logged with
``describe_apdu`` (header and length only, never the data); TPS messages with
``escd.tps.codec.redacted``. This module configures nothing: handlers are set up by
``escd.logsetup``.
"""

from __future__ import annotations

import logging

#: Below DEBUG: one line per APDU and TPS message, redacted (yubikit's TRAFFIC level).
TRAFFIC = 5
logging.addLevelName(TRAFFIC, "TRAFFIC")

REDACTED = "<redacted>"


class Secret:
    """A secret string (PIN, password) that cannot be printed by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value: str | None = value

    def reveal(self) -> str:
        """The secret itself; only for the one place that sends it on."""
        if self._value is None:
            raise ValueError("secret already dropped")
        return self._value

    def drop(self) -> None:
        """Forget the value (Python strings cannot be wiped; we drop the reference)."""
        self._value = None

    def __len__(self) -> int:
        return 0 if self._value is None else len(self._value)

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def describe_apdu(apdu: bytes) -> str:
    """CLA INS P1 P2 and the data length of a command APDU, never its data."""
    if len(apdu) < 4:
        return f"<{len(apdu)}-byte command>"
    head = apdu[:4].hex(" ").upper()
    body = len(apdu) - 4
    return f"{head} +{body} bytes" if body else head


def describe_response(response: bytes) -> str:
    """The status word and data length of a response APDU, never its data."""
    if len(response) < 2:
        return f"<{len(response)}-byte response>"
    return f"SW {response[-2:].hex().upper()} +{len(response) - 2} bytes"
