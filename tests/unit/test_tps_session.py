# SPDX-License-Identifier: GPL-2.0-or-later
"""``TpsSession`` driven through FORMAT, ENROLL and RESET PIN exchanges, byte for byte.

The server side is the message list the Java TPS sends (``TPSProcessor.format``,
``TPSEnrollProcessor.enroll``, ``TPSPinResetProcessor.resetPin``) as wire bytes, the card
a small behavioural fake that answers by APDU, the user a list of answers. ``converse``
plays the role of the operation driver: it executes every action the session returns,
encodes client messages with the real codec and drops their secrets afterwards, as the
edge does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest

from escd.errors import (
    CanceledError,
    CardRemovedError,
    ConnectionLostError,
    LocalTpsProtocolError,
    MalformedResponseError,
    MessageTimeoutError,
    RemoteTpsProtocolError,
    TpsOperationError,
)
from escd.log import Secret
from escd.model import OperationType
from escd.tps.codec import decode, encode
from escd.tps.messages import (
    AuthParameter,
    BeginOp,
    ExtendedLoginRequest,
    LoginRequest,
    NewPinRequest,
    SecurIdRequest,
    StatusUpdateRequest,
    TokenPduRequest,
    TokenPduResponse,
    secrets_of,
)
from escd.tps.session import (
    Action,
    AskUser,
    FieldType,
    Finished,
    Prompt,
    PromptKind,
    ReportProgress,
    ResetCard,
    SendApdu,
    SendMessage,
    SessionResult,
    SessionState,
    TpsSession,
)
from escd.tps.status import StatusSource

ATR = bytes.fromhex("3BFF1400FF8131FE458025A00000005657534336353003003B")
VERSION = "0.1.0"

# Server messages of those exchanges, as on the wire.
SELECT_DEFAULT = b"s=46&msg_type=9&pdu_size=5&pdu_data=%00%A4%04%00%00"
SELECT_CARD_MANAGER = (
    b"s=71&msg_type=9&pdu_size=13&pdu_data=%00%A4%04%00%07%A0%00%00%00%03%00%00%00"
)
SELECT_COOLKEY = b"s=71&msg_type=9&pdu_size=13&pdu_data=%00%A4%04%00%07%62%76%01%FF%00%00%00%00"
GET_STATUS = b"s=46&msg_type=9&pdu_size=5&pdu_data=%B0%3C%00%00%10"
GET_VERSION = b"s=46&msg_type=9&pdu_size=5&pdu_data=%B0%70%00%00%04"
EXTENDED_LOGIN = (
    b"s=335&msg_type=16&invalid_pw=0&blocked=0&title=LDAP+Authentication&description=This"
    b"+authenticates+user+against+the+LDAP+directory.&required_parameter0=id%3DUID%26name"
    b"%3DLDAP+User+ID%26desc%3DLDAP+User+ID%26type%3Dstring%26option%3D&required_parameter1"
    b"=id%3DPASSWORD%26name%3DLDAP+Password%26desc%3DLDAP+Password%26type%3Dpassword%26"
    b"option%3D"
)
NEW_PIN = b"s=46&msg_type=11&minimum_length=4&maximum_length=10"


def status(value: int, task: str) -> bytes:
    return encode(StatusUpdateRequest(value, task))


def end_op(operation: int, result: int = 0, message: int = 0) -> bytes:
    body = f"msg_type=13&operation={operation}&result={result}&message={message}".encode()
    return b"s=%d&" % len(body) + body


# Client replies, as ESC sends them (CoolKey_Message.cpp).
FCI = bytes.fromhex("6F0F8407A0000000030000A5049F6501FF9000")
FCI_REPLY = (
    b"s=86&msg_type=10&pdu_size=19&pdu_data=o%0F%84%07%A0%00%00%00%03%00%00%A5%04%9Fe%01%FF%90%00"
)
OK_REPLY = b"s=38&msg_type=10&pdu_size=2&pdu_data=%90%00"
VERSION_REPLY = b"s=44&msg_type=10&pdu_size=6&pdu_data=Xv%80r%90%00"
LOGIN_REPLY = b"s=41&msg_type=17&UID=jdoe&PASSWORD=p%40ss+word"
PIN_REPLY = b"s=26&msg_type=12&new_pin=123456"


def echo(value: int) -> bytes:
    body = f"msg_type=15&current_state={value}".encode()
    return b"s=%d&" % len(body) + body


class FakeCard:
    """A card that answers by APDU, with ``9000`` for anything it was not told about."""

    def __init__(self, answers: Mapping[bytes, bytes] | None = None) -> None:
        self.answers = dict(answers or {})
        self.seen: list[bytes] = []

    def __call__(self, apdu: bytes) -> bytes:
        self.seen.append(apdu)
        return self.answers.get(apdu, b"\x90\x00")


COOLKEY_CARD = {
    bytes.fromhex("00A4040000"): FCI,
    bytes.fromhex("B070000004"): bytes.fromhex("587680729000"),
}

Answer = Mapping[str, Secret | str]


@dataclass
class Conversation:
    sent: list[bytes] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    prompts: list[Prompt] = field(default_factory=list)
    result: SessionResult | None = None

    @property
    def progress(self) -> list[ReportProgress]:
        return [a for a in self.actions if isinstance(a, ReportProgress)]


def converse(
    session: TpsSession,
    server: list[bytes],
    card: Callable[[bytes], bytes] | None = None,
    answers: list[Answer] | None = None,
) -> Conversation:
    """Run the session to its end against scripted server bytes, a card and a user."""
    card = card or FakeCard()
    script = list(server)
    replies = list(answers or [])
    talk = Conversation()
    queue = session.start()
    while talk.result is None:
        if not queue:
            queue = (
                session.receive(decode(script.pop(0))) if script else session.connection_closed()
            )
            continue
        action = queue.pop(0)
        talk.actions.append(action)
        match action:
            case SendMessage(message=message):
                talk.sent.append(encode(message))
                for secret in secrets_of(message):
                    secret.drop()
            case SendApdu(apdu=apdu):
                queue.extend(session.card_responded(card(apdu)))
            case AskUser(prompt=prompt):
                talk.prompts.append(prompt)
                queue.extend(session.user_answered(replies.pop(0)))
            case Finished(result=result):
                talk.result = result
    assert session.state is SessionState.FINISHED
    assert not script, "the session ended before the server did"
    return talk


def begin_op(operation: OperationType, *, token_type: bool) -> bytes:
    extensions = b"tokenType%3DuserKey%26" if token_type else b""
    body = (
        b"msg_type=2&operation=%d&extensions=" % operation
        + extensions
        + b"clientVersion%3Descd+0%2E1%2E0%26tokenATR%3D3BFF1400FF8131FE458025A000000056575343"
        b"36353003003B%26statusUpdate%3Dtrue%26extendedLoginRequest%3Dtrue%26"
    )
    return b"s=%d&" % len(body) + body


def credentials() -> dict[str, Secret | str]:
    return {"UID": "jdoe", "PASSWORD": Secret("p@ss word")}


# -- FORMAT --------------------------------------------------------------------------------

FORMAT_SERVER = [
    SELECT_DEFAULT,
    SELECT_CARD_MANAGER,
    b"s=46&msg_type=9&pdu_size=5&pdu_data=%80%CA%9F%7F%2D",
    SELECT_COOLKEY,
    GET_STATUS,
    SELECT_COOLKEY,
    GET_VERSION,
    EXTENDED_LOGIN,
    SELECT_COOLKEY,
    GET_VERSION,
    status(10, "PROGRESS_APPLET_BLOCK"),
    status(53, "PROGRESS_APPLET_BLOCK"),
    status(97, "PROGRESS_APPLET_BLOCK"),
    status(100, "PROGRESS_DONE"),
    end_op(5),
]


def test_format_conversation_matches_esc_byte_for_byte() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    card = FakeCard(COOLKEY_CARD)
    talk = converse(session, FORMAT_SERVER, card, [credentials()])

    assert talk.sent == [
        begin_op(OperationType.FORMAT, token_type=True),
        FCI_REPLY,
        OK_REPLY,
        OK_REPLY,
        OK_REPLY,
        OK_REPLY,
        OK_REPLY,
        VERSION_REPLY,
        LOGIN_REPLY,
        OK_REPLY,
        VERSION_REPLY,
        echo(10),
        echo(53),
        echo(97),
        echo(100),
    ]
    assert card.seen[0] == bytes.fromhex("00A4040000")
    assert card.seen[2] == bytes.fromhex("80CA9F7F2D")
    assert [(p.stage, p.task_name) for p in talk.progress] == [
        (10, "PROGRESS_APPLET_BLOCK"),
        (53, "PROGRESS_APPLET_BLOCK"),
        (97, "PROGRESS_APPLET_BLOCK"),
        (100, "PROGRESS_DONE"),
    ]
    assert talk.progress[2].progress == pytest.approx(0.97)
    assert talk.progress[2].percent == 97
    # END_OP of format: reset the card, then finish (ESC CoolKeyHandler.cpp:1586-1605).
    assert isinstance(talk.actions[-2], ResetCard)
    assert talk.result is not None and talk.result.succeeded
    assert talk.result.end_op is not None and talk.result.end_op.operation == 5
    outcome = talk.result.outcome
    assert (outcome.error, outcome.status_source, outcome.tps_status) == ("", "tps", 0)


def test_extended_login_prompt_carries_the_tps_texts_and_typed_fields() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION, locale="en")
    talk = converse(session, FORMAT_SERVER, FakeCard(COOLKEY_CARD), [credentials()])
    (prompt,) = talk.prompts
    assert prompt.kind is PromptKind.EXTENDED_LOGIN
    assert prompt.title == "LDAP Authentication"
    assert prompt.description == "This authenticates user against the LDAP directory."
    assert prompt.locale == "en"
    assert prompt.attempt == 1 and prompt.previous_error == ""
    uid, password = prompt.fields
    assert (uid.id, uid.label, uid.type, uid.description) == (
        "UID",
        "LDAP User ID",
        FieldType.TEXT,
        "LDAP User ID",
    )
    assert (password.id, password.label, password.type) == (
        "PASSWORD",
        "LDAP Password",
        FieldType.SECRET,
    )
    assert password.is_secret and not uid.is_secret


def test_begin_op_carries_locale_last_and_no_token_type_for_reset_pin() -> None:
    session = TpsSession(
        OperationType.RESET_PIN, atr=bytes.fromhex("3b7f"), version="9.9", locale="de"
    )
    (action,) = session.start()
    assert isinstance(action, SendMessage) and isinstance(action.message, BeginOp)
    assert action.message.extensions == (
        ("clientVersion", "escd 9.9"),
        ("tokenATR", "3B7F"),
        ("statusUpdate", "true"),
        ("extendedLoginRequest", "true"),
        ("locale", "de"),
    )


def test_begin_op_sends_the_configured_token_type_for_enroll() -> None:
    session = TpsSession(OperationType.ENROLL, atr=ATR, version=VERSION, token_type="soKey")
    (action,) = session.start()
    assert isinstance(action, SendMessage) and isinstance(action.message, BeginOp)
    assert action.message.extension("tokenType") == "soKey"
    assert action.message.operation == OperationType.ENROLL


# -- ENROLL --------------------------------------------------------------------------------

ENROLL_SERVER = [
    SELECT_COOLKEY,
    b"s=46&msg_type=9&pdu_size=5&pdu_data=%B0%F2%00%00%01",
    SELECT_DEFAULT,
    SELECT_CARD_MANAGER,
    GET_VERSION,
    EXTENDED_LOGIN,
    NEW_PIN,
    encode(TokenPduRequest(bytes.fromhex("8404000007") + bytes(range(1, 8)))),
    status(10, "PROGRESS_PROCESS_PROFILE"),
    status(15, "PROGRESS_KEY_GENERATION"),
    status(52, "PROGRESS_ENROLL_CERT"),
    status(52, "PROGRESS_KEY_GENERATION"),
    status(89, "PROGRESS_ENROLL_CERT"),
    status(92, "PROGRESS_WRITE_OBJECTS"),
    status(98, "PROGRESS_ISSUER_INFO"),
    status(99, "PROGRESS_SET_LIFECYCLE"),
    status(100, "PROGRESS_DONE_ENROLLMENT"),
    end_op(1),
]


def test_enroll_asks_again_for_a_pin_out_of_range_before_answering() -> None:
    session = TpsSession(OperationType.ENROLL, atr=ATR, version=VERSION)
    too_short, too_long, good = Secret("12"), Secret("12345678901"), Secret("123456")
    card = FakeCard({**COOLKEY_CARD, bytes.fromhex("B0F2000001"): bytes.fromhex("079000")})
    talk = converse(
        session,
        ENROLL_SERVER,
        card,
        [credentials(), {"new_pin": too_short}, {"new_pin": too_long}, {"new_pin": good}],
    )

    assert talk.sent[0] == begin_op(OperationType.ENROLL, token_type=True)
    assert LOGIN_REPLY in talk.sent
    # The server sees one answer only: the PIN within 4..10.
    assert [m for m in talk.sent if b"msg_type=12" in m] == [PIN_REPLY]
    pin_prompts = [p for p in talk.prompts if p.kind is PromptKind.NEW_PIN]
    assert [p.attempt for p in pin_prompts] == [1, 2, 3]
    assert pin_prompts[0].previous_error == ""
    assert "4 to 10" in pin_prompts[1].previous_error
    assert "4 to 10" in pin_prompts[2].previous_error
    (pin_field,) = pin_prompts[0].fields
    assert (pin_field.id, pin_field.type, pin_field.confirm) == ("new_pin", FieldType.PIN, True)
    assert (pin_field.min_length, pin_field.max_length) == (4, 10)
    # Rejected PINs are dropped at once; the accepted one once it was encoded.
    for secret in (too_short, too_long, good):
        with pytest.raises(ValueError):
            secret.reveal()
    assert [p.stage for p in talk.progress] == [10, 15, 52, 52, 89, 92, 98, 99, 100]
    assert talk.sent[-9:] == [echo(v) for v in (10, 15, 52, 52, 89, 92, 98, 99, 100)]
    assert isinstance(talk.actions[-2], ResetCard)
    assert talk.result is not None and talk.result.succeeded


@pytest.mark.parametrize(
    ("pin", "problem"),
    [("12 34", "ASCII"), ("12+34", "& = % +"), ("1234ä", "ASCII"), ("", "must not be empty")],
)
def test_new_pin_that_cannot_travel_raw_is_asked_again(pin: str, problem: str) -> None:
    session = TpsSession(OperationType.RESET_PIN, atr=ATR, version=VERSION)
    session.start()
    (ask,) = session.receive(decode(NEW_PIN))
    assert isinstance(ask, AskUser)
    (again,) = session.user_answered({"new_pin": Secret(pin)})
    assert isinstance(again, AskUser)
    assert problem in again.prompt.previous_error
    assert again.prompt.attempt == 2


def test_pin_prompt_gives_up_after_too_many_bad_answers() -> None:
    session = TpsSession(OperationType.RESET_PIN, atr=ATR, version=VERSION, max_prompt_attempts=2)
    session.start()
    session.receive(decode(NEW_PIN))
    assert isinstance(session.user_answered({"new_pin": "1"})[0], AskUser)
    (finished,) = session.user_answered({"new_pin": "2"})
    assert isinstance(finished, Finished)
    assert isinstance(finished.result.error, CanceledError)
    assert finished.result.outcome.tps_status == 8


def test_new_pin_bounds_that_no_pin_can_meet_are_a_server_error() -> None:
    session = TpsSession(OperationType.ENROLL, atr=ATR, version=VERSION)
    session.start()
    (finished,) = session.receive(NewPinRequest(8, 4))
    assert isinstance(finished, Finished)
    assert isinstance(finished.result.error, RemoteTpsProtocolError)


# -- RESET PIN -----------------------------------------------------------------------------

RESET_PIN_SERVER = [
    status(10, "PROGRESS_START_PIN_RESET"),
    SELECT_DEFAULT,
    SELECT_CARD_MANAGER,
    GET_VERSION,
    status(15, "PROGRESS_PIN_RESET_RESOLVE_PROFILE"),
    EXTENDED_LOGIN,
    status(5, "PROGRESS_APPLET_BLOCK"),
    status(11, "PROGRESS_APPLET_BLOCK"),
    NEW_PIN,
    status(100, "PROGRESS_PIN_RESET_COMPLETE"),
    end_op(3),
]


def test_reset_pin_conversation_reports_non_monotonic_progress_and_keeps_the_card() -> None:
    session = TpsSession(OperationType.RESET_PIN, atr=ATR, version=VERSION)
    talk = converse(
        session, RESET_PIN_SERVER, FakeCard(COOLKEY_CARD), [credentials(), {"new_pin": "123456"}]
    )
    assert talk.sent == [
        begin_op(OperationType.RESET_PIN, token_type=False),
        echo(10),
        FCI_REPLY,
        OK_REPLY,
        VERSION_REPLY,
        echo(15),
        LOGIN_REPLY,
        echo(5),
        echo(11),
        PIN_REPLY,
        echo(100),
    ]
    assert len(talk.sent[0]) == len(b"s=183&") + 183
    # Values go backwards during an applet upgrade (Dogtag restarts progress after it).
    assert [p.progress for p in talk.progress] == pytest.approx([0.1, 0.15, 0.05, 0.11, 1.0])
    # ESC does not reset the card after RESET PIN.
    assert not any(isinstance(a, ResetCard) for a in talk.actions)
    assert talk.result is not None and talk.result.succeeded


# -- END_OP failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "wording"),
    [
        (14, "The Smart Card Server cannot validate your credentials."),
        (7, "The Smart Card Server cannot import the required certificates into your smart card."),
        (44, "The Smart Card Server has already processed a renewal of your smart card."),
        (99, "status 99"),
    ],
)
def test_end_op_failure_is_a_tps_status(code: int, wording: str) -> None:
    session = TpsSession(OperationType.ENROLL, atr=ATR, version=VERSION)
    talk = converse(session, [EXTENDED_LOGIN, end_op(1, 1, code)], answers=[credentials()])
    assert talk.result is not None and not talk.result.succeeded
    error = talk.result.error
    assert isinstance(error, TpsOperationError) and error.tps_status == code
    outcome = talk.result.outcome
    assert outcome.status_source is StatusSource.TPS
    assert outcome.tps_status == code
    assert outcome.error == "io.github.escd.Escd1.Error.Tps"
    assert wording in outcome.message
    # ESC resets the card after END_OP of enroll whatever the result.
    assert isinstance(talk.actions[-2], ResetCard)


def test_unimplemented_operation_is_refused_without_a_reset() -> None:
    # The Java TPS answers UNBLOCK and RENEW with result=1, message=0 (TPSSession.java).
    session = TpsSession(OperationType.UNBLOCK, atr=ATR, version=VERSION)
    talk = converse(session, [end_op(2, 1, 0)])
    assert talk.result is not None
    assert isinstance(talk.result.error, TpsOperationError)
    assert talk.result.error.tps_status == 0
    assert "refused the operation" in talk.result.outcome.message
    assert not any(isinstance(a, ResetCard) for a in talk.actions)
    begin = decode(talk.sent[0])
    assert isinstance(begin, BeginOp) and begin.extension("tokenType") is None


# -- failures on our side ------------------------------------------------------------------


def test_card_failure_mid_way_ends_without_a_reply() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    assert isinstance(session.receive(decode(SELECT_DEFAULT))[0], SendApdu)
    assert session.card_responded(FCI) == [SendMessage(TokenPduResponse(FCI))]
    (send,) = session.receive(decode(SELECT_CARD_MANAGER))
    assert isinstance(send, SendApdu)
    (finished,) = session.card_failed(CardRemovedError("the card was removed"))
    assert isinstance(finished, Finished)
    assert isinstance(finished.result.error, CardRemovedError)
    outcome = finished.result.outcome
    assert (outcome.status_source, outcome.tps_status) == ("local", 8)
    assert outcome.error == "io.github.escd.Escd1.Error.TokenRemoved"
    # Nothing more happens, whatever arrives late.
    assert session.card_responded(b"\x90\x00") == []
    assert session.receive(decode(SELECT_DEFAULT)) == []


def test_card_pulled_while_the_user_is_prompted_ends_the_session() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    session.receive(decode(EXTENDED_LOGIN))
    (finished,) = session.card_failed(CardRemovedError())
    assert isinstance(finished, Finished)
    assert session.user_answered(credentials()) == []


def test_card_answer_without_status_word_is_a_card_error() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    session.receive(decode(SELECT_DEFAULT))
    (finished,) = session.card_responded(b"\x90")
    assert isinstance(finished, Finished)
    assert isinstance(finished.result.error, MalformedResponseError)
    assert finished.result.outcome.tps_status == 8


def test_stream_end_without_end_op_is_connection_lost() -> None:
    session = TpsSession(OperationType.ENROLL, atr=ATR, version=VERSION)
    talk = converse(session, [SELECT_DEFAULT, status(10, "PROGRESS_PROCESS_PROFILE")])
    assert talk.result is not None
    assert isinstance(talk.result.error, ConnectionLostError)
    outcome = talk.result.outcome
    assert (outcome.status_source, outcome.tps_status) == ("local", 28)
    assert outcome.message == "The connection to the Smart Card Server was lost."
    assert not any(isinstance(a, ResetCard) for a in talk.actions)


def test_connection_failure_is_reported_as_given() -> None:
    session = TpsSession(OperationType.ENROLL, atr=ATR, version=VERSION)
    session.start()
    (finished,) = session.connection_failed(MessageTimeoutError("no message for 90 s"))
    assert isinstance(finished, Finished)
    assert finished.result.outcome.error == "io.github.escd.Escd1.Error.Timeout"
    assert session.connection_closed() == []


# -- out of turn and hostile servers -------------------------------------------------------


def test_server_message_while_waiting_for_the_card_breaks_lock_step() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    session.receive(decode(SELECT_DEFAULT))
    (finished,) = session.receive(decode(SELECT_CARD_MANAGER))
    assert isinstance(finished, Finished)
    error = finished.result.error
    assert isinstance(error, RemoteTpsProtocolError)
    assert "waiting for the card" in error.message
    assert finished.result.outcome.tps_status == 28


def test_server_message_while_waiting_for_the_user_breaks_lock_step() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    session.receive(decode(EXTENDED_LOGIN))
    (finished,) = session.receive(decode(end_op(5)))
    assert isinstance(finished, Finished)
    assert isinstance(finished.result.error, RemoteTpsProtocolError)


@pytest.mark.parametrize(
    "message",
    [
        b"s=25&msg_type=7&question=Why",
        OK_REPLY,
        b"s=26&msg_type=12&new_pin=123456",
        encode(BeginOp(OperationType.ENROLL)),
    ],
    ids=["asq", "client pdu response", "client new pin", "begin op"],
)
def test_asq_and_client_messages_from_the_server_are_protocol_errors(message: bytes) -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    body = message.split(b"&", 1)[1]
    (finished,) = session.receive(decode(b"s=%d&" % len(body) + body))
    assert isinstance(finished, Finished)
    assert isinstance(finished.result.error, RemoteTpsProtocolError)


def test_a_server_that_never_stops_talking_is_cut_off() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION, max_messages=3)
    session.start()
    for value in (1, 2, 3):
        assert isinstance(session.receive(StatusUpdateRequest(value))[1], SendMessage)
    (finished,) = session.receive(StatusUpdateRequest(4))
    assert isinstance(finished, Finished)
    assert isinstance(finished.result.error, RemoteTpsProtocolError)


def test_tiny_apdu_from_the_server_is_refused() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    (finished,) = session.receive(TokenPduRequest(b"\x00\xa4"))
    assert isinstance(finished, Finished)
    assert isinstance(finished.result.error, RemoteTpsProtocolError)


def test_progress_is_clamped_but_the_stage_is_echoed_unchanged() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    report, reply = session.receive(StatusUpdateRequest(150, "ODD"))
    assert report == ReportProgress(1.0, 150, "ODD")
    assert isinstance(reply, SendMessage)
    assert encode(reply.message) == b"s=29&msg_type=15&current_state=150"


def test_extended_login_without_parameters_is_a_server_error() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    (finished,) = session.receive(ExtendedLoginRequest(title="Nothing to ask"))
    assert isinstance(finished, Finished)
    assert isinstance(finished.result.error, RemoteTpsProtocolError)


# -- cancel --------------------------------------------------------------------------------


def test_cancel_during_the_login_prompt_ends_as_canceled() -> None:
    session = TpsSession(OperationType.ENROLL, atr=ATR, version=VERSION)
    session.start()
    session.receive(decode(EXTENDED_LOGIN))
    assert session.state is SessionState.WAITING_FOR_USER
    (finished,) = session.cancel()
    assert isinstance(finished, Finished)
    assert isinstance(finished.result.error, CanceledError)
    outcome = finished.result.outcome
    assert (outcome.status_source, outcome.tps_status) == ("local", 8)
    assert outcome.error == "io.github.escd.Escd1.Error.Canceled"
    assert session.cancel() == []
    assert session.result is finished.result


def test_cancel_while_the_card_works_ends_at_once() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    session.receive(decode(SELECT_DEFAULT))
    (finished,) = session.cancel()
    assert isinstance(finished, Finished)
    assert session.card_responded(FCI) == []


# -- plain LOGIN and retries ---------------------------------------------------------------


def test_login_request_asks_for_user_id_and_password() -> None:
    session = TpsSession(OperationType.ENROLL, atr=ATR, version=VERSION)
    password = Secret("p@ss word")
    talk = converse(
        session,
        [b"s=33&msg_type=3&invalid_pw=0&blocked=0", end_op(1)],
        answers=[{"screen_name": "jdoe", "password": password}],
    )
    (prompt,) = talk.prompts
    assert prompt.kind is PromptKind.LOGIN
    assert [(f.id, f.type) for f in prompt.fields] == [
        ("screen_name", FieldType.TEXT),
        ("password", FieldType.SECRET),
    ]
    assert talk.sent[1] == b"s=48&msg_type=4&screen_name=jdoe&password=p%40ss+word"
    with pytest.raises(ValueError):
        password.reveal()


def test_legacy_login_retry_asks_again_with_the_previous_error() -> None:
    session = TpsSession(OperationType.ENROLL, atr=ATR, version=VERSION)
    talk = converse(
        session,
        [EXTENDED_LOGIN, encode(LoginRequest(1, 0)), end_op(1)],
        answers=[credentials(), {"screen_name": "jdoe", "password": "right"}],
    )
    first, second = talk.prompts
    assert first.kind is PromptKind.EXTENDED_LOGIN and first.attempt == 1
    assert second.kind is PromptKind.LOGIN and second.attempt == 2
    assert "did not accept" in second.previous_error
    assert talk.sent[-1] == b"s=42&msg_type=4&screen_name=jdoe&password=right"


def test_blocked_login_is_explained_to_the_user() -> None:
    session = TpsSession(OperationType.ENROLL, atr=ATR, version=VERSION)
    session.start()
    (ask,) = session.receive(LoginRequest(0, 1))
    assert isinstance(ask, AskUser)
    assert "blocked" in ask.prompt.previous_error


def test_empty_credential_is_asked_again_and_the_rejected_secret_dropped() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    session.receive(decode(EXTENDED_LOGIN))
    kept = Secret("")
    (again,) = session.user_answered({"UID": "jdoe", "PASSWORD": kept})
    assert isinstance(again, AskUser)
    assert again.prompt.attempt == 2
    assert again.prompt.previous_error == "LDAP Password must not be empty."
    extra = Secret("unused")
    password = Secret("pw")
    (send,) = session.user_answered({"UID": "jdoe", "PASSWORD": password, "EXTRA": extra})
    assert isinstance(send, SendMessage)
    # The agent's Secret travels in the message; anything unused is dropped now.
    assert secrets_of(send.message)[1] is password
    with pytest.raises(ValueError):
        extra.reveal()


def test_extended_login_choice_must_be_one_of_the_options() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    session.start()
    request = ExtendedLoginRequest(
        title="t",
        parameters=(AuthParameter("UID"), AuthParameter("REALM", "Realm", option="corp,lab")),
    )
    (ask,) = session.receive(request)
    assert isinstance(ask, AskUser)
    realm = ask.prompt.fields[1]
    assert (realm.type, realm.options) == (FieldType.CHOICE, ("corp", "lab"))
    (again,) = session.user_answered({"UID": "a", "REALM": "home"})
    assert isinstance(again, AskUser) and "choices" in again.prompt.previous_error
    (send,) = session.user_answered({"UID": "a", "REALM": "lab"})
    assert isinstance(send, SendMessage)
    assert encode(send.message) == b"s=27&msg_type=17&UID=a&REALM=lab"


def test_securid_prompt_and_raw_reply() -> None:
    session = TpsSession(OperationType.ENROLL, atr=ATR, version=VERSION)
    session.start()
    (ask,) = session.receive(SecurIdRequest(pin_required=True, next_value=True))
    assert isinstance(ask, AskUser)
    assert ask.prompt.kind is PromptKind.SECURID
    assert [(f.id, f.label) for f in ask.prompt.fields] == [
        ("pin", "SecurID PIN"),
        ("value", "Next token code"),
    ]
    (send,) = session.user_answered({"pin": Secret("4711"), "value": Secret("665544")})
    assert isinstance(send, SendMessage)
    assert encode(send.message) == b"s=32&msg_type=6&pin=4711&value=665544"


# -- API misuse by the driver --------------------------------------------------------------


def test_driver_mistakes_are_local_errors() -> None:
    session = TpsSession(OperationType.FORMAT, atr=ATR, version=VERSION)
    with pytest.raises(LocalTpsProtocolError):
        session.receive(decode(SELECT_DEFAULT))
    session.start()
    with pytest.raises(LocalTpsProtocolError):
        session.start()
    with pytest.raises(LocalTpsProtocolError):
        session.card_responded(b"\x90\x00")
    with pytest.raises(LocalTpsProtocolError):
        session.user_answered({"new_pin": "1234"})


def test_send_apdu_repr_shows_no_data() -> None:
    action = SendApdu(bytes.fromhex("8404000006") + b"918273")
    assert "918273" not in repr(action)
    assert "84 04 00 00" in repr(action)
