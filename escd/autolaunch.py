# SPDX-License-Identifier: GPL-2.0-or-later
"""The auto-launch decision: should an inserted token lead the user to enrollment, and may
escd launch something for it now?

Pure: the policy table (``suggestion_for``) and the per-token rate limit
(``LaunchLimiter``, clock injected). ``escd.launcher`` asks both on every insertion and
does the launching; nothing here runs a process, talks D-Bus or reads the clock itself.

The policy values are ``auto_launch.policy`` (``AutoLaunchPolicy`` and "Auto-launch" in
docs/dbus-api.md). A token escd could not read (``UNKNOWN``) is never suggested,
whatever the policy: it may be any card at all, and nothing can be enrolled on a card
that does not answer.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum, unique

from escd.config import AutoLaunchPolicy
from escd.model import TokenState


@unique
class SuggestionReason(IntEnum):
    """Why ``Manager.EnrollmentSuggested`` was sent (its ``reason`` argument)."""

    UNINITIALIZED = 1
    NO_APPLET = 2
    #: The policy covers the token, but phone home failed: the frontend should ask for a
    #: Phone Home URL or a TPS rather than start an enrollment that cannot work.
    PHONE_HOME_FAILED = 3
    #: ``always``: an enrolled token was inserted (ESC's old "key inserted" hook).
    INSERTED = 4


#: The token states each policy suggests enrollment for.
_COVERED: dict[AutoLaunchPolicy, frozenset[TokenState]] = {
    AutoLaunchPolicy.NEVER: frozenset(),
    AutoLaunchPolicy.UNINITIALIZED: frozenset({TokenState.UNINITIALIZED}),
    AutoLaunchPolicy.UNINITIALIZED_OR_NO_APPLET: frozenset(
        {TokenState.UNINITIALIZED, TokenState.NO_APPLET}
    ),
    AutoLaunchPolicy.ALWAYS: frozenset(
        {TokenState.UNINITIALIZED, TokenState.NO_APPLET, TokenState.ENROLLED}
    ),
}

_REASON_BY_STATE = {
    TokenState.UNINITIALIZED: SuggestionReason.UNINITIALIZED,
    TokenState.NO_APPLET: SuggestionReason.NO_APPLET,
    TokenState.ENROLLED: SuggestionReason.INSERTED,
}


def suggestion_for(
    policy: AutoLaunchPolicy, state: TokenState, *, phone_home_failed: bool = False
) -> SuggestionReason | None:
    """The reason to suggest enrollment for a token just inserted, or None."""
    if state not in _COVERED[policy]:
        return None
    if phone_home_failed:
        return SuggestionReason.PHONE_HOME_FAILED
    return _REASON_BY_STATE[state]


class LaunchLimiter:
    """At most one launch per token every ``min_interval`` seconds.

    A flapping card (or a user pulling and pushing it fifty times) gets one launch per
    interval, not one per insertion. Entries older than the interval are forgotten, so
    the table stays as small as the number of tokens seen within one interval.
    """

    def __init__(self, min_interval: float, clock: Callable[[], float]) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._last: dict[str, float] = {}

    def allow(self, token_id: str) -> bool:
        """True, and the launch counted, when ``token_id`` may launch now."""
        now = self._clock()
        self._forget_before(now - self.min_interval)
        if token_id in self._last:
            return False
        self._last[token_id] = now
        return True

    def _forget_before(self, horizon: float) -> None:
        for token_id in [key for key, when in self._last.items() if when <= horizon]:
            del self._last[token_id]
