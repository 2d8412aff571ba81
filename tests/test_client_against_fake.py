"""The client against the fake CLIProxyAPI on loopback: real HTTP, with and without a key."""

from __future__ import annotations

import pytest

from council.client import (
    CLIProxyClient,
    EmptyCompletion,
    ModelNotFound,
    NeedsAuth,
    UpstreamError,
    UpstreamUnavailable,
)
from tests.fake_upstream import END_MARKER, FAKE_MARK, FakeUpstream


async def no_sleep(seconds: float) -> None:
    return None


def client_for(fake: FakeUpstream, **options) -> CLIProxyClient:
    options.setdefault("sleep", no_sleep)
    return CLIProxyClient(base_url=fake.base_url, **options)


def analysis(text: str = "=== PAGE 1 / 1 ===\n[text layer]\nAlpha 10 Hz") -> list[dict]:
    return [
        {"role": "system", "content": "qEEG Council — Stage 1: Analysis\nBe careful."},
        {"role": "user", "content": text},
    ]


async def test_discovers_models_and_completes(fake_upstream):
    async with client_for(fake_upstream) as client:
        ids = {m.id for m in await client.list_models()}
        completion = await client.complete("claude-sonnet-4-5", analysis(), max_tokens=8000)
    assert {"gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"} <= ids
    assert completion.text.startswith(FAKE_MARK)
    assert END_MARKER in completion.text
    assert completion.endpoint == "chat/completions"
    assert completion.prompt_tokens and completion.completion_tokens
    assert fake_upstream.count(model="claude-sonnet-4-5", stage=1) == 1


async def test_with_a_key(fake_upstream):
    fake_upstream.set_api_keys(["sekret"])
    async with client_for(fake_upstream, api_key="sekret") as client:
        assert await client.list_models()
    async with client_for(fake_upstream) as client:
        with pytest.raises(NeedsAuth, match="Missing API key"):
            await client.list_models()
    async with client_for(fake_upstream, api_key="wrong") as client:
        with pytest.raises(NeedsAuth, match="Invalid API key"):
            await client.complete("gpt-5", analysis())
    assert fake_upstream.calls[0].authorization == "Bearer sekret"


async def test_responses_only_model_falls_back(fake_upstream):
    async with client_for(fake_upstream) as client:
        completion = await client.complete("fake-responses-only", analysis())
    assert completion.endpoint == "responses"
    assert completion.attempts == 2
    assert completion.text.startswith(FAKE_MARK)
    assert fake_upstream.count(model="fake-responses-only", endpoint="chat/completions") == 1
    assert fake_upstream.count(model="fake-responses-only", endpoint="responses") == 1


async def test_image_only_model_fails_after_one_fallback(fake_upstream):
    async with client_for(fake_upstream) as client:
        with pytest.raises(UpstreamError, match="only generates images"):
            await client.complete("fake-image-only", analysis())
    assert fake_upstream.count(model="fake-image-only") == 2


async def test_cooldown_then_success(fake_upstream):
    fake_upstream.script("gpt-5", failures=["429:3", "503"])
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    async with client_for(fake_upstream, sleep=record) as client:
        completion = await client.complete("gpt-5", analysis())
    assert completion.attempts == 3
    assert slept[0] == 3
    assert fake_upstream.count(model="gpt-5") == 3


async def test_needs_auth_cycle_is_not_retried(fake_upstream):
    async with client_for(fake_upstream) as client:
        with pytest.raises(NeedsAuth) as first:
            await client.complete("fake-needs-auth", analysis())
        with pytest.raises(NeedsAuth) as second:
            await client.complete("fake-needs-auth", analysis())
    assert (first.value.status, second.value.status) == (401, 503)
    assert fake_upstream.count(model="fake-needs-auth") == 2


async def test_unknown_model_and_empty_reply(fake_upstream):
    async with client_for(fake_upstream) as client:
        with pytest.raises(ModelNotFound):
            await client.complete("gpt-9", analysis())
        with pytest.raises(EmptyCompletion):
            await client.complete("fake-empty", analysis())
    assert fake_upstream.count(model="gpt-9") == 1


async def test_truncated_reply_reports_length(fake_upstream):
    async with client_for(fake_upstream) as client:
        completion = await client.complete("fake-truncated", analysis())
    assert completion.finish_reason == "length"
    assert END_MARKER not in completion.text


async def test_slow_model_hits_the_read_timeout(fake_upstream):
    fake_upstream.script("fake-slow", latency=1.0)
    async with client_for(fake_upstream, read_timeout=0.2) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.complete("fake-slow", analysis())
    assert caught.value.kind == "timeout"


async def test_stopped_upstream_is_refused_quickly():
    fake = FakeUpstream().start()
    fake.stop()
    async with client_for(fake, max_attempts=2) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.list_models()
    assert caught.value.kind == "connection_refused"
