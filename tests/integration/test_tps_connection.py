# SPDX-License-Identifier: GPL-2.0-or-later
"""``TpsConnection`` against a behavioural fake TPS on loopback, plain and TLS.

The fake behaves like Dogtag's Java ``TPSServlet`` and ``TPSConnection``: it refuses
anything but a chunked POST, flushes ``200`` before it reads BEGIN_OP, reads the client
stream by ``s=`` framing and answers one message per chunk. Each test gives it a script
(a coroutine) for the conversation. It speaks HTTP with h11 in the server role and TPS
with escd's own framer and codec, which these tests also exercise in that direction.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest
from cryptography.hazmat.primitives import serialization

from escd.config import TpsConfig
from escd.errors import (
    ConnectionLostError,
    HttpStatusError,
    InsecureUrlError,
    LocalTpsProtocolError,
    MessageTimeoutError,
    NetworkError,
    RemoteTpsProtocolError,
    TlsUntrustedError,
)
from escd.log import TRAFFIC, Secret
from escd.model import OperationType
from escd.sim.ca import CertificateAuthority
from escd.tps.codec import decode, encode
from escd.tps.connection import TpsConnection
from escd.tps.framing import MessageFramer
from escd.tps.messages import (
    BeginOp,
    EndOp,
    Message,
    NewPinRequest,
    NewPinResponse,
    StatusUpdateRequest,
    StatusUpdateResponse,
    TokenPduRequest,
    TokenPduResponse,
    TpsMessage,
)
from escd.tps.session import (
    Finished,
    ResetCard,
    SendApdu,
    SendMessage,
    TpsSession,
)
from escd.trust import format_fingerprint

VERSION = "1.2.3"
BEGIN = BeginOp(OperationType.FORMAT, (("clientVersion", f"escd {VERSION}"),))
SELECT = TokenPduRequest(bytes.fromhex("00A4040000"))


class ServerSide:
    """The fake's end of one conversation, handed to a script."""

    def __init__(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.framer = MessageFramer()
        self.pending: list[bytes] = []
        self.received: list[Message] = []
        self.client_state_at_first_send: type[h11._state._SentinelBase] | None = None
        self.client_ended_body = False

    async def _event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.reader.read(65536))

    async def read(self) -> Message:
        """The next client message, by s= framing over the de-chunked body."""
        while not self.pending:
            event = await self._event()
            if isinstance(event, h11.Data):
                self.pending.extend(self.framer.feed(bytes(event.data)))
            elif isinstance(event, h11.EndOfMessage):
                self.client_ended_body = True
                raise EOFError("the client ended its body")
            else:
                raise EOFError(f"the client went away: {event!r}")
        message = decode(self.pending.pop(0))
        self.received.append(message)
        return message

    async def send_raw(self, *chunks: bytes) -> None:
        """Send each argument as one chunk, flushed on its own."""
        if self.client_state_at_first_send is None:
            self.client_state_at_first_send = self.conn.their_state
        for chunk in chunks:
            self.writer.write(self.conn.send(h11.Data(data=chunk)) or b"")
            await self.writer.drain()

    async def send(self, message: TpsMessage) -> None:
        await self.send_raw(encode(message))

    async def end(self) -> None:
        self.writer.write(self.conn.send(h11.EndOfMessage()) or b"")
        await self.writer.drain()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def wait_for_client_end(self) -> None:
        """Read the rest of the request; note whether it ended with the last chunk."""
        try:
            while True:
                event = await self._event()
                if isinstance(event, h11.EndOfMessage):
                    self.client_ended_body = True
                    return
                if not isinstance(event, h11.Data):
                    return
        except (h11.RemoteProtocolError, ConnectionError):
            return


Script = Callable[[ServerSide], Awaitable[None]]


