# SPDX-License-Identifier: GPL-2.0-or-later
"""``TpsSession``: the client side of one TPS operation as a sans-IO event machine.

The session owns the conversation rules: BEGIN_OP first, then exactly one reply per
server request, in strict lock-step, until END_OP (Dogtag TPSSession.java and
TPSConnection.java; ESC CoolKeyHandler.cpp, ``ProcessMessageHttp``).

* Rule 1: every decision about what to send, ask or report lives here. The caller feeds
  events in (``receive``, ``card_responded``, ``card_failed``, ``user_answered``,
  ``cancel``, ``connection_closed``, ``connection_failed``) and carries out the
  ``Action``s it gets back, in order.
* Rule 2: no I/O, no asyncio, no clock, no logging. The session never touches the card,
  the network or the agent; it never encodes a message (``escd.tps.codec`` does, at the
  edge) and never logs (the edge logs, redacted).

Secrets: answers from the agent are put into the outgoing message as the ``Secret``
objects they came in, and the session keeps no reference to them. The edge drops them
with ``messages.secrets_of`` right after encoding (``TpsConnection.send_message`` does);
rejected answers are dropped here at once.

Errors never escape as exceptions from peer behaviour: a server that breaks the
protocol, a failing card or a lost connection ends the session with ``Finished``
carrying the error. Exceptions (``LocalTpsProtocolError``) are raised only when the
*caller* breaks the API contract, e.g. ``card_responded`` while no APDU is pending.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum, auto

from escd.errors import (
    CanceledError,
    ConnectionLostError,
    EscdError,
    LocalTpsProtocolError,
    MalformedResponseError,
    RemoteTpsProtocolError,
    TpsOperationError,
)
from escd.log import Secret, describe_apdu
from escd.model import OperationType
from escd.tps.codec import unsafe_pin_reason
from escd.tps.messages import (
    AsqRequest,
    BeginOp,
    ClientMessage,
    EndOp,
    ExtendedLoginRequest,
    ExtendedLoginResponse,
    LoginRequest,
    LoginResponse,
    NewPinRequest,
    NewPinResponse,
    SecurIdRequest,
    SecurIdResponse,
    StatusUpdateRequest,
    StatusUpdateResponse,
    TokenPduRequest,
    TokenPduResponse,
    TpsMessage,
    secrets_of,
)
from escd.tps.status import Outcome, end_op_message, outcome_of

#: A FORMAT is a few hundred messages and an ENROLL with applet upgrade under a thousand;
#: a server that sends this many is broken or hostile.
DEFAULT_MAX_MESSAGES = 10_000
#: Unacceptable answers to one prompt before the session gives up.
DEFAULT_MAX_PROMPT_ATTEMPTS = 5
#: The token type ESC used for enroll when phone home gave none (ESC.js,
#: ``gKeyEnrollmentType``).
DEFAULT_TOKEN_TYPE = "userKey"  # noqa: S105 - a TPS profile name, not a secret

_RESETS_CARD = frozenset({OperationType.ENROLL, OperationType.FORMAT})


class SessionState(Enum):
    """Where the conversation stands: whose turn it is."""

    IDLE = auto()
    WAITING_FOR_SERVER = auto()
    WAITING_FOR_CARD = auto()
    WAITING_FOR_USER = auto()
    FINISHED = auto()


class PromptKind(StrEnum):
    """``kind`` of an agent prompt (docs/dbus-api.md, ``Agent.RequestInput``)."""

    LOGIN = "login"
    EXTENDED_LOGIN = "extended-login"
    NEW_PIN = "new-pin"
    SECURID = "securid"
    #: Asked by escd itself, never by the session: before a FORMAT, and for a TLS
    #: certificate nobody trusts yet.
    CONFIRM_FORMAT = "confirm-format"
    TLS_TRUST = "tls-trust"
    #: Asked by phone home when a token has no Phone Home URL (one text field, ``url``).
    PHONE_HOME_URL = "phone-home-url"


class FieldType(StrEnum):
    """``type`` of one prompt field (docs/dbus-api.md, ``Agent.RequestInput``)."""

    TEXT = "text"
    SECRET = "secret"  # noqa: S105 - a field type name
    PIN = "pin"
    CHOICE = "choice"
    BOOL = "bool"


@dataclass(frozen=True, slots=True)
class PromptField:
    """One field the agent must fill; the reply is keyed by ``id``."""

    id: str
    label: str
    type: FieldType
    description: str = ""
    options: tuple[str, ...] = ()
    #: Ask twice and compare before answering (new PINs).
    confirm: bool = False
    #: Length bounds, 0 for none.
    min_length: int = 0
    max_length: int = 0

    @property
    def is_secret(self) -> bool:
        return self.type in (FieldType.SECRET, FieldType.PIN)


@dataclass(frozen=True, slots=True)
class CertificateDetails:
    """The server certificate a ``tls-trust`` prompt is about (``certificate`` in the prompt).

    Read-only details for the user to judge; ``fingerprint`` is what is pinned when they
    accept.
    """

    host: str
    port: int
    subject: str
    issuer: str
    #: SHA-256 of ``der``, ``AB:CD:…`` (as ``escctl trust`` prints it).
    fingerprint: str
    #: Validity, Unix seconds.
    not_before: int
    not_after: int
    #: Why the certificate was not accepted (OpenSSL's words, or "not the pinned one").
    reason: str = ""
    der: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class Prompt:
    """What to ask the user; ``title`` and ``description`` are the TPS's own texts."""

    kind: PromptKind
    fields: tuple[PromptField, ...]
    title: str = ""
    description: str = ""
    locale: str = ""
    #: 1 for the first question, higher when asking again.
    attempt: int = 1
    #: Why the previous answer was not used; "" on the first attempt.
    previous_error: str = ""
    #: ``tls-trust`` only: the certificate the user is asked to trust.
    certificate: CertificateDetails | None = None


