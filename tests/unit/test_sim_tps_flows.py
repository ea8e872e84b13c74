# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated TPS's processors against a simulated card, without sockets.

``LoopbackClient`` answers the server's messages the way ESC does (APDUs relayed to a
``SimulatedCard``, login, new PIN, status echo), and can be told to misbehave. The tests
check the APDU order of the Java TPS's FORMAT, ENROLL and PIN RESET
(TPSProcessor.format, TPSEnrollProcessor, TPSPinResetProcessor), the END_OP status of
each failure, the Java quirks in faithful and clean mode, and what ends up on the card
and in the token DB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from escd.card.apdu import CommandApdu
from escd.card.objects import COMBINED_OBJECT_ID, decode_combined_object
from escd.log import Secret
from escd.model import OperationType
from escd.sim.ca import CertificateAuthority
from escd.sim.card import SimulatedCard, blank_card, formatted_card
from escd.sim.loadfile import COOLKEY_INSTANCE_AID
from escd.sim.scp import ScpProtocol
from escd.sim.state import LifeCycle
from escd.sim.tps_channel import ClientGone, Tks
from escd.sim.tps_config import CLEAN, Faults, Quirk, TokenPolicy, TpsConfig
from escd.sim.tps_db import TokenDb, TokenRecord, TokenStatus, UserDirectory
from escd.sim.tps_flows import Services, SessionRecord, run_session
from escd.tps.messages import (
    BeginOp,
    EndOp,
    ExtendedLoginRequest,
    ExtendedLoginResponse,
    LoginRequest,
    LoginResponse,
    Message,
    NewPinRequest,
    NewPinResponse,
    StatusUpdateRequest,
    StatusUpdateResponse,
    TokenPduRequest,
    TokenPduResponse,
    TpsMessage,
)

ISSUER_URL = "http://tps.example.test:8080/tps/phoneHome"
ATR = "3B76940000FF6276010000"
ESC_EXTENSIONS = (
    ("tokenType", "userKey"),
    ("clientVersion", "ESC 1.0.1"),
    ("tokenATR", ATR),
    ("statusUpdate", "true"),
    ("extendedLoginRequest", "true"),
)
PIN = "123456"
ENROLL, FORMAT, RESET = OperationType.ENROLL, OperationType.FORMAT, OperationType.RESET_PIN

Reply = Callable[[TpsMessage], Message | None]


class LoopbackClient:
    """A well-behaved ESC in memory; ``override`` replaces the answer to one message."""

    def __init__(
        self,
        card: SimulatedCard,
        *,
        uid: str = "demo",
        password: str = "demo",
        pin: str = PIN,
        override: Reply | None = None,
    ) -> None:
        self.card = card
        self.uid, self.password, self.pin = uid, password, pin
        self.override = override
        self.seen: list[TpsMessage] = []
        self._reply: Message | None = None

    async def send(self, message: TpsMessage) -> None:
        self.seen.append(message)
        reply = self.override(message) if self.override else None
        self._reply = reply if reply is not None else self.answer(message)

    def answer(self, message: TpsMessage) -> Message | None:
        match message:
            case TokenPduRequest(apdu=apdu):
                return TokenPduResponse(self.card.transmit(apdu))
            case StatusUpdateRequest(current_state=state):
                return StatusUpdateResponse(state)
            case ExtendedLoginRequest():
                return ExtendedLoginResponse(
                    (("UID", Secret(self.uid)), ("PASSWORD", Secret(self.password)))
                )
            case LoginRequest():
                return LoginResponse(self.uid, Secret(self.password))
            case NewPinRequest():
                return NewPinResponse(Secret(self.pin))
        return None

    async def receive(self) -> Message:
        reply, self._reply = self._reply, None
        if reply is None:
            raise ClientGone("nothing to answer")
        return reply

    def of_type(self, kind: type[TpsMessage]) -> list[TpsMessage]:
        return [message for message in self.seen if isinstance(message, kind)]


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


