"""A tiny scripted stand-in for council.client.CLIProxyClient, for unit tests of stage logic.
Integration tests use the real loopback fake upstream instead."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FakeCompletion:
    text: str
    model: str
    endpoint: str = "chat/completions"
    prompt_tokens: int | None = 10
    completion_tokens: int | None = 5
    latency_ms: int = 1
    attempts: int = 1
    finish_reason: str | None = "stop"


@dataclass
class ScriptedClient:
    """Answers each call with the next scripted reply (a string, an exception, or a function of messages)."""

    replies: list[str | Exception | Callable[[str, list[dict]], str]]
    calls: list[tuple[str, list[dict]]] = field(default_factory=list)

    async def complete(self, model, messages, *, max_tokens=None, temperature=None):
        self.calls.append((model, messages))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        text = reply(model, messages) if callable(reply) else reply
        return FakeCompletion(text=text, model=model)
