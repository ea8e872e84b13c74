# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated Dogtag TPS end to end over HTTP(S), driven by escd's own client side.

A thin relay runs escd's ``TpsSession`` over ``TpsConnection`` and carries its actions
out against a ``SimulatedCard`` directly (no daemon, no pcscd): the same messages and
APDUs a real enrollment produces. Covers format → enroll → PIN reset on a blank card,
server-side keygen, login failure, every fault switch, the HTTP rules (405, 400),
phone home, the state directory, the thread runner, the CLI, and that the server's
logs carry no secret.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from escd.card.apdu import CommandApdu
from escd.card.objects import COMBINED_OBJECT_ID, decode_combined_object
from escd.errors import ConnectionLostError, EscdError, TpsOperationError
from escd.log import TRAFFIC, Secret
from escd.model import OperationType
from escd.phonehome.parser import parse_service_info
from escd.sim.ca import CertificateAuthority
from escd.sim.card import SimulatedCard, blank_card
from escd.sim.loadfile import COOLKEY_INSTANCE_AID
from escd.sim.state import LifeCycle
from escd.sim.tps import SimulatedTps
from escd.sim.tps_config import Faults, TokenPolicy, TpsConfig
from escd.sim.tps_db import TokenStatus, User, UserDirectory
from escd.tps import codec
from escd.tps.connection import TpsConnection
from escd.tps.framing import frame
from escd.tps.session import (
    AskUser,
    Finished,
    ResetCard,
    SendApdu,
    SendMessage,
    SessionResult,
    TpsSession,
)

PIN, NEW_PIN, PASSWORD = "135790", "246801", "s3cret-Pa55"
ENROLL, FORMAT, RESET = OperationType.ENROLL, OperationType.FORMAT, OperationType.RESET_PIN

#: Replaces the client's answer to one APDU with raw frame bytes (None: answer normally).
ApduHook = Callable[[bytes], bytes | None]


async def relay(
    tps: SimulatedTps,
    card: SimulatedCard,
    operation: OperationType,
    *,
    uid: str = "demo",
    password: str = "demo",
    pin: str = PIN,
    apdu_hook: ApduHook | None = None,
) -> SessionResult:
    """One operation: escd's session and connection, the card answering directly."""
    session = TpsSession(operation, atr=card.atr, version="test")
    context = tps.client_ssl_context() if tps.config.tls else None
    connection = TpsConnection(
        tps.url, version="test", ssl_context=context, allow_http=[tps.base_url], message_timeout=20
    )
    answers = {"UID": uid, "PASSWORD": password, "new_pin": pin}
    pending = deque(session.start())
    opened = False
    try:
        while True:
            while pending:
                action = pending.popleft()
                if isinstance(action, SendMessage):
                    if opened:
                        await connection.send_message(action.message)
                    else:
                        await connection.open(codec.encode(action.message))
                        opened = True
                elif isinstance(action, SendApdu):
                    raw = apdu_hook(action.apdu) if apdu_hook else None
                    if raw is not None:
                        await connection.send(raw)
                        session.card_responded(b"\x90\x00")
                        continue
                    pending.extend(session.card_responded(card.transmit(action.apdu)))
                elif isinstance(action, AskUser):
                    values: dict[str, Secret | str] = {
                        field.id: Secret(answers[field.id])
                        if field.is_secret
                        else answers[field.id]
                        for field in action.prompt.fields
                    }
                    pending.extend(session.user_answered(values))
                elif isinstance(action, ResetCard):
                    card.reset()
                elif isinstance(action, Finished):
                    if action.result.end_op is not None:
                        await connection.finish()
                    return action.result
            try:
                message = await connection.receive()
            except EscdError as error:
                pending.extend(session.connection_failed(error))
                continue
            pending.extend(session.receive(message))
    finally:
        await connection.aclose()


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


StartTps = Callable[..., Awaitable[SimulatedTps]]


@pytest.fixture
async def start_tps(ca: CertificateAuthority) -> AsyncIterator[StartTps]:
    running: list[SimulatedTps] = []

    async def start(config: TpsConfig | None = None, **kwargs: object) -> SimulatedTps:
        kwargs.setdefault("ca", ca)
        tps = SimulatedTps(config or TpsConfig(), **kwargs)  # type: ignore[arg-type]
        await tps.start()
        running.append(tps)
        return tps

    yield start
    for tps in running:
        await tps.stop()


def new_card() -> SimulatedCard:
    card = SimulatedCard(blank_card())
    card.power_on()
    return card


def verify(card: SimulatedCard, pin: str) -> int:
    card.transmit(CommandApdu(0x00, 0xA4, 0x04, 0x00, COOLKEY_INSTANCE_AID).encode())
    answer = card.transmit(CommandApdu(0xB0, 0x42, 0x00, 0x00, pin.encode()).encode())
    return int.from_bytes(answer[-2:], "big")


