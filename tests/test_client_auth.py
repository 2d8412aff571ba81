"""401 and 503 auth_unavailable are auth problems: NeedsAuth, never retried. The key is sent as a bearer."""

from __future__ import annotations

import httpx
import pytest
import respx

from council.client import NeedsAuth, UpstreamUnavailable
from tests.client_helpers import BASE, FakeTime, chat_body, error_body, make_client

MESSAGES = [{"role": "user", "content": "hi"}]


@respx.mock
async def test_proxy_key_check_string_body_raises_needs_auth_without_retry():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(401, json={"error": "Missing API key"})
    )
    fake_time = FakeTime()
    async with make_client(fake_time) as client:
        with pytest.raises(NeedsAuth) as caught:
            await client.complete("gpt-5", MESSAGES)
    assert route.call_count == 1
    assert fake_time.sleeps == []
    assert caught.value.status == 401
    assert "Missing API key" in caught.value.message
    assert "CLIPROXY_API_KEY" in caught.value.message


@respx.mock
async def test_upstream_401_object_body_raises_needs_auth():
    respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(
            401,
            json=error_body(
                "token expired, please sign in", type_="authentication_error", code="invalid_token"
            ),
        )
    )
    async with make_client(FakeTime()) as client:
        with pytest.raises(NeedsAuth) as caught:
            await client.complete("gpt-5", MESSAGES)
    assert "token expired" in caught.value.message


@respx.mock
async def test_503_auth_unavailable_is_needs_auth_not_retried():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(
            503, json=error_body("auth_unavailable: no auth available", type_="server_error")
        )
    )
    fake_time = FakeTime()
    async with make_client(fake_time) as client:
        with pytest.raises(NeedsAuth) as caught:
            await client.complete("claude-sonnet-4-5", MESSAGES)
    assert route.call_count == 1
    assert fake_time.sleeps == []
    assert caught.value.status == 503
    assert not isinstance(caught.value, UpstreamUnavailable)


@respx.mock
async def test_plain_503_is_still_retried():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(
        side_effect=[
            httpx.Response(503, json=error_body("service busy; auth_unavailable later maybe")),
            httpx.Response(200, json=chat_body()),
        ]
    )
    async with make_client(FakeTime()) as client:
        await client.complete("gpt-5", MESSAGES)
    assert route.call_count == 2


@respx.mock
async def test_bearer_key_sent_when_set_and_absent_otherwise():
    route = respx.get(f"{BASE}/v1/models").mock(
        return_value=httpx.Response(200, json={"object": "list", "data": []})
    )
    async with make_client(FakeTime(), api_key="sekret") as client:
        await client.list_models()
    assert route.calls.last.request.headers["Authorization"] == "Bearer sekret"
    async with make_client(FakeTime()) as client:
        await client.list_models()
    assert "Authorization" not in route.calls.last.request.headers


@respx.mock
async def test_list_models_401_raises_needs_auth():
    respx.get(f"{BASE}/v1/models").mock(return_value=httpx.Response(401, json={"error": "Invalid API key"}))
    async with make_client(FakeTime(), api_key="wrong") as client:
        with pytest.raises(NeedsAuth) as caught:
            await client.list_models()
    assert "Invalid API key" in caught.value.message


@respx.mock
async def test_500_auth_unavailable_with_internal_error_code_is_needs_auth():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(
        return_value=httpx.Response(
            500,
            json=error_body(
                "auth_unavailable: no auth available (providers=codex, model=gpt-5)",
                type_="server_error",
                code="internal_server_error",
            ),
        )
    )
    async with make_client(FakeTime()) as client:
        with pytest.raises(NeedsAuth):
            await client.complete("gpt-5", MESSAGES)
    assert route.call_count == 1