@dataclass
class FakeTps:
    """A loopback TPS servlet running ``script`` for every conversation."""

    script: Script
    ssl_context: ssl.SSLContext | None = None
    refuse_with: int | None = None
    requests: list[h11.Request] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    sides: list[ServerSide] = field(default_factory=list)
    #: Anything a script raised besides the client going away: a failed expectation.
    failures: list[BaseException] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}/tps/tps"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def settled(self) -> None:
        """Wait until every conversation's script and handler have finished."""
        async with asyncio.timeout(5):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        recording = _RecordingReader(reader, self.raw)
        conn = h11.Connection(h11.SERVER)
        side = ServerSide(conn, recording, writer)  # type: ignore[arg-type]
        try:
            event = await side._event()
            if not isinstance(event, h11.Request):
                return  # e.g. a second handshake that only looks at the certificate
            self.requests.append(event)
            headers = {name.lower(): value for name, value in event.headers}
            # TPSServlet.service(): POST only (405), chunked only (400), both without a body.
            status = self.refuse_with
            if event.method != b"POST":
                status = 405
            elif headers.get(b"transfer-encoding") != b"chunked":
                status = 400
            if status is not None:
                writer.write(conn.send(h11.Response(status_code=status, headers=[])) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                return
            # flushBuffer(): the 200 goes out before BEGIN_OP is read.
            response = h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")])
            writer.write(conn.send(response) or b"")
            await writer.drain()
            self.sides.append(side)
            await self.script(side)
        except (EOFError, ConnectionError, h11.RemoteProtocolError):
            pass
        except Exception as error:  # a failed expectation, reported by the fixture
            self.failures.append(error)
        finally:
            writer.close()
            self._tasks.discard(task)


class _RecordingReader:
    """A stream reader that keeps a copy of everything the client sent."""

    def __init__(self, reader: asyncio.StreamReader, sink: bytearray) -> None:
        self._reader = reader
        self._sink = sink

    async def read(self, size: int) -> bytes:
        data = await self._reader.read(size)
        self._sink += data
        return data


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[FakeTps]]]:
    servers: list[FakeTps] = []

    async def start(script: Script, **options: object) -> FakeTps:
        server = FakeTps(script, **options)  # type: ignore[arg-type]
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()
    for server in servers:
        assert not server.failures, f"the fake TPS script failed: {server.failures!r}"


def connection(server: FakeTps, **options: object) -> TpsConnection:
    options.setdefault("allow_http", [server.origin])
    return TpsConnection(server.url, version=VERSION, **options)  # type: ignore[arg-type]


async def short_format(side: ServerSide) -> None:
    assert isinstance(await side.read(), BeginOp)
    await side.send(SELECT)
    assert isinstance(await side.read(), TokenPduResponse)
    await side.send(StatusUpdateRequest(100, "PROGRESS_DONE"))
    assert await side.read() == StatusUpdateResponse(100)
    await side.send(EndOp(5, 0, 0))
    await side.end()
    await side.wait_for_client_end()


async def run_short_format(client: TpsConnection) -> list[Message]:
    seen: list[Message] = []
    async with client:
        await client.open(encode(BEGIN))
        async for message in client.messages():
            seen.append(message)
            if isinstance(message, TokenPduRequest):
                await client.send_message(TokenPduResponse(b"\x90\x00"))
            elif isinstance(message, StatusUpdateRequest):
                await client.send_message(StatusUpdateResponse(message.current_state))
        await client.finish()
    return seen


# -- full duplex ---------------------------------------------------------------------------


