"""Reply parsing: text, usage, finish_reason, empty replies, and readable messages from both error shapes."""

from __future__ import annotations

import httpx
import pytest
import respx

from council.client import EmptyCompletion, UpstreamError
from tests.client_helpers import BASE, FakeTime, chat_body, make_client

MESSAGES = [{"role": "user", "content": "hi"}]


@respx.mock
async def test_completion_carries_text_usage_latency_and_finish_reason():
    respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(200, json=chat_body("partial report", finish_reason="length"))
    )
    async with make_client(FakeTime()) as client:
        completion = await client.complete("gpt-5", MESSAGES)
    assert completion.text == "partial report"
    assert completion.model == "gpt-5"
    assert completion.finish_reason == "length"
    assert completion.attempts == 1
    assert completion.latency_ms >= 0


@pytest.mark.parametrize("content", ["", "   \n", None])
@respx.mock
async def test_empty_completion_is_a_failure(content):
    body = chat_body()
    body["choices"][0]["message"]["content"] = content
    route = respx.post(f"{BASE}/v1/chat/completions").mock(return_value=httpx.Response(200, json=body))
    async with make_client(FakeTime()) as client:
        with pytest.raises(EmptyCompletion) as caught:
            await client.complete("gpt-5", MESSAGES)
    assert route.call_count == 1
    assert "empty" in caught.value.message


@respx.mock
async def test_no_choices_is_a_bad_response():
    respx.post(f"{BASE}/v1/chat/completions").mock(return_value=httpx.Response(200, json={"choices": []}))
    async with make_client(FakeTime()) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.complete("gpt-5", MESSAGES)
    assert caught.value.kind == "bad_response"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": "Missing API key"}, "Missing API key"),
        ({"error": {"message": "bad things", "type": "invalid_request_error", "code": "x"}}, "bad things"),
        ({"error": {"code": "only_a_code"}}, "only_a_code"),
        ({"unexpected": True}, "unexpected"),
    ],
)
@respx.mock
async def test_both_error_body_shapes_give_readable_messages(body, expected):
    respx.post(f"{BASE}/v1/chat/completions").mock(return_value=httpx.Response(418, json=body))
    async with make_client(FakeTime()) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.complete("gpt-5", MESSAGES)
    assert expected in caught.value.message
    assert "418" in caught.value.message
