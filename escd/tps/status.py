# SPDX-License-Identifier: GPL-2.0-or-later
"""Operation status codes in two namespaces: the TPS's END_OP codes and ESC's local codes.

This module owns the meaning of every status number escd reports (``Job.Result``,
``Token.LastOperation``; docs/dbus-api.md): the server's END_OP codes (Dogtag
``EndOpMsg.TPSStatus``) and ESC's local codes (ESC CoolKeyHandler.h), which ESC showed
through one table (ESC.js, ``Status_Messages``).

* Rule 1: a code is only ever looked up together with its source, ``"tps"`` (END_OP
  ``message``, 0-46) or ``"local"`` (ESC's client-side codes 8, 28, 44-48). The same
  number means different things in the two (44-46 collide; ESC reuses 8 and 28), so a
  bare integer is never mapped.
* Rule 2: the wording is escd's own, written after ESC's user-facing messages; it is
  never text received from a server (END_OP carries only numbers). No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum, unique
from types import MappingProxyType

from escd.errors import (
    CardError,
    ConnectionLostError,
    EscdError,
    NetworkError,
    NotConfiguredError,
    PcscUnavailableError,
    TpsError,
    TpsOperationError,
)


class StatusSource(StrEnum):
    """Which namespace a status code belongs to (``Job.Result["status_source"]``)."""

    TPS = "tps"
    LOCAL = "local"


@unique
class TpsStatus(IntEnum):
    """END_OP ``message`` codes, named as the Java TPS names them (``EndOpMsg.TPSStatus``).

    Java also gives 37 the name ERROR_RENEWAL_FAILED. The legacy C++ TPS names some codes
    differently, and 35, 44 and 45 mean other things there (``StatusInfo.legacy_name``).
    """

    NO_ERROR = 0
    ERROR_SNAC = 1
    ERROR_SEC_INIT_UPDATE = 2
    ERROR_CREATE_CARDMGR = 3
    ERROR_MAC_RESET_PIN_PDU = 4
    ERROR_MAC_CERT_PDU = 5
    ERROR_MAC_LIFECYCLE_PDU = 6
    ERROR_MAC_ENROLL_PDU = 7
    ERROR_CANNOT_PERFORM_OPERATION = 8
    ERROR_BAD_STATUS = 9
    ERROR_CA_RESPONSE = 10
    ERROR_READ_BUFFER_OVERFLOW = 11
    ERROR_TOKEN_RESET_PIN_FAILED = 12
    ERROR_CONNECTION = 13
    ERROR_LOGIN = 14
    ERROR_DB = 15
    ERROR_UNKNOWN_TOKEN = 16
    ERROR_SECURE_CHANNEL = 17
    ERROR_MISCONFIGURATION = 18
    ERROR_UPGRADE_APPLET = 19
    ERROR_KEY_CHANGE_OVER = 20
    ERROR_EXTERNAL_AUTH = 21
    ERROR_MAPPING_RESOLVER_FAILED = 22
    ERROR_MAPPING_RESOLVER_PARAMS_NOT_FOUND = 23
    ERROR_PUBLISH = 24
    ERROR_LDAP_CONN = 25
    ERROR_DISABLED_TOKEN = 26
    ERROR_NOT_PIN_RESETABLE = 27
    ERROR_CONN_LOST = 28
    ERROR_CREATE_TUS_TOKEN_ENTRY = 29
    ERROR_NO_SUCH_TOKEN_STATE = 30
    ERROR_NO_SUCH_LOST_REASON = 31
    ERROR_UNUSABLE_TOKEN_KEYCOMPROMISE = 32
    ERROR_INACTIVE_TOKEN_NOT_FOUND = 33
    ERROR_HAS_AT_LEAST_ONE_ACTIVE_TOKEN = 34
    ERROR_TOKEN_TERMINATED = 35
    RECOVERY_IS_PROCESSED = 36
    ERROR_RECOVERY_FAILED = 37
    ERROR_NO_OPERATION_ON_LOST_TOKEN = 38
    ERROR_KEY_ARCHIVE_OFF = 39
    ERROR_NO_TKS_CONNID = 40
    ERROR_UPDATE_TOKENDB_FAILED = 41
    ERROR_REVOKE_CERTIFICATES_FAILED = 42
    ERROR_NOT_TOKEN_OWNER = 43
    RENEWAL_IS_PROCESSED = 44
    ERROR_CANNOT_ESTABLISH_COMMUNICATION = 45
    ERROR_SYMKEY_256_UPGRADE = 46


@unique
class LocalStatus(IntEnum):
    """ESC's client-side codes (ESC ``CoolKeyHandler.h``), never on the wire."""

    #: ERR_CONN_TOKEN: card I/O failed, or the login prompt was canceled (ESC
    #: CoolKeyHandler.cpp, ``HttpProcessTokenPDU``, ``HttpSendAuthResponse``).
    CARD_ERROR = 8
    #: A connection that ended without END_OP, a non-200 answer, an undecodable message.
    CONNECTION_LOST = 28
    CONFIG_ERROR = 44
    CARD_CONTEXT_ERROR = 45
    PDU_WRITER_ERROR = 46
    HTTP_CLIENT_ERROR = 47
    CONN_READER_ERROR = 48


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """What one ``(source, code)`` means."""

    source: StatusSource
    code: int
    #: The Java name (tps) or ESC's constant name (local).
    name: str
    #: Human wording for users, after ESC's message for the same code.
    message: str
    #: The D-Bus error name a job reports for it ("" for success).
    dbus_name: str
    #: The legacy C++ TPS name, where it differs (tps only).
    legacy_name: str = ""


