# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``s=<N>&`` framer: whole, byte by byte, with trailing data, limits and garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escd.errors import LocalTpsProtocolError, RemoteTpsProtocolError
from escd.tps.framing import (
    DEFAULT_MAX_INCOMING,
    JAVA_MAX_MESSAGE,
    LEGACY_MAX_MESSAGE,
    MessageFramer,
    frame,
    split_frame,
)

# Server messages as the Java TPS writes them (org.dogtagpki.tps.msg), exactly as on the wire.
SERVER_FRAMES = [
    b"s=46&msg_type=9&pdu_size=5&pdu_data=%00%A4%04%00%00",
    b"s=65&msg_type=14&current_state=10&next_task_name=PROGRESS_APPLET_BLOCK",
    b"s=46&msg_type=11&minimum_length=4&maximum_length=10",
    b"s=42&msg_type=13&operation=5&result=0&message=0",
]
# The legacy TPS counts its "\r\n0\r\n" tail inside s= (legacy-pki AP_Session.cpp, WriteMsg).
LEGACY_END_OP = b"s=47&msg_type=13&operation=5&result=0&message=0\r\n0\r\n"


def tr(data: bytes, expected: list[bytes]) -> None:
    """h11's ``tr()``: whole, then byte by byte (nothing early), then with trailing data."""
    assert MessageFramer().feed(data) == expected

    framer = MessageFramer()
    seen: list[bytes] = []
    for index in range(len(data)):
        got = framer.feed(data[index : index + 1])
        # A frame appears exactly when its last byte arrives, never before.
        ends = {sum(len(f) for f in expected[: n + 1]) for n in range(len(expected))}
        assert bool(got) == (index + 1 in ends)
        seen.extend(got)
    assert seen == expected
    assert framer.pending == 0

    trailing = MessageFramer()
    assert trailing.feed(data + b"s=4") == expected
    assert trailing.pending == 3
    assert trailing.feed(b"6&msg_type=9&pdu_size=5&pdu_data=%00%A4%04%00%00") == [SERVER_FRAMES[0]]
    assert trailing.pending == 0


@pytest.mark.parametrize("message", SERVER_FRAMES, ids=lambda m: m[:24].decode())
def test_framer_returns_each_spec_message_whole_and_byte_by_byte(message: bytes) -> None:
    tr(message, [message])


def test_framer_splits_a_stream_of_many_messages_regardless_of_chunking() -> None:
    tr(b"".join(SERVER_FRAMES), SERVER_FRAMES)


def test_framer_keeps_the_legacy_end_op_tail_inside_the_frame() -> None:
    tr(LEGACY_END_OP, [LEGACY_END_OP])


def test_framer_keeps_bytes_after_a_frame_for_the_next_one() -> None:
    framer = MessageFramer()
    head, tail = SERVER_FRAMES[1][:10], SERVER_FRAMES[1][10:]
    assert framer.feed(SERVER_FRAMES[0] + head) == [SERVER_FRAMES[0]]
    assert framer.pending == len(head)
    assert framer.feed(tail) == [SERVER_FRAMES[1]]


def test_framer_accepts_64_kib_by_default() -> None:
    body = b"x" * DEFAULT_MAX_INCOMING
    assert MessageFramer().feed(b"s=%d&" % len(body) + body) == [b"s=65536&" + body]


def test_framer_rejects_size_above_limit_before_the_body_arrives() -> None:
    framer = MessageFramer(max_size=100)
    with pytest.raises(RemoteTpsProtocolError, match="larger than the limit"):
        framer.feed(b"s=101&")


def test_framer_rejects_a_length_with_too_many_digits_without_waiting_for_the_ampersand() -> None:
    framer = MessageFramer(max_size=100)
    with pytest.raises(RemoteTpsProtocolError, match="more than 3 digits"):
        framer.feed(b"s=1000")


@pytest.mark.parametrize(
    "garbage",
    [
        b"x=5&hello",
        b" s=5&hello",
        b"\r\ns=5&hello",
        b"S=5&hello",
        b"s:5&hello",
        b"s=0&",
        b"s=05&hello",
        b"s=&hello",
        b"s=-5&hello",
        b"s=5a&hello",
        b"s=5 &hello",
        b"s=+5&hello",
    ],
)
def test_framer_rejects_garbage_leading_zeros_and_non_digits(garbage: bytes) -> None:
    with pytest.raises(RemoteTpsProtocolError):
        MessageFramer().feed(garbage)


def test_framer_rejects_garbage_between_messages() -> None:
    framer = MessageFramer()
    with pytest.raises(RemoteTpsProtocolError):
        framer.feed(SERVER_FRAMES[0] + b"\r\n" + SERVER_FRAMES[1])


def test_framer_stays_broken_after_an_error() -> None:
    framer = MessageFramer()
    with pytest.raises(RemoteTpsProtocolError):
        framer.feed(b"junk")
    with pytest.raises(RemoteTpsProtocolError):
        framer.feed(SERVER_FRAMES[0])


def test_frame_counts_bytes_after_the_ampersand() -> None:
    assert frame(b"msg_type=15&current_state=10") == b"s=28&msg_type=15&current_state=10"


def test_frame_refuses_bodies_over_the_java_limit() -> None:
    assert frame(b"x" * JAVA_MAX_MESSAGE).startswith(b"s=9999&")
    with pytest.raises(LocalTpsProtocolError, match="9999"):
        frame(b"x" * (JAVA_MAX_MESSAGE + 1))


def test_frame_can_hold_to_the_legacy_limit() -> None:
    with pytest.raises(LocalTpsProtocolError):
        frame(b"x" * (LEGACY_MAX_MESSAGE + 1), limit=LEGACY_MAX_MESSAGE)


def test_frame_refuses_an_empty_body() -> None:
    with pytest.raises(LocalTpsProtocolError):
        frame(b"")


@pytest.mark.parametrize(
    "data",
    [b"s=5&abc", b"s=2&abc", b"x=3&abc", b"s=3abc", b"s=03&abc", b"s=&abc"],
)
def test_split_frame_rejects_a_length_that_does_not_match(data: bytes) -> None:
    with pytest.raises(RemoteTpsProtocolError):
        split_frame(data)


bodies = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8)


@given(bodies=bodies, cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20))
def test_framer_finds_the_same_frames_for_any_chunking(
    bodies: list[bytes], cuts: list[int]
) -> None:
    frames = [frame(body) for body in bodies]
    stream = b"".join(frames)
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    framer = MessageFramer()
    seen: list[bytes] = []
    for start, end in zip(points, points[1:], strict=False):
        seen.extend(framer.feed(stream[start:end]))
    assert seen == frames
    assert framer.pending == 0
    assert [split_frame(f) for f in seen] == bodies


@given(body=st.binary(min_size=1, max_size=500), limit=st.integers(min_value=1, max_value=600))
def test_framer_accepts_exactly_the_bodies_within_its_limit(body: bytes, limit: int) -> None:
    framer = MessageFramer(max_size=limit)
    data = frame(body)
    if len(body) <= limit:
        assert framer.feed(data) == [data]
    else:
        with pytest.raises(RemoteTpsProtocolError):
            framer.feed(data)


@given(st.binary(max_size=200))
def test_any_stream_is_framed_or_is_a_remote_protocol_error(data: bytes) -> None:
    framer = MessageFramer(max_size=100)
    try:
        frames = framer.feed(data)
    except RemoteTpsProtocolError:
        return
    assert b"".join(frames) == data[: len(data) - framer.pending]
