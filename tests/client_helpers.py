"""Helpers for the client's unit tests: a client whose sleeps advance a fake clock instead of waiting."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from council.client import CLIProxyClient

BASE = "http://upstream.test"


@dataclass
class FakeTime:
    """A clock that only moves when the client sleeps, and a record of every sleep."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(fake_time: FakeTime, **options) -> CLIProxyClient:
    options.setdefault("base_url", BASE)
    return CLIProxyClient(sleep=fake_time.sleep, clock=fake_time.clock, **options)


def chat_body(text: str = "hello", *, finish_reason: str = "stop") -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def error_body(
    message: str, *, code: str | None = None, type_: str = "invalid_request_error", **extra
) -> dict:
    return {"error": {"message": message, "type": type_, "code": code, **extra}}


def response(status: int, json: dict | None = None, **kwargs) -> httpx.Response:
    return httpx.Response(status, json=json, **kwargs)
