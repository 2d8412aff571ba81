"""429/502/503 are retried with backoff and jitter, bounded in attempts and total time; cooldowns honoured."""

from __future__ import annotations

import httpx
import pytest
import respx

from council.client import UpstreamUnavailable
from tests.client_helpers import BASE, FakeTime, chat_body, error_body, make_client

MESSAGES = [{"role": "user", "content": "hi"}]


@respx.mock
async def test_retries_502_and_503_then_succeeds():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(
        side_effect=[
            httpx.Response(502, json=error_body("bad gateway", type_="server_error")),
            httpx.Response(503, json=error_body("overloaded", type_="server_error")),
            httpx.Response(200, json=chat_body("done")),
        ]
    )
    fake_time = FakeTime()
    async with make_client(fake_time) as client:
        completion = await client.complete("gpt-5", MESSAGES)
    assert completion.text == "done"
    assert completion.attempts == 3
    assert route.call_count == 3
    assert len(fake_time.sleeps) == 2


@respx.mock
async def test_backoff_grows_exponentially_with_jitter():
    respx.post(f"{BASE}/v1/chat/completions").mock(return_value=httpx.Response(503, json=error_body("busy")))
    fake_time = FakeTime()
    async with make_client(fake_time, max_attempts=5, backoff_base=1.0, backoff_max=100.0) as client:
        with pytest.raises(UpstreamUnavailable):
            await client.complete("gpt-5", MESSAGES)
    sleeps = fake_time.sleeps
    assert len(sleeps) == 4
    # Attempt n waits between half and all of base*2^(n-1), plus up to half a base of extra jitter.
    for n, slept in enumerate(sleeps, start=1):
        assert 0.5 * 2 ** (n - 1) <= slept <= 2 ** (n - 1) + 0.5
    assert sleeps[3] > sleeps[0]


@respx.mock
async def test_gives_up_after_max_attempts_with_readable_message():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(502, json=error_body("upstream exploded", type_="server_error"))
    )
    async with make_client(FakeTime(), max_attempts=3) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.complete("gpt-5", MESSAGES)
    assert route.call_count == 3
    assert "upstream exploded" in caught.value.message
    assert "3 attempts" in caught.value.message
    assert caught.value.status == 502


@respx.mock
async def test_total_retry_time_is_bounded():
    """A cooldown that would push past max_retry_seconds ends the call instead of sleeping."""
    route = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(
            429, json=error_body("cooling down", code="model_cooldown", type_="rate_limit", reset_seconds=40)
        )
    )
    fake_time = FakeTime()
    async with make_client(
        fake_time, max_attempts=10, max_retry_seconds=100, max_cooldown_seconds=60
    ) as client:
        with pytest.raises(UpstreamUnavailable):
            await client.complete("gpt-5", MESSAGES)
    assert fake_time.sleeps == [40, 40]
    assert route.call_count == 3


@respx.mock
async def test_429_reset_seconds_is_honoured():
    respx.post(f"{BASE}/v1/chat/completions").mock(
        side_effect=[
            httpx.Response(
                429,
                json=error_body(
                    "All credentials for model gpt-5 are cooling down",
                    code="model_cooldown",
                    type_="rate_limit_error",
                    reset_seconds=17,
                ),
            ),
            httpx.Response(200, json=chat_body()),
        ]
    )
    fake_time = FakeTime()
    async with make_client(fake_time) as client:
        completion = await client.complete("gpt-5", MESSAGES)
    assert fake_time.sleeps == [17]
    assert completion.attempts == 2


@respx.mock
async def test_429_cooldown_is_capped():
    respx.post(f"{BASE}/v1/chat/completions").mock(
        side_effect=[
            httpx.Response(429, json=error_body("cooling", code="model_cooldown", reset_seconds=3600)),
            httpx.Response(200, json=chat_body()),
        ]
    )
    fake_time = FakeTime()
    async with make_client(fake_time, max_cooldown_seconds=45, max_retry_seconds=1000) as client:
        await client.complete("gpt-5", MESSAGES)
    assert fake_time.sleeps == [45]


@respx.mock
async def test_429_retry_after_header_is_honoured():
    respx.post(f"{BASE}/v1/chat/completions").mock(
        side_effect=[
            httpx.Response(429, json=error_body("slow down"), headers={"Retry-After": "9"}),
            httpx.Response(200, json=chat_body()),
        ]
    )
    fake_time = FakeTime()
    async with make_client(fake_time) as client:
        await client.complete("gpt-5", MESSAGES)
    assert fake_time.sleeps == [9]


@respx.mock
async def test_500_is_not_retried():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(500, json=error_body("internal", type_="server_error"))
    )
    async with make_client(FakeTime()) as client:
        with pytest.raises(Exception) as caught:
            await client.complete("gpt-5", MESSAGES)
    assert route.call_count == 1
    assert not isinstance(caught.value, UpstreamUnavailable)
    assert "internal" in str(caught.value)


@respx.mock
async def test_malformed_json_is_retried_then_reported():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(
            200, content=b'{"choices": [', headers={"Content-Type": "application/json"}
        )
    )
    async with make_client(FakeTime(), max_attempts=2) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.complete("gpt-5", MESSAGES)
    assert route.call_count == 2
    assert "not valid JSON" in caught.value.message