_INTERNAL = "The Smart Card Server had an internal error."
_SUPPORT = " Contact technical support."

# (message, legacy name if different) per TPS code; ESC's esc.properties key in comments.
_TPS_TEXT: dict[TpsStatus, tuple[str, str]] = {
    TpsStatus.NO_ERROR: ("The operation completed successfully.", ""),  # errorNone
    TpsStatus.ERROR_SNAC: ("The Smart Card Server had an internal error.", ""),
    TpsStatus.ERROR_SEC_INIT_UPDATE: (_INTERNAL, ""),
    TpsStatus.ERROR_CREATE_CARDMGR: (  # errorProblemCommToken
        "Your smart card cannot perform the operation requested.",
        "",
    ),
    TpsStatus.ERROR_MAC_RESET_PIN_PDU: (  # errorProblemResetTokenPin
        "The Smart Card Server cannot reset your smart card's password.",
        "",
    ),
    TpsStatus.ERROR_MAC_CERT_PDU: (_INTERNAL, ""),
    TpsStatus.ERROR_MAC_LIFECYCLE_PDU: (  # errorLifeCyclePDU
        "The Smart Card Server cannot finalize the enrollment of your smart card.",
        "ERROR_MAC_LIFESTYLE_PDU",
    ),
    TpsStatus.ERROR_MAC_ENROLL_PDU: (  # errorTokenEnrollment
        "The Smart Card Server cannot import the required certificates into your smart card.",
        "",
    ),
    TpsStatus.ERROR_CANNOT_PERFORM_OPERATION: (  # errorProblemCommToken
        "Your smart card cannot perform the operation requested.",
        "ERROR_READ_OBJECT_PDU",
    ),
    TpsStatus.ERROR_BAD_STATUS: (_INTERNAL, ""),
    TpsStatus.ERROR_CA_RESPONSE: (_INTERNAL, ""),
    TpsStatus.ERROR_READ_BUFFER_OVERFLOW: (_INTERNAL, ""),
    TpsStatus.ERROR_TOKEN_RESET_PIN_FAILED: (_INTERNAL, ""),
    TpsStatus.ERROR_CONNECTION: (  # errorTermSecureConn
        "The Smart Card Server cannot terminate the secure communications channel with "
        "your smart card.",
        "",
    ),
    TpsStatus.ERROR_LOGIN: ("The Smart Card Server cannot validate your credentials.", ""),
    TpsStatus.ERROR_DB: (_INTERNAL, ""),
    TpsStatus.ERROR_UNKNOWN_TOKEN: (  # errorTokenDisabled
        "The Smart Card Server does not know about your smart card.",
        "ERROR_TOKEN_DISABLED",
    ),
    TpsStatus.ERROR_SECURE_CHANNEL: (  # errorSecureChannel
        "The Smart Card Server cannot establish a secure channel with your smart card.",
        "",
    ),
    TpsStatus.ERROR_MISCONFIGURATION: (  # errorServerMisconfig
        "The Smart Card Server has not been configured correctly.",
        "",
    ),
    TpsStatus.ERROR_UPGRADE_APPLET: (  # errorTokenUpgrade
        "The Smart Card Server cannot upgrade the software on your smart card.",
        "",
    ),
    TpsStatus.ERROR_KEY_CHANGE_OVER: (_INTERNAL, ""),
    TpsStatus.ERROR_EXTERNAL_AUTH: (  # errorExternalAuth
        "Your smart card cannot correctly identify the Smart Card Server.",
        "",
    ),
    TpsStatus.ERROR_MAPPING_RESOLVER_FAILED: (  # errorInvalidTokenType
        "The Smart Card Server does not recognize the requested type of card enrollment.",
        "DEFAULT_TOKENTYPE_NOT_FOUND",
    ),
    TpsStatus.ERROR_MAPPING_RESOLVER_PARAMS_NOT_FOUND: (  # errorInvalidTokenTypeParams
        "The Smart Card Server cannot process the requested type of card enrollment because "
        "of a misconfiguration.",
        "DEFAULT_TOKENTYPE_PARAMS_NOT_FOUND",
    ),
    TpsStatus.ERROR_PUBLISH: (  # errorCannotPublish
        "The Smart Card Server cannot publish your smart card's certificates.",
        "",
    ),
    TpsStatus.ERROR_LDAP_CONN: (  # errorCommTokenDB
        "The Smart Card Server cannot connect to its internal database. Try again later.",
        "",
    ),
    TpsStatus.ERROR_DISABLED_TOKEN: (  # errorTokenSuspended
        "You are not allowed to perform this operation with your smart card.",
        "",
    ),
    TpsStatus.ERROR_NOT_PIN_RESETABLE: (  # errorPinResetable
        "You are not allowed to reset the password of your smart card.",
        "",
    ),
    TpsStatus.ERROR_CONN_LOST: (  # errorConnLost
        "The connection to the Smart Card Server was lost.",
        "",
    ),
    TpsStatus.ERROR_CREATE_TUS_TOKEN_ENTRY: (  # errorEntryTokenDB
        "The Smart Card Server cannot add your smart card to its internal database." + _SUPPORT,
        "",
    ),
    TpsStatus.ERROR_NO_SUCH_TOKEN_STATE: (  # errorNoTokenState
        "The Smart Card Server does not know the state of your smart card." + _SUPPORT,
        "",
    ),
    TpsStatus.ERROR_NO_SUCH_LOST_REASON: (  # errorInvalidLostTokenReason
        "The Smart Card Server does not know the reason given for a lost smart card." + _SUPPORT,
        "",
    ),
    TpsStatus.ERROR_UNUSABLE_TOKEN_KEYCOMPROMISE: (  # errorTokenUnusable
        "Your smart card cannot be used because its keys may be compromised." + _SUPPORT,
        "",
    ),
    TpsStatus.ERROR_INACTIVE_TOKEN_NOT_FOUND: (  # errorNoInactiveToken
        "The Smart Card Server cannot find an inactive smart card to work on." + _SUPPORT,
        "",
    ),
    TpsStatus.ERROR_HAS_AT_LEAST_ONE_ACTIVE_TOKEN: (  # errorProcessMultiTokens
        "The Smart Card Server only allows one enrolled smart card per user.",
        "",
    ),
    TpsStatus.ERROR_TOKEN_TERMINATED: (  # errorTokenTerminated
        "Your smart card has been terminated and can no longer be used." + _SUPPORT,
        "ERROR_CONTACT_ADMIN",
    ),
    TpsStatus.RECOVERY_IS_PROCESSED: (_INTERNAL, "ERROR_RECOVERY_IS_PROCESSED"),
    TpsStatus.ERROR_RECOVERY_FAILED: (  # errorKeyRecoveryFailed
        "The Smart Card Server could not recover or renew your keys." + _SUPPORT,
        "",
    ),
    TpsStatus.ERROR_NO_OPERATION_ON_LOST_TOKEN: (_INTERNAL, ""),
    TpsStatus.ERROR_KEY_ARCHIVE_OFF: (  # errorKeyArchival
        "The Smart Card Server cannot archive your keys." + _SUPPORT,
        "",
    ),
    TpsStatus.ERROR_NO_TKS_CONNID: (  # errorConnTKS
        "The Smart Card Server cannot connect to its key service." + _SUPPORT,
        "",
    ),
    TpsStatus.ERROR_UPDATE_TOKENDB_FAILED: (  # errorFailUpdateTokenDB
        "The Smart Card Server cannot update its smart card database." + _SUPPORT,
        "",
    ),
    TpsStatus.ERROR_REVOKE_CERTIFICATES_FAILED: (  # errorCertRevocation
        "The Smart Card Server cannot revoke your certificates." + _SUPPORT,
        "",
    ),
    TpsStatus.ERROR_NOT_TOKEN_OWNER: (  # errorNotOwnToken
        "You are not the owner of this smart card." + _SUPPORT,
        "",
    ),
    TpsStatus.RENEWAL_IS_PROCESSED: (
        "The Smart Card Server has already processed a renewal of your smart card.",
        "ERROR_RENEWAL_IS_PROCESSED",
    ),
    TpsStatus.ERROR_CANNOT_ESTABLISH_COMMUNICATION: (
        "The Smart Card Server cannot establish communication with your smart card.",
        "ERROR_RENEWAL_FAILED",
    ),
    TpsStatus.ERROR_SYMKEY_256_UPGRADE: (
        "The Smart Card Server cannot upgrade the keys of your smart card to 256-bit keys.",
        "",
    ),
}

