# SPDX-License-Identifier: GPL-2.0-or-later
"""What the simulated card's command handlers share: the status-word exception, the P3
rule, and the shape of an applet command once secure messaging and nonces are checked.

Pure: no I/O, no logging, no card state.
"""

from __future__ import annotations

from dataclasses import dataclass

from escd.card.apdu import CommandApdu


class SwError(Exception):
    """A command ends with this status word and no data (Java Card's ISOException)."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


def p3(command: CommandApdu) -> int:
    """The fifth header byte as the applet reads it: Lc if there is data, else Le."""
    if command.data:
        return len(command.data)
    return (command.le or 0) % 256


@dataclass(frozen=True, slots=True)
class Request:
    """One applet command after secure messaging and nonce checks."""

    ins: int
    p1: int
    p2: int
    data: bytes
    p3: int
    #: Identities authenticated for this command (CardEdge ``authenticated_id``).
    ids: int
