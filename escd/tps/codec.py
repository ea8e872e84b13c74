# SPDX-License-Identifier: GPL-2.0-or-later
"""TPS messages to and from their wire text: ``s=<N>&msg_type=<T>&k=v&…``.

This module owns the byte layout of every message: key order (ESC's for client
messages, Java's for server messages), the three percent-encodings, and what a peer
must never be sent. The layouts are those of ESC's CoolKey_Message.cpp and Dogtag's
TPSMessage.java and ``org.dogtagpki.tps.msg`` classes.

* Rule 1: a message class is turned into text by the one ``_Entry`` registered for its
  ``MessageType`` (a table, not a switch); nothing else in escd writes or parses fields.
* Rule 2: no I/O, no logging, no policy about which message comes when (that is
  ``escd.tps.session``). Errors are ``LocalTpsProtocolError`` ("we were about to send
  something a TPS cannot read") from ``encode`` and ``RemoteTpsProtocolError`` ("the peer
  sent something illegal") from ``decode``, whichever end this runs at.

Both directions are implemented, so the client (escd) and the simulated Dogtag TPS
(``escd.sim``) share it:

* client messages are written as ESC writes them: ESC-form (``esc_encode``) for BEGIN_OP
  ``extensions``, login ids and values and TOKEN_PDU_RESPONSE ``pdu_data``; ``new_pin``
  and the SecurID values raw, as ESC sends them (ESC CoolKey_Message.cpp) and the Java
  TPS reads ``new_pin`` (Dogtag TPSMessage.java, ``createMessage``);
* server messages are written as the Java TPS writes them: hex-form (``hex_encode``) for
  TOKEN_PDU_REQUEST ``pdu_data``, Java ``URLEncoder`` form (``java_urlencode``) for the
  extended-login texts, the status-update task name and the ASQ question;
* decoding accepts ``%xx`` in either case, ``+`` for space, and the legacy END_OP whose
  counted body ends in ``\\r\\n0\\r\\n`` (legacy TPS AP_Session.cpp, ``WriteMsg``); texts
  are UTF-8 after percent-decoding.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote_to_bytes

from escd.errors import LocalTpsProtocolError, RemoteTpsProtocolError
from escd.log import REDACTED, Secret, describe_apdu, describe_response
from escd.tps.framing import JAVA_MAX_MESSAGE, frame, split_frame
from escd.tps.messages import (
    AsqRequest,
    AsqResponse,
    AuthParameter,
    BeginOp,
    EndOp,
    ExtendedLoginRequest,
    ExtendedLoginResponse,
    LoginRequest,
    LoginResponse,
    Message,
    MessageType,
    NewPinRequest,
    NewPinResponse,
    SecurIdRequest,
    SecurIdResponse,
    StatusUpdateRequest,
    StatusUpdateResponse,
    TokenPduRequest,
    TokenPduResponse,
    TpsMessage,
    operation_code,
)

_ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_JAVA_SAFE = _ALNUM | frozenset(b".*_-")
#: Characters a raw (unencoded) value must not contain: they would end the value or the
#: pair, or be decoded by the legacy TPS but not by the Java one (legacy TPS
#: AP_Session.cpp URL-decodes every value; Dogtag TPSMessage.java takes ``new_pin`` raw).
_RAW_FORBIDDEN = frozenset("&=%+")
_MAX_NUMBER = 999_999_999
_RESERVED_KEYS = frozenset({"s", "msg_type"})
_PARAMETER_KEY = re.compile(r"required_parameter([0-9]{1,6})")
#: A '%' not followed by two hex digits (every '%' starts an escape in all three forms).
_BROKEN_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


# -- the three encodings -------------------------------------------------------------------


def _form(safe: frozenset[int]) -> tuple[str, ...]:
    # Every byte's text, looked up per byte: a card response or APDU is hundreds of bytes
    # in every TOKEN_PDU message, so no per-byte formatting.
    return tuple(
        chr(byte) if byte in safe else "+" if byte == 0x20 else f"%{byte:02X}"
        for byte in range(256)
    )


_ESC_FORM = _form(_ALNUM)
_JAVA_FORM = _form(_JAVA_SAFE)


def esc_encode(data: bytes) -> str:
    """ESC-form: ``[A-Za-z0-9]`` literal, space as ``+``, every other byte ``%XX`` upper case."""
    return "".join([_ESC_FORM[byte] for byte in data])


def hex_encode(data: bytes) -> str:
    """Hex-form: every byte as ``%XX`` upper case, alphanumerics included (Java ``pdu_data``)."""
    return "%" + data.hex("%").upper() if data else ""


def java_urlencode(text: str) -> str:
    """Java ``URLEncoder.encode(text, "UTF-8")``: ``[A-Za-z0-9.*_-]`` literal, space ``+``."""
    return "".join([_JAVA_FORM[byte] for byte in text.encode("utf-8")])


def percent_decode(text: str, what: str) -> bytes:
    """Undo any of the three encodings: ``+`` is space, ``%XY`` a byte in either hex case."""
    raw = text.encode("ascii")
    if _BROKEN_ESCAPE.search(raw):
        raise RemoteTpsProtocolError(f"{what}: '%' is not followed by two hex digits")
    escapes = raw.count(b"%")
    if escapes * 3 == len(raw):
        # Hex-form, every byte escaped (TOKEN_PDU_REQUEST's APDUs): one C call.
        return bytes.fromhex(raw.replace(b"%", b"").decode("ascii"))
    # '+' becomes a space before the escapes are undone, so "%2B" stays a '+'.
    return unquote_to_bytes(raw.replace(b"+", b" "))


def _decode_text(text: str, what: str) -> str:
    try:
        return percent_decode(text, what).decode("utf-8")
    except UnicodeDecodeError as error:
        raise RemoteTpsProtocolError(f"{what} is not UTF-8 after percent-decoding") from error


def unsafe_pin_reason(pin: str) -> str | None:
    """Why ``pin`` cannot travel raw in NEW_PIN_RESPONSE, or None if it can.

    Both servers read ``new_pin`` differently (Java raw, Dogtag TPSMessage.java
    ``createMessage``; legacy URL-decoded, legacy TPS AP_Session.cpp ``create_pblock``),
    so only printable ASCII without ``&``, ``=``, ``%`` and ``+`` means the same PIN to
    both.
    """
    if not pin:
        return "the PIN is empty"
    for char in pin:
        if not ("\x21" <= char <= "\x7e"):
            return "the PIN may contain only printable ASCII characters, without spaces"
        if char in _RAW_FORBIDDEN:
            return "the PIN must not contain any of & = % +"
    return None


# -- writing -------------------------------------------------------------------------------

_Pairs = list[tuple[str, str]]


def _number(value: int, what: str) -> str:
    if isinstance(value, bool) or not 0 <= value <= _MAX_NUMBER:
        raise LocalTpsProtocolError(f"{what} must be a number from 0 to {_MAX_NUMBER}")
    return str(int(value))


def _required_text(value: str, what: str) -> str:
    # Java drops pairs with an empty value, then fails on the missing field (Dogtag
    # TPSMessage.java, ``decode``).
    if not value:
        raise LocalTpsProtocolError(f"refusing to send an empty {what}")
    return value


def _reveal(secret: Secret, what: str) -> str:
    try:
        return secret.reveal()
    except ValueError as error:
        raise LocalTpsProtocolError(f"the {what} was already dropped") from error


def _raw(value: str, what: str) -> str:
    for char in value:
        if not ("\x21" <= char <= "\x7e") or char in _RAW_FORBIDDEN:
            raise LocalTpsProtocolError(f"the {what} contains a character that cannot be sent raw")
    return value


def _no_separator(value: str, what: str, forbidden: str = "&") -> str:
    if any(char in value for char in forbidden):
        raise LocalTpsProtocolError(f"the {what} must not contain {' or '.join(forbidden)}")
    return value


def _extension(name: str, value: str) -> str:
    # An empty name or value, or an extra '&' or '=', crashes the Java TPS (Dogtag
    # TPSMessage.java, ``decodeToMap``).
    _no_separator(_required_text(name, "extension name"), "extension name", "&=")
    _no_separator(_required_text(value, f"{name} extension"), f"{name} extension", "&=")
    return f"{name}={value}&"


def _encode_begin_op(message: BeginOp) -> _Pairs:
    pairs = [("operation", _number(message.operation, "operation"))]
    if message.extensions:
        # ESC writes "name=value&…&" with the trailing '&' (the capture in Dogtag
        # TPSMessage.java:551 ends in %26); Java's split drops it.
        text = "".join(_extension(name, value) for name, value in message.extensions)
        pairs.append(("extensions", esc_encode(text.encode("utf-8"))))
    return pairs


def _encode_login_request(message: LoginRequest) -> _Pairs:
    return [
        ("invalid_pw", _number(message.invalid_pw, "invalid_pw")),
        ("blocked", _number(message.blocked, "blocked")),
    ]


def _encode_login_response(message: LoginResponse) -> _Pairs:
    screen_name = _required_text(message.screen_name, "user ID")
    password = _required_text(_reveal(message.password, "password"), "password")
    return [
        ("screen_name", esc_encode(screen_name.encode("utf-8"))),
        ("password", esc_encode(password.encode("utf-8"))),
    ]


def _parameter_text(parameter: AuthParameter) -> str:
    # Dogtag's AuthUIParameter.toString writes these five keys unescaped.
    ident = _no_separator(_required_text(parameter.id, "parameter id"), "parameter id", "&=")
    fields = (
        ("name", parameter.name),
        ("desc", parameter.description),
        ("type", parameter.type),
        ("option", parameter.option),
    )
    rest = "".join(f"&{key}={_no_separator(value, f'parameter {key}')}" for key, value in fields)
    return f"id={ident}{rest}"


def _encode_extended_login_request(message: ExtendedLoginRequest) -> _Pairs:
    pairs = [
        (
            "invalid_login" if message.legacy_keys else "invalid_pw",
            _number(message.invalid_pw, "invalid_pw"),
        ),
        ("blocked", _number(message.blocked, "blocked")),
    ]
    if message.title:
        pairs.append(("title", java_urlencode(message.title)))
    if message.description:
        pairs.append(("description", java_urlencode(message.description)))
    for index, parameter in enumerate(message.parameters):
        pairs.append((f"required_parameter{index}", java_urlencode(_parameter_text(parameter))))
    return pairs


def _encode_extended_login_response(message: ExtendedLoginResponse) -> _Pairs:
    if not message.values:
        raise LocalTpsProtocolError("refusing to send an extended login without values")
    pairs: _Pairs = []
    seen: set[str] = set()
    for ident, secret in message.values:
        key = esc_encode(_required_text(ident, "parameter id").encode("utf-8"))
        if key in seen:
            raise LocalTpsProtocolError(f"parameter id {ident!r} would be sent twice")
        if key in _RESERVED_KEYS:
            # Both servers skip the key "s" (and "msg_type" cannot survive ESC-form).
            raise LocalTpsProtocolError(f"parameter id {ident!r} is a reserved key")
        seen.add(key)
        value = _required_text(_reveal(secret, f"{ident} value"), f"{ident} value")
        pairs.append((key, esc_encode(value.encode("utf-8"))))
    return pairs


def _encode_securid_request(message: SecurIdRequest) -> _Pairs:
    return [
        ("pin_required", "1" if message.pin_required else "0"),
        ("next_value", "1" if message.next_value else "0"),
    ]


def _encode_securid_response(message: SecurIdResponse) -> _Pairs:
    # Raw and possibly empty, exactly as ESC sends it (ESC CoolKey_Message.cpp,
    # ``eCKMessage_SECURID_RESPONSE``).
    return [
        ("pin", _raw(_reveal(message.pin, "SecurID PIN"), "SecurID PIN")),
        ("value", _raw(_reveal(message.value, "SecurID value"), "SecurID value")),
    ]


def _encode_asq_request(message: AsqRequest) -> _Pairs:
    return [("question", java_urlencode(_required_text(message.question, "question")))]


def _encode_asq_response(message: AsqResponse) -> _Pairs:
    answer = _required_text(message.answer, "answer")
    return [("answer", esc_encode(answer.encode("utf-8")))]


def _encode_token_pdu_request(message: TokenPduRequest) -> _Pairs:
    if not message.apdu:
        raise LocalTpsProtocolError("refusing to send an empty APDU")
    return [
        ("pdu_size", _number(message.pdu_size, "pdu_size")),
        ("pdu_data", hex_encode(message.apdu)),
    ]


def _encode_token_pdu_response(message: TokenPduResponse) -> _Pairs:
    # pdu_size before pdu_data, ESC's order (ESC CoolKey_Message.cpp,
    # ``eCKMessage_TOKEN_PDU_RESPONSE``).
    if not message.response:
        raise LocalTpsProtocolError("refusing to send an empty card response")
    return [
        ("pdu_size", _number(message.pdu_size, "pdu_size")),
        ("pdu_data", esc_encode(message.response)),
    ]


def _encode_new_pin_request(message: NewPinRequest) -> _Pairs:
    return [
        ("minimum_length", _number(message.minimum_length, "minimum_length")),
        ("maximum_length", _number(message.maximum_length, "maximum_length")),
    ]


def _encode_new_pin_response(message: NewPinResponse) -> _Pairs:
    pin = _reveal(message.new_pin, "new PIN")
    reason = unsafe_pin_reason(pin)
    if reason is not None:
        raise LocalTpsProtocolError(f"refusing to send the new PIN: {reason}")
    return [("new_pin", pin)]


def _encode_end_op(message: EndOp) -> _Pairs:
    return [
        ("operation", _number(message.operation, "operation")),
        ("result", _number(message.result, "result")),
        ("message", _number(message.message, "message")),
    ]


def _encode_status_update_request(message: StatusUpdateRequest) -> _Pairs:
    pairs = [("current_state", _number(message.current_state, "current_state"))]
    if message.next_task_name:
        pairs.append(("next_task_name", java_urlencode(message.next_task_name)))
    return pairs


def _encode_status_update_response(message: StatusUpdateResponse) -> _Pairs:
    return [("current_state", _number(message.current_state, "current_state"))]


# -- reading -------------------------------------------------------------------------------


class _Fields:
    """The pairs of one received body, with typed accessors that raise remote errors."""

    def __init__(self, message_type: MessageType, pairs: list[tuple[str, str]]) -> None:
        self.message_type = message_type
        self.pairs = pairs
        self._map = dict(pairs)

    def _where(self, key: str) -> str:
        return f"{self.message_type.name} {key}"

    def optional(self, key: str) -> str | None:
        return self._map.get(key)

    def required(self, key: str) -> str:
        value = self._map.get(key)
        if not value:
            raise RemoteTpsProtocolError(f"{self._where(key)} is missing or empty")
        return value

    def number(self, key: str, default: int | None = None) -> int:
        value = self._map.get(key)
        if value is None and default is not None:
            return default
        if not value or not value.isascii() or not value.isdigit() or len(value) > 9:
            raise RemoteTpsProtocolError(f"{self._where(key)} is not a decimal number")
        return int(value)

    def text(self, key: str) -> str:
        return _decode_text(self.required(key), self._where(key))

    def optional_text(self, key: str) -> str:
        value = self._map.get(key)
        return _decode_text(value, self._where(key)) if value else ""

    def data(self, key: str) -> bytes:
        return percent_decode(self.required(key), self._where(key))


def _decode_begin_op(fields: _Fields) -> BeginOp:
    extensions: list[tuple[str, str]] = []
    text = fields.optional_text("extensions")
    segments = text.split("&")
    while segments and not segments[-1]:
        segments.pop()
    for segment in segments:
        name, sep, value = segment.partition("=")
        if not name or not sep or not value:
            raise RemoteTpsProtocolError(f"BEGIN_OP extension {segment!r} is not name=value")
        extensions.append((name, value))
    return BeginOp(operation_code(fields.number("operation")), tuple(extensions))


def _decode_login_request(fields: _Fields) -> LoginRequest:
    return LoginRequest(fields.number("invalid_pw", 0), fields.number("blocked", 0))


def _decode_login_response(fields: _Fields) -> LoginResponse:
    return LoginResponse(fields.text("screen_name"), Secret(fields.text("password")))


def _decode_parameter(text: str, where: str) -> AuthParameter:
    values: dict[str, str] = {}
    for segment in text.split("&"):
        if not segment:
            continue
        key, sep, value = segment.partition("=")
        if not sep:
            raise RemoteTpsProtocolError(f"{where}: {segment!r} is not key=value")
        values.setdefault(key, value)
    ident = values.get("id", "")
    if not ident:
        raise RemoteTpsProtocolError(f"{where} has no id")
    return AuthParameter(
        id=ident,
        name=values.get("name", ""),
        description=values.get("desc", ""),
        type=values.get("type", "string"),
        option=values.get("option", ""),
    )


def _decode_extended_login_request(fields: _Fields) -> ExtendedLoginRequest:
    numbered: dict[int, AuthParameter] = {}
    for key, _ in fields.pairs:
        match = _PARAMETER_KEY.fullmatch(key)
        if match is None:
            continue
        index = int(match.group(1))
        if index in numbered:
            raise RemoteTpsProtocolError(f"EXTENDED_LOGIN_REQUEST repeats parameter {index}")
        numbered[index] = _decode_parameter(fields.text(key), f"EXTENDED_LOGIN_REQUEST {key}")
    legacy = fields.optional("invalid_pw") is None and fields.optional("invalid_login") is not None
    return ExtendedLoginRequest(
        title=fields.optional_text("title"),
        description=fields.optional_text("description"),
        # Numeric order: ESC's text order put required_parameter10 before 2 (ESC
        # CoolKey_Message.cpp walks a std::map, ``eCKMessage_EXTENDED_LOGIN_REQUEST``).
        parameters=tuple(numbered[index] for index in sorted(numbered)),
        invalid_pw=fields.number("invalid_login" if legacy else "invalid_pw", 0),
        blocked=fields.number("blocked", 0),
        legacy_keys=legacy,
    )


def _decode_extended_login_response(fields: _Fields) -> ExtendedLoginResponse:
    values: list[tuple[str, Secret]] = []
    for key, value in fields.pairs:
        if key == "msg_type":
            continue
        ident = _decode_text(key, "EXTENDED_LOGIN_RESPONSE parameter id")
        if not value:
            raise RemoteTpsProtocolError(f"EXTENDED_LOGIN_RESPONSE {ident} is empty")
        values.append((ident, Secret(_decode_text(value, f"EXTENDED_LOGIN_RESPONSE {ident}"))))
    if not values:
        raise RemoteTpsProtocolError("EXTENDED_LOGIN_RESPONSE carries no values")
    return ExtendedLoginResponse(tuple(values))


def _decode_securid_request(fields: _Fields) -> SecurIdRequest:
    return SecurIdRequest(
        pin_required=fields.number("pin_required", 0) != 0,
        next_value=fields.number("next_value", 0) != 0,
    )


def _decode_securid_response(fields: _Fields) -> SecurIdResponse:
    return SecurIdResponse(
        pin=Secret(fields.optional("pin") or ""), value=Secret(fields.optional("value") or "")
    )


def _decode_asq_request(fields: _Fields) -> AsqRequest:
    return AsqRequest(fields.text("question"))


def _decode_asq_response(fields: _Fields) -> AsqResponse:
    return AsqResponse(fields.text("answer"))


def _pdu(fields: _Fields) -> bytes:
    size = fields.number("pdu_size")
    data = fields.data("pdu_data")
    # Java and the legacy TPS both insist on an exact match (Dogtag TokenPDUResponseMsg.java;
    # legacy TPS AP_Session.cpp, ``ReadMsg``); ESC never checked.
    if len(data) != size:
        raise RemoteTpsProtocolError(
            f"{fields.message_type.name} pdu_size is {size} but pdu_data has {len(data)} bytes"
        )
    return data


def _decode_token_pdu_request(fields: _Fields) -> TokenPduRequest:
    return TokenPduRequest(_pdu(fields))


def _decode_token_pdu_response(fields: _Fields) -> TokenPduResponse:
    return TokenPduResponse(_pdu(fields))


def _decode_new_pin_request(fields: _Fields) -> NewPinRequest:
    return NewPinRequest(fields.number("minimum_length"), fields.number("maximum_length"))


def _decode_new_pin_response(fields: _Fields) -> NewPinResponse:
    # Java takes new_pin raw, without URL-decoding (Dogtag TPSMessage.java,
    # ``createMessage``).
    return NewPinResponse(Secret(fields.required("new_pin")))


def _decode_end_op(fields: _Fields) -> EndOp:
    return EndOp(
        operation=operation_code(fields.number("operation")),
        result=fields.number("result"),
        message=fields.number("message"),
    )


def _decode_status_update_request(fields: _Fields) -> StatusUpdateRequest:
    return StatusUpdateRequest(
        fields.number("current_state"), fields.optional_text("next_task_name")
    )


def _decode_status_update_response(fields: _Fields) -> StatusUpdateResponse:
    return StatusUpdateResponse(fields.number("current_state"))


# -- the registry --------------------------------------------------------------------------

_M = TypeVar("_M", bound=TpsMessage)


@dataclass(frozen=True, slots=True)
class _Entry(Generic[_M]):
    cls: type[_M]
    encode: Callable[[_M], _Pairs]
    decode: Callable[[_Fields], _M]


_ENTRIES: dict[MessageType, _Entry[Any]] = {
    entry.cls.msg_type: entry
    for entry in (
        _Entry(BeginOp, _encode_begin_op, _decode_begin_op),
        _Entry(LoginRequest, _encode_login_request, _decode_login_request),
        _Entry(LoginResponse, _encode_login_response, _decode_login_response),
        _Entry(SecurIdRequest, _encode_securid_request, _decode_securid_request),
        _Entry(SecurIdResponse, _encode_securid_response, _decode_securid_response),
        _Entry(AsqRequest, _encode_asq_request, _decode_asq_request),
        _Entry(AsqResponse, _encode_asq_response, _decode_asq_response),
        _Entry(TokenPduRequest, _encode_token_pdu_request, _decode_token_pdu_request),
        _Entry(TokenPduResponse, _encode_token_pdu_response, _decode_token_pdu_response),
        _Entry(NewPinRequest, _encode_new_pin_request, _decode_new_pin_request),
        _Entry(NewPinResponse, _encode_new_pin_response, _decode_new_pin_response),
        _Entry(EndOp, _encode_end_op, _decode_end_op),
        _Entry(StatusUpdateRequest, _encode_status_update_request, _decode_status_update_request),
        _Entry(
            StatusUpdateResponse, _encode_status_update_response, _decode_status_update_response
        ),
        _Entry(
            ExtendedLoginRequest,
            _encode_extended_login_request,
            _decode_extended_login_request,
        ),
        _Entry(
            ExtendedLoginResponse,
            _encode_extended_login_response,
            _decode_extended_login_response,
        ),
    )
}
if set(_ENTRIES) != set(MessageType):  # pragma: no cover - a table edit gone wrong
    raise RuntimeError("escd.tps.codec has no entry for some message types")


def encode_body(message: TpsMessage) -> bytes:
    """The body (``msg_type=…&…``, without ``s=N&``) of ``message``."""
    entry = _ENTRIES[message.msg_type]
    if type(message) is not entry.cls:
        raise LocalTpsProtocolError(f"{type(message).__name__} is not a TPS message class")
    pairs = [("msg_type", str(int(message.msg_type))), *entry.encode(message)]
    return "&".join(f"{key}={value}" for key, value in pairs).encode("ascii")


def encode(message: TpsMessage, *, limit: int = JAVA_MAX_MESSAGE) -> bytes:
    """The whole frame ``s=<N>&<body>`` of ``message``, refusing bodies over ``limit`` bytes."""
    return frame(encode_body(message), limit=limit)


def decode_body(body: bytes) -> Message:
    """The message in ``body`` (the bytes after ``s=N&``)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as error:
        raise RemoteTpsProtocolError("message contains bytes that are not ASCII") from error
    pairs: list[tuple[str, str]] = []
    for token in text.split("&"):
        if not token:  # ESC and the legacy TPS skip empty tokens
            continue
        key, sep, value = token.partition("=")
        if not sep or not key:
            # Counted, not quoted: without its '=' a field may be a piece of a value (APDU
            # data, a PIN), which no error text may carry (escd.errors).
            raise RemoteTpsProtocolError(f"message field {len(pairs) + 1} is not key=value")
        pairs.append((key, value))
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise RemoteTpsProtocolError("message repeats a field")
    raw_type = dict(pairs).get("msg_type")
    if raw_type is None:
        raise RemoteTpsProtocolError("message has no msg_type")
    digits = re.split(r"[\r\n]", raw_type, maxsplit=1)[0]
    if not digits.isdigit() or len(digits) > 3:
        raise RemoteTpsProtocolError(f"msg_type {raw_type[:12]!r} is not a number")
    try:
        message_type = MessageType(int(digits))
    except ValueError as error:
        raise RemoteTpsProtocolError(f"unknown msg_type {digits}") from error
    if message_type is MessageType.END_OP:
        # The legacy TPS ends END_OP with "\r\n0\r\n" inside the counted body (legacy TPS
        # AP_Session.cpp, ``WriteMsg``).
        pairs = [(key, re.split(r"[\r\n]", value, maxsplit=1)[0]) for key, value in pairs]
    for key, value in pairs:
        if not (key + value).isprintable():
            raise RemoteTpsProtocolError(f"{message_type.name} {key[:40]!r} has control bytes")
    entry = _ENTRIES[message_type]
    message: Message = entry.decode(_Fields(message_type, pairs))
    return message