_LOCAL_TEXT: dict[LocalStatus, tuple[str, str]] = {
    LocalStatus.CARD_ERROR: (  # errorProblemCommToken, ESC's cancelled login
        "There was a problem communicating with your smart card, or the operation was canceled.",
        CardError.dbus_name,
    ),
    LocalStatus.CONNECTION_LOST: (  # errorConnLost
        "The connection to the Smart Card Server was lost.",
        ConnectionLostError.dbus_name,
    ),
    LocalStatus.CONFIG_ERROR: (  # errorESCMisconfigured
        "No Smart Card Server is configured for your smart card.",
        NotConfiguredError.dbus_name,
    ),
    LocalStatus.CARD_CONTEXT_ERROR: (  # errorESCNoCommCardReader
        "escd cannot communicate with the smart card reader service.",
        PcscUnavailableError.dbus_name,
    ),
    LocalStatus.PDU_WRITER_ERROR: (  # errorESCNoTokenSession
        "escd cannot start a session with your smart card.",
        EscdError.dbus_name,
    ),
    LocalStatus.HTTP_CLIENT_ERROR: (  # errorESCNoTalkTPS
        "escd cannot initiate communications with the Smart Card Server.",
        NetworkError.dbus_name,
    ),
    LocalStatus.CONN_READER_ERROR: (  # errorESCNoTalkTokenReader
        "escd cannot connect to the smart card reader or select the applet on your smart card.",
        CardError.dbus_name,
    ),
}