class World:
    """One TPS (config, DB, users, CA) and helpers to run sessions against cards."""

    def __init__(self, ca: CertificateAuthority, config: TpsConfig) -> None:
        self.config = config
        self.db = TokenDb(default_policy=config.default_policy)
        self.ca = ca
        self.services = Services(config, self.db, UserDirectory(), ca, Tks(), ISSUER_URL)

    async def run(
        self,
        card: SimulatedCard,
        operation: int,
        *,
        client: LoopbackClient | None = None,
        extensions: tuple[tuple[str, str], ...] = ESC_EXTENSIONS,
    ) -> tuple[EndOp | None, SessionRecord, LoopbackClient]:
        client = client or LoopbackClient(card)
        record = SessionRecord(operation)
        end_op = await run_session(self.services, BeginOp(operation, extensions), client, record)
        if operation in (ENROLL, FORMAT):
            card.reset()  # ESC resets the card after END_OP of enroll and format
        return end_op, record, client


@pytest.fixture
def world(ca: CertificateAuthority) -> Callable[..., World]:
    def make(**changes: object) -> World:
        return World(ca, replace(TpsConfig(tls=False), **changes))  # type: ignore[arg-type]

    return make


def new_card(factory: Callable[..., object] = blank_card, **kwargs: object) -> SimulatedCard:
    card = SimulatedCard(factory(**kwargs))  # type: ignore[arg-type]
    card.power_on()
    return card


def z0_of(card: SimulatedCard) -> bytes | None:
    assert card.state.applet is not None
    found = card.state.applet.find_object(COMBINED_OBJECT_ID)
    return None if found is None else bytes(found.data)


def verify(card: SimulatedCard, pin: str) -> int:
    card.transmit(CommandApdu(0x00, 0xA4, 0x04, 0x00, COOLKEY_INSTANCE_AID).encode())
    response = card.transmit(CommandApdu(0xB0, 0x42, 0x00, 0x00, pin.encode()).encode())
    return int.from_bytes(response[-2:], "big")


def ok(end_op: EndOp | None) -> None:
    assert end_op is not None
    assert (end_op.result, end_op.message) == (0, 0), end_op


def failed(end_op: EndOp | None, status: int) -> None:
    assert end_op is not None
    assert (end_op.result, end_op.message) == (1, status), end_op


GET_APPLET_INFO = [
    "00A40400",  # default SELECT
    "00A40400",  # SELECT card manager
    "80CA9F7F",  # CPLC
    "00A40400",  # SELECT CoolKey
    "B03C0000",  # GET STATUS
    "00A40400",  # SELECT CoolKey again (formatCurrentAppletVersion)
    "B0700000",  # GET VERSION
]


# -- FORMAT --------------------------------------------------------------------------------


async def test_format_of_blank_card_installs_the_applet_with_issuer_info(world) -> None:
    tps, card = world(), new_card()
    end_op, record, client = await tps.run(card, FORMAT)
    ok(end_op)
    assert end_op.operation == FORMAT
    applet = card.state.applet
    assert applet is not None and applet.life_cycle == LifeCycle.SELECTABLE
    assert applet.issuer_info.rstrip(b"\x00") == ISSUER_URL.encode()
    assert (applet.applet_major, applet.applet_minor, applet.build_id) == (1, 4, 0x58768072)
    assert not applet.pins and not applet.keys and not applet.objects
    token = tps.db.get(card.state.cuid)
    assert token is not None and token.status is TokenStatus.FORMATTED
    assert token.user_id is None and token.key_info == "0101"
    assert record.user_id == "demo" and record.cuid == card.state.cuid.hex().upper()


