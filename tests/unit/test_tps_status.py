# SPDX-License-Identifier: GPL-2.0-or-later
"""Status codes in their two namespaces, and the ``Job.Result`` status keys of errors."""

from __future__ import annotations

import pytest

from escd.errors import (
    CanceledError,
    CardError,
    ConnectionLostError,
    EscdError,
    HttpStatusError,
    InvalidArgumentError,
    MessageTimeoutError,
    NetworkError,
    NotConfiguredError,
    PcscUnavailableError,
    RemoteTpsProtocolError,
    TpsOperationError,
)
from escd.tps.status import (
    LOCAL_STATUSES,
    REFUSED_WITHOUT_STATUS,
    SUCCESS,
    TPS_STATUSES,
    LocalStatus,
    StatusSource,
    TpsStatus,
    describe,
    end_op_message,
    outcome_of,
)

TPS_ERROR = "io.github.escd.Escd1.Error.Tps"


def test_every_tps_code_from_0_to_46_has_its_java_name_and_a_sentence() -> None:
    assert sorted(TPS_STATUSES) == list(range(47))
    for code, info in TPS_STATUSES.items():
        assert info.source is StatusSource.TPS
        assert info.name == TpsStatus(code).name
        assert info.message[0].isupper() and info.message.endswith(".")
        assert info.dbus_name == ("" if code == 0 else TPS_ERROR)


def test_local_codes_are_escs_client_codes() -> None:
    assert sorted(LOCAL_STATUSES) == [8, 28, 44, 45, 46, 47, 48]
    assert describe("local", 44).name == LocalStatus.CONFIG_ERROR.name


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (14, "The Smart Card Server cannot validate your credentials."),
        (4, "The Smart Card Server cannot reset your smart card's password."),
        (26, "You are not allowed to perform this operation with your smart card."),
        (34, "The Smart Card Server only allows one enrolled smart card per user."),
        (2, "The Smart Card Server had an internal error."),
    ],
)
def test_tps_wording_follows_esc(code: int, text: str) -> None:
    assert describe(StatusSource.TPS, code).message == text


@pytest.mark.parametrize("code", [8, 28, 44, 45, 46])
def test_the_same_number_means_different_things_in_the_two_namespaces(code: int) -> None:
    server, local = describe("tps", code), describe("local", code)
    assert server.message != local.message or code == 28
    assert server.name != local.name
    assert server.dbus_name == TPS_ERROR
    assert local.dbus_name != TPS_ERROR


def test_local_codes_map_to_the_error_tree_names() -> None:
    assert describe("local", 8).dbus_name == CardError.dbus_name
    assert describe("local", 28).dbus_name == ConnectionLostError.dbus_name
    assert describe("local", 44).dbus_name == NotConfiguredError.dbus_name
    assert describe("local", 45).dbus_name == PcscUnavailableError.dbus_name
    assert describe("local", 47).dbus_name == NetworkError.dbus_name


def test_legacy_names_are_kept_where_they_differ() -> None:
    assert describe("tps", 6).legacy_name == "ERROR_MAC_LIFESTYLE_PDU"
    assert describe("tps", 35).legacy_name == "ERROR_CONTACT_ADMIN"
    assert describe("tps", 45).legacy_name == "ERROR_RENEWAL_FAILED"
    assert describe("tps", 14).legacy_name == ""


def test_unknown_codes_get_a_generic_sentence() -> None:
    assert "status 99" in describe("tps", 99).message
    assert describe("tps", 99).dbus_name == TPS_ERROR
    assert describe("local", 3).message


def test_a_namespace_is_required() -> None:
    with pytest.raises(ValueError):
        describe("server", 14)


def test_end_op_failure_without_a_code_is_a_refusal() -> None:
    assert end_op_message(1, 0) == REFUSED_WITHOUT_STATUS
    assert end_op_message(0, 0) == "The operation completed successfully."
    assert end_op_message(1, 14) == describe("tps", 14).message


def test_outcome_of_success() -> None:
    assert outcome_of(None) == SUCCESS
    assert SUCCESS.succeeded
    assert (SUCCESS.error, SUCCESS.status_source, SUCCESS.tps_status) == ("", "tps", 0)


@pytest.mark.parametrize(
    ("error", "source", "code", "name"),
    [
        (TpsOperationError(14, "x"), "tps", 14, TPS_ERROR),
        (TpsOperationError(0, "x"), "tps", 0, TPS_ERROR),
        (ConnectionLostError(), "local", 28, "io.github.escd.Escd1.Error.Network"),
        (MessageTimeoutError(), "local", 28, "io.github.escd.Escd1.Error.Timeout"),
        (HttpStatusError(405), "local", 28, "io.github.escd.Escd1.Error.Network"),
        (RemoteTpsProtocolError("bad"), "local", 28, "io.github.escd.Escd1.Error.Protocol"),
        (CardError("gone"), "local", 8, "io.github.escd.Escd1.Error.Card"),
        (CanceledError(), "local", 8, "io.github.escd.Escd1.Error.Canceled"),
        (NotConfiguredError(), "local", 44, "io.github.escd.Escd1.Error.NotConfigured"),
        (NetworkError(), "local", 47, "io.github.escd.Escd1.Error.Network"),
    ],
)
def test_outcome_of_an_error_uses_its_namespace(
    error: EscdError, source: str, code: int, name: str
) -> None:
    outcome = outcome_of(error)
    assert (outcome.status_source, outcome.tps_status, outcome.error) == (source, code, name)
    assert not outcome.succeeded
    expected = end_op_message(1, code) if source == "tps" else describe(source, code).message
    assert outcome.message == expected


def test_outcome_of_an_error_without_an_esc_code_uses_its_own_text() -> None:
    outcome = outcome_of(InvalidArgumentError("token_type must be a string"))
    assert (outcome.status_source, outcome.tps_status) == ("local", 0)
    assert outcome.message == "token_type must be a string"