@dataclass(frozen=True, slots=True)
class SessionResult:
    """How the operation ended: ``error`` is None on success."""

    operation: OperationType
    error: EscdError | None = None
    #: The server's END_OP, when there was one.
    end_op: EndOp | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def outcome(self) -> Outcome:
        """``error``, ``tps_status``, ``status_source`` and ``message`` for ``Job.Result``."""
        return outcome_of(self.error)


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Encode and send this message to the TPS, as one chunk."""

    message: ClientMessage


@dataclass(frozen=True, slots=True)
class SendApdu:
    """Send this command APDU to the card verbatim (resolving 61xx, not 6Cxx)."""

    apdu: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"SendApdu(<{describe_apdu(self.apdu)}>)"


@dataclass(frozen=True, slots=True)
class AskUser:
    """Ask the agent, then call ``user_answered`` (or ``cancel``)."""

    prompt: Prompt


@dataclass(frozen=True, slots=True)
class ReportProgress:
    """A STATUS_UPDATE_REQUEST arrived: ``Job.Progress``, ``Job.TpsStage`` and its task name.

    ``progress`` is ``current_state / 100`` clamped to [0, 1]; ``stage`` is
    ``current_state`` unchanged. Not monotonic: a RESET PIN that upgrades the applet goes
    from 15 back to 5 (Dogtag TPSPinResetProcessor.java, ``resetPin``).
    """

    progress: float
    stage: int
    task_name: str

    @property
    def percent(self) -> int:
        return round(self.progress * 100)


@dataclass(frozen=True, slots=True)
class ResetCard:
    """Reset the card (ESC does after END_OP of enroll and format).

    ESC CoolKeyHandler.cpp, ``HttpProcessEndOp``.
    """


@dataclass(frozen=True, slots=True)
class Finished:
    """The session is over: after END_OP finish the connection cleanly, otherwise close it."""

    result: SessionResult


Action = SendMessage | SendApdu | AskUser | ReportProgress | ResetCard | Finished


@dataclass(slots=True)
class _Pending:
    """The prompt being answered and the request that caused it."""

    request: LoginRequest | ExtendedLoginRequest | NewPinRequest | SecurIdRequest
    prompt: Prompt


class TpsSession:
    """One operation (enroll, unblock, reset PIN, renew, format) against a TPS."""

    def __init__(
        self,
        operation: OperationType,
        *,
        atr: bytes,
        version: str,
        token_type: str = DEFAULT_TOKEN_TYPE,
        locale: str = "",
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_prompt_attempts: int = DEFAULT_MAX_PROMPT_ATTEMPTS,
    ) -> None:
        self._operation = OperationType(operation)
        self._atr = atr
        self._version = version
        self._token_type = token_type
        self._locale = locale
        self._max_messages = max_messages
        self._max_attempts = max_prompt_attempts
        self._state = SessionState.IDLE
        self._received = 0
        self._logins_answered = 0
        self._pending: _Pending | None = None
        self._result: SessionResult | None = None

    @property
    def operation(self) -> OperationType:
        return self._operation

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def result(self) -> SessionResult | None:
        """The result once ``Finished`` was returned, else None."""
        return self._result

    # -- events --------------------------------------------------------------------------

    def start(self) -> list[Action]:
        """Open the conversation: BEGIN_OP with ESC's extensions (``_extensions``)."""
        if self._state is not SessionState.IDLE:
            raise LocalTpsProtocolError("the session was already started")
        self._state = SessionState.WAITING_FOR_SERVER
        return [SendMessage(BeginOp(self._operation, self._extensions()))]

    def receive(self, message: TpsMessage) -> list[Action]:
        """A message from the server arrived."""
        if self._state is SessionState.FINISHED:
            return []
        if self._state is SessionState.IDLE:
            raise LocalTpsProtocolError("receive() before start()")
        self._received += 1
        if self._received > self._max_messages:
            return self._fail(
                RemoteTpsProtocolError(f"the server sent more than {self._max_messages} messages")
            )
        if self._state is not SessionState.WAITING_FOR_SERVER:
            # Lock-step: every request gets its reply before the server may speak (the Java
            # TPS blocks reading it, Dogtag TPSConnection.java).
            waiting = "the card" if self._state is SessionState.WAITING_FOR_CARD else "the user"
            return self._fail(
                RemoteTpsProtocolError(
                    f"the server sent {message.msg_type.name} while escd was waiting for {waiting}"
                )
            )
        match message:
            case TokenPduRequest(apdu=apdu):
                if len(apdu) < 4:
                    return self._fail(
                        RemoteTpsProtocolError(f"the server sent a {len(apdu)}-byte APDU")
                    )
                self._state = SessionState.WAITING_FOR_CARD
                return [SendApdu(apdu)]
            case StatusUpdateRequest(current_state=current, next_task_name=task):
                # Echo the number; the server ignores the value but needs it (Dogtag
                # TPSProcessor.java, statusUpdate).
                progress = min(max(current / 100, 0.0), 1.0)
                return [
                    ReportProgress(progress, current, task),
                    SendMessage(StatusUpdateResponse(current)),
                ]
            case LoginRequest() | ExtendedLoginRequest() | NewPinRequest() | SecurIdRequest():
                return self._ask(message)
            case EndOp():
                return self._end(message)
            case AsqRequest():
                # Neither server sends it and ESC disconnects on it (ESC CoolKeyHandler.cpp,
                # ProcessMessageHttp).
                return self._fail(RemoteTpsProtocolError("the server sent ASQ_REQUEST"))
            case _:
                return self._fail(
                    RemoteTpsProtocolError(
                        f"the server sent {message.msg_type.name}, a client message"
                    )
                )

    def card_responded(self, response: bytes) -> list[Action]:
        """The card answered the pending APDU (data and SW1 SW2, 61xx already resolved)."""
        if self._state is SessionState.FINISHED:
            return []
        if self._state is not SessionState.WAITING_FOR_CARD:
            raise LocalTpsProtocolError("card_responded() while no APDU is pending")
        if len(response) < 2:
            # ESC treats an empty card answer as a card failure, local 8 (ESC
            # CoolKeyHandler.cpp, HttpProcessTokenPDU).
            return self._fail(
                MalformedResponseError(f"the card answered {len(response)} bytes, no status word")
            )
        self._state = SessionState.WAITING_FOR_SERVER
        return [SendMessage(TokenPduResponse(response))]

    def card_failed(self, error: EscdError) -> list[Action]:
        """The card could not be reached (removed, transmit failed): end without reply.

        ESC sends nothing and closes (ESC CoolKeyHandler.cpp, ``HttpProcessTokenPDU``); the
        server then ends without END_OP (Dogtag TPSSession.java).
        """
        if self._state is SessionState.FINISHED:
            return []
        return self._fail(error)

    def user_answered(self, values: Mapping[str, Secret | str]) -> list[Action]:
        """The agent answered the pending prompt; reply keys are the field ids."""
        if self._state is SessionState.FINISHED:
            _drop(values)
            return []
        pending = self._pending
        if self._state is not SessionState.WAITING_FOR_USER or pending is None:
            _drop(values)
            raise LocalTpsProtocolError("user_answered() while no prompt is pending")
        problem = _problem_with(pending, values)
        if problem is not None:
            _drop(values)
            return self._ask_again(pending, problem)
        reply = _reply(pending, values)
        sent = {id(secret) for secret in secrets_of(reply)}
        _drop({key: value for key, value in values.items() if id(value) not in sent})
        self._pending = None
        self._state = SessionState.WAITING_FOR_SERVER
        if isinstance(reply, LoginResponse | ExtendedLoginResponse):
            self._logins_answered += 1
        return [SendMessage(reply)]

    def cancel(self) -> list[Action]:
        """The user or the daemon canceled the operation."""
        if self._state is SessionState.FINISHED:
            return []
        return self._fail(CanceledError("the operation was canceled"))

    def connection_closed(self) -> list[Action]:
        """The server's stream ended; without END_OP that is local 28.

        As ESC reports it (ESC CoolKeyHandler.cpp, ``HttpDisconnect``).
        """
        if self._state is SessionState.FINISHED:
            return []
        return self._fail(ConnectionLostError("the connection to the TPS ended before END_OP"))

    def connection_failed(self, error: EscdError) -> list[Action]:
        """The connection failed otherwise: timeout, HTTP status, undecodable message."""
        if self._state is SessionState.FINISHED:
            return []
        return self._fail(error)

    # -- internals -----------------------------------------------------------------------

    def _extensions(self) -> tuple[tuple[str, str], ...]:
        # ESC's order (CoolKeyHandler.cpp:1128-1174); locale last, ESC never sent it.
        # An empty value would crash the Java TPS (Dogtag TPSMessage.java, decodeToMap),
        # so empty ones are left out.
        extensions: list[tuple[str, str]] = []
        if self._operation in _RESETS_CARD and self._token_type:
            extensions.append(("tokenType", self._token_type))
        extensions.append(("clientVersion", f"escd {self._version}"))
        if self._atr:
            extensions.append(("tokenATR", self._atr.hex().upper()))
        extensions.append(("statusUpdate", "true"))
        extensions.append(("extendedLoginRequest", "true"))
        if self._locale:
            extensions.append(("locale", self._locale))
        return tuple(extensions)

    def _fail(self, error: EscdError) -> list[Action]:
        self._pending = None
        self._state = SessionState.FINISHED
        self._result = SessionResult(self._operation, error)
        return [Finished(self._result)]

    def _end(self, end_op: EndOp) -> list[Action]:
        error: EscdError | None = None
        if not end_op.succeeded:
            error = TpsOperationError(end_op.message, end_op_message(end_op.result, end_op.message))
        self._state = SessionState.FINISHED
        self._result = SessionResult(self._operation, error, end_op)
        actions: list[Action] = []
        if self._operation in _RESETS_CARD:
            # ESC resets after END_OP of enroll and format, whatever the result (ESC
            # CoolKeyHandler.cpp, HttpProcessEndOp).
            actions.append(ResetCard())
        actions.append(Finished(self._result))
        return actions

    def _ask(
        self, request: LoginRequest | ExtendedLoginRequest | NewPinRequest | SecurIdRequest
    ) -> list[Action]:
        try:
            prompt = self._prompt_for(request)
        except RemoteTpsProtocolError as error:
            return self._fail(error)
        self._pending = _Pending(request, prompt)
        self._state = SessionState.WAITING_FOR_USER
        return [AskUser(prompt)]

    def _ask_again(self, pending: _Pending, problem: str) -> list[Action]:
        attempt = pending.prompt.attempt + 1
        if attempt > self._max_attempts:
            return self._fail(
                CanceledError(f"no acceptable answer after {self._max_attempts} attempts")
            )
        pending.prompt = replace(pending.prompt, attempt=attempt, previous_error=problem)
        return [AskUser(pending.prompt)]

    def _prompt_for(
        self, request: LoginRequest | ExtendedLoginRequest | NewPinRequest | SecurIdRequest
    ) -> Prompt:
        match request:
            case LoginRequest():
                attempt, previous = self._login_retry(request.invalid_pw, request.blocked)
                return Prompt(
                    PromptKind.LOGIN,
                    (
                        PromptField("screen_name", "User ID", FieldType.TEXT),
                        PromptField("password", "Password", FieldType.SECRET),
                    ),
                    locale=self._locale,
                    attempt=attempt,
                    previous_error=previous,
                )
            case ExtendedLoginRequest():
                attempt, previous = self._login_retry(request.invalid_pw, request.blocked)
                return Prompt(
                    PromptKind.EXTENDED_LOGIN,
                    _extended_login_fields(request),
                    title=request.title,
                    description=request.description,
                    locale=self._locale,
                    attempt=attempt,
                    previous_error=previous,
                )
            case NewPinRequest(minimum_length=low, maximum_length=high):
                if high < max(low, 1):
                    raise RemoteTpsProtocolError(
                        f"the server asks for a PIN of {low} to {high} characters"
                    )
                pin = PromptField(
                    "new_pin",
                    "New PIN",
                    FieldType.PIN,
                    confirm=True,
                    min_length=low,
                    max_length=high,
                )
                return Prompt(PromptKind.NEW_PIN, (pin,), locale=self._locale)
            case SecurIdRequest(pin_required=pin_required, next_value=next_value):
                label = "Next token code" if next_value else "Token code"
                fields = [PromptField("value", label, FieldType.SECRET)]
                if pin_required:
                    fields.insert(0, PromptField("pin", "SecurID PIN", FieldType.SECRET))
                return Prompt(PromptKind.SECURID, tuple(fields), locale=self._locale)

    def _login_retry(self, invalid: int, blocked: int) -> tuple[int, str]:
        # The legacy TPS re-sends LOGIN_REQUEST after a failed login, even after an
        # extended login (legacy TPS RA_Enroll_Processor.cpp); the Java TPS never retries
        # (Dogtag TPSProcessor.java, requestLogin).
        attempt = self._logins_answered + 1
        if blocked:
            return attempt, "The Smart Card Server reports that this account is blocked."
        if invalid or self._logins_answered:
            return attempt, "The Smart Card Server did not accept the user ID or password."
        return attempt, ""