def decode(data: bytes) -> Message:
    """The message in one whole frame ``s=<N>&<body>``, as ``MessageFramer`` returns it."""
    return decode_body(split_frame(data))


# -- traffic logging -----------------------------------------------------------------------


def _shown(message: TpsMessage, value: object) -> str:
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, bytes):
        return describe_apdu(value) if message.from_server else describe_response(value)
    if isinstance(value, tuple):
        items = []
        for item in value:
            if isinstance(item, AuthParameter):
                items.append(f"{item.id}:{item.type}")
            elif isinstance(item, tuple) and len(item) == 2:
                items.append(f"{item[0]}={_shown(message, item[1])}")
            else:
                items.append(str(item))
        return "[" + ", ".join(items) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def redacted(message: TpsMessage | bytes) -> str:
    """One line describing ``message`` for TRAFFIC logs: no secret, no APDU data.

    APDUs show as header and length (``00 A4 04 00 +8 bytes``), card answers as status
    word and length: APDU data carries the new PIN (SET PIN, Dogtag SecureChannel.java)
    and certificates, which ESC logged in clear (ESC CoolKeyHandler.cpp). A frame that
    does not decode is shown by its size only.
    """
    if isinstance(message, bytes):
        data = message
        try:
            message = decode(data)
        except RemoteTpsProtocolError:
            return f"<undecodable {len(data)}-byte message>"
    parts = [
        f"{field.name}={_shown(message, getattr(message, field.name))}"
        for field in dataclasses.fields(message)  # type: ignore[arg-type]
    ]
    return f"{message.msg_type.name} " + " ".join(parts)