async def test_format_sends_dogtags_apdus_in_dogtags_order(world) -> None:
    tps, card = world(), new_card()
    _, record, client = await tps.run(card, FORMAT)
    headers = record.transcript.headers()
    assert headers[:7] == GET_APPLET_INFO
    loads = [h for h in headers if h.startswith("84E8")]
    assert len(loads) == 75  # 15413 bytes in 208-byte blocks
    assert headers[7:] == [
        "00A40400", "B0700000",  # getAppletVersion after the login
        "00A40400", "80CA0066", "80CA0066", "80CA00E0",  # discovery, 6C35 retried
        "80500000", "84820300",  # channel to the ISD
        "84E40000", "84E40000", "84E60200",  # DELETE ×2, INSTALL [for load]
        *loads,
        "84E60C00", "00A40400",  # INSTALL [for install], SELECT CoolKey
        "80500000", "84820300", "84F40000",  # issuer info on a new channel
        "80500000", "84820300",  # checkAndUpgradeSymKeys: never used
    ]  # fmt: skip
    assert loads[-1] == "84E8804A" and loads[0] == "84E80000"
    progress = record.transcript.progress
    assert progress[0] == (10, "PROGRESS_APPLET_BLOCK")
    assert progress[-2:] == [(97, "PROGRESS_APPLET_BLOCK"), (100, "PROGRESS_DONE")]
    assert len(client.of_type(ExtendedLoginRequest)) == 1


async def test_format_scp02_card_uses_gp211_commands_and_216_byte_blocks(world) -> None:
    tps, card = world(), new_card(protocol=ScpProtocol.SCP02)
    end_op, record, _ = await tps.run(card, FORMAT)
    ok(end_op)
    headers = record.transcript.headers()
    assert "84E40080" in headers and "84E40000" not in headers
    assert len([h for h in headers if h.startswith("84E8")]) == 72
    assert record.transcript.progress[-2] == (93, "PROGRESS_APPLET_BLOCK")
    install = next(a for a in record.transcript.apdus if a[:4] == bytes.fromhex("84E60200"))
    assert install[-1] == 0x00 and len(install) == 5 + install[4] + 1  # GP 2.1.1: Le 00
    assert tps.db.get(card.state.cuid).key_info == "FF01"  # type: ignore[union-attr]


async def test_format_reloads_a_current_applet_only_when_faithful(world) -> None:
    for config, reloads in ((world(), True), (world(quirks=CLEAN), False)):
        card = new_card(formatted_card, phone_home_url="http://old.example/")
        end_op, record, _ = await config.run(card, FORMAT)
        ok(end_op)
        assert any(h.startswith("84E8") for h in record.transcript.headers()) is reloads
        assert card.state.applet.issuer_info.startswith(ISSUER_URL.encode())  # type: ignore[union-attr]


async def test_clean_get_applet_info_has_no_redundant_select(world) -> None:
    tps, card = world(quirks=CLEAN), new_card()
    _, record, _ = await tps.run(card, FORMAT)
    assert record.transcript.headers()[:6] == GET_APPLET_INFO[:5] + ["B0700000"]


async def test_format_without_authentication_sends_no_login(world) -> None:
    tps, card = world(auth_disabled=frozenset({"format/userKey"})), new_card()
    end_op, _, client = await tps.run(card, FORMAT)
    ok(end_op)
    assert not client.of_type(ExtendedLoginRequest) and not client.of_type(LoginRequest)


async def test_status_updates_only_when_asked_for(world) -> None:
    tps, card = world(), new_card()
    extensions = tuple(e for e in ESC_EXTENSIONS if e[0] != "statusUpdate")
    _, record, client = await tps.run(card, FORMAT, extensions=extensions)
    assert not client.of_type(StatusUpdateRequest) and not record.transcript.progress


async def test_plain_login_request_without_the_extension(world) -> None:
    tps, card = world(), new_card()
    extensions = tuple(e for e in ESC_EXTENSIONS if e[0] != "extendedLoginRequest")
    end_op, _, client = await tps.run(card, FORMAT, extensions=extensions)
    ok(end_op)
    assert client.of_type(LoginRequest) == [LoginRequest(0, 0)]


async def test_unknown_tokens_can_be_refused(world) -> None:
    tps = world(allow_unknown_tokens=False)
    for operation in (FORMAT, ENROLL):
        end_op, _, _ = await tps.run(new_card(), operation)
        failed(end_op, 16)