def _extended_login_fields(request: ExtendedLoginRequest) -> tuple[PromptField, ...]:
    if not request.parameters:
        raise RemoteTpsProtocolError("EXTENDED_LOGIN_REQUEST asks for no parameters")
    ids = [parameter.id for parameter in request.parameters]
    if len(set(ids)) != len(ids):
        raise RemoteTpsProtocolError("EXTENDED_LOGIN_REQUEST repeats a parameter id")
    fields = []
    for parameter in request.parameters:
        if parameter.is_secret:
            kind = FieldType.SECRET
        elif parameter.choices:
            kind = FieldType.CHOICE
        else:
            kind = FieldType.TEXT
        fields.append(
            PromptField(
                parameter.id,
                parameter.name or parameter.id,
                kind,
                description=parameter.description,
                options=parameter.choices if kind is FieldType.CHOICE else (),
            )
        )
    return tuple(fields)


def _value(values: Mapping[str, Secret | str], key: str) -> str:
    value = values.get(key)
    if isinstance(value, Secret):
        return value.reveal() if len(value) else ""
    return value or ""


def _as_secret(value: Secret | str | None) -> Secret:
    return value if isinstance(value, Secret) else Secret(value or "")


def _drop(values: Mapping[str, Secret | str]) -> None:
    for value in values.values():
        if isinstance(value, Secret):
            value.drop()


