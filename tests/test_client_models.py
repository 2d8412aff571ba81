"""Model discovery from GET /v1/models: any order, `created` optional, cached briefly."""

from __future__ import annotations

import httpx
import pytest
import respx

from council.client import UpstreamError, UpstreamModel
from tests.client_helpers import BASE, FakeTime, make_client

LISTING = {
    "object": "list",
    "data": [
        {"id": "gemini-2.5-pro", "object": "model", "owned_by": "google"},
        {"id": "gpt-5", "object": "model", "created": 1700000000, "owned_by": "openai"},
        {"id": "claude-sonnet-4-5", "object": "model", "created": 1700000001},
    ],
}


@respx.mock
async def test_list_models_parses_entries_in_upstream_order():
    respx.get(f"{BASE}/v1/models").mock(return_value=httpx.Response(200, json=LISTING))
    async with make_client(FakeTime()) as client:
        models = await client.list_models()
    assert models == [
        UpstreamModel(id="gemini-2.5-pro", owned_by="google", created=None),
        UpstreamModel(id="gpt-5", owned_by="openai", created=1700000000),
        UpstreamModel(id="claude-sonnet-4-5", owned_by=None, created=1700000001),
    ]


@respx.mock
async def test_list_models_is_cached_for_models_cache_seconds():
    route = respx.get(f"{BASE}/v1/models").mock(return_value=httpx.Response(200, json=LISTING))
    fake_time = FakeTime()
    async with make_client(fake_time, models_cache_seconds=30) as client:
        await client.list_models()
        fake_time.now += 29
        await client.list_models()
        assert route.call_count == 1
        fake_time.now += 2
        await client.list_models()
        assert route.call_count == 2


@respx.mock
async def test_list_models_rejects_non_list_body():
    respx.get(f"{BASE}/v1/models").mock(return_value=httpx.Response(200, json={"models": "nope"}))
    async with make_client(FakeTime()) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.list_models()
    assert caught.value.kind == "bad_response"
