# SPDX-License-Identifier: GPL-2.0-or-later
"""``s=<N>&<body>`` framing of TPS messages over a de-chunked byte stream.

This module owns the message boundaries and nothing else:

* Rule 1: frames are found by the ``s=`` length, never by HTTP chunk boundaries, newlines
  or anything else in the stream. The Java server reads the client stream this way
  (Dogtag ``TPSConnection.read()``), and a re-chunking proxy may split or join server
  chunks.
* Rule 2: no I/O and no decoding. ``MessageFramer.feed`` takes whatever bytes arrived and
  returns whole frames; what is inside a frame is ``escd.tps.codec``'s business.

Both ends use it: escd splits the server's stream, the simulated TPS the client's.
"""

from __future__ import annotations

from escd.errors import LocalTpsProtocolError, RemoteTpsProtocolError

#: Largest body the Java TPS reads (``tps.connection.maxMessageSize``, default 9999 in
#: Dogtag's TPS CS.cfg; checked in TPSConnection.java, ``read``).
JAVA_MAX_MESSAGE = 9999
#: Largest body the legacy C++ TPS reads: at most three length digits (legacy TPS
#: AP_Session.cpp, ``GetMsgLen``).
LEGACY_MAX_MESSAGE = 999
#: Default limit for incoming frames, far above what a TPS sends: its largest messages,
#: APDUs of ``channel.blocksize`` bytes (224 in Dogtag's TPS CS.cfg) with header and MAC,
#: are under 1 KiB encoded, and ESC read at most 4 KiB per message (ESC response.cpp,
#: ``_handleChunkedConversation``).
DEFAULT_MAX_INCOMING = 64 * 1024

_PREFIX = b"s="
_AMP = ord("&")
_DIGIT_FIRST = ord("0")
_DIGIT_LAST = ord("9")


class MessageFramer:
    """Incremental splitter of ``s=<N>&<body>`` frames.

    ``feed`` may be called with any slicing of the stream (one byte at a time, many
    messages at once, a message and a half); it returns each complete frame, prefix
    included, as soon as its last byte arrives. Bytes after the last complete frame stay
    buffered. Once a frame is found malformed the framer stays broken: every later
    ``feed`` raises again, because the stream has lost its boundaries.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_INCOMING) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self._max_size = max_size
        self._max_digits = len(str(max_size))
        self._buffer = bytearray()
        self._error: RemoteTpsProtocolError | None = None

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def pending(self) -> int:
        """How many bytes of an incomplete frame are buffered (0 at a frame boundary)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every frame it completes, in order."""
        if self._error is not None:
            raise RemoteTpsProtocolError(self._error.message)
        self._buffer += data
        frames: list[bytes] = []
        while True:
            try:
                frame = self._next_frame()
            except RemoteTpsProtocolError as error:
                self._error = error
                raise
            if frame is None:
                return frames
            frames.append(frame)

    def _next_frame(self) -> bytes | None:
        buffer = self._buffer
        if not buffer:
            return None
        # Java reads one byte, then insists on '=' (Dogtag TPSConnection.java, read); we
        # insist on the whole "s=".
        for index, expected in enumerate(_PREFIX[: len(buffer)]):
            if buffer[index] != expected:
                raise RemoteTpsProtocolError(
                    f"message does not start with 's=' (byte {index} is {buffer[index]:#04x})"
                )
        if len(buffer) < len(_PREFIX):
            return None
        amp = len(_PREFIX)
        while amp < len(buffer) and _DIGIT_FIRST <= buffer[amp] <= _DIGIT_LAST:
            amp += 1
        digits = bytes(buffer[len(_PREFIX) : amp])
        if len(digits) > self._max_digits:
            raise RemoteTpsProtocolError(f"message length has more than {self._max_digits} digits")
        # The Java server's digit loop lets one leading zero through (Dogtag
        # TPSConnection.java, read); nobody sends one.
        if digits.startswith(b"0"):
            raise RemoteTpsProtocolError("message length has a leading zero")
        if amp == len(buffer):
            return None
        if buffer[amp] != _AMP:
            raise RemoteTpsProtocolError(
                f"message length is not a decimal number (found byte {buffer[amp]:#04x})"
            )
        if not digits:
            raise RemoteTpsProtocolError("message length is empty")
        size = int(digits)
        if size > self._max_size:
            raise RemoteTpsProtocolError(
                f"message of {size} bytes is larger than the limit of {self._max_size}"
            )
        end = amp + 1 + size
        if len(buffer) < end:
            return None
        frame = bytes(buffer[:end])
        del buffer[:end]
        return frame


def frame(body: bytes, *, limit: int = JAVA_MAX_MESSAGE) -> bytes:
    """``s=<len(body)>&<body>``; refuse a body the receiving server would not read."""
    if not body:
        raise LocalTpsProtocolError("refusing to send an empty message")
    if len(body) > limit:
        raise LocalTpsProtocolError(
            f"message of {len(body)} bytes is larger than the server limit of {limit}"
        )
    return b"s=%d&" % len(body) + body


def split_frame(data: bytes) -> bytes:
    """The body of one whole frame; ``s=`` must count exactly the bytes after ``&``."""
    if not data.startswith(_PREFIX):
        raise RemoteTpsProtocolError("message does not start with 's='")
    amp = data.find(b"&")
    if amp < 0:
        raise RemoteTpsProtocolError("message has no '&' after its length")
    digits = data[len(_PREFIX) : amp]
    if not digits.isdigit() or digits[0] == ord("0"):
        raise RemoteTpsProtocolError("message length is not a decimal number without zeros")
    body = data[amp + 1 :]
    if int(digits) != len(body):
        raise RemoteTpsProtocolError(f"message length says {int(digits)}, body has {len(body)}")
    return body
