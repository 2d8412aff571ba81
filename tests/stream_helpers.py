"""Server-Sent Events in tests: frames parsed from a byte stream (with a timeout on each), requests through the
ASGI application in-process, and real daphne servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Frame:
    event: str | None = None
    id: int | None = None
    data: Any = None
    comment: str | None = None
    retry: int | None = None


def parse_frame(raw: str) -> Frame:
    frame = Frame()
    for line in raw.split("\n"):
        if line.startswith(":"):
            frame.comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            frame.event = value
        elif name == "id":
            frame.id = int(value)
        elif name == "data":
            frame.data = json.loads(value)
        elif name == "retry":
            frame.retry = int(value)
    return frame


class FrameParser:
    """Server-Sent Events frames from bytes as they arrive, cut anywhere. `chunked`: the bytes are a raw
    HTTP/1.1 body in chunked transfer coding (what a socket reads after the response head), undone first.
    The one stream reader of the tests and of benchmarks/sse_bench.py."""

    def __init__(self, *, chunked: bool = False) -> None:
        self.chunked = chunked
        self.ended = False  # the last chunk (size 0) has come
        self._raw = b""
        self._body = b""

    def feed(self, data: bytes | str) -> list[Frame]:
        data = data.encode() if isinstance(data, str) else data
        if self.chunked:
            self._raw += data
            self._unchunk()
        else:
            self._body += data
        frames = []
        while b"\n\n" in self._body:
            raw, self._body = self._body.split(b"\n\n", 1)
            frames.append(parse_frame(raw.decode()))
        return frames

    def _unchunk(self) -> None:
        while not self.ended:
            line_end = self._raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self._raw[:line_end].split(b";", 1)[0], 16)
            start = line_end + 2
            if len(self._raw) < start + size + 2:
                return  # the rest of this chunk is still on its way
            self._body += self._raw[start : start + size]
            self._raw = self._raw[start + size + 2 :]
            self.ended = size == 0


class SSEReader:
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = aiter(chunks)
        self._parser = FrameParser()
        self._pending: list[Frame] = []
        self.closed = False

    async def frame(self, timeout: float = 5.0) -> Frame:
        """The next frame; raises TimeoutError if none comes, StopAsyncIteration if the server ended."""
        while not self._pending:
            try:
                chunk = await asyncio.wait_for(anext(self._chunks), timeout)
            except StopAsyncIteration:
                self.closed = True
                raise
            self._pending.extend(self._parser.feed(chunk))
        return self._pending.pop(0)

    async def event(self, timeout: float = 5.0) -> Frame:
        """The next named event, skipping comments and the retry hint."""
        while True:
            frame = await self.frame(timeout)
            if frame.event is not None:
                return frame

    async def ended(self, timeout: float = 5.0) -> bool:
        try:
            await self.frame(timeout)
        except StopAsyncIteration:
            return True
        return False


@dataclass
class ASGIResponse:
    status: int
    headers: dict[str, str]
    communicator: Any
    body: ASGIBody

    def json(self) -> Any:
        return json.loads(self.body.read_all())

    async def disconnect(self) -> None:
        """What daphne tells the application when the client goes away."""
        await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(5)


class ASGIBody:
    """The body chunks of a response from the ASGI application, as they are sent."""

    def __init__(self, communicator: Any, first: bytes = b"", more: bool = True) -> None:
        self.communicator = communicator
        self.buffered = [first] if first else []
        self.more = more

    def read_all(self) -> bytes:
        assert not self.more, "the response is still streaming"
        return b"".join(self.buffered)

    def __aiter__(self) -> ASGIBody:
        return self

    async def __anext__(self) -> bytes:
        if self.buffered:
            return self.buffered.pop(0)
        if not self.more:
            raise StopAsyncIteration
        get = asyncio.ensure_future(self.communicator.output_queue.get())
        try:
            await asyncio.wait({get, self.communicator.future}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not get.done():
                get.cancel()
        if not get.done() or get.cancelled():
            self.communicator.future.result()  # the application raised: show why
            raise StopAsyncIteration
        message = get.result()
        assert message["type"] == "http.response.body", message
        self.more = message.get("more_body", False)
        return message.get("body", b"")


class HandOver:
    """daphne's direct body write (qeeg_site/socket_writes.BODY_NOW) for an in-process request: a body put
    straight on the response's output, in order with the ASGI messages, and kept in `bodies` (what went out
    that way); `gone` makes it refuse, as for a closed connection."""

    def __init__(self) -> None:
        self.communicator: Any = None
        self.bodies: list[bytes] = []
        self.gone = False

    def __call__(self, body: bytes) -> bool:
        if self.gone or self.communicator is None or self.communicator.future.done():
            return False
        self.bodies.append(body)
        self.communicator.output_queue.put_nowait(
            {"type": "http.response.body", "body": body, "more_body": True}
        )
        return True


async def asgi_request(
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    hand_over: HandOver | None = None,
) -> ASGIResponse:
    """A request through the project's whole ASGI application (channels' router, middleware, consumer), as
    daphne would make it; returns once the response has started. `hand_over`: the scope offers daphne's
    direct body write, as under daphne (qeeg_site/socket_writes.py)."""
    from asgiref.testing import ApplicationCommunicator

    from qeeg_site.asgi import application
    from qeeg_site.socket_writes import BODY_NOW

    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    if hand_over is not None:
        scope["extensions"] = {BODY_NOW: hand_over}
    communicator = ApplicationCommunicator(application, scope)
    if hand_over is not None:
        hand_over.communicator = communicator
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(10)
    assert start["type"] == "http.response.start", start
    response_headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
    body = ASGIBody(communicator)
    if response_headers.get("content-type", "").startswith("application/json"):
        chunks = [chunk async for chunk in body]
        body = ASGIBody(communicator, b"".join(chunks), more=False)
    return ASGIResponse(start["status"], response_headers, communicator, body)


async def session_cookie(user: Any) -> str:
    """A `Cookie` header value that signs `user` in."""
    from django.conf import settings
    from django.test import AsyncClient

    client = AsyncClient()
    await client.aforce_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@contextlib.contextmanager
def daphne_server(env: dict[str, str]) -> Iterator[str]:
    """The project's ASGI application under a real daphne process on a free loopback port; yields its URL."""
    with daphne_process(env) as (url, _):
        yield url


@contextlib.contextmanager
def daphne_process(
    env: dict[str, str], *, stderr: int = subprocess.PIPE, cwd: Path = ROOT
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`daphne_server`, also yielding the process (to watch its memory or CPU). `stderr=subprocess.DEVNULL`
    for a long-lived server whose output nobody reads (a pipe nobody drains would stall it once full); `cwd`:
    another copy of the project to serve (a benchmark comparing an older commit)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "qeeg_site.asgi:application"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    said = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                    raise RuntimeError(said or "daphne did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def frames(response: Any) -> Iterator[Frame]:
    """SSE frames from a streaming httpx response."""
    lines: list[str] = []
    for line in response.iter_lines():
        if line:
            lines.append(line)
        elif lines:
            yield parse_frame("\n".join(lines))
            lines = []


def next_event(stream: Iterator[Frame]) -> Frame:
    for frame in stream:
        if frame.event is not None:
            return frame
    raise AssertionError("the stream ended")