# -- ENROLL --------------------------------------------------------------------------------


async def enrolled(tps: World, card: SimulatedCard | None = None) -> SimulatedCard:
    card = card or new_card()
    ok((await tps.run(card, FORMAT))[0])
    ok((await tps.run(card, ENROLL))[0])
    return card


async def test_enroll_of_formatted_token_writes_z0_with_real_certificates(world) -> None:
    tps, card = world(), new_card()
    ok((await tps.run(card, FORMAT))[0])
    end_op, record, client = await tps.run(card, ENROLL)
    ok(end_op)
    applet = card.state.applet
    assert applet is not None and applet.life_cycle == LifeCycle.PERSONALIZED
    assert verify(card, PIN) == 0x9000 and verify(card, "password") == 0x9C02
    z0 = decode_combined_object(z0_of(card) or b"")
    assert z0.cuid == card.state.cuid and z0.token_name == "Demo User" and z0.compressed
    assert [r.name for r in z0.records] == ["c1", "k3", "k2", "c2", "k5", "k4"]
    labels = [c.label for c in z0.certificates]
    assert labels == ["signing key for demo", "encryption key for demo"]
    for cert_object, public_slot in zip(z0.certificates, (3, 5), strict=True):
        certificate = x509.load_der_x509_certificate(cert_object.der)
        certificate.verify_directly_issued_by(tps.ca.certificate)
        assert certificate.subject.rfc4514_string() == "UID=demo,O=Token Key User"
        spki = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert applet.keys[public_slot].der == spki
        assert certificate.public_key().key_size == 1024  # type: ignore[union-attr]
    assert sorted(applet.keys) == [2, 3, 4, 5]
    token = tps.db.get(card.state.cuid)
    assert token is not None and token.status is TokenStatus.ACTIVE and token.user_id == "demo"
    assert [c.key_type for c in token.certificates] == ["signing", "encryption"]
    assert [p for p, _ in record.transcript.progress] == [10, 15, 52, 52, 89, 92, 98, 99, 100]
    headers = record.transcript.headers()
    assert headers[:2] == ["00A40400", "B0F20000"]
    assert headers[2:9] == GET_APPLET_INFO
    assert headers[-3:] == ["84F40000", "84F00F00", "84550000"]
    assert record.transcript.apdus[-1][5:] != b""  # CLEAR KEY SLOTS carries its slot list
    assert client.of_type(NewPinRequest) == [NewPinRequest(4, 10)]


async def test_enroll_reads_existing_objects_and_bumps_the_z0_version(world) -> None:
    tps = world()
    card = await enrolled(tps)
    first = decode_combined_object(z0_of(card) or b"")
    end_op, record, _ = await tps.run(card, ENROLL)
    ok(end_op)
    second = decode_combined_object(z0_of(card) or b"")
    assert second.object_version == first.object_version + 1
    assert "B0580000" in record.transcript.headers()


async def test_enroll_with_server_side_keygen_imports_the_archived_key(world) -> None:
    tps = world(server_keygen=frozenset({"encryption"}))
    card = await enrolled(tps)
    token = tps.db.get(card.state.cuid)
    assert token is not None and len(token.archived_keys) == 1
    archived = serialization.load_der_private_key(token.archived_keys[0][1], password=None)
    applet = card.state.applet
    assert applet is not None
    assert applet.keys[4].der == token.archived_keys[0][1]
    spki = archived.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert applet.keys[5].der == spki
    temporary = applet.find_object(bytes.fromhex("FF00FFF3"))
    assert temporary is not None and not any(temporary.data)  # wiped by the card


async def test_blank_card_enroll_fails_at_the_z0_size_check_when_faithful(world) -> None:
    tps, card = world(), new_card()
    end_op, record, _ = await tps.run(card, ENROLL)
    failed(end_op, 7)
    applet = card.state.applet
    assert applet is not None and applet.life_cycle == LifeCycle.SELECTABLE
    assert z0_of(card) is None and sorted(applet.keys) == [2, 3, 4, 5]
    assert record.transcript.headers().count("840C0203") == 1  # keygen ran first


