# SPDX-License-Identifier: GPL-2.0-or-later
"""The per-token store: admin values win and survive, the cache ages, files never break."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from escd.config import PhoneHomeConfig
from escd.errors import InvalidArgumentError
from escd.phonehome.cache import (
    PhoneHomeRecord,
    RecordSource,
    Sourced,
    TokenRecord,
    TokenSettings,
    TokenStore,
    ValueSource,
    check_token_id,
    effective,
    is_fresh,
    resolve_phone_home_url,
)
from escd.phonehome.parser import build_info

CUID = "40906145c76224192d2b"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

FETCHED = build_info(
    "FedoraProject",
    [
        ("Operation", "https://tps.example.com:8443/tps/tps"),
        ("UI", "https://tps.example.com/ui"),
        ("EnrolledTokenBrowserURL", "http://fedoraproject.org"),
        ("TokenType", "userKey"),
        ("CAChainUI", "https://ca.example.com/chain"),
        ("Custom", "kept"),
    ],
)
SOURCE = "http://tps.example.com:8080/tps/phoneHome"


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens")


def test_an_unknown_token_loads_empty(store: TokenStore) -> None:
    assert store.load(CUID) == TokenRecord(CUID)
    assert store.known_tokens() == []


def test_a_fetched_answer_reloads_identically(store: TokenStore, tmp_path: Path) -> None:
    store.save_fetched(CUID, FETCHED, NOW, SOURCE)
    reloaded = TokenStore(tmp_path / "tokens").load(CUID)
    assert reloaded.phone_home == PhoneHomeRecord(FETCHED, NOW, SOURCE, RecordSource.FETCHED)
    assert reloaded.phone_home.info.services[-1] == ("Custom", "kept")
    assert store.known_tokens() == [CUID]


def test_token_ids_are_lower_case_and_path_safe(store: TokenStore) -> None:
    store.save_fetched(CUID.upper(), FETCHED, NOW)
    assert store.load(CUID).phone_home is not None
    assert check_token_id("atr_0123456789ab_abcdef") == "atr_0123456789ab_abcdef"
    for bad in ("../etc/passwd", "", "a/b", "x" * 65, "cuid.json"):
        with pytest.raises(InvalidArgumentError):
            store.load(bad)


def test_admin_values_survive_a_refresh_and_a_reload(store: TokenStore, tmp_path: Path) -> None:
    store.save_fetched(CUID, FETCHED, NOW, SOURCE)
    store.set_admin(CUID, tps_url="https://admin-tps.example.com/tps/tps", issuer_name="IT Dept")

    newer = build_info("Someone Else", [("Operation", "https://other.example.com/tps/tps")])
    store.save_fetched(CUID, newer, NOW + timedelta(days=2), SOURCE)

    record = TokenStore(tmp_path / "tokens").load(CUID)
    assert record.admin.tps_url == "https://admin-tps.example.com/tps/tps"
    assert record.admin.issuer_name == "IT Dept"
    assert record.phone_home is not None and record.phone_home.info == newer
    info = effective(record)
    assert info.tps_url == Sourced("https://admin-tps.example.com/tps/tps", ValueSource.ADMIN)
    assert info.issuer_name == Sourced("IT Dept", ValueSource.ADMIN)


def test_admin_values_win_over_fetched_ones_field_by_field(store: TokenStore) -> None:
    store.save_fetched(CUID, FETCHED, NOW, SOURCE)
    store.set_admin(
        CUID,
        enrollment_ui_url="https://admin.example.com/ui",
        enrolled_token_browser_url="https://intranet.example.com",
        enrolled_token_url="https://intranet.example.com/token",
    )
    info = store.effective(CUID, default_tps_url="https://config.example.com/tps/tps")
    assert info.issuer_name == Sourced("FedoraProject", ValueSource.PHONE_HOME)
    assert info.tps_url == Sourced("https://tps.example.com:8443/tps/tps", ValueSource.PHONE_HOME)
    assert info.enrollment_ui_url == Sourced("https://admin.example.com/ui", ValueSource.ADMIN)
    assert info.enrolled_token_browser_url.source is ValueSource.ADMIN
    assert info.enrolled_token_url == Sourced(
        "https://intranet.example.com/token", ValueSource.ADMIN
    )
    assert info.ca_chain_url == Sourced("https://ca.example.com/chain", ValueSource.PHONE_HOME)
    assert info.token_type == Sourced("userKey", ValueSource.PHONE_HOME)
    assert info.phone_home is not None and info.phone_home.fetched_at == NOW


def test_configured_tps_url_is_used_only_when_phone_home_gives_none(store: TokenStore) -> None:
    store.save_fetched(CUID, build_info("X", []), NOW)
    info = store.effective(
        CUID, default_tps_url="https://config.example.com/tps/tps", default_token_type="userKey"
    )
    assert info.tps_url == Sourced("https://config.example.com/tps/tps", ValueSource.CONFIG)
    assert info.token_type == Sourced("userKey", ValueSource.CONFIG)
    assert info.enrollment_ui_url == Sourced()


def test_clearing_an_admin_value_lets_the_fetched_one_through(store: TokenStore) -> None:
    store.save_fetched(CUID, FETCHED, NOW)
    store.set_admin(CUID, tps_url="https://admin.example.com/tps/tps")
    store.set_admin(CUID, tps_url="")
    assert store.load(CUID).admin.tps_url is None
    assert store.effective(CUID).tps_url.source is ValueSource.PHONE_HOME
    store.set_admin(CUID, tps_url="https://admin.example.com/tps/tps")
    store.set_admin(CUID, tps_url=None)
    assert store.load(CUID).admin.tps_url is None


def test_set_admin_refuses_unknown_names_and_unusable_urls(store: TokenStore) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown token setting"):
        store.set_admin(CUID, tps_uri="https://x/tps")
    with pytest.raises(InvalidArgumentError, match="tps_url"):
        store.set_admin(CUID, tps_url="tps.example.com")
    assert not (store.directory / f"{CUID}.json").exists()


def test_phone_home_url_order_admin_card_global_agent() -> None:
    record = TokenRecord(CUID, agent_phone_home_url="https://agent.example.com/ph")
    config = PhoneHomeConfig(global_url="https://global.example.com/ph")
    card = "http://card.example.com:8080/tps/phoneHome"

    assert resolve_phone_home_url(record) == Sourced(
        "https://agent.example.com/ph", ValueSource.AGENT
    )
    assert resolve_phone_home_url(record, config=config).source is ValueSource.CONFIG
    assert resolve_phone_home_url(record, card_url=card, config=config) == Sourced(
        card, ValueSource.CARD
    )
    ignoring_card = PhoneHomeConfig(global_url="https://global.example.com/ph", use_token_url=False)
    assert resolve_phone_home_url(record, card_url=card, config=ignoring_card).source is (
        ValueSource.CONFIG
    )
    with_admin = TokenRecord(
        CUID,
        admin=TokenSettings(phone_home_url="https://admin.example.com/ph"),
        agent_phone_home_url=record.agent_phone_home_url,
    )
    assert resolve_phone_home_url(with_admin, card_url=card, config=config).source is (
        ValueSource.ADMIN
    )
    assert resolve_phone_home_url(TokenRecord(CUID)) == Sourced()


def test_agent_url_is_remembered_apart_from_admin_values(store: TokenStore) -> None:
    store.set_agent_phone_home_url(CUID, "https://typed.example.com/tps/phoneHome")
    record = store.load(CUID)
    assert record.agent_phone_home_url == "https://typed.example.com/tps/phoneHome"
    assert record.admin.phone_home_url is None
    with pytest.raises(InvalidArgumentError):
        store.set_agent_phone_home_url(CUID, "not a url")


@pytest.mark.parametrize(
    ("fetched_at", "fresh"),
    [
        (NOW - timedelta(seconds=10), True),
        (NOW - timedelta(seconds=3600), True),
        (NOW - timedelta(seconds=3601), False),
        (NOW + timedelta(seconds=5), False),  # clock went back: refetch
        (None, False),  # imported from ESC: time unknown
    ],
)
def test_is_fresh(fetched_at: datetime | None, fresh: bool) -> None:
    record = PhoneHomeRecord(FETCHED, fetched_at, SOURCE)
    assert is_fresh(record, 3600, NOW) is fresh


def test_no_record_is_never_fresh() -> None:
    assert is_fresh(None, 3600, NOW) is False


def test_a_corrupt_file_is_set_aside_and_the_token_starts_empty(
    store: TokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    other = "0123456789abcdef0123"
    store.save_fetched(other, FETCHED, NOW)
    store.directory.joinpath(f"{CUID}.json").write_text('{"version": 1, "token": ')
    with caplog.at_level(logging.WARNING):
        assert store.load(CUID) == TokenRecord(CUID)
    assert len(list(store.directory.glob(f"{CUID}.json.corrupt-*"))) == 1
    assert "moved it to" in caplog.text
    assert store.load(other).phone_home is not None  # the blast radius is one token
    store.set_admin(CUID, issuer_name="Fresh start")
    assert store.load(CUID).admin.issuer_name == "Fresh start"


@pytest.mark.parametrize(
    "document",
    [
        {"version": 2, "token": CUID},
        {"version": 1, "token": "0123456789abcdef0123"},
        {"version": 1, "token": CUID, "admin": {"tps_uri": "https://x/tps"}},
        {"version": 1, "token": CUID, "admin": {"tps_url": 5}},
        {"version": 1, "token": CUID, "admin": {"tps_url": "javascript:alert(1)"}},
        {"version": 1, "token": CUID, "admin": []},
        {"version": 1, "token": CUID, "agent_phone_home_url": "nope"},
    ],
)
def test_files_with_the_wrong_shape_are_set_aside(store: TokenStore, document: object) -> None:
    store.directory.mkdir(parents=True)
    store.directory.joinpath(f"{CUID}.json").write_text(json.dumps(document))
    assert store.load(CUID) == TokenRecord(CUID)
    assert len(list(store.directory.glob(f"{CUID}.json.corrupt-*"))) == 1


def test_an_unusable_cached_answer_is_dropped_but_admin_values_kept(store: TokenStore) -> None:
    store.directory.mkdir(parents=True)
    document = {
        "version": 1,
        "token": CUID,
        "admin": {"issuer_name": "Kept"},
        "phone_home": {"issuer_name": "", "services": [], "fetched_at": None},
    }
    store.directory.joinpath(f"{CUID}.json").write_text(json.dumps(document))
    record = store.load(CUID)
    assert record.admin.issuer_name == "Kept"
    assert record.phone_home is None
    assert list(store.directory.glob("*.corrupt-*")) == []


def test_recover_cleans_up_after_crashes(store: TokenStore) -> None:
    store.save_fetched(CUID, FETCHED, NOW)
    store.directory.joinpath(f".{CUID}.json.abc123.tmp").write_text("half")
    store.directory.joinpath("0123456789abcdef0123.json").write_text("garbage")
    assert store.recover() == [CUID]
    assert sorted(p.name for p in store.directory.iterdir() if ".corrupt-" not in p.name) == [
        f"{CUID}.json"
    ]


KILLED_DURING_REFRESH = """
    import os, signal, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from escd.phonehome.cache import TokenStore
    from escd.phonehome.parser import build_info

    def die(temp):
        os.kill(os.getpid(), signal.SIGKILL)

    store = TokenStore(Path(sys.argv[1]), before_replace=die)
    newer = build_info("Newer", [("Operation", "https://new.example.com/tps/tps")])
    store.save_fetched(sys.argv[2], newer, datetime.now(UTC))
