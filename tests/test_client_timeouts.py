"""Connect and read timeouts are set (read configurable); refused connections are reported as such."""

from __future__ import annotations

import httpx
import pytest
import respx

from council.client import CLIProxyClient, UpstreamUnavailable
from tests.client_helpers import BASE, FakeTime, make_client

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_timeouts_are_configured():
    client = CLIProxyClient(base_url=BASE, connect_timeout=2.5, read_timeout=42.0)
    timeout = client._http.timeout
    assert timeout.connect == 2.5
    assert timeout.read == 42.0
    await client.aclose()


def test_from_settings_uses_settings(settings):
    settings.CLIPROXY_BASE_URL = "http://10.1.2.3:9999"
    settings.CLIPROXY_API_KEY = "k"
    settings.CLIPROXY_READ_TIMEOUT = 77.0
    client = CLIProxyClient.from_settings()
    assert client.base_url == "http://10.1.2.3:9999"
    assert client._http.timeout.read == 77.0
    assert client._http.headers["Authorization"] == "Bearer k"


@respx.mock
async def test_read_timeout_is_not_retried():
    route = respx.post(f"{BASE}/v1/chat/completions").mock(side_effect=httpx.ReadTimeout("slow"))
    fake_time = FakeTime()
    async with make_client(fake_time) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.complete("gpt-5", MESSAGES)
    assert route.call_count == 1
    assert caught.value.kind == "timeout"
    assert "in time" in caught.value.message


@respx.mock
async def test_connection_refused_is_retried_then_unavailable():
    route = respx.get(f"{BASE}/v1/models").mock(side_effect=httpx.ConnectError("refused"))
    async with make_client(FakeTime(), max_attempts=3) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.list_models()
    assert route.call_count == 3
    assert caught.value.kind == "connection_refused"
    assert "refused" in caught.value.message
