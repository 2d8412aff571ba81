"""The fake answers as long as a real model when told to (`reply_chars`), for measuring what later prompts
carry; the reply stays a complete markdown report ending with the end marker."""

from __future__ import annotations

import httpx

from tests.fake_upstream.replies import END_MARKER, FAKE_MARK


def _ask(fake, model: str) -> str:
    messages = [{"role": "user", "content": "qEEG Council — Stage 1: Analysis\nWrite it."}]
    reply = httpx.post(f"{fake.base_url}/v1/chat/completions", json={"model": model, "messages": messages})
    return reply.json()["choices"][0]["message"]["content"]


def test_markdown_replies_reach_the_scripted_length(fake_upstream):
    short = _ask(fake_upstream, "gpt-5")
    fake_upstream.script("gpt-5", reply_chars=9000)
    long = _ask(fake_upstream, "gpt-5")
    assert len(short) < 2000 <= 9000 <= len(long) < 9400
    assert long.startswith(FAKE_MARK) and long.rstrip().endswith(END_MARKER)
    assert long.count(END_MARKER) == 1