"""


def test_a_refresh_killed_before_rename_keeps_the_old_file(store: TokenStore) -> None:
    store.save_fetched(CUID, FETCHED, NOW, SOURCE)
    store.set_admin(CUID, issuer_name="IT Dept")
    before = store.directory.joinpath(f"{CUID}.json").read_bytes()

    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_DURING_REFRESH), str(store.directory), CUID],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert child.returncode == -signal.SIGKILL, child.stderr
    assert store.directory.joinpath(f"{CUID}.json").read_bytes() == before
    assert store.recover() == [CUID]
    record = store.load(CUID)
    assert record.admin.issuer_name == "IT Dept"
    assert record.phone_home is not None and record.phone_home.info == FETCHED


FULL_DISK_REFRESH = """
    import json, resource, signal, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from escd.errors import StateFileError
    from escd.phonehome.cache import TokenStore
    from escd.phonehome.parser import build_info

    store = TokenStore(Path(sys.argv[1]))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))
    newer = build_info("Newer", [("Operation", "https://new.example.com/tps/tps")])
    record = store.save_fetched(sys.argv[2], newer, datetime.now(UTC))
    result = {"returned": record.phone_home.info.issuer_name}
    try:
        store.set_admin(sys.argv[2], issuer_name="Changed")
    except StateFileError as exc:
        result["set_admin"] = exc.__class__.__name__
    print(json.dumps(result))
