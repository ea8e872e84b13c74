# SPDX-License-Identifier: GPL-2.0-or-later
"""The one exception tree of escd.

Every error escd raises on purpose is an ``EscdError``. Each class names its D-Bus
error (``dbus_name``) and, where ESC had one, the ESC-local status code that a job
reports with ``status_source="local"`` (``local_status``). The D-Bus layer translates
these once (``escd/dbus_service/errors.py``); everything else becomes
``…Error.Internal`` without its text.

Rule: an error's message is shown to users and peers on the bus, so it never carries a
PIN, a password or APDU data.

    EscdError                                 Error.Internal
    ├── ConfigError                           Error.InvalidConfiguration
    ├── InvalidArgumentError                  org.freedesktop.DBus.Error.InvalidArgs
    ├── CardError                             Error.Card                 local 8
    │   ├── ApduError (sw)                    Error.Card                 local 8
    │   ├── MalformedResponseError            Error.Card                 local 8
    │   ├── MalformedApduError                Error.Card                 local 8
    │   ├── InvalidPinError (attempts_left)   Error.Card                 local 8
    │   └── CardRemovedError                  Error.TokenRemoved         local 8
    ├── PcscUnavailableError                  Error.PcscUnavailable      local 45
    │   └── PcscAccessDeniedError             Error.AccessDenied         local 45
    ├── NoSuchTokenError                      Error.NoSuchToken
    ├── BusyError                             Error.Busy
    ├── InvalidStateError                     Error.InvalidState
    ├── NotSupportedError                     Error.NotSupported
    ├── NotConfiguredError                    Error.NotConfigured        local 44
    ├── NoAgentError                          Error.NoAgent              local 8
    ├── CanceledError                         Error.Canceled             local 8
    │   └── PromptRejectedError               Error.Canceled             local 8
    ├── PromptTimeoutError                    Error.Timeout              local 8
    ├── StateFileError (path)                 Error.Internal
    ├── NetworkError                          Error.Network              local 47
    │   ├── TlsUntrustedError (fingerprint)   Error.TlsUntrusted         local 47
    │   ├── InsecureUrlError (url)            Error.Network              local 47
    │   ├── HttpStatusError (status)          Error.Network              local 28
    │   ├── ConnectionLostError               Error.Network              local 28
    │   └── MessageTimeoutError               Error.Timeout              local 28
    ├── PhoneHomeError (reason)               Error.PhoneHomeFailed
    └── TpsError                              Error.Tps
        ├── TpsProtocolError                  Error.Protocol             local 28
        │   ├── LocalTpsProtocolError         (we were about to send something illegal)
        │   └── RemoteTpsProtocolError        (the server sent something illegal)
        └── TpsOperationError (tps_status)    Error.Tps                  server code
"""

from __future__ import annotations

from typing import ClassVar

ERROR_PREFIX = "io.github.escd.Escd1.Error."


class EscdError(Exception):
    """Base of every error escd raises on purpose."""

    dbus_name: ClassVar[str] = ERROR_PREFIX + "Internal"
    #: ESC's local status code for this condition, if ESC had one (ESC CoolKeyHandler.h,
    #: CoolKeyHandler.cpp).
    local_status: ClassVar[int | None] = None

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(EscdError):
    """The configuration is invalid."""

    dbus_name = ERROR_PREFIX + "InvalidConfiguration"

    def __init__(self, source: str, key: str, expected: str) -> None:
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {expected}")
        self.source = source
        self.key = key
        self.expected = expected


class InvalidArgumentError(EscdError):
    """An argument of a call is invalid."""

    dbus_name = "org.freedesktop.DBus.Error.InvalidArgs"


class CardError(EscdError):
    """The card could not be read or refused a command."""

    dbus_name = ERROR_PREFIX + "Card"
    local_status = 8


class ApduError(CardError):
    """The card answered a command with an unexpected status word."""

    def __init__(self, sw: int, command: str = "") -> None:
        # Imported here to keep errors.py free of module-level cycles.
        from escd.card.apdu import describe_sw

        what = f"{command}: " if command else ""
        super().__init__(f"{what}card answered {sw:04X} ({describe_sw(sw)})")
        self.sw = sw
        self.command = command


class MalformedResponseError(CardError):
    """The card's answer does not have the expected layout."""


class MalformedApduError(CardError):
    """A command APDU is not valid ISO 7816-4."""


class InvalidPinError(CardError):
    """The PIN was refused."""

    def __init__(self, attempts_left: int | None = None) -> None:
        text = "the PIN was refused"
        if attempts_left is not None:
            text += f" ({attempts_left} attempts left)"
        super().__init__(text)
        self.attempts_left = attempts_left


