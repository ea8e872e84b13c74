# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated TPS's settings and the ``escd-sim tps`` options that build them."""

from __future__ import annotations

import argparse

import pytest

from escd.sim.tps_cli import config_from_args, configure_tps
from escd.sim.tps_config import (
    CLEAN,
    FAITHFUL,
    Faults,
    Operation,
    Quirk,
    TokenPolicy,
    TpsConfig,
    parse_auth_switch,
)


def options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_tps(parser)
    return parser.parse_args(list(argv))


def test_defaults_are_dogtags() -> None:
    config = TpsConfig()
    assert config.quirks == FAITHFUL and config.tls
    assert (config.pin_min_length, config.pin_max_length, config.pin_max_retries) == (4, 10, 127)
    assert config.required_applet_version == "1.4.58768072"
    assert config.load_file.version_string == "1.4.58768072"
    assert len(config.load_file.encode()) == 15409
    assert config.default_policy.encode() == (
        "RE_ENROLL=YES;RENEW=NO;FORCE_FORMAT=NO;PIN_RESET=NO;RESET_PIN_RESET_TO_NO=NO"
    )
    user_key = config.token_type("userKey")
    assert user_key is not None
    assert [(k.name, k.cert_id, k.private_slot, k.public_slot) for k in user_key.key_types] == [
        ("signing", 1, 2, 3),
        ("encryption", 2, 4, 5),
    ]


def test_auth_switches_per_operation_and_token_type() -> None:
    config = TpsConfig(auth_disabled=frozenset({"format", "enroll/soKey"}))
    assert not config.auth_enabled(Operation.FORMAT, "userKey")
    assert not config.auth_enabled(Operation.ENROLL, "soKey")
    assert config.auth_enabled(Operation.ENROLL, "userKey")
    assert config.auth_enabled(Operation.PIN_RESET, "userKey")
    assert parse_auth_switch("pinreset/userKey") == "pinReset/userKey"
    assert parse_auth_switch("PIN-RESET") == "pinReset"
    with pytest.raises(ValueError):
        parse_auth_switch("renew")
    with pytest.raises(ValueError):
        TpsConfig(auth_disabled=frozenset({"bogus"}))


def test_mapping_resolver_falls_back_to_user_key() -> None:
    config = TpsConfig()
    assert config.resolve_token_type("soKey", Operation.ENROLL).name == "soKey"
    assert config.resolve_token_type("cleanToken", Operation.FORMAT).name == "userKey"
    assert config.resolve_token_type(None, Operation.ENROLL).name == "userKey"
    # PIN reset is configured for userKey only.
    assert config.resolve_token_type("soKey", Operation.PIN_RESET).name == "userKey"


def test_policy_strings() -> None:
    policy = TokenPolicy.parse("PIN_RESET=YES; force_format=yes")
    assert policy.pin_reset and policy.force_format and policy.re_enroll
    assert TokenPolicy.parse(policy.encode()) == policy
    assert TokenPolicy.parse("RE_ENROLL=NO", policy) == TokenPolicy(
        re_enroll=False, force_format=True, pin_reset=True
    )
    for bad in ("PIN_RESET", "PIN_RESET=MAYBE", "COLOUR=YES"):
        with pytest.raises(ValueError):
            TokenPolicy.parse(bad)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        TpsConfig(pin_min_length=8, pin_max_length=4)
    with pytest.raises(ValueError):
        TpsConfig(default_token_type="nothing")
    with pytest.raises(ValueError):
        TpsConfig(required_applet_version="1.4")
    with pytest.raises(ValueError):
        Faults(drop_at_message=0)
    with pytest.raises(ValueError):
        Faults(delay=-1)


def test_command_line_builds_the_config() -> None:
    config = config_from_args(
        options(
            "--plain", "--port", "8080", "--no-auth", "format", "--no-auth", "enroll/soKey",
            "--clean", "--quirk", "stop-at-z0", "--policy", "PIN_RESET=YES",
            "--drop-at", "5", "--fail-status", "7", "--fail-at", "3", "--delay", "0.5",
            "--wrong-mac", "82", "--wrong-mac", "e6", "--server-keygen", "encryption",
            "--key-size", "2048", "--deny-unknown-tokens", "--multiple-tokens-per-user",
        )
    )  # fmt: skip
    assert not config.tls and config.port == 8080
    assert config.auth_disabled == {"format", "enroll/soKey"}
    assert config.quirks == CLEAN | {Quirk.STOP_AT_Z0}
    assert config.default_policy.pin_reset
    assert config.faults == Faults(5, 7, 3, 0.5, frozenset({0x82, 0xE6}))
    assert config.server_keygen == {"encryption"} and config.key_size == 2048
    assert not config.allow_unknown_tokens and config.allow_multiple_active_tokens
    faithful = config_from_args(options("--no-quirk", "auth-mandatory"))
    assert faithful.quirks == FAITHFUL - {Quirk.AUTH_MANDATORY} and faithful.tls


def test_command_line_rejects_bad_values() -> None:
    for argv in (
        ["--wrong-mac", "zz"],
        ["--quirk", "nope"],
        ["--no-auth", "x"],
        ["--drop-at", "0"],
    ):
        with pytest.raises(SystemExit):
            options(*argv)