"""


def test_a_full_disk_never_crashes_a_refresh_and_keeps_the_old_file(store: TokenStore) -> None:
    store.save_fetched(CUID, FETCHED, NOW, SOURCE)
    before = store.directory.joinpath(f"{CUID}.json").read_bytes()

    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FULL_DISK_REFRESH), str(store.directory), CUID],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert child.returncode == 0, child.stderr
    # The refresh hands back the new answer (it is good, only the disk is not) …
    # … and a hand-made change is refused loudly instead of being lost silently.
    assert json.loads(child.stdout) == {"returned": "Newer", "set_admin": "StateFileError"}
    assert "was not saved" in child.stderr
    assert store.directory.joinpath(f"{CUID}.json").read_bytes() == before
    assert list(store.directory.glob(".*.tmp")) == []


def test_forgetting_the_cached_answer_keeps_everything_else(store: TokenStore) -> None:
    store.save_fetched(CUID, FETCHED, NOW)
    store.set_admin(CUID, issuer_name="IT")
    store.put_phone_home(CUID, None)
    record = store.load(CUID)
    assert record.phone_home is None
    assert record.admin.issuer_name == "IT"


def test_an_unchanged_update_does_not_rewrite_the_file(store: TokenStore) -> None:
    store.set_admin(CUID, issuer_name="IT")
    path = store.directory / f"{CUID}.json"
    first = path.stat().st_ino
    store.set_admin(CUID, issuer_name="IT")
    assert path.stat().st_ino == first
