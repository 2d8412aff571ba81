"""Each model is its own subscription: the client keeps at most COUNCIL_PER_MODEL_CONCURRENCY requests to one
model in flight, and never holds one model's requests up behind another's."""

from __future__ import annotations

import asyncio

import pytest

from council.client import CLIProxyClient

MESSAGES = [{"role": "user", "content": "Say something."}]


async def _starts(fake, models: list[str], *, per_model: int) -> list[float]:
    async with CLIProxyClient(base_url=fake.base_url, per_model_concurrency=per_model) as client:
        await asyncio.gather(*(client.complete(model, MESSAGES) for model in models))
    return sorted(call.at for call in fake.calls if call.endpoint == "chat/completions")


@pytest.mark.parametrize(("per_model", "overlap"), [(1, False), (2, True)])
def test_requests_to_one_model_wait_for_its_limit(fake_upstream, per_model, overlap):
    fake_upstream.script("gpt-5", latency=0.4)
    first, second = asyncio.run(_starts(fake_upstream, ["gpt-5", "gpt-5"], per_model=per_model))
    if overlap:
        assert second - first < 0.3
    else:
        assert second - first >= 0.35


def test_different_models_never_wait_for_each_other(fake_upstream):
    models = ["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"]
    for model in models:
        fake_upstream.script(model, latency=0.4)
    starts = asyncio.run(_starts(fake_upstream, models, per_model=1))
    assert starts[-1] - starts[0] < 0.3


def test_the_limit_comes_from_settings(settings):
    settings.COUNCIL_PER_MODEL_CONCURRENCY = 3
    client = CLIProxyClient.from_settings(base_url="http://127.0.0.1:9")
    assert client.per_model_concurrency == 3
    asyncio.run(client.aclose())