async def test_conversation_runs_full_duplex_on_one_post(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(short_format)
    seen = await run_short_format(connection(server))
    await server.settled()

    assert seen == [SELECT, StatusUpdateRequest(100, "PROGRESS_DONE"), EndOp(5, 0, 0)]
    (request,) = server.requests
    assert (request.method, request.target) == (b"POST", b"/tps/tps")
    headers = dict(request.headers)
    assert headers[b"host"] == f"127.0.0.1:{server.port}".encode()
    assert headers[b"transfer-encoding"] == b"chunked"
    assert headers[b"content-type"] == b"text/plain"
    assert headers[b"user-agent"] == f"escd/{VERSION}".encode()
    assert b"expect" not in headers and b"content-length" not in headers
    # The server answered and sent its first request while the client body was open.
    (side,) = server.sides
    assert side.client_state_at_first_send is h11.SEND_BODY
    # The head and the first chunk went out together; each message is one chunk.
    begin = encode(BEGIN)
    assert bytes(server.raw).startswith(b"POST /tps/tps HTTP/1.1\r\n")
    assert b"\r\n\r\n%x\r\n%s\r\n" % (len(begin), begin) in bytes(server.raw)
    assert bytes(server.raw).endswith(b"\r\n0\r\n\r\n")
    assert side.client_ended_body
    assert side.received == [
        BEGIN,
        TokenPduResponse(b"\x90\x00"),
        StatusUpdateResponse(100),
    ]


async def test_session_and_connection_run_a_format_together(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(short_format)
    session = TpsSession(
        OperationType.FORMAT, atr=bytes.fromhex("3B7F"), version=VERSION, token_type=""
    )
    results = []
    async with connection(server) as client:
        actions = session.start()
        first = actions.pop(0)
        assert isinstance(first, SendMessage)
        await client.open(encode(first.message))
        while not results:
            if not actions:
                try:
                    actions = session.receive(await client.receive())
                except ConnectionLostError:
                    actions = session.connection_closed()
                continue
            action = actions.pop(0)
            match action:
                case SendMessage(message=message):
                    await client.send_message(message)
                case SendApdu():
                    actions.extend(session.card_responded(b"\x6a\x82"))
                case Finished(result=result):
                    results.append(result)
                case ResetCard():
                    pass
        await client.finish()
    await server.settled()
    (result,) = results
    assert result.succeeded
    begin, answer, _ = server.sides[0].received
    assert isinstance(begin, BeginOp)
    assert begin.extension("tokenATR") == "3B7F"
    assert begin.extension("clientVersion") == f"escd {VERSION}"
    assert answer == TokenPduResponse(b"\x6a\x82")


async def test_messages_are_found_across_and_within_chunks(serve) -> None:  # type: ignore[no-untyped-def]
    status = encode(StatusUpdateRequest(10, "PROGRESS_APPLET_BLOCK"))
    # The legacy TPS counts "\r\n0\r\n" inside END_OP's s= (legacy-pki AP_Session.cpp,
    # WriteMsg).
    legacy_end = b"s=47&msg_type=13&operation=5&result=0&message=0\r\n0\r\n"

    async def script(side: ServerSide) -> None:
        await side.read()
        await side.send_raw(encode(SELECT) + status)
        await side.send_raw(legacy_end[:3], legacy_end[3:20], legacy_end[20:])
        await side.end()

    server = await serve(script)
    async with connection(server) as client:
        await client.open(encode(BEGIN))
        seen = [message async for message in client.messages()]
    assert seen == [SELECT, StatusUpdateRequest(10, "PROGRESS_APPLET_BLOCK"), EndOp(5, 0, 0)]


# -- HTTP errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [(405, "method"), (400, "chunked"), (404, "path"), (500, "")],
)
async def test_http_error_status_is_reported_with_a_reason(serve, status: int, reason: str) -> None:  # type: ignore[no-untyped-def]
    server = await serve(short_format, refuse_with=status)
    async with connection(server) as client:
        await client.open(encode(BEGIN))
        with pytest.raises(HttpStatusError) as caught:
            await client.receive()
    assert caught.value.status == status
    assert reason in caught.value.message
    assert str(status) in caught.value.message


# -- the connection breaks -----------------------------------------------------------------


async def test_server_dropping_the_connection_mid_conversation_is_connection_lost(serve) -> None:  # type: ignore[no-untyped-def]
    async def script(side: ServerSide) -> None:
        await side.read()
        await side.send(SELECT)
        await side.read()
        side.abort()

    server = await serve(script)
    async with connection(server) as client:
        await client.open(encode(BEGIN))
        assert await client.receive() == SELECT
        await client.send_message(TokenPduResponse(b"\x90\x00"))
        with pytest.raises(ConnectionLostError):
            await client.receive()


async def test_server_closing_in_the_middle_of_a_message_is_connection_lost(serve) -> None:  # type: ignore[no-untyped-def]
    async def script(side: ServerSide) -> None:
        await side.read()
        await side.send_raw(encode(SELECT)[:10])
        side.abort()

    server = await serve(script)
    async with connection(server) as client:
        await client.open(encode(BEGIN))
        with pytest.raises(ConnectionLostError):
            await client.receive()


async def test_response_ending_without_end_op_is_connection_lost(serve) -> None:  # type: ignore[no-untyped-def]
    async def script(side: ServerSide) -> None:
        await side.read()
        await side.send_raw(encode(SELECT)[:10])
        await side.end()

    server = await serve(script)
    async with connection(server) as client:
        await client.open(encode(BEGIN))
        with pytest.raises(ConnectionLostError, match="middle of a message"):
            await client.receive()


async def test_silent_server_is_a_message_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    async def script(side: ServerSide) -> None:
        await side.read()
        await asyncio.Event().wait()

    server = await serve(script)
    async with connection(server, message_timeout=0.2) as client:
        await client.open(encode(BEGIN))
        with pytest.raises(MessageTimeoutError):
            await client.receive()


async def test_server_that_stops_reading_is_a_message_timeout_while_sending(serve) -> None:  # type: ignore[no-untyped-def]
    async def script(side: ServerSide) -> None:
        await side.read()
        await asyncio.Event().wait()

    server = await serve(script)
    async with connection(server, message_timeout=0.3) as client:
        await client.open(encode(BEGIN))
        with pytest.raises(MessageTimeoutError, match="took no data"):
            async with asyncio.timeout(30):  # until the kernel's buffers are full
                while True:
                    await client.send(b"s=1048576&" + bytes(1 << 20))


async def test_server_gone_is_connection_lost_while_sending(serve) -> None:  # type: ignore[no-untyped-def]
    gone = asyncio.Event()

    async def script(side: ServerSide) -> None:
        await side.read()
        side.abort()
        gone.set()

    server = await serve(script)
    async with connection(server) as client:
        await client.open(encode(BEGIN))
        await gone.wait()
        with pytest.raises(ConnectionLostError, match="while sending"):
            async with asyncio.timeout(5):
                while True:  # the first write may still be taken before the reset arrives
                    await client.send_message(TokenPduResponse(b"\x90\x00"))


async def test_undecodable_server_message_is_a_remote_protocol_error(serve) -> None:  # type: ignore[no-untyped-def]
    async def script(side: ServerSide) -> None:
        await side.read()
        await side.send_raw(b"s=11&msg_type=99")
        await asyncio.Event().wait()

    server = await serve(script)
    async with connection(server) as client:
        await client.open(encode(BEGIN))
        with pytest.raises(RemoteTpsProtocolError, match="msg_type"):
            await client.receive()


async def test_broken_chunking_is_a_remote_protocol_error_without_the_data(serve) -> None:  # type: ignore[no-untyped-def]
    set_pin = b"s=46&msg_type=9&pdu_size=5&pdu_data=%84%04%00%00%00"

    async def script(side: ServerSide) -> None:
        await side.read()
        # A chunk that carries only "s=46&", then the rest of the message without a chunk
        # header of its own: h11 reads it as one, and quotes it in its complaint.
        side.writer.write(b"5\r\n" + set_pin[:5] + b"\r\n" + set_pin[5:] + b"\r\n")
        await side.writer.drain()
        await asyncio.Event().wait()

    server = await serve(script)
    async with connection(server) as client:
        await client.open(encode(BEGIN))
        with pytest.raises(RemoteTpsProtocolError) as caught:
            await client.receive()
    assert caught.value.message == "the TPS broke HTTP/1.1: illegal chunk header"


async def test_oversized_server_message_is_refused(serve) -> None:  # type: ignore[no-untyped-def]
    async def script(side: ServerSide) -> None:
        await side.read()
        await side.send(TokenPduRequest(b"\x00" * 200))
        await asyncio.Event().wait()

    server = await serve(script)
    async with connection(server, max_message_size=100) as client:
        await client.open(encode(BEGIN))
        with pytest.raises(RemoteTpsProtocolError, match="limit"):
            await client.receive()


async def test_nothing_listening_is_a_network_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    url = f"http://127.0.0.1:{port}/tps/tps"
    client = TpsConnection(url, version=VERSION, allow_http=[f"http://127.0.0.1:{port}"])
    async with client:
        with pytest.raises(NetworkError) as caught:
            await client.open(encode(BEGIN))
    assert type(caught.value) is NetworkError


async def test_tls_handshake_that_never_finishes_is_a_connect_timeout() -> None:
    held: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = TpsConnection(
        f"https://127.0.0.1:{port}/tps/tps",
        version=VERSION,
        ssl_context=ssl.create_default_context(),
        connect_timeout=0.3,
    )
    try:
        async with client:
            with pytest.raises(NetworkError, match="within"):
                await client.open(encode(BEGIN))
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


# -- TLS -----------------------------------------------------------------------------------


@dataclass
class Pki:
    ca_file: Path
    server_context: ssl.SSLContext
    leaf_der: bytes


def make_pki(directory: Path, hosts: list[str]) -> Pki:
    """A throw-away CA and a server certificate for ``hosts``; the server sends no chain."""
    ca = CertificateAuthority.generate("CN=escd test CA")
    credentials = ca.server_credentials(hosts)
    leaf = credentials.certificate
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.certificate_pem)
    chain = directory / "server.pem"
    chain.write_bytes(credentials.key_pem + leaf.public_bytes(serialization.Encoding.PEM))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(chain)
    return Pki(ca_file, server_context, leaf.public_bytes(serialization.Encoding.DER))