async def test_blank_card_enroll_succeeds_when_clean(world) -> None:
    for config in (world(quirks=CLEAN), world(quirks=frozenset(Quirk) - {Quirk.STALE_APPLET_INFO})):
        card = new_card()
        ok((await config.run(card, ENROLL))[0])
        assert card.state.applet.life_cycle == LifeCycle.PERSONALIZED  # type: ignore[union-attr]
        assert z0_of(card) is not None


async def test_force_format_reenroll_leaves_life_cycle_07_when_faithful(world) -> None:
    for quirks, life_cycle in ((frozenset(Quirk), 0x07), (CLEAN, 0x0F)):
        tps = world(quirks=quirks)
        card = await enrolled(tps)
        tps.db.set_policy(card.state.cuid, "FORCE_FORMAT=YES")
        end_op, record, _ = await tps.run(card, ENROLL)
        ok(end_op)
        assert card.state.applet.life_cycle == life_cycle  # type: ignore[union-attr]
        assert z0_of(card) is not None and verify(card, PIN) == 0x9000
        assert ("84F00F00" in record.transcript.headers()) is (life_cycle == 0x0F)


async def test_reenroll_needs_the_re_enroll_policy(world) -> None:
    tps = world()
    card = await enrolled(tps)
    tps.db.set_policy(card.state.cuid, "RE_ENROLL=NO")
    end_op, _, client = await tps.run(card, ENROLL)
    failed(end_op, 26)
    assert not client.of_type(ExtendedLoginRequest)  # the policy is checked before the login


async def test_enroll_of_an_unformatted_known_token_is_a_disabled_transition(world) -> None:
    tps, card = world(), new_card()
    tps.db.add(card.state.cuid, status=TokenStatus.UNFORMATTED)
    failed((await tps.run(card, ENROLL))[0], 26)


async def test_one_active_token_per_user(world) -> None:
    tps = world()
    await enrolled(tps)
    second = new_card()
    ok((await tps.run(second, FORMAT))[0])
    failed((await tps.run(second, ENROLL))[0], 34)
    relaxed = world(allow_multiple_active_tokens=True)
    await enrolled(relaxed)
    await enrolled(relaxed)


async def test_enroll_without_authentication(world) -> None:
    off = frozenset({"enroll"})
    failed((await world(auth_disabled=off).run(new_card(), ENROLL))[0], 14)
    tps = world(auth_disabled=off, quirks=CLEAN)
    card = new_card()
    end_op, record, client = await tps.run(card, ENROLL)
    ok(end_op)
    assert record.user_id == "demo" and not client.of_type(ExtendedLoginRequest)


async def test_so_key_enrolls_and_pin_reset_resolves_to_user_key(world) -> None:
    tps, card = world(default_policy=TokenPolicy(pin_reset=True)), new_card()
    so_key = (("tokenType", "soKey"), *ESC_EXTENSIONS[1:])
    ok((await tps.run(card, FORMAT, extensions=so_key))[0])
    end_op, record, _ = await tps.run(card, ENROLL, extensions=so_key)
    ok(end_op)
    token = tps.db.get(card.state.cuid)
    assert token is not None and token.token_type == "soKey" and len(token.certificates) == 2
    no_type = ESC_EXTENSIONS[1:]  # ESC sends no tokenType for a PIN reset
    ok((await tps.run(card, RESET, extensions=no_type))[0])
    switched_off = world(auth_disabled=frozenset({"enroll/soKey"}))
    failed((await switched_off.run(new_card(), ENROLL, extensions=so_key))[0], 14)


async def test_scp02_card_enrolls(world) -> None:
    tps = world()
    card = await enrolled(tps, new_card(protocol=ScpProtocol.SCP02))
    assert card.state.applet.life_cycle == LifeCycle.PERSONALIZED  # type: ignore[union-attr]
    assert verify(card, PIN) == 0x9000


