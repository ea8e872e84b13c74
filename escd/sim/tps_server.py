# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated TPS's HTTP edge: an h11 server over asyncio streams, plain or TLS.

Owns the transport as Dogtag's Java ``TPSServlet`` and ``TPSConnection`` do it:

* ``/tps/tps`` (and the legacy ``/nk_service``): ``POST`` only (405 otherwise, no
  body), ``Transfer-Encoding: chunked`` only (400 otherwise); then ``200`` and its
  headers are flushed *before* BEGIN_OP is read; the request body is read by ``s=``
  framing (never by chunks), one server message is written per chunk; after END_OP
  the response ends with the last chunk. A session that ends without END_OP closes the
  connection without it.
* ``/tps/phoneHome``: the ``ServiceInfo`` XML for any method (as Dogtag's ``TPSPhoneHome``).
* The fault switches that live on the wire: drop the connection instead of server
  message N, END_OP ``result=1 message=K`` instead of message N, a delay before every
  message.

Must not: decide anything about the operation (``escd.sim.tps_flows``), or log message
contents other than through ``codec.redacted`` (no PIN, password or ``pdu_data``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable

import h11

from escd.errors import LocalTpsProtocolError, RemoteTpsProtocolError
from escd.log import TRAFFIC
from escd.sim.tps_channel import ClientGone, SessionAborted, SessionBroken
from escd.sim.tps_config import Faults
from escd.sim.tps_flows import Services, SessionRecord, end_op_operation, run_session
from escd.tps import codec
from escd.tps.framing import MessageFramer
from escd.tps.messages import BeginOp, EndOp, Message, TpsMessage

logger = logging.getLogger(__name__)

TPS_PATHS = frozenset({"/tps/tps", "/nk_service"})
PHONE_HOME_PATH = "/tps/phoneHome"
_READ_SIZE = 65536
#: How long the server waits for the client's end of the request after END_OP.
_FINISH_TIMEOUT = 5.0
_SERVER_HEADER = ("Server", "escd-sim-tps")


class _Closed(Exception):  # noqa: N818 - an event
    """The HTTP connection is over (EOF, reset, or a protocol error from the peer)."""


class _HttpExchange:
    """One HTTP/1.1 connection driven with h11 in the server role."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, read_timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.read_timeout = read_timeout
        self.h11 = h11.Connection(h11.SERVER)

    async def next_event(self) -> h11.Event:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as err:
                raise _Closed(f"bad HTTP from the client: {err}") from err
            if event is h11.NEED_DATA:
                try:
                    async with asyncio.timeout(self.read_timeout):
                        data = await self.reader.read(_READ_SIZE)
                except (TimeoutError, OSError, ssl.SSLError) as err:
                    raise _Closed(f"read failed ({type(err).__name__})") from err
                self.h11.receive_data(data)
                continue
            if event is h11.PAUSED:
                raise _Closed("the client pipelined a second request")
            assert isinstance(event, h11.Event)
            return event

    async def send(self, *events: h11.Event) -> None:
        try:
            data = b"".join(self.h11.send(event) or b"" for event in events)
        except h11.LocalProtocolError as err:
            raise _Closed(f"cannot send: {err}") from err
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (OSError, ssl.SSLError) as err:
            raise _Closed(f"write failed ({type(err).__name__})") from err

    async def simple_response(
        self, status: int, body: bytes = b"", content_type: str = "text/plain"
    ) -> None:
        headers = [_SERVER_HEADER, ("Content-Length", str(len(body)))]
        if body:
            headers.append(("Content-Type", content_type))
        if status >= 400:
            headers.append(("Connection", "close"))
        events: list[h11.Event] = [h11.Response(status_code=status, headers=headers)]
        if body:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        await self.send(*events)

    def abort(self) -> None:
        """Close at once: the client sees the response end without its last chunk."""
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(_FINISH_TIMEOUT):
                await self.writer.wait_closed()


class _TpsPort:
    """The ``ClientPort`` of one session: s=-framed messages in, one chunk per message out."""

    def __init__(
        self, exchange: _HttpExchange, faults: Faults, max_message_size: int, operation: int
    ) -> None:
        self.exchange = exchange
        self.faults = faults
        self.framer = MessageFramer(max_message_size)
        self.frames: deque[bytes] = deque()
        self.sent = 0
        self.operation = operation
        self.aborted = False

    async def send(self, message: TpsMessage) -> None:
        self.sent += 1
        faults = self.faults
        if faults.delay:
            # The deliberate "delay" fault knob: the only sleep in the simulated TPS.
            await asyncio.sleep(faults.delay)
        if faults.drop_at_message == self.sent:
            logger.info("fault: dropping the connection instead of message %d", self.sent)
            self.aborted = True
            self.exchange.abort()
            raise SessionAborted(f"dropped at message {self.sent}")
        if faults.fail_status is not None and faults.fail_at_message == self.sent:
            logger.info(
                "fault: END_OP status %d instead of message %d", faults.fail_status, self.sent
            )
            await self._write(EndOp(self.operation, 1, faults.fail_status))
            raise SessionAborted(f"END_OP {faults.fail_status} at message {self.sent}")
        await self._write(message)

    async def _write(self, message: TpsMessage) -> None:
        frame = codec.encode(message)
        if logger.isEnabledFor(TRAFFIC):
            logger.log(TRAFFIC, "to client: %s", codec.redacted(message))
        try:
            await self.exchange.send(h11.Data(data=frame))
        except _Closed as err:
            raise ClientGone(str(err)) from err

    async def receive(self) -> Message:
        while not self.frames:
            try:
                event = await self.exchange.next_event()
            except _Closed as err:
                raise ClientGone(str(err)) from err
            if isinstance(event, h11.Data):
                try:
                    self.frames.extend(self.framer.feed(bytes(event.data)))
                except RemoteTpsProtocolError as err:
                    raise SessionBroken(f"bad message framing: {err.message}") from err
                continue
            # EndOfMessage or ConnectionClosed: TPSConnection.read() hits end of stream.
            raise ClientGone("the client ended its request")
        try:
            message = codec.decode(self.frames.popleft())
        except RemoteTpsProtocolError as err:
            raise SessionBroken(f"undecodable message: {err.message}") from err
        if logger.isEnabledFor(TRAFFIC):
            logger.log(TRAFFIC, "from client: %s", codec.redacted(message))
        return message


class TpsHttpServer:
    """The listener: routes requests, runs one TPS session per ``POST /tps/tps``."""

    def __init__(
        self,
        services: Services,
        *,
        ssl_context: ssl.SSLContext | None,
        phone_home_xml: Callable[[], bytes],
        sessions: deque[SessionRecord],
    ) -> None:
        self.services = services
        self.ssl_context = ssl_context
        self.phone_home_xml = phone_home_xml
        self.sessions = sessions
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock``, already bound and listening (so its port is known before)."""
        self._server = await asyncio.start_server(self._accept, sock=sock, ssl=self.ssl_context)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        exchange = _HttpExchange(reader, writer, self.services.config.message_timeout)
        try:
            await self._serve(exchange)
        except _Closed as err:
            logger.debug("connection closed: %s", err)
        except (ClientGone, SessionAborted) as err:
            logger.debug("session over: %s", err)
        except Exception:
            # A simulator bug: like a Java runtime exception, the session dies silently.
            logger.exception("simulated TPS session failed")
        finally:
            self._tasks.discard(task)
            await exchange.close()

    async def _serve(self, exchange: _HttpExchange) -> None:
        while True:
            event = await exchange.next_event()
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                raise _Closed(f"unexpected {type(event).__name__}")
            path = event.target.decode("latin-1").split("?", 1)[0]
            if path == PHONE_HOME_PATH:
                await self._drain_body(exchange)
                await exchange.simple_response(200, self.phone_home_xml(), "application/xml")
            elif path in TPS_PATHS:
                await self._tps(exchange, event)
                return
            else:
                await exchange.simple_response(404)
                return
            if exchange.h11.our_state is not h11.DONE or exchange.h11.their_state is not h11.DONE:
                return
            exchange.h11.start_next_cycle()

    async def _drain_body(self, exchange: _HttpExchange) -> None:
        while not isinstance(await exchange.next_event(), h11.EndOfMessage):
            pass

    async def _tps(self, exchange: _HttpExchange, request: h11.Request) -> None:
        # TPSServlet.service: POST only (405), chunked only (400), no other check.
        if request.method != b"POST":
            await exchange.simple_response(405)
            return
        encodings = [value for name, value in request.headers if name == b"transfer-encoding"]
        if encodings != [b"chunked"]:
            await exchange.simple_response(400)
            return
        headers = [_SERVER_HEADER, ("Transfer-Encoding", "chunked"), ("Content-Type", "text/plain")]
        response = h11.Response(status_code=200, headers=headers)
        # flushBuffer(): the 200 goes out before BEGIN_OP is read.
        await exchange.send(response)
        port = _TpsPort(
            exchange, self.services.config.faults, self.services.config.max_message_size, 0
        )
        try:
            begin = await port.receive()
        except (ClientGone, SessionBroken) as err:
            logger.info("no BEGIN_OP: %s", err)
            exchange.abort()
            return
        if not isinstance(begin, BeginOp):
            # "Wrong first message type" is an IOException: no END_OP (TPSSession:110).
            logger.info("first message was %s, not BEGIN_OP", begin.msg_type.name)
            exchange.abort()
            return
        port.operation = end_op_operation(int(begin.operation))
        record = SessionRecord(port.operation)
        self.sessions.append(record)
        logger.info("session: operation %d", int(begin.operation))
        try:
            end_op = await run_session(self.services, begin, port, record)
            if end_op is None:
                exchange.abort()
                return
            await port.send(end_op)
        except SessionAborted as err:
            record.outcome = str(err)
            if not port.aborted:
                # END_OP K was sent in place of a message: end the response normally.
                await self._finish(exchange)
            return
        logger.info(
            "session over: operation %d result %d status %d",
            end_op.operation,
            end_op.result,
            end_op.message,
        )
        await self._finish(exchange)

    async def _finish(self, exchange: _HttpExchange) -> None:
        """The last chunk; then wait (bounded) for the client to end its side or close."""
        await exchange.send(h11.EndOfMessage())
        with contextlib.suppress(_Closed, TimeoutError, LocalTpsProtocolError):
            async with asyncio.timeout(_FINISH_TIMEOUT):
                while exchange.h11.their_state is h11.SEND_BODY:
                    event = await exchange.next_event()
                    if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