LOOPBACK_HOSTS = ["localhost", "127.0.0.1"]


async def test_conversation_over_tls_with_a_trusted_ca(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path, LOOPBACK_HOSTS)
    server = await serve(short_format, ssl_context=pki.server_context)
    trusting = ssl.create_default_context(cafile=str(pki.ca_file))
    seen = await run_short_format(connection(server, ssl_context=trusting, allow_http=()))
    await server.settled()
    assert seen[-1] == EndOp(5, 0, 0)
    assert server.sides[0].client_ended_body


async def test_untrusted_certificate_names_its_fingerprint(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path, LOOPBACK_HOSTS)
    server = await serve(short_format, ssl_context=pki.server_context)
    trusting_nobody = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    async with connection(server, ssl_context=trusting_nobody) as client:
        with pytest.raises(TlsUntrustedError) as caught:
            await client.open(encode(BEGIN))
    error = caught.value
    assert (error.host, error.port) == ("127.0.0.1", server.port)
    assert error.fingerprint == format_fingerprint(hashlib.sha256(pki.leaf_der).hexdigest())
    assert error.reason
    assert not server.requests


async def test_certificate_for_another_host_is_untrusted(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path, ["tps.example.com"])
    server = await serve(short_format, ssl_context=pki.server_context)
    trusting = ssl.create_default_context(cafile=str(pki.ca_file))
    async with connection(server, ssl_context=trusting) as client:
        with pytest.raises(TlsUntrustedError) as caught:
            await client.open(encode(BEGIN))
    assert "mismatch" in caught.value.reason.lower()
    assert caught.value.fingerprint == format_fingerprint(hashlib.sha256(pki.leaf_der).hexdigest())