async def test_key_info_must_match_the_token_db(world) -> None:
    tps = world()
    card = await enrolled(tps)
    tps.db.update(card.state.cuid, key_info="0201")
    failed((await tps.run(card, ENROLL))[0], 17)


async def test_new_pin_outside_the_bounds_is_status_1(world) -> None:
    tps, card = world(), new_card()
    ok((await tps.run(card, FORMAT))[0])
    failed((await tps.run(card, ENROLL, client=LoopbackClient(card, pin="12")))[0], 1)


def _tampered_key_blob(card: SimulatedCard) -> Reply:
    """Flip a modulus byte in the first I/O buffer read after each GENERATE KEY."""
    after_keygen = False

    def override(message: TpsMessage) -> Message | None:
        nonlocal after_keygen
        if not isinstance(message, TokenPduRequest):
            return None
        if message.apdu[:2] == b"\x84\x0c":
            after_keygen = True
        elif after_keygen and message.apdu[:2] == b"\x84\x56":
            after_keygen = False
            answer = bytearray(card.transmit(message.apdu))
            answer[20] ^= 0x01  # len(2) 00 01 size(2) modLen(2), then the modulus
            return TokenPduResponse(bytes(answer))
        return None

    return override


async def test_keygen_proof_verifies_when_checked(world) -> None:
    tps = world(verify_proof=True)
    await enrolled(tps)
    # A key blob changed on the way is certified unless the proof is checked.
    for verify_proof, expected in ((False, ok), (True, lambda end_op: failed(end_op, 7))):
        tps, card = world(verify_proof=verify_proof, quirks=CLEAN), new_card()
        ok((await tps.run(card, FORMAT))[0])
        client = LoopbackClient(card, override=_tampered_key_blob(card))
        expected((await tps.run(card, ENROLL, client=client))[0])


async def test_known_token_without_applet_crashes_when_faithful(world) -> None:
    for quirks, expect_end_op in ((frozenset(Quirk), False), (CLEAN, True)):
        tps, card = world(quirks=quirks), new_card()
        tps.db.add(card.state.cuid, status=TokenStatus.FORMATTED)
        end_op, record, _ = await tps.run(card, ENROLL)
        assert (end_op is not None) is expect_end_op, record.outcome
        if expect_end_op:
            ok(end_op)


# -- login failures and misbehaving clients ------------------------------------------------


def _wrong_type(message: TpsMessage) -> Message | None:
    if isinstance(message, ExtendedLoginRequest):
        return StatusUpdateResponse(1)
    return None


def _no_password(message: TpsMessage) -> Message | None:
    if isinstance(message, ExtendedLoginRequest):
        return ExtendedLoginResponse((("UID", Secret("demo")),))
    return None


@pytest.mark.parametrize(
    ("client_options", "extensions"),
    [
        ({"password": "wrong"}, ESC_EXTENSIONS),
        ({"uid": "nobody"}, ESC_EXTENSIONS),
        ({"override": _wrong_type}, ESC_EXTENSIONS),
        ({"override": _no_password}, ESC_EXTENSIONS),
        ({}, (*ESC_EXTENSIONS, ("locale", "fr"))),
    ],
    ids=["wrong-password", "unknown-user", "wrong-type", "missing-password", "locale"],
)
async def test_login_failures_are_status_14_and_leave_the_token_alone(
    world, client_options: dict[str, object], extensions: tuple[tuple[str, str], ...]
) -> None:
    tps = world()
    card = await enrolled(tps)
    before = card.state.to_json()
    client = LoopbackClient(card, **client_options)  # type: ignore[arg-type]
    end_op, _, _ = await tps.run(card, ENROLL, client=client, extensions=extensions)
    failed(end_op, 14)
    assert card.state.to_json() == before
    assert tps.db.get(card.state.cuid).status is TokenStatus.ACTIVE  # type: ignore[union-attr]


def _malformed_at_keygen(message: TpsMessage) -> Message | None:
    if isinstance(message, TokenPduRequest) and message.apdu[:2] == b"\x84\x0c":
        return NewPinResponse(Secret("1234"))  # not a TOKEN_PDU_RESPONSE: ClassCastException
    return None


