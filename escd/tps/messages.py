# SPDX-License-Identifier: GPL-2.0-or-later
"""The TPS messages as typed values: one frozen dataclass per ``msg_type``.

This module owns *what* a message says, never *how* it travels:

* Rule 1: no wire format here. Field order, percent-encodings and ``s=`` framing live in
  ``escd.tps.codec`` and ``escd.tps.framing``; a message object never holds encoded text.
* Rule 2: no I/O and no policy. Which message may follow which is the session's business
  (``escd.tps.session``); these classes only refuse values that cannot exist at all.

The classes serve both ends of the conversation: escd (the client) builds the ``C→S``
messages and reads the ``S→C`` ones, the simulated TPS (``escd.sim``) does the opposite
with the same classes and the same codec. Each matches one of Dogtag's
``org.dogtagpki.tps.msg`` classes (``BeginOpMsg``, ``TokenPDURequestMsg``, …) and of
ESC's ``eCKMessage_*`` classes (ESC CoolKey_Message.h).

Secrets (passwords, extended-login values, the new PIN, SecurID values) are held as
``escd.log.Secret``, so no ``repr`` shows them; APDUs are shown as header and length
only, because the server's SET PIN command and some card answers carry secrets
(Dogtag SecureChannel.java, SET PIN). ``secrets_of`` lists the secrets a message
carries, so the edge can drop them once the message is on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, unique
from typing import ClassVar

from escd.log import Secret, describe_apdu, describe_response
from escd.model import OperationType


@unique
class MessageType(IntEnum):
    """``msg_type`` codes: Dogtag's ``TPSMessage.intToMsgType``, not its enum's ordinals."""

    BEGIN_OP = 2
    LOGIN_REQUEST = 3
    LOGIN_RESPONSE = 4
    SECURID_REQUEST = 5
    SECURID_RESPONSE = 6
    ASQ_REQUEST = 7
    ASQ_RESPONSE = 8
    TOKEN_PDU_REQUEST = 9
    TOKEN_PDU_RESPONSE = 10
    NEW_PIN_REQUEST = 11
    NEW_PIN_RESPONSE = 12
    END_OP = 13
    STATUS_UPDATE_REQUEST = 14
    STATUS_UPDATE_RESPONSE = 15
    EXTENDED_LOGIN_REQUEST = 16
    EXTENDED_LOGIN_RESPONSE = 17


class TpsMessage:
    """Base of every TPS message class; ``msg_type`` says which one it is."""

    __slots__ = ()
    msg_type: ClassVar[MessageType]
    #: True for messages the server sends (``S→C``), False for the client's.
    from_server: ClassVar[bool]


def operation_code(value: int) -> int:
    """``value`` as an ``OperationType`` when it is one; other codes stay plain ints.

    Java maps unknown operations to OP_UNDEFINED and answers END_OP ``operation=0``
    (Dogtag TPSMessage.java, ``intToOpType``), so both ends must be able to carry codes
    outside 1–5.
    """
    try:
        return OperationType(value)
    except ValueError:
        return value


@dataclass(frozen=True, slots=True)
class BeginOp(TpsMessage):
    """BEGIN_OP (2), C→S: the first message of every session.

    ``extensions`` keeps ESC's order (tokenType, clientVersion, tokenATR, statusUpdate,
    extendedLoginRequest; ESC CoolKeyHandler.cpp, ``HttpBeginOpRequest``); an empty tuple
    means the key is left out.
    """

    msg_type: ClassVar[MessageType] = MessageType.BEGIN_OP
    from_server: ClassVar[bool] = False

    operation: int
    extensions: tuple[tuple[str, str], ...] = ()

    def extension(self, name: str) -> str | None:
        """The value of extension ``name``, or None if it was not sent."""
        for key, value in self.extensions:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class LoginRequest(TpsMessage):
    """LOGIN_REQUEST (3), S→C. Java always sends 0/0; legacy re-sends it on failure.

    Dogtag TPSProcessor.java, ``requestLogin``; legacy TPS RA_Enroll_Processor.cpp.
    """

    msg_type: ClassVar[MessageType] = MessageType.LOGIN_REQUEST
    from_server: ClassVar[bool] = True

    invalid_pw: int = 0
    blocked: int = 0


@dataclass(frozen=True, slots=True)
class LoginResponse(TpsMessage):
    """LOGIN_RESPONSE (4), C→S: user id and password."""

    msg_type: ClassVar[MessageType] = MessageType.LOGIN_RESPONSE
    from_server: ClassVar[bool] = False

    screen_name: str
    password: Secret


@dataclass(frozen=True, slots=True)
class AuthParameter:
    """One ``required_parameterN`` of an extended login (Dogtag ``AuthUIParameter``)."""

    id: str
    name: str = ""
    description: str = ""
    #: ``string`` or ``password`` (Java uses ``password`` only for ``id=PASSWORD``).
    type: str = "string"
    #: Meant as a comma-separated list of choices; Java always sends it empty.
    option: str = ""

    @property
    def is_secret(self) -> bool:
        return self.type == "password"

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(choice for choice in self.option.split(",") if choice)


@dataclass(frozen=True, slots=True)
class ExtendedLoginRequest(TpsMessage):
    """EXTENDED_LOGIN_REQUEST (16), S→C: a titled form of typed parameters.

    ``parameters`` are in ``required_parameterN`` order, N compared as a number (ESC's
    ``std::map`` sorted them as text, so 10 came before 2), except that the ``UID``
    parameter always comes first, as the Java server orders them (Dogtag
    ExtendedLoginRequestMsg.java); the rest keep their order.
    ``legacy_keys`` marks the C++ TPS spelling ``invalid_login`` instead of
    ``invalid_pw``.
    """

    msg_type: ClassVar[MessageType] = MessageType.EXTENDED_LOGIN_REQUEST
    from_server: ClassVar[bool] = True

    title: str = ""
    description: str = ""
    parameters: tuple[AuthParameter, ...] = ()
    invalid_pw: int = 0
    blocked: int = 0
    legacy_keys: bool = False

    def __post_init__(self) -> None:
        uid = tuple(parameter for parameter in self.parameters if parameter.id == "UID")
        rest = tuple(parameter for parameter in self.parameters if parameter.id != "UID")
        object.__setattr__(self, "parameters", uid + rest)


@dataclass(frozen=True, slots=True)
class ExtendedLoginResponse(TpsMessage):
    """EXTENDED_LOGIN_RESPONSE (17), C→S: one ``id=value`` pair per parameter.

    The Java TPS reads only ``UID`` and ``PASSWORD`` (Dogtag TPSMessage.java,
    ``createMessage``); every value is treated as secret.
    """

    msg_type: ClassVar[MessageType] = MessageType.EXTENDED_LOGIN_RESPONSE
    from_server: ClassVar[bool] = False

    values: tuple[tuple[str, Secret], ...]


@dataclass(frozen=True, slots=True)
class SecurIdRequest(TpsMessage):
    """SECURID_REQUEST (5), S→C; no current server sends it.

    Dogtag's ``SecureIdRequestMsg`` is never used; the legacy TPS never calls its
    ``RequestSecureId``.
    """

    msg_type: ClassVar[MessageType] = MessageType.SECURID_REQUEST
    from_server: ClassVar[bool] = True

    pin_required: bool = False
    next_value: bool = False


@dataclass(frozen=True, slots=True)
class SecurIdResponse(TpsMessage):
    """SECURID_RESPONSE (6), C→S: sent raw, as ESC does (ESC CoolKey_Message.cpp)."""

    msg_type: ClassVar[MessageType] = MessageType.SECURID_RESPONSE
    from_server: ClassVar[bool] = False

    pin: Secret
    value: Secret


@dataclass(frozen=True, slots=True)
class AsqRequest(TpsMessage):
    """ASQ_REQUEST (7), S→C; never sent by either server, and escd refuses it."""

    msg_type: ClassVar[MessageType] = MessageType.ASQ_REQUEST
    from_server: ClassVar[bool] = True

    question: str


@dataclass(frozen=True, slots=True)
class AsqResponse(TpsMessage):
    """ASQ_RESPONSE (8), C→S, with the legacy key ``answer``.

    Dogtag's ``ASQResponseMsg`` puts the answer under ``question``, and nothing uses it.
    """

    msg_type: ClassVar[MessageType] = MessageType.ASQ_RESPONSE
    from_server: ClassVar[bool] = False

    answer: str


@dataclass(frozen=True, slots=True, repr=False)
class TokenPduRequest(TpsMessage):
    """TOKEN_PDU_REQUEST (9), S→C: one command APDU to relay verbatim."""

    msg_type: ClassVar[MessageType] = MessageType.TOKEN_PDU_REQUEST
    from_server: ClassVar[bool] = True

    apdu: bytes

    @property
    def pdu_size(self) -> int:
        """The raw byte count, as ``pdu_size`` carries it (never the encoded length)."""
        return len(self.apdu)

    def __repr__(self) -> str:
        return f"TokenPduRequest(<{describe_apdu(self.apdu)}>)"


@dataclass(frozen=True, slots=True, repr=False)
class TokenPduResponse(TpsMessage):
    """TOKEN_PDU_RESPONSE (10), C→S: the card's whole answer, data and SW1 SW2."""

    msg_type: ClassVar[MessageType] = MessageType.TOKEN_PDU_RESPONSE
    from_server: ClassVar[bool] = False

    response: bytes

    @property
    def pdu_size(self) -> int:
        """The raw byte count; never truncated to 8 bits as ESC did.

        ESC cast it to one byte (ESC CoolKeyHandler.cpp, ``HttpProcessTokenPDU``).
        """
        return len(self.response)

    def __repr__(self) -> str:
        return f"TokenPduResponse(<{describe_response(self.response)}>)"