# -- plain http policy ---------------------------------------------------------------------


def test_plain_http_is_refused_unless_its_origin_is_allowed() -> None:
    with pytest.raises(InsecureUrlError):
        TpsConnection("http://tps.example.com:8080/tps/tps", version=VERSION)
    with pytest.raises(InsecureUrlError):
        TpsConnection(
            "http://tps.example.com:8080/tps/tps",
            version=VERSION,
            allow_http=["http://tps.example.com:8081"],
        )
    TpsConnection(
        "http://TPS.example.com:8080/tps/tps",
        version=VERSION,
        allow_http=["http://tps.example.com:8080"],
    )
    with pytest.raises(InsecureUrlError):
        TpsConnection("ftp://tps.example.com/tps/tps", version=VERSION)


async def test_configured_timeout_and_allow_list_are_used(serve) -> None:  # type: ignore[no-untyped-def]
    async def script(side: ServerSide) -> None:
        await side.read()
        await asyncio.Event().wait()

    server = await serve(script)
    with pytest.raises(InsecureUrlError):
        TpsConnection.from_config(server.url, TpsConfig(), version=VERSION)
    config = TpsConfig(allow_http=(server.origin,), message_timeout=0.2)
    async with TpsConnection.from_config(server.url, config, version=VERSION) as client:
        await client.open(encode(BEGIN))
        with pytest.raises(MessageTimeoutError, match="0.2 s"):
            await client.receive()


