"""Reading Server-Sent Events in tests: frames parsed from an async byte stream, with a timeout on each."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


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