@dataclass(frozen=True, slots=True)
class NewPinRequest(TpsMessage):
    """NEW_PIN_REQUEST (11), S→C: the length bounds of the new PIN."""

    msg_type: ClassVar[MessageType] = MessageType.NEW_PIN_REQUEST
    from_server: ClassVar[bool] = True

    minimum_length: int
    maximum_length: int


@dataclass(frozen=True, slots=True)
class NewPinResponse(TpsMessage):
    """NEW_PIN_RESPONSE (12), C→S: the new PIN, sent raw as ESC does (ESC CoolKey_Message.cpp)."""

    msg_type: ClassVar[MessageType] = MessageType.NEW_PIN_RESPONSE
    from_server: ClassVar[bool] = False

    new_pin: Secret


@dataclass(frozen=True, slots=True)
class StatusUpdateRequest(TpsMessage):
    """STATUS_UPDATE_REQUEST (14), S→C: progress 0–100 and an opaque task name."""

    msg_type: ClassVar[MessageType] = MessageType.STATUS_UPDATE_REQUEST
    from_server: ClassVar[bool] = True

    current_state: int
    next_task_name: str = ""


@dataclass(frozen=True, slots=True)
class StatusUpdateResponse(TpsMessage):
    """STATUS_UPDATE_RESPONSE (15), C→S: echoes ``current_state``."""

    msg_type: ClassVar[MessageType] = MessageType.STATUS_UPDATE_RESPONSE
    from_server: ClassVar[bool] = False

    current_state: int