async def test_allowed_plain_http_origin_carries_the_conversation(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(short_format)
    with pytest.raises(InsecureUrlError):  # the same server, its origin not listed
        connection(server, allow_http=())
    seen = await run_short_format(connection(server, allow_http=[server.origin]))
    assert seen[-1] == EndOp(5, 0, 0)


# -- secrets and misuse --------------------------------------------------------------------


async def test_traffic_log_shows_messages_without_secrets(  # type: ignore[no-untyped-def]
    serve, caplog: pytest.LogCaptureFixture
) -> None:
    set_pin = TokenPduRequest(bytes.fromhex("8404000006") + b"918273")

    async def script(side: ServerSide) -> None:
        await side.read()
        await side.send(NewPinRequest(4, 10))
        await side.read()
        await side.send(set_pin)
        await side.read()
        await side.send(EndOp(1, 0, 0))
        await side.end()

    server = await serve(script)
    caplog.set_level(TRAFFIC, logger="escd.tps.connection")
    pin = Secret("918273")
    async with connection(server) as client:
        await client.open(encode(BEGIN))
        assert await client.receive() == NewPinRequest(4, 10)
        await client.send_message(NewPinResponse(pin))
        assert await client.receive() == set_pin
        await client.send_message(TokenPduResponse(b"918273\x90\x00"))
        assert await client.receive() == EndOp(1, 0, 0)
        await client.finish()
    assert server.sides[0].received[1] == NewPinResponse(Secret("918273"))
    log = caplog.text
    assert "NEW_PIN_RESPONSE" in log and "84 04 00 00" in log and "SW 9000" in log
    assert "918273" not in log and "393138" not in log.replace(" ", "")
    with pytest.raises(ValueError):
        pin.reveal()


async def test_using_a_connection_out_of_order_is_a_local_error(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(short_format)
    client = connection(server)
    with pytest.raises(LocalTpsProtocolError):
        await client.send(encode(BEGIN))
    with pytest.raises(LocalTpsProtocolError):
        await client.receive()
    await client.open(encode(BEGIN))
    with pytest.raises(LocalTpsProtocolError):
        await client.open(encode(BEGIN))
    await client.aclose()
    await client.aclose()
    with pytest.raises(LocalTpsProtocolError):
        await client.send(encode(StatusUpdateResponse(1)))
