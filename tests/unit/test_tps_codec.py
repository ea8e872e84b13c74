# SPDX-License-Identifier: GPL-2.0-or-later
"""The TPS message codec: ESC's and the Java TPS's wire forms byte for byte, round trips,
refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escd.errors import LocalTpsProtocolError, RemoteTpsProtocolError
from escd.log import Secret
from escd.model import OperationType
from escd.tps.codec import (
    decode,
    encode,
    esc_encode,
    hex_encode,
    java_urlencode,
    percent_decode,
    redacted,
    unsafe_pin_reason,
)
from escd.tps.framing import frame
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
    secrets_of,
)

ATR = "3BFF1400FF8131FE458025A00000005657534336353003003B"
ESC_EXTENSIONS = (
    ("tokenType", "userKey"),
    ("clientVersion", "ESC 1.0.1"),
    ("tokenATR", ATR),
    ("statusUpdate", "true"),
    ("extendedLoginRequest", "true"),
)
LDAP_PARAMETERS = (
    AuthParameter("UID", "LDAP User ID", "LDAP User ID", "string", ""),
    AuthParameter("PASSWORD", "LDAP Password", "LDAP Password", "password", ""),
)
CPLC_SELECT = bytes.fromhex("00A4040007A000000003000000")

# (wire bytes, message): messages as ESC (CoolKey_Message.cpp) and the Java TPS
# (org.dogtagpki.tps.msg) write them.
GOLDEN: list[tuple[bytes, TpsMessage]] = [
    # The captured ESC BEGIN_OP for FORMAT in Dogtag's TPSMessage.java:551 (N = 204).
    (
        b"s=204&msg_type=2&operation=5&extensions=tokenType%3DuserKey%26clientVersion%3DESC+1"
        b"%2E0%2E1%26tokenATR%3D3BFF1400FF8131FE458025A00000005657534336353003003B%26"
        b"statusUpdate%3Dtrue%26extendedLoginRequest%3Dtrue%26",
        BeginOp(OperationType.FORMAT, ESC_EXTENSIONS),
    ),
    # ENROLL is identical with operation=1, also N = 204.
    (
        b"s=204&msg_type=2&operation=1&extensions=tokenType%3DuserKey%26clientVersion%3DESC+1"
        b"%2E0%2E1%26tokenATR%3D3BFF1400FF8131FE458025A00000005657534336353003003B%26"
        b"statusUpdate%3Dtrue%26extendedLoginRequest%3Dtrue%26",
        BeginOp(OperationType.ENROLL, ESC_EXTENSIONS),
    ),
    # RESET PIN: ESC sends no tokenType, N = 182.
    (
        b"s=182&msg_type=2&operation=3&extensions=clientVersion%3DESC+1%2E0%2E1%26tokenATR%3D"
        b"3BFF1400FF8131FE458025A00000005657534336353003003B%26statusUpdate%3Dtrue%26"
        b"extendedLoginRequest%3Dtrue%26",
        BeginOp(OperationType.RESET_PIN, ESC_EXTENSIONS[1:]),
    ),
    (b"s=33&msg_type=3&invalid_pw=0&blocked=0", LoginRequest(0, 0)),
    (
        b"s=48&msg_type=4&screen_name=jdoe&password=p%40ss+word",
        LoginResponse("jdoe", Secret("p@ss word")),
    ),
    (
        b"s=335&msg_type=16&invalid_pw=0&blocked=0&title=LDAP+Authentication&description=This"
        b"+authenticates+user+against+the+LDAP+directory.&required_parameter0=id%3DUID%26name"
        b"%3DLDAP+User+ID%26desc%3DLDAP+User+ID%26type%3Dstring%26option%3D&required_parameter1"
        b"=id%3DPASSWORD%26name%3DLDAP+Password%26desc%3DLDAP+Password%26type%3Dpassword%26"
        b"option%3D",
        ExtendedLoginRequest(
            title="LDAP Authentication",
            description="This authenticates user against the LDAP directory.",
            parameters=LDAP_PARAMETERS,
        ),
    ),
    (
        b"s=41&msg_type=17&UID=jdoe&PASSWORD=p%40ss+word",
        ExtendedLoginResponse((("UID", Secret("jdoe")), ("PASSWORD", Secret("p@ss word")))),
    ),
    (
        b"s=46&msg_type=9&pdu_size=5&pdu_data=%00%A4%04%00%00",
        TokenPduRequest(bytes.fromhex("00A4040000")),
    ),
    (
        b"s=71&msg_type=9&pdu_size=13&pdu_data=%00%A4%04%00%07%A0%00%00%00%03%00%00%00",
        TokenPduRequest(CPLC_SELECT),
    ),
    (
        b"s=46&msg_type=9&pdu_size=5&pdu_data=%80%CA%9F%7F%2D",
        TokenPduRequest(bytes.fromhex("80CA9F7F2D")),
    ),
    (
        b"s=71&msg_type=9&pdu_size=13&pdu_data=%00%A4%04%00%07%62%76%01%FF%00%00%00%00",
        TokenPduRequest(bytes.fromhex("00A4040007627601FF00000000")),
    ),
    (
        b"s=46&msg_type=9&pdu_size=5&pdu_data=%B0%3C%00%00%10",
        TokenPduRequest(bytes.fromhex("B03C000010")),
    ),
    (
        b"s=46&msg_type=9&pdu_size=5&pdu_data=%B0%70%00%00%04",
        TokenPduRequest(bytes.fromhex("B070000004")),
    ),
    (b"s=38&msg_type=10&pdu_size=2&pdu_data=%90%00", TokenPduResponse(b"\x90\x00")),
    (
        b"s=46&msg_type=10&pdu_size=6&pdu_data=R%B3F%85%90%00",
        TokenPduResponse(bytes.fromhex("52B346859000")),
    ),
    (
        b"s=86&msg_type=10&pdu_size=19&pdu_data=o%0F%84%07%A0%00%00%00%03%00%00%A5%04%9Fe%01"
        b"%FF%90%00",
        TokenPduResponse(bytes.fromhex("6F0F8407A0000000030000A5049F6501FF9000")),
    ),
    (
        b"s=44&msg_type=10&pdu_size=6&pdu_data=Xv%80r%90%00",
        TokenPduResponse(bytes.fromhex("587680729000")),
    ),
    (b"s=46&msg_type=11&minimum_length=4&maximum_length=10", NewPinRequest(4, 10)),
    (b"s=26&msg_type=12&new_pin=123456", NewPinResponse(Secret("123456"))),
    (
        b"s=65&msg_type=14&current_state=10&next_task_name=PROGRESS_APPLET_BLOCK",
        StatusUpdateRequest(10, "PROGRESS_APPLET_BLOCK"),
    ),
    (
        b"s=58&msg_type=14&current_state=100&next_task_name=PROGRESS_DONE",
        StatusUpdateRequest(100, "PROGRESS_DONE"),
    ),
    (
        b"s=68&msg_type=14&current_state=10&next_task_name=PROGRESS_START_PIN_RESET",
        StatusUpdateRequest(10, "PROGRESS_START_PIN_RESET"),
    ),
    (
        b"s=78&msg_type=14&current_state=15&next_task_name=PROGRESS_PIN_RESET_RESOLVE_PROFILE",
        StatusUpdateRequest(15, "PROGRESS_PIN_RESET_RESOLVE_PROFILE"),
    ),
    (
        b"s=72&msg_type=14&current_state=100&next_task_name=PROGRESS_PIN_RESET_COMPLETE",
        StatusUpdateRequest(100, "PROGRESS_PIN_RESET_COMPLETE"),
    ),
    (b"s=28&msg_type=15&current_state=10", StatusUpdateResponse(10)),
    (b"s=29&msg_type=15&current_state=100", StatusUpdateResponse(100)),
    (b"s=42&msg_type=13&operation=5&result=0&message=0", EndOp(5, 0, 0)),
    (b"s=42&msg_type=13&operation=3&result=0&message=0", EndOp(3, 0, 0)),
    (b"s=43&msg_type=13&operation=1&result=1&message=14", EndOp(1, 1, 14)),
]


@pytest.mark.parametrize(("wire", "message"), GOLDEN, ids=lambda v: repr(v)[:40])
def test_spec_example_decodes_to_its_message(wire: bytes, message: TpsMessage) -> None:
    assert decode(wire) == message


@pytest.mark.parametrize(("wire", "message"), GOLDEN, ids=lambda v: repr(v)[:40])
def test_spec_example_is_encoded_byte_for_byte(wire: bytes, message: TpsMessage) -> None:
    assert encode(message) == wire


def test_begin_op_keeps_the_extensions_in_esc_order() -> None:
    message = decode(GOLDEN[0][0])
    assert isinstance(message, BeginOp)
    assert [name for name, _ in message.extensions] == [name for name, _ in ESC_EXTENSIONS]
    assert message.extension("tokenATR") == ATR
    assert message.extension("locale") is None


def test_hex_form_card_answer_is_accepted_and_re_sent_in_esc_form() -> None:
    # The Java TPS decodes either case and form (Util.uriDecodeFromHex): both forms of the
    # same answer are accepted.
    hex_form = decode(b"s=50&msg_type=10&pdu_size=6&pdu_data=%58%76%80%72%90%00")
    assert hex_form == TokenPduResponse(bytes.fromhex("587680729000"))
    assert encode(hex_form) == b"s=44&msg_type=10&pdu_size=6&pdu_data=Xv%80r%90%00"


def test_lower_case_hex_and_plus_are_decoded() -> None:
    message = decode(b"s=47&msg_type=9&pdu_size=6&pdu_data=%b0%3c%00%00%10+")
    assert message == TokenPduRequest(bytes.fromhex("B03C00001020"))


def test_legacy_end_op_tail_is_cut_at_the_line_break() -> None:
    wire = b"s=47&msg_type=13&operation=5&result=0&message=0\r\n0\r\n"
    assert decode(wire) == EndOp(5, 0, 0)


def test_legacy_extended_login_spelling_is_kept() -> None:
    message = ExtendedLoginRequest(
        title="Login", parameters=LDAP_PARAMETERS, invalid_pw=1, blocked=0, legacy_keys=True
    )
    wire = encode(message)
    assert b"&invalid_login=1&" in wire
    assert b"invalid_pw" not in wire
    assert decode(wire) == message


def test_extended_login_parameters_are_sorted_by_number_not_text() -> None:
    pairs = [f"required_parameter{n}=id%3DP{n}%26type%3Dstring" for n in (10, 2, 0, 1)]
    body = "&".join(["msg_type=16", "invalid_pw=0", "blocked=0", *pairs]).encode()
    message = decode(frame(body))
    assert isinstance(message, ExtendedLoginRequest)
    assert [p.id for p in message.parameters] == ["P0", "P1", "P2", "P10"]


def test_extended_login_puts_the_uid_parameter_first_as_the_java_tps_does() -> None:
    pairs = [
        "required_parameter0=id%3DPASSWORD%26type%3Dpassword",
        "required_parameter1=id%3DDOMAIN",
        "required_parameter2=id%3DUID",
    ]
    body = "&".join(["msg_type=16", "invalid_pw=0", "blocked=0", *pairs]).encode()
    message = decode(frame(body))
    assert isinstance(message, ExtendedLoginRequest)
    assert [p.id for p in message.parameters] == ["UID", "PASSWORD", "DOMAIN"]
    assert b"required_parameter0=id%3DUID%26" in encode(message)


def test_extended_login_choice_option_is_a_comma_list() -> None:
    parameter = AuthParameter("DOMAIN", "Domain", "", "string", "corp,lab")
    assert parameter.choices == ("corp", "lab")
    assert not parameter.is_secret


def test_non_ascii_server_text_is_utf8() -> None:
    message = ExtendedLoginRequest(title="Anmeldung für Büro", parameters=LDAP_PARAMETERS)
    wire = encode(message)
    assert b"Anmeldung+f%C3%BCr+B%C3%BCro" in wire
    assert decode(wire) == message


def test_non_ascii_client_value_is_sent_as_utf8_escapes() -> None:
    wire = encode(LoginResponse("jürgen", Secret("pässword")))
    assert wire == b"s=57&msg_type=4&screen_name=j%C3%BCrgen&password=p%C3%A4ssword"


# -- the three encodings -------------------------------------------------------------------


def test_esc_form_escapes_everything_but_alphanumerics() -> None:
    assert esc_encode(b"aZ09 .-_=&*~") == "aZ09+%2E%2D%5F%3D%26%2A%7E"


def test_hex_form_escapes_every_byte() -> None:
    assert hex_encode(b"Xv\x80r") == "%58%76%80%72"


def test_java_urlencoder_form_keeps_dot_star_underscore_dash() -> None:
    assert java_urlencode("a.b*c_d-e f=g&h/é") == "a.b*c_d-e+f%3Dg%26h%2F%C3%A9"


@pytest.mark.parametrize("text", ["%", "%4", "%G0", "abc%0"])
def test_percent_decode_rejects_broken_escapes(text: str) -> None:
    with pytest.raises(RemoteTpsProtocolError):
        percent_decode(text, "field")


def _decode_byte_by_byte(text: str) -> bytes | None:
    """Percent-decoding one byte at a time (``%XY`` a byte, ``+`` a space, anything else
    literal); None where it is broken."""
    out = bytearray()
    raw = text.encode("ascii")
    index = 0
    while index < len(raw):
        if raw[index] == 0x25:  # '%'
            pair = raw[index + 1 : index + 3]
            if len(pair) != 2 or not all(digit in b"0123456789ABCDEFabcdef" for digit in pair):
                return None
            out.append(int(pair, 16))
            index += 3
        else:
            out.append(0x20 if raw[index] == 0x2B else raw[index])
            index += 1
    return bytes(out)


@pytest.mark.parametrize("text", ["", "%  ", "% 41", "+%2B+", "%4a%4A", "%41%", "a%2", "%%41"])
@given(st.text(alphabet="%+ 0123456789abcdefABCDEFGg&=", max_size=40))
def test_percent_decode_reads_byte_by_byte(text: str, more: str) -> None:
    for candidate in (text, more, text + more):
        expected = _decode_byte_by_byte(candidate)
        if expected is None:
            with pytest.raises(RemoteTpsProtocolError):
                percent_decode(candidate, "field")
        else:
            assert percent_decode(candidate, "field") == expected


@given(st.binary(max_size=200))
def test_every_encoding_decodes_back(data: bytes) -> None:
    assert percent_decode(esc_encode(data), "x") == data
    assert percent_decode(hex_encode(data), "x") == data


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=100))
def test_java_form_decodes_back_to_the_text(text: str) -> None:
    assert percent_decode(java_urlencode(text), "x").decode("utf-8") == text


# -- malformed input -----------------------------------------------------------------------

MALFORMED = {
    "unknown msg_type": b"msg_type=99&x=1",
    "msg_type 0": b"msg_type=0",
    "msg_type 1": b"msg_type=1",
    "msg_type not a number": b"msg_type=nine&pdu_size=1&pdu_data=%00",
    "msg_type with underscore": b"msg_type=1_3&operation=1&result=0&message=0",
    "no msg_type": b"pdu_size=1&pdu_data=%00",
    "pair without =": b"msg_type=9&pdu_size&pdu_data=%00",
    "repeated field": b"msg_type=9&pdu_size=1&pdu_size=1&pdu_data=%00",
    "pdu_size too large": b"msg_type=9&pdu_size=3&pdu_data=%00%01",
    "pdu_size too small": b"msg_type=9&pdu_size=1&pdu_data=%00%01",
    "pdu_data missing": b"msg_type=9&pdu_size=2",
    "pdu_data empty": b"msg_type=9&pdu_size=0&pdu_data=",
    "pdu_size not a number": b"msg_type=9&pdu_size=x&pdu_data=%00",
    "broken escape": b"msg_type=9&pdu_size=1&pdu_data=%0",
    "non-ascii byte": b"msg_type=9&pdu_size=1&pdu_data=\xff",
    "control byte": b"msg_type=14&current_state=1\x00",
    "end_op result missing": b"msg_type=13&operation=1&message=0",
    "end_op negative": b"msg_type=13&operation=1&result=-1&message=0",
    "new pin bounds missing": b"msg_type=11&minimum_length=4",
    "status not a number": b"msg_type=14&current_state=ten",
    "status huge": b"msg_type=14&current_state=99999999999999999999",
    "title not utf-8": b"msg_type=16&title=%FF&required_parameter0=id%3DUID",
    "parameter without id": b"msg_type=16&required_parameter0=name%3DUser",
    "parameter repeated": b"msg_type=16&required_parameter1=id%3DA&required_parameter01=id%3DB",
    "parameter not key=value": b"msg_type=16&required_parameter0=id%3DA%26junk",
    "extension without value": b"msg_type=2&operation=1&extensions=a%3D%26",
    "extension without =": b"msg_type=2&operation=1&extensions=a%26",
    "empty login password": b"msg_type=4&screen_name=jdoe&password=",
    "asq without question": b"msg_type=7",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_message_is_a_remote_protocol_error(body: bytes) -> None:
    with pytest.raises(RemoteTpsProtocolError):
        decode(frame(body))


def test_a_malformed_field_is_not_quoted_in_the_error() -> None:
    # A field without '=' may be a value: APDU data (the SET PIN data here) or a PIN.
    with pytest.raises(RemoteTpsProtocolError) as caught:
        decode(frame(b"msg_type=9&pdu_size=8&pdu_data%39%31%38%32%37%33%58%59"))
    assert caught.value.message == "message field 3 is not key=value"
    with pytest.raises(RemoteTpsProtocolError) as caught:
        decode(frame(b"msg_type=12&=918273"))
    assert "918273" not in caught.value.message


def test_wrong_s_length_is_a_remote_protocol_error() -> None:
    with pytest.raises(RemoteTpsProtocolError):
        decode(b"s=40&msg_type=13&operation=5&result=0&message=0")


def _dropped() -> Secret:
    secret = Secret("pw")
    secret.drop()
    return secret


REFUSED = {
    "empty password": LoginResponse("jdoe", Secret("")),
    "empty user id": LoginResponse("", Secret("pw")),
    "dropped secret": LoginResponse("jdoe", _dropped()),
    "pin with &": NewPinResponse(Secret("12&34")),
    "pin with =": NewPinResponse(Secret("12=34")),
    "pin with %": NewPinResponse(Secret("12%34")),
    "pin with +": NewPinResponse(Secret("12+34")),
    "pin with space": NewPinResponse(Secret("12 34")),
    "pin non-ascii": NewPinResponse(Secret("12ä34")),
    "pin with newline": NewPinResponse(Secret("1234\n")),
    "empty pin": NewPinResponse(Secret("")),
    "extension value with &": BeginOp(1, (("tokenType", "a&b"),)),
    "extension value with =": BeginOp(1, (("tokenType", "a=b"),)),
    "empty extension value": BeginOp(1, (("locale", ""),)),
    "empty extension name": BeginOp(1, (("", "x"),)),
    "empty apdu": TokenPduRequest(b""),
    "empty card answer": TokenPduResponse(b""),
    "negative number": StatusUpdateResponse(-1),
    "no extended login values": ExtendedLoginResponse(()),
    "empty extended login value": ExtendedLoginResponse((("UID", Secret("")),)),
    "extended login id s": ExtendedLoginResponse((("s", Secret("x")),)),
    "repeated extended login id": ExtendedLoginResponse(
        (("UID", Secret("a")), ("UID", Secret("b")))
    ),
    "securid raw with &": SecurIdResponse(Secret(""), Secret("12&")),
    "parameter id with =": ExtendedLoginRequest(parameters=(AuthParameter("A=B"),)),
    "parameter name with &": ExtendedLoginRequest(parameters=(AuthParameter("A", "x&y"),)),
    "over the java limit": TokenPduResponse(b"\x01" * 3400),
}


@pytest.mark.parametrize("message", REFUSED.values(), ids=REFUSED.keys())
def test_message_a_tps_cannot_read_is_refused_locally(message: TpsMessage) -> None:
    with pytest.raises(LocalTpsProtocolError):
        encode(message)


def test_unsafe_pin_reason_names_the_problem() -> None:
    assert unsafe_pin_reason("1234abcd") is None
    assert unsafe_pin_reason("!#$'()*,-./:;<>?@[]^_`{|}~") is None
    assert "empty" in (unsafe_pin_reason("") or "")
    assert "& = % +" in (unsafe_pin_reason("a+b") or "")
    assert "ASCII" in (unsafe_pin_reason("ä") or "")


# -- secrets in repr and traffic logs ------------------------------------------------------

SECRET_CASES = [
    (LoginResponse("jdoe", Secret("hunter2pw")), "hunter2pw"),
    (ExtendedLoginResponse((("PASSWORD", Secret("hunter2pw")),)), "hunter2pw"),
    (NewPinResponse(Secret("918273")), "918273"),
    (SecurIdResponse(Secret("4711"), Secret("665544")), "665544"),
]


@pytest.mark.parametrize(("message", "secret"), SECRET_CASES, ids=lambda v: str(type(v)))
def test_secrets_appear_in_no_repr_and_no_traffic_line(message: TpsMessage, secret: str) -> None:
    assert secret not in repr(message)
    assert secret not in str(message)
    assert secret not in redacted(message)
    assert secret not in redacted(encode(message))
    assert secrets_of(message)


def test_apdu_data_appears_in_no_repr_and_no_traffic_line() -> None:
    set_pin = bytes.fromhex("8404000008") + b"918273XY"
    request = TokenPduRequest(set_pin)
    for text in (repr(request), redacted(request), redacted(encode(request))):
        assert "918273" not in text
        assert "39 31 38" not in text.upper() and "393138" not in text.upper()
    assert "84 04 00 00" in redacted(request)
    answer = TokenPduResponse(b"918273\x90\x00")
    assert "918273" not in repr(answer) and "918273" not in redacted(answer)
    assert "SW 9000" in redacted(answer)


def test_redacted_names_the_message_and_keeps_plain_fields() -> None:
    line = redacted(StatusUpdateRequest(10, "PROGRESS_APPLET_BLOCK"))
    assert line.startswith("STATUS_UPDATE_REQUEST")
    assert "current_state=10" in line and "PROGRESS_APPLET_BLOCK" in line


def test_redacted_survives_an_undecodable_frame() -> None:
    assert redacted(b"s=5&junk!") == "<undecodable 9-byte message>"


# -- round trips for every message type ----------------------------------------------------

_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
_no_amp = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="&"), max_size=12
)
_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="&="),
    min_size=1,
    max_size=12,
)
_numbers = st.integers(min_value=0, max_value=999_999_999)
_any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
_raw = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="&=%+"),
    max_size=12,
)
_secrets = _texts.map(Secret)
_parameters = st.builds(AuthParameter, _names, _no_amp, _no_amp, _no_amp, _no_amp)

STRATEGIES: dict[MessageType, st.SearchStrategy[TpsMessage]] = {
    MessageType.BEGIN_OP: st.builds(
        BeginOp, st.integers(0, 999), st.lists(st.tuples(_names, _names), max_size=6).map(tuple)
    ),
    MessageType.LOGIN_REQUEST: st.builds(LoginRequest, _numbers, _numbers),
    MessageType.LOGIN_RESPONSE: st.builds(LoginResponse, _texts, _secrets),
    MessageType.SECURID_REQUEST: st.builds(SecurIdRequest, st.booleans(), st.booleans()),
    MessageType.SECURID_RESPONSE: st.builds(SecurIdResponse, _raw.map(Secret), _raw.map(Secret)),
    MessageType.ASQ_REQUEST: st.builds(AsqRequest, _texts),
    MessageType.ASQ_RESPONSE: st.builds(AsqResponse, _texts),
    MessageType.TOKEN_PDU_REQUEST: st.builds(TokenPduRequest, st.binary(min_size=1, max_size=300)),
    MessageType.TOKEN_PDU_RESPONSE: st.builds(
        TokenPduResponse, st.binary(min_size=1, max_size=300)
    ),
    MessageType.NEW_PIN_REQUEST: st.builds(NewPinRequest, _numbers, _numbers),
    MessageType.NEW_PIN_RESPONSE: st.builds(NewPinResponse, _raw.filter(bool).map(Secret)),
    MessageType.END_OP: st.builds(EndOp, _numbers, _numbers, _numbers),
    MessageType.STATUS_UPDATE_REQUEST: st.builds(
        StatusUpdateRequest,
        _numbers,
        _any_text,
    ),
    MessageType.STATUS_UPDATE_RESPONSE: st.builds(StatusUpdateResponse, _numbers),
    MessageType.EXTENDED_LOGIN_REQUEST: st.builds(
        ExtendedLoginRequest,
        title=_any_text,
        description=_any_text,
        parameters=st.lists(_parameters, max_size=4).map(tuple),
        invalid_pw=_numbers,
        blocked=_numbers,
        legacy_keys=st.booleans(),
    ),
    MessageType.EXTENDED_LOGIN_RESPONSE: st.lists(
        st.tuples(_texts.filter(lambda ident: ident != "s"), _secrets),
        min_size=1,
        max_size=4,
        unique_by=lambda pair: pair[0],
    ).map(lambda pairs: ExtendedLoginResponse(tuple(pairs))),
}


def test_every_message_type_has_a_round_trip_strategy() -> None:
    assert set(STRATEGIES) == set(MessageType)


@pytest.mark.parametrize("message_type", list(MessageType), ids=lambda t: t.name)
def test_decode_of_encode_is_identity(message_type: MessageType) -> None:
    @given(STRATEGIES[message_type])
    def round_trip(message: TpsMessage) -> None:
        wire = encode(message)
        assert decode(wire) == message
        assert type(decode(wire)).msg_type is message_type
        # And the other way: what decodes re-encodes to the same bytes.
        assert encode(decode(wire)) == wire

    round_trip()


_field_soup = st.lists(
    st.sampled_from(
        [
            b"msg_type=",
            b"9",
            b"13",
            b"16",
            b"&",
            b"=",
            b"%",
            b"%4",
            b"%FF",
            b"+",
            b"pdu_size=",
            b"pdu_data=",
            b"required_parameter1=",
            b"id%3D",
            b"operation=",
            b"result=",
            b"\r\n",
            b"message=",
            b"current_state=",
            b"minimum_length=",
            b"maximum_length=",
            b"\x00",
            b"\xc3",
        ]
    )
    | st.binary(max_size=4),
    max_size=30,
).map(b"".join)


@given(_field_soup)
def test_any_body_decodes_or_is_a_remote_protocol_error(body: bytes) -> None:
    if not body:
        return
    try:
        message = decode(frame(body))
    except RemoteTpsProtocolError:
        return
    assert isinstance(message, TpsMessage)