def tps_status(result: SessionResult) -> int:
    assert isinstance(result.error, TpsOperationError), result.error
    return result.error.tps_status


async def test_blank_card_format_enroll_and_pin_reset_over_tls(start_tps: StartTps) -> None:
    tps = await start_tps(TpsConfig(default_policy=TokenPolicy(pin_reset=True)))
    assert tps.url.startswith("https://127.0.0.1:") and tps.url.endswith("/tps/tps")
    card = new_card()

    result = await relay(tps, card, FORMAT)
    assert result.succeeded, result.error
    applet = card.state.applet
    assert applet is not None and applet.life_cycle == LifeCycle.SELECTABLE
    assert applet.issuer_info.rstrip(b"\x00").decode() == tps.phone_home_url

    result = await relay(tps, card, ENROLL)
    assert result.succeeded, result.error
    assert card.state.applet.life_cycle == LifeCycle.PERSONALIZED  # type: ignore[union-attr]
    z0 = decode_combined_object(bytes(card.state.applet.find_object(COMBINED_OBJECT_ID).data))  # type: ignore[union-attr]
    assert z0.cuid == card.state.cuid and len(z0.certificates) == 2
    for cert_object in z0.certificates:
        certificate = x509.load_der_x509_certificate(cert_object.der)
        certificate.verify_directly_issued_by(
            x509.load_pem_x509_certificate(tps.ca_certificate_pem)
        )
    assert verify(card, PIN) == 0x9000
    token = tps.db.get(card.state.cuid)
    assert token is not None and token.status is TokenStatus.ACTIVE and token.user_id == "demo"

    result = await relay(tps, card, RESET, pin=NEW_PIN)
    assert result.succeeded, result.error
    assert verify(card, NEW_PIN) == 0x9000 and verify(card, PIN) == 0x9C02
    assert [s.end_op.message for s in tps.sessions if s.end_op] == [0, 0, 0]


async def test_server_side_keygen_over_plain_http(start_tps: StartTps) -> None:
    tps = await start_tps(TpsConfig(tls=False, server_keygen=frozenset({"encryption"})))
    assert tps.url.startswith("http://")
    card = new_card()
    assert (await relay(tps, card, FORMAT)).succeeded
    assert (await relay(tps, card, ENROLL)).succeeded
    token = tps.db.get(card.state.cuid)
    assert token is not None and len(token.archived_keys) == 1
    assert card.state.applet.keys[4].der == token.archived_keys[0][1]  # type: ignore[union-attr]
    headers = tps.sessions[-1].transcript.headers()
    assert "845A0000" in headers and "840A0405" in headers and "840C0405" not in headers


async def test_wrong_password_is_status_14_and_changes_nothing(start_tps: StartTps) -> None:
    tps = await start_tps()
    card = new_card()
    assert (await relay(tps, card, FORMAT)).succeeded
    before, record = card.state.to_json(), tps.db.get(card.state.cuid)
    result = await relay(tps, card, ENROLL, password="wrong")
    assert tps_status(result) == 14
    assert card.state.to_json() == before and tps.db.get(card.state.cuid) == record


@pytest.mark.parametrize("message", [1, 3, 40])
async def test_drop_at_message_n_is_a_lost_connection(start_tps: StartTps, message: int) -> None:
    tps = await start_tps(TpsConfig(faults=Faults(drop_at_message=message)))
    result = await relay(tps, new_card(), FORMAT)
    assert isinstance(result.error, ConnectionLostError), result.error
    assert result.end_op is None


async def test_end_op_failure_code_k_at_message_n(start_tps: StartTps) -> None:
    tps = await start_tps(TpsConfig(faults=Faults(fail_status=23, fail_at_message=5)))
    card = new_card()
    result = await relay(tps, card, FORMAT)
    assert tps_status(result) == 23 and result.end_op is not None
    assert result.end_op.operation == FORMAT
    assert card.state.applet is None  # the format never got as far as the applet


async def test_wrong_mac_gives_the_specs_status(start_tps: StartTps) -> None:
    tps = await start_tps(TpsConfig(faults=Faults(wrong_mac_ins=frozenset({0x82}))))
    assert tps_status(await relay(tps, new_card(), FORMAT)) == 17
    tps = await start_tps(TpsConfig(faults=Faults(wrong_mac_ins=frozenset({0xF0}))))
    card = new_card()
    assert (await relay(tps, card, FORMAT)).succeeded
    assert tps_status(await relay(tps, card, ENROLL)) == 6


