"""Unknown models are not retried: 400 model_not_found and the legacy 502 "unknown provider" → ModelNotFound."""

from __future__ import annotations

import httpx
import pytest
import respx

from council.client import ModelNotFound
from tests.client_helpers import BASE, FakeTime, error_body, make_client

MESSAGES = [{"role": "user", "content": "hi"}]


@respx.mock
async def test_400_model_not_found_is_not_retried():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(
            400, json=error_body("The model `gpt-9` does not exist", code="model_not_found")
        )
    )
    fake_time = FakeTime()
    async with make_client(fake_time) as client:
        with pytest.raises(ModelNotFound) as caught:
            await client.complete("gpt-9", MESSAGES)
    assert route.call_count == 1
    assert fake_time.sleeps == []
    assert caught.value.status == 400
    assert "gpt-9" in caught.value.message


@respx.mock
async def test_legacy_502_unknown_provider_is_model_not_found():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(
            502, json=error_body("unknown provider for model gpt-9", type_="server_error")
        )
    )
    fake_time = FakeTime()
    async with make_client(fake_time) as client:
        with pytest.raises(ModelNotFound):
            await client.complete("gpt-9", MESSAGES)
    assert route.call_count == 1
    assert fake_time.sleeps == []


@respx.mock
async def test_legacy_502_plain_text_body_is_model_not_found():
    respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(502, text="unknown provider for model gpt-9")
    )
    async with make_client(FakeTime()) as client:
        with pytest.raises(ModelNotFound) as caught:
            await client.complete("gpt-9", MESSAGES)
    assert "unknown provider for model gpt-9" in caught.value.message
