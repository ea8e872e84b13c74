# SPDX-License-Identifier: GPL-2.0-or-later
"""The auto-launch decision: the policy table and the per-token rate limit."""

from __future__ import annotations

import pytest

from escd.autolaunch import LaunchLimiter, SuggestionReason, suggestion_for
from escd.config import AutoLaunchPolicy
from escd.launcher import application_path, openable_url
from escd.model import TokenState

P = AutoLaunchPolicy
S = TokenState
R = SuggestionReason

#: policy → {state: reason or None}, every combination spelled out.
TABLE: dict[AutoLaunchPolicy, dict[TokenState, SuggestionReason | None]] = {
    P.NEVER: {S.NO_APPLET: None, S.UNINITIALIZED: None, S.ENROLLED: None, S.UNKNOWN: None},
    P.UNINITIALIZED: {
        S.NO_APPLET: None,
        S.UNINITIALIZED: R.UNINITIALIZED,
        S.ENROLLED: None,
        S.UNKNOWN: None,
    },
    P.UNINITIALIZED_OR_NO_APPLET: {
        S.NO_APPLET: R.NO_APPLET,
        S.UNINITIALIZED: R.UNINITIALIZED,
        S.ENROLLED: None,
        S.UNKNOWN: None,
    },
    P.ALWAYS: {
        S.NO_APPLET: R.NO_APPLET,
        S.UNINITIALIZED: R.UNINITIALIZED,
        S.ENROLLED: R.INSERTED,
        S.UNKNOWN: None,
    },
}


@pytest.mark.parametrize(
    ("policy", "state", "expected"),
    [(p, s, r) for p, row in TABLE.items() for s, r in row.items()],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_policy_table(
    policy: AutoLaunchPolicy, state: TokenState, expected: SuggestionReason | None
) -> None:
    assert suggestion_for(policy, state) is expected


@pytest.mark.parametrize(
    ("policy", "state", "expected"),
    [
        (p, s, None if r is None else R.PHONE_HOME_FAILED)
        for p, row in TABLE.items()
        for s, r in row.items()
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_failed_phone_home_is_the_reason_only_where_the_policy_suggests(
    policy: AutoLaunchPolicy, state: TokenState, expected: SuggestionReason | None
) -> None:
    assert suggestion_for(policy, state, phone_home_failed=True) is expected


def test_reasons_are_the_contract_values() -> None:
    reasons = (R.UNINITIALIZED, R.NO_APPLET, R.PHONE_HOME_FAILED, R.INSERTED)
    assert [int(r) for r in reasons] == [1, 2, 3, 4]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_allows_one_launch_per_interval_and_token() -> None:
    clock = Clock()
    limiter = LaunchLimiter(10.0, clock)
    assert limiter.allow("a")
    assert not limiter.allow("a")
    assert limiter.allow("b")  # another token has its own budget
    clock.now += 9.9
    assert not limiter.allow("a")
    clock.now += 0.1
    assert limiter.allow("a")


def test_limiter_holds_under_fifty_quick_cycles() -> None:
    clock = Clock()
    limiter = LaunchLimiter(10.0, clock)
    allowed = 0
    for _ in range(50):
        allowed += limiter.allow("flapping")
        clock.now += 0.05  # 50 insertions in 2.5 s
    assert allowed == 1


def test_limiter_with_zero_interval_allows_every_launch() -> None:
    limiter = LaunchLimiter(0.0, Clock())
    assert all(limiter.allow("a") for _ in range(5))


def test_limiter_forgets_old_entries() -> None:
    clock = Clock()
    limiter = LaunchLimiter(1.0, clock)
    for n in range(100):
        limiter.allow(f"token{n}")
        clock.now += 2
    assert len(limiter._last) == 1


def test_a_changed_interval_applies_to_the_next_decision() -> None:
    clock = Clock()
    limiter = LaunchLimiter(60.0, clock)
    assert limiter.allow("a")
    clock.now += 5
    assert not limiter.allow("a")
    limiter.min_interval = 1.0
    assert limiter.allow("a")


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("org.example.Enroller", "/org/example/Enroller"),
        ("org.example.smart-card.App", "/org/example/smart_card/App"),
    ],
)
def test_application_path_follows_the_desktop_entry_spec(name: str, path: str) -> None:
    assert application_path(name) == path


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://tps.example.com/enroll", True),
        ("http://tps.example.com:8080/ui", True),
        ("file:///etc/passwd", False),
        ("javascript:alert(1)", False),
        ("https://", False),
        ("", False),
        ("x-scheme-handler://evil", False),
    ],
)
def test_only_web_urls_are_opened(url: str, ok: bool) -> None:
    assert openable_url(url) is ok