def _gone_at_keygen(message: TpsMessage) -> Message | None:
    if isinstance(message, TokenPduRequest) and message.apdu[:2] == b"\x84\x0c":
        raise ClientGone("card pulled")
    return None


@pytest.mark.parametrize("override", [_malformed_at_keygen, _gone_at_keygen])
async def test_broken_client_in_the_cert_loop_ends_without_end_op_or_format(
    world, override: Reply
) -> None:
    tps, card = world(), new_card()
    ok((await tps.run(card, FORMAT))[0])
    client = LoopbackClient(card, override=override)
    end_op, record, _ = await tps.run(card, ENROLL, client=client)
    assert end_op is None and record.outcome
    apdus = [m.apdu for m in client.of_type(TokenPduRequest)]  # type: ignore[attr-defined]
    assert apdus[-1][:2] == b"\x84\x0c"  # nothing after GENERATE KEY: no auto-format


async def test_blank_card_answers_coolkey_commands_with_6e00(world) -> None:
    tps, card = world(), new_card()
    _, record, _ = await tps.run(card, FORMAT)
    answers = dict(zip(record.transcript.headers(), record.transcript.responses, strict=False))
    assert answers["B03C0000"][-2:] == b"\x6e\x00"


# -- 6982 on each kind of secure-messaged APDU ---------------------------------------------


@pytest.mark.parametrize(
    ("operation", "ins", "status", "clean_status"),
    [
        (FORMAT, 0x82, 17, 17),  # EXTERNAL AUTHENTICATE
        (FORMAT, 0xE6, 19, 19),  # INSTALL
        (FORMAT, 0xE8, 19, 19),  # LOAD
        (FORMAT, 0xE4, 19, 19),  # DELETE: ignored, but the card dropped the channel
        (FORMAT, 0xF4, 19, 19),  # SET ISSUER INFO
        (ENROLL, 0x04, 4, 4),  # SET PIN
        (ENROLL, 0x40, 4, 4),  # CREATE PIN: ignored, the channel is gone for SET PIN
        (ENROLL, 0x5A, 7, 7),  # CREATE OBJECT (z0)
        (ENROLL, 0x54, 8, 8),  # WRITE OBJECT (z0)
        (ENROLL, 0xF0, 6, 6),  # SET LIFECYCLE
        (ENROLL, 0x55, 0, 7),  # CLEAR KEY SLOTS: ignored by the Java TPS
        (RESET, 0x04, 4, 4),  # SET PIN in a pin reset
    ],
)
async def test_wrong_mac_gives_the_status_of_the_failed_apdu(
    world, operation: int, ins: int, status: int, clean_status: int
) -> None:
    for quirks, expected in ((frozenset(Quirk), status), (CLEAN, clean_status)):
        policy = TokenPolicy(pin_reset=True)
        tps = world(quirks=quirks, default_policy=policy)
        card = new_card()
        if operation != FORMAT:
            ok((await tps.run(card, FORMAT))[0])
        if operation == RESET:
            ok((await tps.run(card, ENROLL))[0])
        tps.services = replace(
            tps.services, config=replace(tps.config, faults=Faults(wrong_mac_ins=frozenset({ins})))
        )
        end_op, _, _ = await tps.run(card, operation)
        assert end_op is not None
        assert end_op.message == expected and end_op.result == (1 if expected else 0)


async def test_card_side_mac_failure_knob_gives_the_same_status(world) -> None:
    tps, card = world(), new_card()
    card.knobs.mac_failure_ins.add(0x82)
    failed((await tps.run(card, FORMAT))[0], 17)


