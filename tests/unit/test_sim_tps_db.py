# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated TPS's token DB (states, transitions, persistence) and user directory."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from escd.sim.tps_config import TokenPolicy
from escd.sim.tps_db import (
    CertificateRecord,
    TokenDb,
    TokenRecord,
    TokenStatus,
    User,
    UserDirectory,
    cuid_key,
    transition_allowed,
)

CUID = bytes.fromhex("40907001123400ABCDEF")


def test_operation_transitions_are_dogtags() -> None:
    f, a, u = TokenStatus.FORMATTED, TokenStatus.ACTIVE, TokenStatus.UNFORMATTED
    allowed = {(x, y) for x in TokenStatus for y in TokenStatus if transition_allowed(x, y)}
    assert allowed == {(f, f), (f, a), (a, a), (a, f), (u, f)}
    assert (f.value, a.value, u.value) == (0, 4, 7)


def test_records_persist_atomically_and_privately(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    db = TokenDb(path, default_policy=TokenPolicy(pin_reset=True))
    db.add(CUID, status=TokenStatus.FORMATTED, token_type="userKey", key_info="0101")
    cert = CertificateRecord(0x1234, "signing", "UID=demo,O=Token Key User", "PEM")
    db.update(
        CUID.hex(),
        status=TokenStatus.ACTIVE,
        user_id="demo",
        certificates=(cert,),
        archived_keys=(("1234", b"\x30\x00"),),
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = TokenDb(path)
    record = again.get(CUID)
    assert record is not None and record.status is TokenStatus.ACTIVE
    assert record.user_id == "demo" and record.certificates == (cert,)
    assert record.policy.pin_reset and record.archived_keys == (("1234", b"\x30\x00"),)
    assert [r.cuid for r in again.active_tokens_of("demo")] == [cuid_key(CUID)]
    again.set_policy(CUID, "FORCE_FORMAT=YES")
    assert TokenDb(path).get(CUID).policy.force_format  # type: ignore[union-attr]
    again.remove(CUID)
    assert len(TokenDb(path)) == 0


def test_corrupt_db_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"format": 1, "tokens": [{"cuid": "xyz"}]}')
    with pytest.raises(ValueError):
        TokenDb(path)


def test_cuids_are_upper_case_hex() -> None:
    assert cuid_key("40907001123400abcdef") == "40907001123400ABCDEF"
    with pytest.raises(ValueError):
        TokenRecord("40907001123400abcdef")
    with pytest.raises(ValueError):
        TokenRecord("4090")


def test_default_directory_has_demo() -> None:
    users = UserDirectory()
    user = users.authenticate("demo", "demo")
    assert user is not None and user.common_name == "Demo User"
    assert users.authenticate("demo", "wrong") is None
    assert users.authenticate("nobody", "demo") is None
    assert "demo" not in repr(User("x", "demo"))


def test_users_file(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(
        "alice: secret\nbob: {password: 'p@ss:word', cn: Bob B, mail: bob@example.test}\n"
    )
    users = UserDirectory.load(path)
    assert users.authenticate("alice", "secret") is not None
    bob = users.authenticate("bob", "p@ss:word")
    assert bob is not None and bob.cn == "Bob B" and bob.mail == "bob@example.test"
    round_trip = tmp_path / "again.yaml"
    round_trip.write_text(users.to_yaml())
    assert UserDirectory.load(round_trip).authenticate("bob", "p@ss:word") is not None
    nested = tmp_path / "nested.yaml"
    nested.write_text("users:\n  carol: pw\n")
    assert "carol" in UserDirectory.load(nested)
    for bad in ("[]", "dave: {cn: no password}", ": : :"):
        path.write_text(bad)
        with pytest.raises(ValueError):
            UserDirectory.load(path)


@pytest.mark.parametrize("text", ['eve: "s3cret-pw\n', "eve: {password: s3cret-pw: x}\n"])
def test_a_users_file_that_is_not_yaml_is_reported_without_its_passwords(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"line \d+, column \d+") as info:
        UserDirectory.load(path)
    assert "s3cret-pw" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