TPS_STATUSES: Mapping[int, StatusInfo] = MappingProxyType(
    {
        int(code): StatusInfo(
            StatusSource.TPS,
            int(code),
            code.name,
            text,
            "" if code is TpsStatus.NO_ERROR else TpsOperationError.dbus_name,
            legacy,
        )
        for code, (text, legacy) in _TPS_TEXT.items()
    }
)
LOCAL_STATUSES: Mapping[int, StatusInfo] = MappingProxyType(
    {
        int(code): StatusInfo(StatusSource.LOCAL, int(code), code.name, text, dbus_name)
        for code, (text, dbus_name) in _LOCAL_TEXT.items()
    }
)

#: The wording for END_OP ``result=1`` with ``message=0``: the Java TPS's answer to an
#: operation it does not implement (UNBLOCK, RENEW, undefined; Dogtag TPSSession.java,
#: ``process``).
REFUSED_WITHOUT_STATUS = (
    "The Smart Card Server refused the operation without giving a reason; it may not "
    "support this operation."
)


def describe(source: StatusSource | str, code: int) -> StatusInfo:
    """What ``code`` means in namespace ``source``; unknown codes get a generic entry."""
    source = StatusSource(source)
    table = TPS_STATUSES if source is StatusSource.TPS else LOCAL_STATUSES
    info = table.get(code)
    if info is not None:
        return info
    if source is StatusSource.TPS:
        return StatusInfo(
            source,
            code,
            "",
            f"The Smart Card Server reported an error this version of escd does not know "
            f"(status {code}).",
            TpsError.dbus_name,
        )
    return StatusInfo(source, code, "", "escd could not complete the operation.", "")


def end_op_message(result: int, code: int) -> str:
    """The wording for an END_OP with this ``result`` and ``message``."""
    if result != 0 and code == TpsStatus.NO_ERROR:
        return REFUSED_WITHOUT_STATUS
    return describe(StatusSource.TPS, code).message


@dataclass(frozen=True, slots=True)
class Outcome:
    """The status part of ``Job.Result``: what ended a job, in words and numbers."""

    #: The D-Bus error name, "" on success.
    error: str
    tps_status: int
    status_source: StatusSource
    message: str

    @property
    def succeeded(self) -> bool:
        return not self.error


SUCCESS = Outcome("", int(TpsStatus.NO_ERROR), StatusSource.TPS, _TPS_TEXT[TpsStatus.NO_ERROR][0])


def outcome_of(error: EscdError | None) -> Outcome:
    """The ``Job.Result`` status keys for a job that ended with ``error`` (None: success).

    END_OP failures report the server's code in the ``"tps"`` namespace; every other
    error reports its ESC-local code (``EscdError.local_status``) in ``"local"``. An
    error ESC had no code for reports local 0 with its own (user-safe) text.
    """
    if error is None:
        return SUCCESS
    if isinstance(error, TpsOperationError):
        message = end_op_message(1, error.tps_status)
        return Outcome(error.dbus_name, error.tps_status, StatusSource.TPS, message)
    if error.local_status is None:
        return Outcome(error.dbus_name, 0, StatusSource.LOCAL, error.message)
    info = describe(StatusSource.LOCAL, error.local_status)
    return Outcome(error.dbus_name, error.local_status, StatusSource.LOCAL, info.message)