@pytest.mark.parametrize("ins", [0x0C, 0x56])
async def test_cert_loop_failure_auto_format(world, ins: int) -> None:
    # Faithful: the auto-format reuses the session's card-manager selection, so its GP
    # commands reach the CoolKey applet, INSTALL is refused, and END_OP is 19 with the
    # card untouched. With that quirk off the card is wiped and END_OP is 7.
    for quirks, status, wiped in (
        (frozenset(Quirk), 19, False),
        (frozenset(Quirk) - {Quirk.STICKY_SELECTION}, 7, True),
        (CLEAN, 7, False),
    ):
        tps, card = world(quirks=quirks), new_card()
        ok((await tps.run(card, FORMAT))[0])
        tps.services = replace(
            tps.services, config=replace(tps.config, faults=Faults(wrong_mac_ins=frozenset({ins})))
        )
        end_op, record, _ = await tps.run(card, ENROLL)
        failed(end_op, status)
        applet = card.state.applet
        assert applet is not None
        assert (not applet.pins) is wiped, quirks


# -- PIN RESET -----------------------------------------------------------------------------


async def test_pin_reset_sets_the_new_pin(world) -> None:
    tps = world(default_policy=TokenPolicy(pin_reset=True))
    card = await enrolled(tps)
    end_op, record, client = await tps.run(card, RESET, client=LoopbackClient(card, pin="987654"))
    ok(end_op)
    assert end_op.operation == RESET
    assert verify(card, "987654") == 0x9000 and verify(card, PIN) == 0x9C02
    assert [p for p, _ in record.transcript.progress] == [10, 15, 100]
    headers = record.transcript.headers()
    assert headers[:7] == GET_APPLET_INFO
    assert headers[7:13] == [
        "00A40400", "80CA0066", "80CA0066", "80CA00E0", "80500000", "84820300",
    ]  # fmt: skip
    assert headers[13:20] == GET_APPLET_INFO
    assert headers[20:] == ["80500000", "84820300", "8440007F", "84040000"]


async def test_pin_reset_needs_policy_and_an_active_token(world) -> None:
    tps = world()
    card = await enrolled(tps)
    failed((await tps.run(card, RESET))[0], 27)  # Dogtag's default policy: PIN_RESET=NO
    allowed = world(default_policy=TokenPolicy(pin_reset=True))
    formatted = new_card()
    ok((await allowed.run(formatted, FORMAT))[0])
    failed((await allowed.run(formatted, RESET))[0], 27)


async def test_pin_reset_to_no_policy_allows_one_reset(world) -> None:
    tps = world(default_policy=TokenPolicy(pin_reset=True, reset_pin_reset_to_no=True))
    card = await enrolled(tps)
    ok((await tps.run(card, RESET))[0])
    failed((await tps.run(card, RESET))[0], 27)


async def test_pin_reset_of_unknown_token(world) -> None:
    failed((await world().run(new_card(formatted_card), RESET))[0], 1)
    failed((await world(quirks=CLEAN).run(new_card(formatted_card), RESET))[0], 16)


async def test_pin_reset_without_authentication(world) -> None:
    policy = TokenPolicy(pin_reset=True)
    tps = world(default_policy=policy, auth_disabled=frozenset({"pinReset"}))
    card = await enrolled(tps)
    failed((await tps.run(card, RESET))[0], 14)


# -- operations the Java TPS does not implement --------------------------------------------


@pytest.mark.parametrize(
    ("operation", "end_operation"),
    [(OperationType.UNBLOCK, 2), (OperationType.RENEW, 4), (7, 0)],
)
async def test_unimplemented_operations(world, operation: int, end_operation: int) -> None:
    card = new_card()
    end_op, _, client = await world().run(card, operation)
    assert end_op == EndOp(end_operation, 1, 0)
    assert not client.seen


async def test_operation_zero_falls_through_to_enroll(world) -> None:
    tps, card = world(), new_card()
    ok((await tps.run(card, FORMAT))[0])
    end_op, _, _ = await tps.run(card, 0)
    ok(end_op)
    assert end_op.operation == ENROLL


async def test_token_db_record_after_format_of_unknown_token_is_formatted(world) -> None:
    tps, card = world(), new_card()
    await tps.run(card, FORMAT)
    token = tps.db.get(card.state.cuid)
    assert isinstance(token, TokenRecord) and token.token_type == "userKey"
