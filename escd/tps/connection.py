# SPDX-License-Identifier: GPL-2.0-or-later
"""``TpsConnection``: the full-duplex HTTP/1.1 exchange that carries one TPS operation.

One TCP (usually TLS) connection, one ``POST`` with a chunked request body that stays
open for the whole operation, and a chunked response read *while* that body is still
open (Dogtag TPSServlet.java and TPSConnection.java; ESC httpClientNss.cpp,
``httpSendChunked``). httpx/httpcore send the whole request body before reading, so h11
is driven directly here over asyncio streams.

This module is the edge of the TPS protocol:

* Rule 1: it moves bytes and nothing else. Message framing is ``escd.tps.framing``, the
  fields ``escd.tps.codec``, the conversation ``escd.tps.session``; the caller decides
  what to send and when.
* Rule 2: no foreign exception escapes. h11, ssl, OSError and timeouts become escd
  errors (``NetworkError``, ``TlsUntrustedError``, ``InsecureUrlError``,
  ``HttpStatusError``, ``ConnectionLostError``, ``MessageTimeoutError``,
  ``RemoteTpsProtocolError``) with ``raise … from``.

Messages are logged at TRAFFIC level through ``codec.redacted``: never a secret, never
APDU data. Typical use::

    async with TpsConnection(url, version=v, ssl_context=ctx) as connection:
        await connection.open(codec.encode(begin_op))
        async for message in connection.messages():
            ...  # session.receive(message), then connection.send_message(reply)
        await connection.finish()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import h11

from escd.config import TpsConfig
from escd.errors import (
    ConnectionLostError,
    HttpStatusError,
    LocalTpsProtocolError,
    MessageTimeoutError,
    NetworkError,
    RemoteTpsProtocolError,
)
from escd.log import TRAFFIC
from escd.tps import codec
from escd.tps.framing import DEFAULT_MAX_INCOMING, MessageFramer
from escd.tps.messages import EndOp, Message, TpsMessage, secrets_of
from escd.trust import check_url_allowed, describe_untrusted, normalize_host

logger = logging.getLogger(__name__)

#: ESC's shipped ``esc.tps.message.timeout`` (ESC esc-prefs.js).
DEFAULT_MESSAGE_TIMEOUT = 90.0
#: ESC's connect timeout (ESC NssHttpClient engine.h, ``_doConnect``).
DEFAULT_CONNECT_TIMEOUT = 30.0
#: How long ``finish`` waits for the end of the response after END_OP.
DEFAULT_FINISH_TIMEOUT = 5.0
_CLOSE_TIMEOUT = 5.0
_READ_SIZE = 65536

_STATUS_REASONS = {
    400: "the server wants a chunked request body",
    404: "no TPS answers at this path",
    405: "the server does not accept this HTTP method",
}


class TpsConnection:
    """One operation's HTTP/1.1 conversation with a TPS, full duplex over one connection."""

    def __init__(
        self,
        url: str,
        *,
        version: str,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        allow_http: Iterable[str] = (),
        message_timeout: float = DEFAULT_MESSAGE_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_message_size: int = DEFAULT_MAX_INCOMING,
    ) -> None:
        """Check ``url`` at once: https, or http to an origin in ``allow_http``.

        Over plain http the login password and the new PIN would cross the network in
        clear; ESC took any ``http://`` TPS URL (ESC CoolKeyHandler.cpp,
        ``CollectPreferences``).

        ``ssl_context`` decides whom to trust (``escd.trust`` builds it); for https
        without one, the system's default trust is used.
        """
        check_url_allowed(url, allow_http)
        parts = urlsplit(url)
        self._tls = parts.scheme.lower() == "https"
        self._host = normalize_host(parts.hostname or "")
        # ESC assumed port 80 even for https (ESC CoolKeyHandler.cpp, CollectPreferences);
        # the scheme's port is right.
        self._port = parts.port or (443 if self._tls else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        shown = f"[{self._host}]" if ":" in self._host else self._host
        default_port = 443 if self._tls else 80
        self._host_header = shown if self._port == default_port else f"{shown}:{self._port}"
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname or self._host
        self._version = version
        self._message_timeout = message_timeout
        self._connect_timeout = connect_timeout
        self._h11 = h11.Connection(h11.CLIENT)
        self._framer = MessageFramer(max_message_size)
        self._received: deque[Message] = deque()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ended = False
        self._eof = False
        self._closed = False

    @classmethod
    def from_config(
        cls,
        url: str,
        config: TpsConfig,
        *,
        version: str,
        ssl_context: ssl.SSLContext | None = None,
    ) -> TpsConnection:
        """A connection with the timeouts and plain-http allow list of ``tps`` config."""
        return cls(
            url,
            version=version,
            ssl_context=ssl_context,
            allow_http=config.allow_http,
            message_timeout=config.message_timeout,
            connect_timeout=config.connect_timeout,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- sending ---------------------------------------------------------------------------

    async def open(self, first_frame: bytes) -> None:
        """Connect, then send the request head and the first chunk (BEGIN_OP) together.

        The response is not awaited here: the Java TPS flushes ``200`` before it reads
        BEGIN_OP, the legacy one only with its first message; ``receive`` reads it.
        """
        if self._writer is not None or self._closed:
            raise LocalTpsProtocolError("the TPS connection was already opened")
        self._reader, self._writer = await self._connect()
        logger.debug("connected to %s:%s, starting the operation", self._host, self._port)
        headers = [
            ("Host", self._host_header),
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "text/plain"),
            ("User-Agent", f"escd/{self._version}"),
        ]
        self._log_sent(first_frame)
        try:
            head = self._h11.send(h11.Request(method="POST", target=self._target, headers=headers))
            chunk = self._h11.send(h11.Data(data=first_frame))
        except h11.LocalProtocolError as error:
            raise LocalTpsProtocolError(f"cannot write the request: {error}") from error
        await self._write((head or b"") + (chunk or b""))

    async def send(self, frame: bytes) -> None:
        """Send one framed message (``s=N&…``) as one chunk."""
        await self._send_chunk(frame, frame)

    async def send_message(self, message: TpsMessage) -> None:
        """Encode ``message``, drop the secrets it carried, and send it as one chunk."""
        try:
            frame = codec.encode(message)
        finally:
            # The secrets live on only in the encoded bytes; ESC kept them until its handler
            # was destroyed (ESC CoolKeyHandler.cpp, mCharPIN, mCharScreenNamePwd).
            for secret in secrets_of(message):
                secret.drop()
        # Logged as the message it is: decoding the frame again would only bring its
        # secrets back as new objects.
        await self._send_chunk(frame, message)

    async def _send_chunk(self, frame: bytes, shown: TpsMessage | bytes) -> None:
        if self._writer is None or self._closed:
            raise LocalTpsProtocolError("send() on a TPS connection that is not open")
        if not frame:
            raise LocalTpsProtocolError("refusing to send an empty chunk")
        self._log_sent(shown)
        try:
            data = self._h11.send(h11.Data(data=frame))
        except h11.LocalProtocolError as error:
            raise LocalTpsProtocolError(f"cannot send now: {error}") from error
        await self._write(data or b"")

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context: ssl.SSLContext | None = None
        if self._tls:
            context = self._ssl_context or ssl.create_default_context()
        where = f"{self._host}:{self._port}"
        try:
            async with asyncio.timeout(self._connect_timeout):
                return await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=context,
                    server_hostname=self._server_hostname if context else None,
                )
        except TimeoutError as error:
            raise NetworkError(
                f"cannot connect to {where} within {self._connect_timeout:g} s"
            ) from error
        except ssl.SSLCertVerificationError as error:
            raise await describe_untrusted(
                self._host, self._port, error, self._connect_timeout
            ) from error
        except ssl.SSLError as error:
            raise NetworkError(f"TLS with {where} failed ({error.reason or error})") from error
        except OSError as error:
            raise NetworkError(f"cannot connect to {where} ({_os_reason(error)})") from error

    async def _write(self, data: bytes) -> None:
        writer = self._writer
        assert writer is not None
        try:
            writer.write(data)
            if writer.transport.get_write_buffer_size():
                # The kernel did not take it all: wait, bounded, until it has.
                async with asyncio.timeout(self._message_timeout):
                    await writer.drain()
            else:
                # Nothing is waiting to be sent, so this does not block (no timer per
                # message); it still raises if the connection was lost.
                await writer.drain()
        except TimeoutError as error:
            raise MessageTimeoutError(
                f"the TPS took no data for {self._message_timeout:g} s"
            ) from error
        except (OSError, ssl.SSLError) as error:
            raise ConnectionLostError(
                f"the connection to the TPS broke while sending ({_os_reason(error)})"
            ) from error

    def _log_sent(self, message: TpsMessage | bytes) -> None:
        if logger.isEnabledFor(TRAFFIC):
            logger.log(TRAFFIC, "to TPS: %s", codec.redacted(message))

    # -- receiving -------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next server message; waits at most ``message_timeout`` seconds for it.

        Raises ``HttpStatusError`` for a status other than 200, ``ConnectionLostError``
        when the response ends first, ``MessageTimeoutError`` when nothing complete
        arrives in time, ``RemoteTpsProtocolError`` for a message that does not decode.
        """
        if self._reader is None or self._closed:
            raise LocalTpsProtocolError("receive() on a TPS connection that is not open")
        try:
            async with asyncio.timeout(self._message_timeout):
                while not self._received:
                    await self._read_more()
        except TimeoutError as error:
            raise MessageTimeoutError(
                f"the TPS sent no message for {self._message_timeout:g} s"
            ) from error
        message = self._received.popleft()
        if logger.isEnabledFor(TRAFFIC):
            logger.log(TRAFFIC, "from TPS: %s", codec.redacted(message))
        return message

    async def messages(self) -> AsyncIterator[Message]:
        """Every server message up to and including END_OP."""
        while True:
            message = await self.receive()
            yield message
            if isinstance(message, EndOp):
                return

    async def _read_more(self) -> None:
        event = await self._next_event()
        if isinstance(event, h11.InformationalResponse):
            return
        if isinstance(event, h11.Response):
            if event.status_code != 200:
                reason = _STATUS_REASONS.get(event.status_code, "")
                raise HttpStatusError(event.status_code, reason)
            logger.debug("the TPS answered 200; reading its messages")
            return
        if isinstance(event, h11.Data):
            for frame in self._framer.feed(bytes(event.data)):
                self._received.append(codec.decode(frame))
            return
        # EndOfMessage, ConnectionClosed: the response is over without END_OP.
        self._ended = True
        middle = " in the middle of a message" if self._framer.pending else ""
        raise ConnectionLostError(f"the TPS ended the conversation{middle}")

    async def _next_event(self) -> h11.Event | None:
        """The next HTTP event, or None when h11 pauses (the response is complete)."""
        reader = self._reader
        assert reader is not None
        while True:
            if self._ended:
                raise ConnectionLostError("the TPS ended the conversation")
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as error:
                if self._eof:
                    raise ConnectionLostError(
                        "the TPS closed the connection in the middle of its response"
                    ) from error
                raise RemoteTpsProtocolError(
                    f"the TPS broke HTTP/1.1: {_h11_reason(error)}"
                ) from error
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:
                return None
            try:
                data = await reader.read(_READ_SIZE)
            except (OSError, ssl.SSLError) as error:
                raise ConnectionLostError(
                    f"the connection to the TPS broke ({_os_reason(error)})"
                ) from error
            self._eof = not data
            try:
                self._h11.receive_data(data)
            except h11.RemoteProtocolError as error:
                raise ConnectionLostError("the TPS closed the connection") from error

    # -- ending ----------------------------------------------------------------------------

    async def finish(self, timeout: float = DEFAULT_FINISH_TIMEOUT) -> None:
        """After END_OP: send the last chunk ``0\\r\\n\\r\\n``, read the response's end, close.

        ESC only closed (ESC CoolKeyHandler.cpp, ``HttpProcessEndOp``); sending the last
        chunk is the clean HTTP ending. Waiting for the server's end is best effort: the
        operation is already decided.
        """
        if self._writer is not None and not self._closed:
            with contextlib.suppress(
                h11.LocalProtocolError, ConnectionLostError, MessageTimeoutError
            ):
                if self._h11.our_state is h11.SEND_BODY:
                    await self._write(self._h11.send(h11.EndOfMessage()) or b"")
            with contextlib.suppress(
                TimeoutError, ConnectionLostError, RemoteTpsProtocolError, HttpStatusError
            ):
                async with asyncio.timeout(timeout):
                    while not self._ended:
                        event = await self._next_event()
                        if event is None or isinstance(
                            event, h11.EndOfMessage | h11.ConnectionClosed
                        ):
                            self._ended = True
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (without the last chunk unless ``finish`` sent it)."""
        if self._closed:
            return
        self._closed = True
        writer, self._writer = self._writer, None
        self._reader = None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await writer.wait_closed()
        logger.debug("closed the connection to %s:%s", self._host, self._port)


def _h11_reason(error: h11.ProtocolError) -> str:
    """h11's complaint without the bytes it quotes after ``": "``.

    A miscounted chunk makes h11 quote the next line as an "illegal chunk header", and
    that line is a TPS message, APDU data included; an error text never carries it.
    """
    return str(error).split(": ", 1)[0]


def _os_reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return error.__class__.__name__