@dataclass(frozen=True, slots=True)
class EndOp(TpsMessage):
    """END_OP (13), S→C: the last message; ``result`` 0 is success, ``message`` a status code.

    ``message`` is read in the server's namespace (``escd.tps.status``, ``"tps"``).
    """

    msg_type: ClassVar[MessageType] = MessageType.END_OP
    from_server: ClassVar[bool] = True

    operation: int
    result: int
    message: int

    @property
    def succeeded(self) -> bool:
        return self.result == 0


ServerMessage = (
    LoginRequest
    | ExtendedLoginRequest
    | SecurIdRequest
    | AsqRequest
    | TokenPduRequest
    | NewPinRequest
    | StatusUpdateRequest
    | EndOp
)
ClientMessage = (
    BeginOp
    | LoginResponse
    | ExtendedLoginResponse
    | SecurIdResponse
    | AsqResponse
    | TokenPduResponse
    | NewPinResponse
    | StatusUpdateResponse
)
Message = ServerMessage | ClientMessage


def secrets_of(message: TpsMessage) -> tuple[Secret, ...]:
    """The secrets ``message`` carries, so the sender can drop them once it is encoded."""
    match message:
        case LoginResponse(password=password):
            return (password,)
        case ExtendedLoginResponse(values=values):
            return tuple(value for _, value in values)
        case SecurIdResponse(pin=pin, value=value):
            return (pin, value)
        case NewPinResponse(new_pin=new_pin):
            return (new_pin,)
        case _:
            return ()
