"""The one stream reader (tests/stream_helpers.FrameParser) of the stream tests and benchmarks/sse_bench.py:
frames come out whole however the bytes are cut, with or without HTTP/1.1 chunked transfer coding."""

from __future__ import annotations

import json

from tests.stream_helpers import FrameParser

FRAMES = [
    b"retry: 3000\n\n",
    b'event: snapshot\nid: 7\ndata: {"status": "running"}\n\n',
    b": keepalive\n\n",
    b'event: model_started\nid: 8\ndata: {"model_id": "bench-12", "data": {"written_at": 1.5}}\n\n',
]


def chunked(pieces: list[bytes]) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"


def read_in_cuts(parser: FrameParser, body: bytes, size: int) -> list:
    return [frame for i in range(0, len(body), size) for frame in parser.feed(body[i : i + size])]


def test_frames_whole_however_the_body_is_cut():
    # Two frames in one chunk and one frame across two chunks, as a server that coalesces or splits writes.
    body = chunked([FRAMES[0] + FRAMES[1], FRAMES[2][:5], FRAMES[2][5:] + FRAMES[3]])
    for size in (1, 2, 3, 7, 64, len(body)):
        parser = FrameParser(chunked=True)
        frames = read_in_cuts(parser, body, size)
        assert [f.retry for f in frames] == [3000, None, None, None]
        assert [f.event for f in frames] == [None, "snapshot", None, "model_started"]
        assert [f.id for f in frames] == [None, 7, None, 8]
        assert frames[2].comment == "keepalive"
        assert frames[3].data == {"model_id": "bench-12", "data": {"written_at": 1.5}}
        assert parser.ended


def test_plain_body_and_text_chunks():
    parser = FrameParser()
    text = b"".join(FRAMES).decode()
    frames = [f for part in (text[:20], text[20:]) for f in parser.feed(part)]
    assert [f.event for f in frames] == [None, "snapshot", None, "model_started"]
    assert frames[1].data == json.loads('{"status": "running"}')
    assert not parser.ended and parser.feed(b"data: 1\n") == []  # an unfinished frame waits for its end
