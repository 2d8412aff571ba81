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


class SSEReader:
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = aiter(chunks)
        self._buffer = ""
        self.closed = False

    async def frame(self, timeout: float = 5.0) -> Frame:
        """The next frame; raises TimeoutError if none comes, StopAsyncIteration if the server ended."""
        while "\n\n" not in self._buffer:
            try:
                chunk = await asyncio.wait_for(anext(self._chunks), timeout)
            except StopAsyncIteration:
                self.closed = True
                raise
            self._buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        raw, self._buffer = self._buffer.split("\n\n", 1)
        return parse_frame(raw)

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


async def asgi_request(
    path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> ASGIResponse:
    """A request through the project's whole ASGI application (channels' router, middleware, consumer), as
    daphne would make it; returns once the response has started."""
    from asgiref.testing import ApplicationCommunicator

    from qeeg_site.asgi import application

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
    communicator = ApplicationCommunicator(application, scope)
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
def daphne_process(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """`daphne_server`, also yielding the process (to watch its memory)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "qeeg_site.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        proc.stderr.read().decode() if proc.poll() is not None else "daphne did not start"
                    ) from None
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