async def test_delay_slows_every_message(start_tps: StartTps) -> None:
    tps = await start_tps(TpsConfig(faults=Faults(delay=0.005)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await relay(tps, new_card(), FORMAT)).succeeded
    assert loop.time() - started >= 0.005 * 100


async def test_malformed_pdu_response_in_the_cert_loop_ends_without_end_op(
    start_tps: StartTps,
) -> None:
    tps = await start_tps()
    card = new_card()
    assert (await relay(tps, card, FORMAT)).succeeded

    def hook(apdu: bytes) -> bytes | None:
        if apdu[:2] == b"\x84\x0c":
            return frame(b"msg_type=10&pdu_size=9&pdu_data=%90%00")  # pdu_size lies
        return None

    result = await relay(tps, card, ENROLL, apdu_hook=hook)
    assert isinstance(result.error, ConnectionLostError) and result.end_op is None
    headers = tps.sessions[-1].transcript.headers()
    assert headers[-1] == "840C0203" and "84E40000" not in headers[headers.index("840C0203") :]
    assert card.state.applet is not None and card.state.applet.pins  # not auto-formatted


async def test_http_rules_of_the_tps_servlet(start_tps: StartTps) -> None:
    tps = await start_tps()
    async with httpx.AsyncClient(verify=tps.client_ssl_context()) as client:
        assert (await client.get(tps.url)).status_code == 405
        assert (await client.post(tps.url, content=b"s=10&msg_type=2")).status_code == 400
        assert (await client.get(tps.base_url + "/other")).status_code == 404
        for method in ("GET", "POST"):
            answer = await client.request(method, tps.phone_home_url + "?cuid=40907001")
            assert answer.status_code == 200
            assert answer.headers["content-type"] == "application/xml"
            info = parse_service_info(answer.content)
            assert info.tps_url == tps.url and info.token_type == "userKey"
            assert info.issuer_name == "escd simulated TPS"


async def test_state_directory_survives_a_restart(start_tps: StartTps, tmp_path: Path) -> None:
    tps = await start_tps(TpsConfig(tls=False), state_dir=tmp_path, ca=None)
    card = new_card()
    assert (await relay(tps, card, FORMAT)).succeeded
    pem = tps.ca_certificate_pem
    assert tps.ca_certificate_path == tmp_path / "ca-cert.pem"
    assert "demo" in (tmp_path / "users.yaml").read_text()
    await tps.stop()
    (tmp_path / "users.yaml").write_text("alice: wonder\n")
    again = await start_tps(TpsConfig(tls=False), state_dir=tmp_path, ca=None)
    assert again.ca_certificate_pem == pem
    token = again.db.get(card.state.cuid)
    assert token is not None and token.status is TokenStatus.FORMATTED
    assert tps_status(await relay(again, card, ENROLL)) == 14  # demo is gone
    assert (await relay(again, card, ENROLL, uid="alice", password="wonder")).succeeded


def test_thread_runner_serves_synchronous_callers(ca: CertificateAuthority) -> None:
    with SimulatedTps(TpsConfig(tls=False), ca=ca).in_thread() as tps:
        answer = httpx.get(tps.phone_home_url)
        assert parse_service_info(answer.content).tps_url == tps.url
        card = new_card()
        result = asyncio.run(relay(tps, card, FORMAT))
        assert result.succeeded


async def test_server_logs_carry_no_secrets(
    start_tps: StartTps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(TRAFFIC, logger="escd.sim")
    users = UserDirectory([User("jdoe", PASSWORD, "John Doe")])
    tps = await start_tps(TpsConfig(default_policy=TokenPolicy(pin_reset=True)), users=users)
    card = new_card()
    for operation, pin in ((FORMAT, PIN), (ENROLL, PIN), (RESET, NEW_PIN)):
        result = await relay(tps, card, operation, uid="jdoe", password=PASSWORD, pin=pin)
        assert result.succeeded, result.error
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "TOKEN_PDU_REQUEST" in text and "jdoe" in text  # traffic was logged, redacted
    for secret in (PIN, NEW_PIN, PASSWORD, "pdu_data=", "%84%04"):
        assert secret not in text, secret


def test_command_line_prints_one_line_and_stops_on_sigterm(tmp_path: Path) -> None:
    command = [str(Path(sys.executable).with_name("escd-sim")), "tps", "--plain"]
    with subprocess.Popen(
        [*command, "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().split()
            assert line[0] == "TPS" and line[1].startswith("http://127.0.0.1:")
            assert line[2] == "phone-home" and line[3].endswith("/tps/phoneHome")
            assert line[4] == "CA" and Path(line[5]) == tmp_path / "ca-cert.pem"
            assert parse_service_info(httpx.get(line[3]).content).tps_url == line[1]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()


async def test_issuer_info_url_must_fit_the_card(ca: CertificateAuthority) -> None:
    tps = SimulatedTps(TpsConfig(tls=False, issuer_info_url="http://x.test/" + "a" * 220), ca=ca)
    with pytest.raises(ValueError):
        await tps.start()