def _problem_with(pending: _Pending, values: Mapping[str, Secret | str]) -> str | None:
    """Why ``values`` cannot answer ``pending``, in words for the user; None if they can."""
    for prompt_field in pending.prompt.fields:
        value = _value(values, prompt_field.id)
        if not value:
            # The Java TPS fails the login on any empty credential (Dogtag TPSMessage.java
            # drops empty values).
            return f"{prompt_field.label} must not be empty."
        if prompt_field.options and value not in prompt_field.options:
            return f"{prompt_field.label} must be one of the offered choices."
    request = pending.request
    if isinstance(request, SecurIdRequest):
        # SECURID_RESPONSE travels raw, like the new PIN (ESC CoolKey_Message.cpp).
        for prompt_field in pending.prompt.fields:
            if unsafe_pin_reason(_value(values, prompt_field.id)) is not None:
                return f"{prompt_field.label} may contain only printable ASCII without & = % +."
    if isinstance(request, NewPinRequest):
        pin = _value(values, "new_pin")
        low, high = request.minimum_length, request.maximum_length
        # The server checks the bounds only after the answer and then fails the whole
        # operation (END_OP 1; Dogtag TPSProcessor.java, requestNewPin), so check them
        # first and ask again.
        if not low <= len(pin) <= high:
            return f"The new PIN must have {low} to {high} characters."
        reason = unsafe_pin_reason(pin)
        if reason is not None:
            return reason[0].upper() + reason[1:] + "."
    return None


def _reply(pending: _Pending, values: Mapping[str, Secret | str]) -> ClientMessage:
    match pending.request:
        case LoginRequest():
            # The user id is not a secret (it is logged by the server too); the password is.
            return LoginResponse(_value(values, "screen_name"), _as_secret(values["password"]))
        case ExtendedLoginRequest(parameters=parameters):
            # In request order, one pair per parameter (ESC CoolKey_Message.cpp,
            # eCKMessage_EXTENDED_LOGIN_RESPONSE).
            return ExtendedLoginResponse(
                tuple((parameter.id, _as_secret(values[parameter.id])) for parameter in parameters)
            )
        case NewPinRequest():
            return NewPinResponse(_as_secret(values["new_pin"]))
        case SecurIdRequest():
            # ESC sends the token code as `value` and leaves `pin` empty unless needed.
            return SecurIdResponse(_as_secret(values.get("pin")), _as_secret(values["value"]))