class CardRemovedError(CardError):
    """The card was removed."""

    dbus_name = ERROR_PREFIX + "TokenRemoved"


class PcscUnavailableError(EscdError):
    """The PC/SC service (pcscd) is not available."""

    dbus_name = ERROR_PREFIX + "PcscUnavailable"
    local_status = 45


class PcscAccessDeniedError(PcscUnavailableError):
    """pcscd refused access (polkit policy)."""

    dbus_name = ERROR_PREFIX + "AccessDenied"


class NoSuchTokenError(EscdError):
    """No such token is present."""

    dbus_name = ERROR_PREFIX + "NoSuchToken"


class BusyError(EscdError):
    """Another job is running on this token."""

    dbus_name = ERROR_PREFIX + "Busy"


class InvalidStateError(EscdError):
    """The token is not in a state that allows this operation."""

    dbus_name = ERROR_PREFIX + "InvalidState"


class NotSupportedError(EscdError):
    """The operation is not supported here."""

    dbus_name = ERROR_PREFIX + "NotSupported"


class NotConfiguredError(EscdError):
    """No TPS is known for this token (phone home and configuration gave none)."""

    dbus_name = ERROR_PREFIX + "NotConfigured"
    local_status = 44


class NoAgentError(EscdError):
    """No agent is registered that can answer this prompt."""

    dbus_name = ERROR_PREFIX + "NoAgent"
    local_status = 8


class CanceledError(EscdError):
    """The operation was canceled."""

    dbus_name = ERROR_PREFIX + "Canceled"
    local_status = 8


class PromptRejectedError(CanceledError):
    """The user said no to a prompt (the agent's ``Error.Rejected``), rather than canceling.

    Every prompt treats it as ``CanceledError``; a ``tls-trust`` prompt as "do not trust".
    """


class PromptTimeoutError(EscdError):
    """Nobody answered the prompt in time."""

    dbus_name = ERROR_PREFIX + "Timeout"
    local_status = 8


class StateFileError(EscdError):
    """escd could not write one of its state files; the previous version is kept."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.reason = reason


class NetworkError(EscdError):
    """The server could not be reached."""

    dbus_name = ERROR_PREFIX + "Network"
    local_status = 47


class TlsUntrustedError(NetworkError):
    """The server's TLS certificate is not trusted."""

    dbus_name = ERROR_PREFIX + "TlsUntrusted"

    def __init__(
        self, host: str, port: int, fingerprint: str, reason: str = "", *, certificate: bytes = b""
    ) -> None:
        text = f"the certificate of {host}:{port} is not trusted (SHA-256 {fingerprint})"
        if reason:
            text += f": {reason}"
        super().__init__(text)
        self.host = host
        self.port = port
        self.fingerprint = fingerprint
        self.reason = reason
        #: The DER of the certificate ``fingerprint`` names (b"" when it is unknown): what
        #: a ``tls-trust`` prompt shows, so that exactly what was shown can be pinned.
        self.certificate = certificate


class InsecureUrlError(NetworkError):
    """A URL would be used over plain http, which the configuration does not allow for it."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refusing {url}: {reason}")
        self.url = url
        self.reason = reason


class HttpStatusError(NetworkError):
    """The server answered with an HTTP error status."""

    local_status = 28

    def __init__(self, status: int, reason: str = "") -> None:
        text = f"the server answered HTTP {status}"
        if reason:
            text += f" ({reason})"
        super().__init__(text)
        self.status = status


class ConnectionLostError(NetworkError):
    """The connection to the server ended before the operation finished."""

    local_status = 28


class MessageTimeoutError(NetworkError):
    """The server did not send its next message in time."""

    dbus_name = ERROR_PREFIX + "Timeout"
    local_status = 28


class PhoneHomeError(EscdError):
    """Phone home failed."""

    dbus_name = ERROR_PREFIX + "PhoneHomeFailed"

    def __init__(self, reason: str) -> None:
        super().__init__(f"phone home failed: {reason}")
        self.reason = reason


class TpsError(EscdError):
    """The TPS refused or failed the operation."""

    dbus_name = ERROR_PREFIX + "Tps"


class TpsProtocolError(TpsError):
    """The TPS conversation broke the protocol."""

    dbus_name = ERROR_PREFIX + "Protocol"
    local_status = 28


class LocalTpsProtocolError(TpsProtocolError):
    """escd was about to send a message the protocol does not allow."""


class RemoteTpsProtocolError(TpsProtocolError):
    """The TPS sent a message the protocol does not allow."""


class TpsOperationError(TpsError):
    """The TPS ended the operation with a failure status (END_OP result=1)."""

    def __init__(self, tps_status: int, message: str) -> None:
        super().__init__(message)
        self.tps_status = tps_status
