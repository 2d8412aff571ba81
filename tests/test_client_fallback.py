"""/v1/chat/completions is preferred; a model that rejects it is asked once on /v1/responses."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
import respx
from PIL import Image

from council.client import UpstreamError
from council.deid import paint_out
from tests.client_helpers import BASE, FakeTime, chat_body, error_body, make_client


def _painted_page() -> str:
    """A page image marked painted out: the only kind the client's guard lets leave."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(paint_out(buffer.getvalue(), [])).decode()


PAGE = _painted_page()

MESSAGES = [
    {"role": "system", "content": "qEEG Council — Stage 1: Analysis"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Read this."},
            {"type": "image_url", "image_url": {"url": PAGE}},
        ],
    },
]

RESPONSES_ONLY = error_body(
    'model "gpt-5-codex" is not accessible via the /chat/completions endpoint',
    code="unsupported_api_for_model",
)


def responses_body(text: str, *, status: str = "completed", reason: str | None = None) -> dict:
    body = {
        "id": "resp_1",
        "object": "response",
        "status": status,
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            },
        ],
        "usage": {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42},
    }
    if reason:
        body["incomplete_details"] = {"reason": reason}
    return body


@respx.mock
async def test_chat_completions_preferred():
    chat = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(200, json=chat_body("hi"))
    )
    responses = respx.post(f"{BASE}/v1/responses").mock(
        return_value=httpx.Response(200, json=responses_body("x"))
    )
    async with make_client(FakeTime()) as client:
        completion = await client.complete("gpt-5", MESSAGES, max_tokens=100, temperature=0.2)
    assert completion.endpoint == "chat/completions"
    assert (completion.prompt_tokens, completion.completion_tokens) == (11, 7)
    assert responses.call_count == 0
    sent = json.loads(chat.calls.last.request.content)
    assert sent["model"] == "gpt-5"
    assert sent["max_tokens"] == 100
    assert sent["temperature"] == 0.2
    assert sent["messages"] == MESSAGES


@respx.mock
async def test_falls_back_once_to_responses_and_parses_output_items():
    chat = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(400, json=RESPONSES_ONLY)
    )
    responses = respx.post(f"{BASE}/v1/responses").mock(
        return_value=httpx.Response(200, json=responses_body("from responses"))
    )
    async with make_client(FakeTime()) as client:
        completion = await client.complete("gpt-5-codex", MESSAGES, max_tokens=50)
        again = await client.complete("gpt-5-codex", MESSAGES)
    assert completion.text == "from responses"
    assert completion.endpoint == "responses"
    assert completion.attempts == 2
    assert (completion.prompt_tokens, completion.completion_tokens) == (30, 12)
    assert completion.finish_reason == "stop"
    # The fallback is remembered: the second call goes straight to /v1/responses.
    assert chat.call_count == 1
    assert responses.call_count == 2
    assert again.attempts == 1
    sent = json.loads(responses.calls[0].request.content)
    assert sent["max_output_tokens"] == 50
    assert sent["input"][1]["content"] == [
        {"type": "input_text", "text": "Read this."},
        {"type": "input_image", "image_url": PAGE},
    ]


@respx.mock
async def test_top_level_output_text_is_ignored():
    body = responses_body("from items")
    body["output_text"] = "top level convenience text"
    respx.post(f"{BASE}/v1/chat/completions").mock(return_value=httpx.Response(400, json=RESPONSES_ONLY))
    respx.post(f"{BASE}/v1/responses").mock(return_value=httpx.Response(200, json=body))
    async with make_client(FakeTime()) as client:
        completion = await client.complete("gpt-5-codex", MESSAGES)
    assert completion.text == "from items"


@respx.mock
async def test_incomplete_max_output_tokens_maps_to_length():
    respx.post(f"{BASE}/v1/chat/completions").mock(return_value=httpx.Response(400, json=RESPONSES_ONLY))
    respx.post(f"{BASE}/v1/responses").mock(
        return_value=httpx.Response(
            200, json=responses_body("cut off mid", status="incomplete", reason="max_output_tokens")
        )
    )
    async with make_client(FakeTime()) as client:
        completion = await client.complete("gpt-5-codex", MESSAGES)
    assert completion.finish_reason == "length"


@respx.mock
async def test_fallback_happens_only_once_when_responses_also_fails():
    chat = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(400, json=error_body("gpt-image-1 does not support chat completions"))
    )
    responses = respx.post(f"{BASE}/v1/responses").mock(
        return_value=httpx.Response(
            400, json=error_body("gpt-image-1 only generates images; use /v1/responses tools")
        )
    )
    async with make_client(FakeTime()) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.complete("gpt-image-1", MESSAGES)
    assert chat.call_count == 1
    assert responses.call_count == 1
    assert "only generates images" in caught.value.message
    assert caught.value.status == 400


@respx.mock
async def test_ordinary_bad_request_does_not_fall_back():
    chat = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(400, json=error_body("max_tokens is too large for this model"))
    )
    responses = respx.post(f"{BASE}/v1/responses")
    async with make_client(FakeTime()) as client:
        with pytest.raises(UpstreamError):
            await client.complete("gpt-5", MESSAGES)
    assert chat.call_count == 1
    assert responses.call_count == 0
